package sql

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heartbeat/heartbeat/messages"
)

const insertAnomaly = `INSERT INTO anomalies
	(anomaly_id, event_id, customer_id, anomaly_type, severity, heart_rate, event_time, detected_at, details)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
	ON CONFLICT DO NOTHING`

// AnomalyWriter stores anomalies and their outbox messages.
type AnomalyWriter struct {
	pool   *pgxpool.Pool
	logger watermill.LoggerAdapter
}

// NewAnomalyWriter returns a writer on pool.
func NewAnomalyWriter(pool *pgxpool.Pool, logger watermill.LoggerAdapter) *AnomalyWriter {
	return &AnomalyWriter{pool: pool, logger: logger}
}

// Write stores a and, in the same transaction, the message msg for topic in
// the outbox. An anomaly already stored (a redelivered event) writes
// nothing: it reports false, and no second message is queued.
func (w *AnomalyWriter) Write(ctx context.Context, a messages.Anomaly, topic string, msg *message.Message) (inserted bool, err error) {
	err = pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, insertAnomaly, a.AnomalyID, a.EventID, a.CustomerID, a.Type, a.Severity,
			int16(a.HeartRate), a.EventTime, a.DetectedAt, a.Details)
		if err != nil {
			return fmt.Errorf("insert anomaly: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return nil
		}
		inserted = true
		pub, err := wmsql.NewPublisher(wmsql.TxFromPgx(tx), wmsql.PublisherConfig{SchemaAdapter: OutboxSchema()}, w.logger)
		if err != nil {
			return err
		}
		if err := forwarder.NewPublisher(pub, forwarder.PublisherConfig{ForwarderTopic: OutboxTopic}).Publish(topic, msg); err != nil {
			return fmt.Errorf("queue anomaly message: %w", err)
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("record anomaly %s: %w", a.AnomalyID, err)
	}
	return inserted, nil
}

// Episodes (DETECTION_MODE=episode). An episode is one anomalies row,
// inserted with status 'open' when it opens, updated once if a SPIKE
// becomes a SUSTAINED episode (its anomaly_type and severity; its id, first
// reading and opening stay), and updated to 'closed' once when it closes;
// each of these is one transaction with its outbox message. The detector
// rebuilds a customer's state from the row (which episodes are open) and
// from customer_history (the readings that drive the timers), so no
// detector state is written per reading.

const insertEpisode = `INSERT INTO anomalies
	(anomaly_id, event_id, customer_id, anomaly_type, severity, heart_rate, event_time, detected_at, details,
	 status, started_at, opened_at, ended_at, peak_rate, trough_rate, samples, duration_ms, closed_at)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
	        CASE WHEN $10 = 'closed' THEN $8::timestamptz END)
	ON CONFLICT DO NOTHING`

// closeEpisode closes an open row only, so that a redelivered close
// changes nothing and queues no second message.
const closeEpisode = `UPDATE anomalies SET status = 'closed', ended_at = $2, peak_rate = $3, trough_rate = $4,
	samples = $5, duration_ms = $6, details = details || $7, closed_at = $8
	WHERE anomaly_id = $1 AND status = 'open'`

// reclassifyEpisode changes the type of an open row still of type $9 only,
// so that a redelivered reclassification changes nothing and queues no
// second message. A row of the new type for the same first reading (only a
// state rebuilt without history could record one) leaves it as it is, as
// (event_id, anomaly_type) is unique.
const reclassifyEpisode = `UPDATE anomalies a SET anomaly_type = $2, severity = $3, peak_rate = $4, trough_rate = $5,
	samples = $6, duration_ms = $7, details = details || $8
	WHERE anomaly_id = $1 AND status = 'open' AND anomaly_type = $9
	  AND NOT EXISTS (SELECT 1 FROM anomalies b WHERE b.event_id = a.event_id AND b.anomaly_type = $2)`

// WriteEpisodes records episode openings, reclassifications and closings
// (an open row with ReclassifiedFrom is a reclassification), each with its
// message for topic queued in the outbox, in one transaction, in order.
// An opening inserts the row unless it exists; a reclassification updates
// the open row of the type it reclassifies, and a closing the open row, or
// either inserts the row as it now is if it was never recorded. Each
// message is queued only with the row change it announces, so a
// redelivered reading duplicates nothing. written tells, per write,
// whether it changed a row.
func (w *AnomalyWriter) WriteEpisodes(ctx context.Context, topic string, ws []messages.EpisodeUpdate) (written []bool, err error) {
	written = make([]bool, len(ws))
	err = pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
		var pub message.Publisher
		for i, e := range ws {
			r := e.Episode
			changed := false
			switch {
			case r.Status == messages.EpisodeClosed:
				tag, err := tx.Exec(ctx, closeEpisode, r.AnomalyID, r.EndedAt, int16(r.PeakRate), int16(r.TroughRate),
					r.Samples, r.DurationMS, r.Details, r.DetectedAt)
				if err != nil {
					return fmt.Errorf("close episode %s: %w", r.AnomalyID, err)
				}
				changed = tag.RowsAffected() == 1
			case r.ReclassifiedFrom != "":
				tag, err := tx.Exec(ctx, reclassifyEpisode, r.AnomalyID, r.Type, r.Severity, int16(r.PeakRate), int16(r.TroughRate),
					r.Samples, r.DurationMS, r.Details, r.ReclassifiedFrom)
				if err != nil {
					return fmt.Errorf("reclassify episode %s: %w", r.AnomalyID, err)
				}
				if changed = tag.RowsAffected() == 1; !changed {
					// Recorded already (a redelivery), or closed: nothing.
					var exists bool
					if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM anomalies WHERE anomaly_id = $1)`, r.AnomalyID).Scan(&exists); err != nil {
						return fmt.Errorf("reclassify episode %s: %w", r.AnomalyID, err)
					}
					if exists {
						continue
					}
				}
			}
			if !changed {
				var closed bool
				if closed, err = w.insertEpisode(ctx, tx, r); err != nil {
					return err
				}
				changed = closed
			}
			if !changed {
				continue
			}
			written[i] = true
			if pub == nil {
				sqlPub, err := wmsql.NewPublisher(wmsql.TxFromPgx(tx), wmsql.PublisherConfig{SchemaAdapter: OutboxSchema()}, w.logger)
				if err != nil {
					return err
				}
				pub = forwarder.NewPublisher(sqlPub, forwarder.PublisherConfig{ForwarderTopic: OutboxTopic})
			}
			if err := pub.Publish(topic, e.Message); err != nil {
				return fmt.Errorf("queue episode message: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("record %d episode changes: %w", len(ws), err)
	}
	return written, nil
}

func (w *AnomalyWriter) insertEpisode(ctx context.Context, tx pgx.Tx, r messages.EpisodeAnomaly) (bool, error) {
	tag, err := tx.Exec(ctx, insertEpisode, r.AnomalyID, r.EventID, r.CustomerID, r.Type, r.Severity,
		int16(r.HeartRate), r.EventTime, r.DetectedAt, r.Details,
		r.Status, r.StartedAt, r.OpenedAt, r.EndedAt, int16(r.PeakRate), int16(r.TroughRate), r.Samples, r.DurationMS)
	if err != nil {
		return false, fmt.Errorf("insert episode %s: %w", r.AnomalyID, err)
	}
	return tag.RowsAffected() == 1, nil
}

// RecentEpisodes returns customer's episodes that are open or ended at or
// after since, with what rebuilding its state needs of them: rule (and the
// rule it opened as), first reading, the rate before a SPIKE's jump,
// opening time, end, and the figures recorded.
func (w *AnomalyWriter) RecentEpisodes(ctx context.Context, customer string, since time.Time) ([]messages.Episode, error) {
	rows, err := w.pool.Query(ctx, `SELECT anomaly_type, coalesce(details->>'reclassified_from', ''), severity, event_id::text,
		       started_at, heart_rate, coalesce((details->>'previous_heart_rate')::int, 0), opened_at, status, ended_at,
		       peak_rate, trough_rate, samples, duration_ms
		FROM anomalies WHERE customer_id = $1 AND status IS NOT NULL AND (status = 'open' OR ended_at >= $2)`, customer, since)
	if err != nil {
		return nil, fmt.Errorf("episodes of %s: %w", customer, err)
	}
	var out []messages.Episode
	var ep messages.Episode
	var rate, peak, trough int16
	var base int32
	var status string
	var ended *time.Time
	var samples int32
	var durationMS int64
	_, err = pgx.ForEachRow(rows, []any{&ep.Rule, &ep.OpenedAs, &ep.Severity, &ep.Start.EventID, &ep.Start.Time, &rate, &base, &ep.OpenedAt, &status, &ended,
		&peak, &trough, &samples, &durationMS}, func() error {
		e := ep
		e.CustomerID, e.Start.Rate, e.Base, e.Closed = customer, int(rate), int(base), status == messages.EpisodeClosed
		e.Peak, e.Trough, e.Samples = int(peak), int(trough), int(samples)
		e.Last = e.Start
		e.Last.Time = e.Start.Time.Add(time.Duration(durationMS) * time.Millisecond)
		if ended != nil {
			e.End = *ended
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("episodes of %s: %w", customer, err)
	}
	return out, nil
}

// historyFrom reads the customer_history rows of a customer and source
// partition that may hold readings before an offset, from a time on ($5;
// $6 is the first instant of its UTC day, as for historyLatest).
const historyFrom = `SELECT readings FROM customer_history
	WHERE customer_id = $1 AND source_topic = $2 AND source_partition = $3 AND first_offset < $4
	  AND last_time >= $5 AND first_time >= $6
	ORDER BY first_offset`

// EpisodeHistory reads a customer's readings from customer_history to
// rebuild its episode state (see [History]).
type EpisodeHistory struct{ h *History }

// NewEpisodeHistory reads through h's pool.
func NewEpisodeHistory(h *History) *EpisodeHistory { return &EpisodeHistory{h: h} }

// Readings returns the readings of h.CustomerID stored from records of src's
// partition before src: prime, the latest before warmFrom (nil if none),
// and those from warmFrom on, in offset order.
func (hs *EpisodeHistory) Readings(ctx context.Context, h messages.Heartbeat, src messages.Source, warmFrom time.Time) (prime *messages.Reading, rs []messages.Reading, err error) {
	// prime: the latest before warmFrom, by event time then lowest offset.
	var best historyReading
	var found bool
	err = hs.h.scanLatest(ctx, h.CustomerID, src, time.Time{}, &warmFrom, func(r historyReading) {
		if !found || r.at.After(best.at) || r.at.Equal(best.at) && r.offset < best.offset {
			best, found = r, true
		}
	}, func() (time.Time, bool) { return best.at, found })
	if err != nil {
		return nil, nil, fmt.Errorf("look up readings of %s: %w", h.CustomerID, err)
	}
	if found {
		prime = &messages.Reading{EventID: uuid.UUID(best.id).String(), Time: best.at, Rate: int(best.rate)}
	}
	rows, err := hs.h.pool.Query(ctx, historyFrom, h.CustomerID, src.Topic, src.Partition, src.Offset, warmFrom, DayOf(warmFrom).Time())
	if err != nil {
		return nil, nil, fmt.Errorf("read readings of %s: %w", h.CustomerID, err)
	}
	var packed []byte
	var stored []historyReading
	_, err = pgx.ForEachRow(rows, []any{&packed}, func() error {
		return eachReading(packed, func(r historyReading) bool {
			if r.offset < src.Offset && !r.at.Before(warmFrom) {
				stored = append(stored, r)
			}
			return true
		})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read readings of %s: %w", h.CustomerID, err)
	}
	// A row's readings are in offset order, and rows come in first-offset
	// order, but the writes of two detectors (a partition that moved) may
	// interleave a customer's offsets: sort them all. A record redelivered
	// after a crash or a rebalance may have its reading in two rows (see
	// HistoryWriter): it counts once.
	slices.SortFunc(stored, func(a, b historyReading) int { return cmp.Compare(a.offset, b.offset) })
	stored = slices.CompactFunc(stored, func(a, b historyReading) bool { return a.offset == b.offset })
	for _, r := range stored {
		rs = append(rs, messages.Reading{EventID: uuid.UUID(r.id).String(), Time: r.at, Rate: int(r.rate)})
	}
	return prime, rs, nil
}

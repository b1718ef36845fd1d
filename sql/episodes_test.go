package sql_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/messages"
	hbsql "github.com/heartbeat/heartbeat/sql"
)

// episodeDB is a migrated database with the outbox table.
func episodeDB(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool := migrated(t)
	require.NoError(t, hbsql.InitOutbox(context.Background(), pool))
	return pool
}

var at = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func episodeWrite(id, start string, status string, end *time.Time) messages.EpisodeUpdate {
	row := messages.EpisodeAnomaly{
		Anomaly: messages.Anomaly{AnomalyID: id, EventID: start, CustomerID: "c1", Type: messages.SustainedHigh, Severity: messages.SeverityHigh,
			HeartRate: 121, EventTime: at, DetectedAt: at.Add(time.Hour), Details: json.RawMessage(`{"threshold":120}`)},
		Status: status, StartedAt: at, OpenedAt: at.Add(10 * time.Minute), EndedAt: end,
		PeakRate: 150, TroughRate: 115, Samples: 601, DurationMS: 600_000,
	}
	if status == messages.EpisodeClosed {
		row.Details = json.RawMessage(`{"close_reason":"cleared"}`)
	}
	msgID := id
	if status == messages.EpisodeClosed {
		msgID = uuid.NewSHA1(uuid.NameSpaceOID, []byte(id)).String()
	}
	return messages.EpisodeUpdate{Episode: row, Message: message.NewMessage(msgID, []byte(`{}`))}
}

func count(t *testing.T, pool *pgxpool.Pool, query string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), query, args...).Scan(&n))
	return n
}

// TestWriteEpisodesIsIdempotent: an opening inserts the row and queues its
// message once; a closing updates the open row and queues its message once;
// a redelivered reading changes and queues nothing.
func TestWriteEpisodesIsIdempotent(t *testing.T) {
	pool := episodeDB(t)
	ctx := context.Background()
	w := hbsql.NewAnomalyWriter(pool, watermill.NopLogger{})
	id, start := uuid.NewString(), uuid.NewString()
	end := at.Add(20 * time.Minute)

	written, err := w.WriteEpisodes(ctx, "events.anomaly.v1", []messages.EpisodeUpdate{episodeWrite(id, start, messages.EpisodeOpen, nil)})
	require.NoError(t, err)
	require.Equal(t, []bool{true}, written)
	written, err = w.WriteEpisodes(ctx, "events.anomaly.v1", []messages.EpisodeUpdate{episodeWrite(id, start, messages.EpisodeOpen, nil)})
	require.NoError(t, err)
	require.Equal(t, []bool{false}, written, "redelivered opening")
	require.Equal(t, 1, count(t, pool, "SELECT count(*) FROM watermill_outbox"))
	require.Equal(t, 1, count(t, pool, "SELECT count(*) FROM anomalies WHERE status = 'open' AND closed_at IS NULL AND ended_at IS NULL"))

	recent, err := w.RecentEpisodes(ctx, "c1", at.Add(time.Hour))
	require.NoError(t, err)
	require.Len(t, recent, 1, "an open episode is recent however old")
	require.Equal(t, messages.Episode{CustomerID: "c1", Rule: messages.SustainedHigh, Severity: messages.SeverityHigh,
		Start: messages.Reading{EventID: start, Time: at, Rate: 121}, OpenedAt: at.Add(10 * time.Minute),
		Last: messages.Reading{EventID: start, Time: at.Add(10 * time.Minute), Rate: 121}, Peak: 150, Trough: 115, Samples: 601},
		normalize(recent[0]))

	for range 2 {
		_, err = w.WriteEpisodes(ctx, "events.anomaly.v1", []messages.EpisodeUpdate{episodeWrite(id, start, messages.EpisodeClosed, &end)})
		require.NoError(t, err)
	}
	require.Equal(t, 2, count(t, pool, "SELECT count(*) FROM watermill_outbox"), "one opening, one closing")
	var details string
	require.NoError(t, pool.QueryRow(ctx, `SELECT details::text FROM anomalies WHERE anomaly_id = $1 AND status = 'closed'
		AND ended_at = $2 AND closed_at IS NOT NULL`, id, end).Scan(&details))
	require.JSONEq(t, `{"threshold":120,"close_reason":"cleared"}`, details)

	recent, err = w.RecentEpisodes(ctx, "c1", end)
	require.NoError(t, err)
	require.Len(t, recent, 1, "ended at since")
	require.True(t, recent[0].Closed)
	recent, err = w.RecentEpisodes(ctx, "c1", end.Add(time.Millisecond))
	require.NoError(t, err)
	require.Empty(t, recent, "ended before since")

	// An opening and closing of one reading (SIGNAL_LOSS across a gap), and
	// the closing of an episode never recorded open: both end closed.
	lossID, lossStart, orphan := uuid.NewString(), uuid.NewString(), uuid.NewString()
	written, err = w.WriteEpisodes(ctx, "events.anomaly.v1", []messages.EpisodeUpdate{
		episodeWrite(lossID, lossStart, messages.EpisodeOpen, nil),
		episodeWrite(lossID, lossStart, messages.EpisodeClosed, &end),
		episodeWrite(orphan, uuid.NewString(), messages.EpisodeClosed, &end),
	})
	require.NoError(t, err)
	require.Equal(t, []bool{true, true, true}, written)
	require.Equal(t, 5, count(t, pool, "SELECT count(*) FROM watermill_outbox"))
	require.Equal(t, 3, count(t, pool, "SELECT count(*) FROM anomalies WHERE status = 'closed'"))
	// Per-event rows do not show as episodes.
	_, err = w.Write(ctx, messages.Anomaly{AnomalyID: uuid.NewString(), EventID: uuid.NewString(), CustomerID: "c1", Type: messages.LowHeartRate,
		Severity: messages.SeverityHigh, HeartRate: 45, EventTime: at, DetectedAt: at, Details: json.RawMessage(`{}`)}, "events.anomaly.v1",
		message.NewMessage(uuid.NewString(), []byte(`{}`)))
	require.NoError(t, err)
	recent, err = w.RecentEpisodes(ctx, "c1", at.Add(-time.Hour))
	require.NoError(t, err)
	require.Len(t, recent, 3)
}

func normalize(e messages.Episode) messages.Episode {
	e.Start.Time, e.Last.Time, e.OpenedAt = e.Start.Time.UTC(), e.Last.Time.UTC(), e.OpenedAt.UTC()
	return e
}

// TestEpisodeHistoryReadings: the readings of one customer of one partition
// before a record, in offset order, and the latest one before warmFrom.
func TestEpisodeHistoryReadings(t *testing.T) {
	pool := episodeDB(t)
	ctx := context.Background()
	_, err := hbsql.EnsurePartitions(ctx, pool, at, 48*time.Hour)
	require.NoError(t, err)
	ids := make([]string, 6)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	var rows []messages.Ingest
	for _, r := range []struct {
		id, customer string
		sec          int
		partition    int32
		offset       int64
	}{
		{ids[0], "c1", 0, 3, 10},
		{ids[1], "c1", 60, 3, 11},
		{ids[2], "c1", 120, 3, 13},
		{ids[3], "c1", 118, 3, 14}, // late, delivered after 120
		{ids[4], "c2", 130, 3, 15}, // another customer
		{ids[5], "c1", 180, 3, 20}, // after the record
	} {
		rows = append(rows, messages.Ingest{
			Reading: messages.Heartbeat{EventID: r.id, CustomerID: r.customer, Timestamp: at.Add(time.Duration(r.sec) * time.Second), HeartRate: 70},
			Source:  messages.Source{Topic: "events.raw.v1", Partition: r.partition, Offset: r.offset},
		})
	}
	// Two batches, the second kept twice (a redelivery), each written as
	// the detector writes them before a commit: the redelivered readings
	// are in two rows, and each is read once.
	w := hbsql.NewHistoryWriter(pool)
	for _, batch := range [][]messages.Ingest{rows[:2], rows[2:], rows[1:]} {
		require.NoError(t, w.Keep(ctx, batch))
		require.NoError(t, w.Flush(ctx))
	}
	hs := hbsql.NewEpisodeHistory(hbsql.NewHistory(pool, time.Hour))
	h := messages.Heartbeat{CustomerID: "c1", Timestamp: at.Add(190 * time.Second)}
	prime, rs, err := hs.Readings(ctx, h, messages.Source{Topic: "events.raw.v1", Partition: 3, Offset: 16}, at.Add(30*time.Second))
	require.NoError(t, err)
	require.NotNil(t, prime)
	require.Equal(t, ids[0], prime.EventID)
	var got []string
	for _, r := range rs {
		got = append(got, r.EventID)
	}
	require.Equal(t, []string{ids[1], ids[2], ids[3]}, got, "offset order, before the record, this customer only")
}

// TestWriteEpisodesReclassifiesOnce: an open SPIKE row becomes
// SUSTAINED_HIGH — same anomaly id, first reading and opening; type,
// severity and figures updated, details merged — and its message is queued
// once; a redelivered reclassification, or one of a closed row, changes
// and queues nothing; one never recorded is inserted as it now is. The
// rebuild reads back the rule the episode opened as and the SPIKE's base.
func TestWriteEpisodesReclassifiesOnce(t *testing.T) {
	pool := episodeDB(t)
	ctx := context.Background()
	w := hbsql.NewAnomalyWriter(pool, watermill.NopLogger{})
	start := uuid.NewString()
	id := messages.EpisodeID("c1", messages.Spike, start)
	spike := episodeWrite(id, start, messages.EpisodeOpen, nil)
	spike.Episode.Type, spike.Episode.Severity, spike.Episode.Samples = messages.Spike, messages.SeverityMedium, 3
	spike.Episode.Details = json.RawMessage(`{"threshold":30,"previous_heart_rate":80,"delta":70}`)
	re := episodeWrite(id, start, messages.EpisodeOpen, nil)
	re.Episode.ReclassifiedFrom, re.Episode.Samples = messages.Spike, 601
	re.Episode.Details = json.RawMessage(`{"threshold":120,"reclassified_from":"SPIKE"}`)
	re.Message = message.NewMessage(messages.AnomalyID(id, "reclassified"), []byte(`{}`))

	written, err := w.WriteEpisodes(ctx, "events.anomaly.v1", []messages.EpisodeUpdate{spike})
	require.NoError(t, err)
	require.Equal(t, []bool{true}, written)
	for i, want := range []bool{true, false} {
		written, err = w.WriteEpisodes(ctx, "events.anomaly.v1", []messages.EpisodeUpdate{re})
		require.NoError(t, err)
		require.Equal(t, []bool{want}, written, "reclassification %d", i)
	}
	require.Equal(t, 2, count(t, pool, "SELECT count(*) FROM watermill_outbox"), "an opening, a reclassification")
	var typ, severity, details string
	var samples int
	require.NoError(t, pool.QueryRow(ctx, `SELECT anomaly_type, severity, samples, details::text FROM anomalies
		WHERE anomaly_id = $1 AND event_id = $2 AND status = 'open' AND opened_at = $3`, id, start, at.Add(10*time.Minute)).Scan(&typ, &severity, &samples, &details))
	require.Equal(t, messages.SustainedHigh, typ)
	require.Equal(t, messages.SeverityHigh, severity)
	require.Equal(t, 601, samples)
	require.JSONEq(t, `{"threshold":120,"previous_heart_rate":80,"delta":70,"reclassified_from":"SPIKE"}`, details)

	recent, err := w.RecentEpisodes(ctx, "c1", at)
	require.NoError(t, err)
	require.Len(t, recent, 1)
	require.Equal(t, messages.SustainedHigh, recent[0].Rule)
	require.Equal(t, messages.Spike, recent[0].OpenedAs)
	require.Equal(t, 80, recent[0].Base)
	require.Equal(t, id, recent[0].ID(), "the rebuilt episode keeps its identity")

	// Closed, it is not reclassified again.
	end := at.Add(30 * time.Minute)
	closing := episodeWrite(id, start, messages.EpisodeClosed, &end)
	_, err = w.WriteEpisodes(ctx, "events.anomaly.v1", []messages.EpisodeUpdate{closing})
	require.NoError(t, err)
	spike2 := spike
	spike2.Episode.Status = messages.EpisodeOpen
	written, err = w.WriteEpisodes(ctx, "events.anomaly.v1", []messages.EpisodeUpdate{spike2, re})
	require.NoError(t, err)
	require.Equal(t, []bool{false, false}, written)
	require.Equal(t, 3, count(t, pool, "SELECT count(*) FROM watermill_outbox"))

	// Never recorded: inserted reclassified.
	orphanStart := uuid.NewString()
	orphanID := messages.EpisodeID("c1", messages.Spike, orphanStart)
	orphan := episodeWrite(orphanID, orphanStart, messages.EpisodeOpen, nil)
	orphan.Episode.ReclassifiedFrom = messages.Spike
	written, err = w.WriteEpisodes(ctx, "events.anomaly.v1", []messages.EpisodeUpdate{orphan})
	require.NoError(t, err)
	require.Equal(t, []bool{true}, written)
	require.Equal(t, 1, count(t, pool, "SELECT count(*) FROM anomalies WHERE anomaly_id = $1 AND anomaly_type = 'SUSTAINED_HIGH' AND status = 'open'", orphanID))

	// A SUSTAINED_HIGH row of the same first reading already there (only a
	// state rebuilt without history could record one): the SPIKE stays a
	// SPIKE rather than fail the write, and so the partition, for ever.
	s3 := uuid.NewString()
	spike3 := episodeWrite(messages.EpisodeID("c1", messages.Spike, s3), s3, messages.EpisodeOpen, nil)
	spike3.Episode.Type = messages.Spike
	other := episodeWrite(messages.EpisodeID("c1", messages.SustainedHigh, s3), s3, messages.EpisodeOpen, nil)
	re3 := spike3
	re3.Episode.Type, re3.Episode.ReclassifiedFrom = messages.SustainedHigh, messages.Spike
	written, err = w.WriteEpisodes(ctx, "events.anomaly.v1", []messages.EpisodeUpdate{spike3, other, re3})
	require.NoError(t, err)
	require.Equal(t, []bool{true, true, false}, written)
	require.Equal(t, 1, count(t, pool, "SELECT count(*) FROM anomalies WHERE event_id = $1 AND anomaly_type = 'SPIKE'", s3))
}

package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	wmmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/messages/rules"
	hbmw "github.com/heartbeat/heartbeat/middleware"
)

// AnomalyStore records an anomaly and its outgoing message atomically,
// reporting false when the anomaly was already recorded.
type AnomalyStore interface {
	Write(ctx context.Context, a messages.Anomaly, topic string, msg *message.Message) (bool, error)
}

// History rebuilds a customer's state from storage: the latest reading
// before a record of the raw topic, from those a [HistoryLog] kept.
type History interface {
	Previous(ctx context.Context, h messages.Heartbeat, src messages.Source) (at time.Time, rate int, found bool, err error)
}

// HistoryLog keeps the readings a detector evaluated, with the record each
// came from, for its History ([sql.HistoryWriter]). The detector's
// subscriber has it write them before each commit of the detector's
// offsets, so that a committed offset never passes a reading the History
// lacks: a rebuild at the start of an assignment needs nothing more.
type HistoryLog interface {
	// Keep holds readings; its error says an early write of what it
	// holds failed, the readings staying held.
	Keep(ctx context.Context, rs []messages.Ingest) error
	// Flush writes every reading kept before it was called.
	Flush(ctx context.Context) error
	// Room waits while too many readings are held that could not be
	// written.
	Room(ctx context.Context) error
}

// Observer is told what a detector did, for its metrics; every field may be
// nil.
type Observer struct {
	// Anomaly is called for each newly recorded anomaly (an episode's
	// opening; not its reclassification or closing).
	Anomaly func(a messages.Anomaly)
	// History is called after each rebuild of a customer's state with its
	// outcome: found or none.
	History func(outcome string)
}

func (o Observer) anomaly(a messages.Anomaly) {
	if o.Anomaly != nil {
		o.Anomaly(a)
	}
}

func (o Observer) history(outcome string) {
	if o.History != nil {
		o.History(outcome)
	}
}

// DetectConfig is what [Detect] needs: all but Observe are required.
type DetectConfig struct {
	Limits  messages.Limits
	Engine  *rules.Engine
	Store   AnomalyStore
	History History
	// Kept keeps the readings evaluated, for History.
	Kept HistoryLog
	// Topic is where anomaly messages go (events.anomaly.v1).
	Topic string
	Now   func() time.Time
	// NewID names a record that arrived without a correlation id.
	NewID   func() string
	Log     *slog.Logger
	Observe Observer
}

// Detect is the detector of DETECTION_MODE=per_event: it validates readings
// with the same validation as Persist and evaluates each valid one on its
// own against LOW, HIGH and SPIKE. An anomaly's row and its
// events.anomaly.v1 message are one transaction (outbox); the customer's
// state moves on only after it commits. Invalid readings are passed over:
// Persist routes them, and a sensor fault must not also raise a clinical
// alarm.
type Detect struct {
	c    DetectConfig
	gate rebuildGate
}

// NewDetect returns a Detect, or the dependencies c lacks.
func NewDetect(c DetectConfig) (*Detect, error) {
	if err := require("Detect", dep{"an Engine", c.Engine != nil}, dep{"a Store", c.Store != nil},
		dep{"a History", c.History != nil}, dep{"a HistoryLog (Kept)", c.Kept != nil}, dep{"a Topic", c.Topic != ""},
		dep{"a clock (Now)", c.Now != nil}, dep{"NewID", c.NewID != nil}, dep{"a Log", c.Log != nil}); err != nil {
		return nil, err
	}
	return &Detect{c: c}, nil
}

// HandleBatch implements [BatchHandler]: the records one by one, in order,
// each done once its anomaly, if any, is recorded. The readings of the
// records done are kept for the History.
func (d *Detect) HandleBatch(ctx context.Context, b *messages.Batch) error {
	if err := d.c.Kept.Room(ctx); err != nil {
		return err
	}
	kept := make([]messages.Ingest, 0, len(b.Records)-b.Done)
	defer func() { keep(ctx, d.c.Kept, d.c.Log, kept) }()
	for b.Done < len(b.Records) {
		r := &b.Records[b.Done]
		h, evaluated, err := d.handle(ctx, r)
		if err != nil {
			return err
		}
		if evaluated && r.Source.Offset >= 0 {
			kept = append(kept, messages.Ingest{Reading: h, Source: r.Source})
		}
		b.Done++
	}
	return nil
}

// keep hands the readings evaluated to l; a failed early write is logged,
// the readings staying held for the write before the next commit.
func keep(ctx context.Context, l HistoryLog, log *slog.Logger, rs []messages.Ingest) {
	if len(rs) == 0 {
		return
	}
	if err := l.Keep(ctx, rs); err != nil && ctx.Err() == nil {
		log.Warn("detector history: early write failed; the readings are held for the next commit", "err", err)
	}
}

// handle evaluates r's reading, if valid, and records its anomaly:
// evaluated reports that the customer's state moved past it.
func (d *Detect) handle(ctx context.Context, r *messages.Record) (_ messages.Heartbeat, evaluated bool, _ error) {
	now := d.c.Now()
	h, ok, err := validReading(d.c.Limits, r.Value, now)
	if !ok {
		return h, false, err
	}
	ln := rules.LaneOf(r.Source)
	if !d.c.Engine.Known(ln, h.CustomerID) && r.Source.Offset >= 0 {
		if err := d.restore(ctx, ln, h, r.Source); err != nil {
			return h, false, err
		}
	}
	f, found, apply := d.c.Engine.Evaluate(ln, h)
	if !found {
		apply()
		return h, true, nil
	}
	a, err := NewAnomaly(h, f, now)
	if err != nil {
		return h, false, err
	}
	body, err := json.Marshal(a)
	if err != nil {
		return h, false, err
	}
	out := anomalyMessage(a.AnomalyID, body, r.CorrelationID(d.c.NewID), a.CustomerID, a.Type)
	inserted, err := d.c.Store.Write(ctx, a, d.c.Topic, out)
	if err != nil {
		return h, false, err
	}
	apply()
	if inserted {
		d.c.Observe.anomaly(a)
	}
	return h, true, nil
}

// NewAnomaly builds the anomaly record of finding f on reading h.
func NewAnomaly(h messages.Heartbeat, f rules.Finding, detectedAt time.Time) (messages.Anomaly, error) {
	details := map[string]any{"threshold": f.Threshold, "measured": f.HeartRate}
	if f.Previous != nil {
		details["previous_heart_rate"] = *f.Previous
		details["delta"] = f.Delta()
	}
	raw, err := json.Marshal(details)
	if err != nil {
		return messages.Anomaly{}, err
	}
	return messages.Anomaly{
		AnomalyID:         messages.AnomalyID(h.EventID, f.Rule),
		EventID:           h.EventID,
		CustomerID:        h.CustomerID,
		Type:              f.Rule,
		Severity:          f.Severity,
		HeartRate:         f.HeartRate,
		PreviousHeartRate: f.Previous,
		EventTime:         h.Timestamp.UTC(),
		DetectedAt:        detectedAt.UTC(),
		Details:           raw,
	}, nil
}

func (d *Detect) restore(ctx context.Context, ln rules.Lane, h messages.Heartbeat, src messages.Source) error {
	if err := d.gate.before(ctx, d.c.Kept); err != nil {
		return err
	}
	at, rate, found, err := d.c.History.Previous(ctx, h, src)
	if err != nil {
		return err
	}
	outcome := "none"
	if found {
		d.c.Engine.Seed(ln, h.CustomerID, at, rate)
		outcome = "found"
	}
	d.c.Observe.history(outcome)
	return nil
}

// Evict drops the state of customers idle for idle (wall clock): their
// next reading rebuilds it, after the readings kept are written.
func (d *Detect) Evict(idle time.Duration) int {
	d.gate.drop()
	return d.c.Engine.Evict(idle)
}

// historyWriteTimeout bounds the write of the readings kept before a
// rebuild.
const historyWriteTimeout = 10 * time.Second

// rebuildGate has a rebuild of a customer's state read a history that
// holds every reading the detector kept before the state was dropped — a
// partition's after a failed episode batch, customers' idle past
// DETECT_STATE_TTL: their readings may still be held, not yet written
// (they are, before the next commit). dropped counts the drops; flushed
// is the count the last successful write began after. A rebuild with
// flushed behind dropped writes what is kept first. A Flush waits for one
// in progress and writes what it left, so no rebuild reads before the
// readings of a drop it follows are written.
type rebuildGate struct{ dropped, flushed atomic.Uint64 }

// drop counts a drop; it comes before the state goes, so that a rebuild
// that finds the state gone sees the count.
func (g *rebuildGate) drop() { g.dropped.Add(1) }

// before writes what kept holds if a drop came since the last write. A
// failure is another batch's readings failing to be written, not the
// record's: it is marked transient, waited out, never poisoned.
func (g *rebuildGate) before(ctx context.Context, kept HistoryLog) error {
	n := g.dropped.Load()
	if g.flushed.Load() >= n {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, historyWriteTimeout)
	defer cancel()
	if err := kept.Flush(ctx); err != nil {
		return hbmw.MarkTransient(fmt.Errorf("write the detector's history before a rebuild: %w", err))
	}
	for {
		f := g.flushed.Load()
		if f >= n || g.flushed.CompareAndSwap(f, n) {
			return nil
		}
	}
}

// validReading is both detectors' validation: ok is false for a reading to
// pass over without evaluation (invalid: persist routes it, and a sensor
// fault must not also raise a clinical alarm) and for an unexpected error,
// returned.
func validReading(l messages.Limits, payload []byte, now time.Time) (messages.Heartbeat, bool, error) {
	h, err := l.Validate(payload, now)
	if err != nil {
		if _, invalid := messages.AsValidationError(err); invalid {
			return h, false, nil
		}
		return h, false, err
	}
	return h, true, nil
}

// anomalyMessage is an events.anomaly.v1 message keyed by customer, with
// the correlation id of the reading it derives from.
func anomalyMessage(id string, body []byte, corr string, customer, typ string) *message.Message {
	out := message.NewMessage(id, body)
	out.Metadata.Set(wmmw.CorrelationIDMetadataKey, corr)
	out.Metadata.Set(messages.KeyMetadata, customer)
	out.Metadata.Set("anomaly_type", typ)
	return out
}

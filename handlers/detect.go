package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	wmmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/messages/rules"
)

// AnomalyStore records an anomaly and its outgoing message atomically,
// reporting false when the anomaly was already recorded.
type AnomalyStore interface {
	Write(ctx context.Context, a messages.Anomaly, topic string, msg *message.Message) (bool, error)
}

// History rebuilds a customer's state from storage: the latest reading
// before a record of the raw topic. Its error wraps
// [messages.ErrHistoryIncomplete] when the readings before it are not all
// stored yet.
type History interface {
	Previous(ctx context.Context, h messages.Heartbeat, src messages.Source) (at time.Time, rate int, found bool, err error)
}

// Observer is told what a detector did, for its metrics; every field may be
// nil.
type Observer struct {
	// Anomaly is called for each newly recorded anomaly (an episode's
	// opening; not its reclassification or closing).
	Anomaly func(a messages.Anomaly)
	// History is called after each rebuild of a customer's state with its
	// outcome: found, none or incomplete.
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
type Detect struct{ c DetectConfig }

// NewDetect returns a Detect, or the dependencies c lacks.
func NewDetect(c DetectConfig) (*Detect, error) {
	if err := require("Detect", dep{"an Engine", c.Engine != nil}, dep{"a Store", c.Store != nil},
		dep{"a History", c.History != nil}, dep{"a Topic", c.Topic != ""}, dep{"a clock (Now)", c.Now != nil},
		dep{"NewID", c.NewID != nil}, dep{"a Log", c.Log != nil}); err != nil {
		return nil, err
	}
	return &Detect{c: c}, nil
}

// HandleBatch implements [BatchHandler]: the records one by one, in order,
// each done once its anomaly, if any, is recorded.
func (d *Detect) HandleBatch(ctx context.Context, b *messages.Batch) error {
	for b.Done < len(b.Records) {
		if err := d.handle(ctx, &b.Records[b.Done]); err != nil {
			return err
		}
		b.Done++
	}
	return nil
}

func (d *Detect) handle(ctx context.Context, r *messages.Record) error {
	now := d.c.Now()
	h, ok, err := validReading(d.c.Limits, r.Value, now)
	if !ok {
		return err
	}
	ln := rules.LaneOf(r.Source)
	if !d.c.Engine.Known(ln, h.CustomerID) && r.Source.Offset >= 0 {
		if err := d.restore(ctx, ln, h, r.Source); err != nil {
			return err
		}
	}
	f, found, apply := d.c.Engine.Evaluate(ln, h)
	if !found {
		apply()
		return nil
	}
	a, err := NewAnomaly(h, f, now)
	if err != nil {
		return err
	}
	body, err := json.Marshal(a)
	if err != nil {
		return err
	}
	out := anomalyMessage(a.AnomalyID, body, r.CorrelationID(d.c.NewID), a.CustomerID, a.Type)
	inserted, err := d.c.Store.Write(ctx, a, d.c.Topic, out)
	if err != nil {
		return err
	}
	apply()
	if inserted {
		d.c.Observe.anomaly(a)
	}
	return nil
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
	at, rate, found, err := d.c.History.Previous(ctx, h, src)
	outcome := "found"
	switch {
	case historyIncomplete(d.c.Log, h.CustomerID, err):
		// Go on without history: a SPIKE across this point may be missed.
		outcome = "incomplete"
	case err != nil:
		return err
	case found:
		d.c.Engine.Seed(ln, h.CustomerID, at, rate)
	default:
		outcome = "none"
	}
	d.c.Observe.history(outcome)
	return nil
}

// historyIncomplete reports, and logs, an error saying persist has not
// stored a customer's earlier readings (it is not running or far behind):
// the detectors then go on without them rather than stall detection.
func historyIncomplete(log *slog.Logger, customer string, err error) bool {
	if !errors.Is(err, messages.ErrHistoryIncomplete) {
		return false
	}
	log.Warn("detector state not rebuilt: persist has not stored the earlier readings", "customer_id", customer, "err", err)
	return true
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

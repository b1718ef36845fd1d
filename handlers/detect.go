package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	wmmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/heartbeat/heartbeat/handlers/rules"
	"github.com/heartbeat/heartbeat/messages"
	hbsql "github.com/heartbeat/heartbeat/sql"
)

// AnomalyStore records an anomaly and its outgoing message atomically,
// reporting false when the anomaly was already recorded.
type AnomalyStore interface {
	Write(ctx context.Context, a messages.Anomaly, topic string, msg *message.Message) (bool, error)
}

// History rebuilds a customer's state from storage: the latest reading
// before a record of the raw topic.
type History interface {
	Previous(ctx context.Context, h messages.Heartbeat, src messages.Source) (at time.Time, rate int, found bool, err error)
}

// Detect validates readings with the same validation as Persist and
// evaluates the valid ones against the rules. An anomaly's row and its
// events.anomaly.v1 message are one transaction (outbox); the customer's
// state moves on only after it commits.
type Detect struct {
	Limits messages.Limits
	Engine *rules.Engine
	Store  AnomalyStore
	// History, when set, is asked for the previous reading of a customer the
	// engine does not know (after a restart, a rebalance or an eviction).
	History      History
	AnomalyTopic string
	Now          func() time.Time
	// OnAnomaly is called for each newly recorded anomaly (metrics).
	OnAnomaly func(a messages.Anomaly)
	// OnHistory is called after each history lookup with its outcome.
	OnHistory func(outcome string)
	Logger    *slog.Logger
}

// Handle implements message.NoPublishHandlerFunc. Invalid readings are
// acked without evaluation: Persist routes them to the invalid topic, and a
// sensor fault must not also raise a clinical alarm.
func (d *Detect) Handle(msg *message.Message) error {
	now := d.Now()
	h, err := d.Limits.Validate(msg.Payload, now)
	if err != nil {
		if _, invalid := messages.AsValidationError(err); invalid {
			return nil
		}
		return err
	}
	if d.History != nil && !d.Engine.Known(h.CustomerID) {
		if err := d.restore(msg.Context(), h); err != nil {
			return err
		}
	}
	f, found, apply := d.Engine.Evaluate(h)
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
	out := message.NewMessage(a.AnomalyID, body)
	out.Metadata.Set(wmmw.CorrelationIDMetadataKey, wmmw.MessageCorrelationID(msg))
	out.Metadata.Set(messages.KeyMetadata, a.CustomerID)
	out.Metadata.Set("anomaly_type", a.Type)
	inserted, err := d.Store.Write(msg.Context(), a, d.AnomalyTopic, out)
	if err != nil {
		return err
	}
	apply()
	if inserted && d.OnAnomaly != nil {
		d.OnAnomaly(a)
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

func (d *Detect) restore(ctx context.Context, h messages.Heartbeat) error {
	src, ok := messages.SourceFromContext(ctx)
	if !ok || src.Offset < 0 {
		return nil
	}
	at, rate, found, err := d.History.Previous(ctx, h, src)
	outcome := "found"
	switch {
	case errors.Is(err, hbsql.ErrHistoryIncomplete):
		// Persist is not running or far behind: go on without history rather
		// than stall detection; a SPIKE across this point may be missed.
		outcome = "incomplete"
		if d.Logger != nil {
			d.Logger.Warn("detector state not rebuilt: persist has not stored the earlier readings", "customer_id", h.CustomerID, "err", err)
		}
	case err != nil:
		return err
	case found:
		d.Engine.Seed(h.CustomerID, at, rate)
	default:
		outcome = "none"
	}
	if d.OnHistory != nil {
		d.OnHistory(outcome)
	}
	return nil
}

package handlers

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	wmmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/heartbeat/heartbeat/handlers/rules"
	"github.com/heartbeat/heartbeat/messages"
)

// AnomalyStore records an anomaly and its outgoing message atomically,
// reporting false when the anomaly was already recorded.
type AnomalyStore interface {
	Write(ctx context.Context, a messages.Anomaly, topic string, msg *message.Message) (bool, error)
}

// Detect validates readings with the same validation as Persist and
// evaluates the valid ones against the rules. An anomaly's row and its
// events.anomaly.v1 message are one transaction (outbox); the customer's
// state moves on only after it commits.
type Detect struct {
	Limits       messages.Limits
	Engine       *rules.Engine
	Store        AnomalyStore
	AnomalyTopic string
	Now          func() time.Time
	// OnAnomaly is called for each newly recorded anomaly (metrics).
	OnAnomaly func(a messages.Anomaly)
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

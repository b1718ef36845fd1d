package middleware

import (
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	wmmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"

	"github.com/heartbeat/heartbeat/messages"
)

// InvalidEvents routes the records a handler refused as invalid (the
// batch's Refused, see [messages.Batch]) to an invalid-events topic, as
// messages.InvalidEvent envelopes, once the handler has returned nil: an
// invalid event is final and never retried. Invalid records flow one way,
// from the handler to this middleware; the handler has already finished
// with them (persist: their place in the checkpoint is committed).
type InvalidEvents struct {
	Publisher message.Publisher
	Topic     string
	Now       func() time.Time
	// NewID names a record that arrived without a correlation id.
	NewID func() string
	// OnRouted is called after an envelope is published (metrics).
	OnRouted func(handler string, class messages.Class)
}

// envelopeNamespace roots envelope ids, derived from the source record so a
// redelivered invalid record yields the same id.
var envelopeNamespace = uuid.MustParse("0b6f2f7e-5c1d-4f7a-9d7e-2a4c5b6e8f01")

// Middleware implements message.HandlerMiddleware. If publishing the
// envelopes fails, the batch's Done is moved back to the first record not
// routed, so that a split of the batch delivers it again (and every record
// after it, which the handler stores again idempotently): an envelope is
// never lost with its record acked.
func (m InvalidEvents) Middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		out, err := h(msg)
		if err != nil {
			return out, err
		}
		b := messages.AsBatch(msg)
		if b.Routed >= len(b.Refused) {
			return out, nil
		}
		if err := m.route(message.HandlerNameFromCtx(msg.Context()), b); err != nil {
			b.Done = min(b.Done, b.Refused[b.Routed].Record)
			return nil, err
		}
		return out, nil
	}
}

// route publishes the envelopes of b's refusals not yet routed in one
// Publish call, and reports each to OnRouted. An envelope's id derives from
// its record's source, so a record refused again (a redelivery) yields an
// envelope with the same id.
func (m InvalidEvents) route(handler string, b *messages.Batch) error {
	now := time.Now
	if m.Now != nil {
		now = m.Now
	}
	at := now()
	pending := b.Refused[b.Routed:]
	envs := make([]*message.Message, len(pending))
	for i, f := range pending {
		r := &b.Records[f.Record]
		src := r.Source
		body, err := messages.NewInvalidEvent(r.Value, f.Err, src, at).Marshal()
		if err != nil {
			return fmt.Errorf("encode invalid envelope: %w", err)
		}
		id := uuid.NewSHA1(envelopeNamespace, fmt.Appendf(nil, "%s/%d/%d", src.Topic, src.Partition, src.Offset)).String()
		env := message.NewMessage(id, body)
		env.Metadata.Set(wmmw.CorrelationIDMetadataKey, r.CorrelationID(m.NewID))
		if key := r.Header(messages.KeyMetadata); key != "" {
			env.Metadata.Set(messages.KeyMetadata, key)
		} else if r.Key != nil {
			env.Metadata.Set(messages.KeyMetadata, string(r.Key))
		}
		envs[i] = env
	}
	if err := m.Publisher.Publish(m.Topic, envs...); err != nil {
		return fmt.Errorf("publish to invalid topic %s: %w", m.Topic, err)
	}
	b.Routed = len(b.Refused)
	if m.OnRouted != nil {
		for _, f := range pending {
			m.OnRouted(handler, f.Err.Class)
		}
	}
	return nil
}

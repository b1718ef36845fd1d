package middleware

import (
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	wmmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"

	"github.com/heartbeat/heartbeat/messages"
)

// InvalidEvents routes events the handler refused with a
// *messages.ValidationError to an invalid-events topic, as a
// messages.InvalidEvent envelope, and acks them: an invalid event is final
// and never retried. Other errors pass through.
type InvalidEvents struct {
	Publisher message.Publisher
	Topic     string
	Now       func() time.Time
	// OnRouted is called after an envelope is published (metrics).
	OnRouted func(handler string, class messages.Class)
	// Settle, when set, is called after the envelope is published and before
	// the message is acked (persist records the offset in its checkpoint).
	// An error nacks the message; its envelope may then be published again,
	// with the same id, derived from the source record.
	Settle func(msg *message.Message) error
}

// envelopeNamespace roots envelope ids, derived from the source record so a
// redelivered invalid record yields the same id.
var envelopeNamespace = uuid.MustParse("0b6f2f7e-5c1d-4f7a-9d7e-2a4c5b6e8f01")

// Middleware implements message.HandlerMiddleware.
func (m InvalidEvents) Middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		out, err := h(msg)
		verr, ok := messages.AsValidationError(err)
		if !ok {
			return out, err
		}
		if err := m.Route([]*message.Message{msg}, []*messages.ValidationError{verr}); err != nil {
			return nil, err
		}
		if m.Settle != nil {
			if err := m.settle(msg); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
}

// Route publishes the envelope of each refused message msgs[i], refused
// for verrs[i], in one Publish call, and reports each to OnRouted. Each
// message's context must carry its messages.Source: an envelope's id
// derives from it, so a redelivered record's envelope has the same id.
func (m InvalidEvents) Route(msgs []*message.Message, verrs []*messages.ValidationError) error {
	if len(msgs) == 0 {
		return nil
	}
	now := time.Now
	if m.Now != nil {
		now = m.Now
	}
	at := now()
	envs := make([]*message.Message, len(msgs))
	for i, msg := range msgs {
		src, _ := messages.SourceFromContext(msg.Context())
		body, err := messages.NewInvalidEvent(msg.Payload, verrs[i], src, at).Marshal()
		if err != nil {
			return fmt.Errorf("encode invalid envelope: %w", err)
		}
		id := uuid.NewSHA1(envelopeNamespace, fmt.Appendf(nil, "%s/%d/%d", src.Topic, src.Partition, src.Offset)).String()
		env := message.NewMessage(id, body)
		env.Metadata.Set(wmmw.CorrelationIDMetadataKey, wmmw.MessageCorrelationID(msg))
		if key := msg.Metadata.Get(messages.KeyMetadata); key != "" {
			env.Metadata.Set(messages.KeyMetadata, key)
		}
		envs[i] = env
	}
	if err := m.Publisher.Publish(m.Topic, envs...); err != nil {
		return fmt.Errorf("publish to invalid topic %s: %w", m.Topic, err)
	}
	if m.OnRouted != nil {
		for i, msg := range msgs {
			m.OnRouted(message.HandlerNameFromCtx(msg.Context()), verrs[i].Class)
		}
	}
	return nil
}

// settle calls Settle, waiting out infrastructure failures itself: the
// envelope is already published, and failing here would have the whole
// step retried and the envelope published again for as long as the outage
// lasts.
func (m InvalidEvents) settle(msg *message.Message) error {
	delay := 100 * time.Millisecond
	for {
		err := m.Settle(msg)
		if err == nil || !IsTransient(err) || msg.Context().Err() != nil {
			return err
		}
		t := time.NewTimer(delay)
		select {
		case <-msg.Context().Done():
			t.Stop()
			return err
		case <-t.C:
		}
		delay = min(delay*2, 5*time.Second)
	}
}

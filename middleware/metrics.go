package middleware

import (
	"github.com/ThreeDotsLabs/watermill/message"
	wmmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/heartbeat/heartbeat/messages"
	"github.com/prometheus/client_golang/prometheus"
)

// Consumed counts every record a handler receives, by handler: one per
// message, or a batch message's records. A batch split after a failure is
// counted again as its records arrive one by one, as any redelivery is.
func Consumed(c *prometheus.CounterVec) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			n := 1
			if b, ok := messages.BatchOf(msg); ok {
				n = len(b.Records)
			}
			c.WithLabelValues(message.HandlerNameFromCtx(msg.Context())).Add(float64(n))
			return h(msg)
		}
	}
}

// PoisonCounter counts the messages the poison queue publishes through it,
// by the handler that poisoned them.
type PoisonCounter struct {
	message.Publisher
	Poisoned *prometheus.CounterVec // handler
}

// Publish implements message.Publisher.
func (p PoisonCounter) Publish(topic string, msgs ...*message.Message) error {
	if err := p.Publisher.Publish(topic, msgs...); err != nil {
		return err
	}
	for _, msg := range msgs {
		p.Poisoned.WithLabelValues(msg.Metadata.Get(wmmw.PoisonedHandlerKey)).Inc()
	}
	return nil
}

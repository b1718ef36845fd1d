package middleware

import (
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	wmmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heartbeat/heartbeat/messages"
)

// Source records where a message consumed through watermill-kafka came from
// (topic, partition, offset) as messages.Source in its context, unless the
// subscriber already did.
func Source(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		ctx := msg.Context()
		if _, ok := messages.SourceFromContext(ctx); !ok {
			src := messages.Source{Topic: message.SubscribeTopicFromCtx(ctx), Partition: -1, Offset: -1}
			if p, ok := kafka.MessagePartitionFromCtx(ctx); ok {
				src.Partition = p
			}
			if o, ok := kafka.MessagePartitionOffsetFromCtx(ctx); ok {
				src.Offset = o
			}
			msg.SetContext(messages.WithSource(ctx, src))
		}
		return h(msg)
	}
}

// CorrelationID gives a message that arrived without a correlation id (one
// produced by an outside client) a new one, so that everything derived from
// it — envelopes, anomalies, poison messages — can be traced back together.
// Watermill's CorrelationID middleware then copies it to produced messages.
// A batch message is left alone: its records carry their own ids, and the
// handlers give a record without one a new one.
func CorrelationID(newID func() string) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			if _, batch := messages.BatchOf(msg); !batch && wmmw.MessageCorrelationID(msg) == "" {
				wmmw.SetCorrelationID(newID(), msg)
			}
			return h(msg)
		}
	}
}

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

package middleware

import (
	"github.com/ThreeDotsLabs/watermill/message"
	wmmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/heartbeat/heartbeat/messages"
)

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

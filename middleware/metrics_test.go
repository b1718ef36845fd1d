package middleware_test

import (
	"errors"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	wmmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/middleware"
)

// TestConsumedCountsReadings: heartbeat_messages_consumed_total counts
// readings by handler — one for a single message, every record of a batch
// message — not Watermill's messages.
func TestConsumedCountsReadings(t *testing.T) {
	consumed := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "consumed"}, []string{"handler"})
	// As the subscriber delivers it: a batch message carries its batch.
	asBatchOf := func(n int) message.HandlerMiddleware {
		return func(h message.HandlerFunc) message.HandlerFunc {
			return func(msg *message.Message) ([]*message.Message, error) {
				if msg.Metadata.Get("batch") != "" {
					b := &messages.Batch{Records: make([]messages.Record, n)}
					msg.SetContext(messages.WithBatch(msg.Context(), b))
				}
				return h(msg)
			}
		}
	}
	ps := newPubSub(t)
	ok := func(*message.Message) ([]*message.Message, error) { return nil, nil }
	route(t, ps, "persist", ok, asBatchOf(3), middleware.Consumed(consumed))
	detect := newPubSub(t)
	route(t, detect, "detect", ok, middleware.Consumed(consumed))

	require.NoError(t, ps.Publish("in", message.NewMessage(uuid.NewString(), []byte("one reading"))))
	require.Equal(t, 1.0, testutil.ToFloat64(consumed.WithLabelValues("persist")))
	batch := message.NewMessage(uuid.NewString(), nil)
	batch.Metadata.Set("batch", "yes")
	require.NoError(t, ps.Publish("in", batch))
	require.Equal(t, 4.0, testutil.ToFloat64(consumed.WithLabelValues("persist")), "a batch message of 3 records counts 3")
	require.NoError(t, detect.Publish("in", message.NewMessage(uuid.NewString(), []byte("one reading"))))
	require.Equal(t, 1.0, testutil.ToFloat64(consumed.WithLabelValues("detect")))
	require.Equal(t, 4.0, testutil.ToFloat64(consumed.WithLabelValues("persist")))
}

// TestPoisonCounterCountsByHandler: heartbeat_dlq_total counts the messages
// the poison queue published, by the handler that poisoned them, and none
// it failed to publish.
func TestPoisonCounterCountsByHandler(t *testing.T) {
	poisoned := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dlq"}, []string{"handler"})
	pub := &publisher{}
	pc := middleware.PoisonCounter{Publisher: pub, Poisoned: poisoned}
	poison := func(handler string) *message.Message {
		m := message.NewMessage(uuid.NewString(), []byte("x"))
		m.Metadata.Set(wmmw.PoisonedHandlerKey, handler)
		return m
	}
	require.NoError(t, pc.Publish("events.dlq.v1", poison("persist"), poison("detect"), poison("persist")))
	require.Len(t, pub.published("events.dlq.v1"), 3)
	require.Equal(t, 2.0, testutil.ToFloat64(poisoned.WithLabelValues("persist")))
	require.Equal(t, 1.0, testutil.ToFloat64(poisoned.WithLabelValues("detect")))

	down := errors.New("broker unreachable")
	pub.setFail(down)
	require.ErrorIs(t, pc.Publish("events.dlq.v1", poison("persist")), down)
	require.Equal(t, 2.0, testutil.ToFloat64(poisoned.WithLabelValues("persist")), "a message not published is not counted")
}

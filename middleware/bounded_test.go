package middleware_test

import (
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/middleware"
)

func TestBoundedPublisherCutsOversizedPayloads(t *testing.T) {
	ps := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, watermill.NopLogger{})
	pub := middleware.BoundedPublisher{Publisher: ps, MaxBytes: 1000}
	small := message.NewMessage("a", []byte("ok"))
	big := message.NewMessage("b", []byte(strings.Repeat("x", 5000)))
	big.Metadata.Set("reason_poisoned", "too big")
	require.NoError(t, pub.Publish("dlq", small, big))

	ch, err := ps.Subscribe(t.Context(), "dlq")
	require.NoError(t, err)
	got := []*message.Message{<-ch, <-ch}
	if got[0].UUID != "a" {
		got[0], got[1] = got[1], got[0]
	}
	require.Equal(t, "ok", string(got[0].Payload))
	require.Empty(t, got[0].Metadata.Get("payload_truncated"))
	require.Equal(t, "true", got[1].Metadata.Get("payload_truncated"))
	require.Equal(t, "5000", got[1].Metadata.Get("payload_bytes"))
	require.Equal(t, "too big", got[1].Metadata.Get("reason_poisoned"))
	require.Less(t, len(got[1].Payload), 1000)
	require.True(t, strings.HasPrefix(strings.Repeat("x", 5000), string(got[1].Payload)))
}

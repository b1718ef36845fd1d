package kafka_test

import (
	"log/slog"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/app/kafka"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
)

// A detector that starts before persist's group exists asks for the
// group's progress: nothing committed yet is offset 0, not an error (which
// would fail, retry and finally poison the reading being evaluated).
func TestGroupProgressOfAGroupNotThereYet(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "events.raw.v1"))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	client, err := kafka.NewClient(c.ListenAddrs(), config.Config{}, slog.New(slog.DiscardHandler), watermill.NopLogger{})
	require.NoError(t, err)
	progress, closeProgress, err := client.GroupProgress("cg.never-joined")
	require.NoError(t, err)
	t.Cleanup(closeProgress)
	next, err := progress(t.Context(), "events.raw.v1", 1)
	require.NoError(t, err)
	require.Zero(t, next)
}

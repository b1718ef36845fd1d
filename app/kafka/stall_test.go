package kafka_test

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/app/kafka"
	"github.com/heartbeat/heartbeat/app/telemetry"
	"github.com/heartbeat/heartbeat/app/telemetry/telemetrytest"
)

// TestConsumerStallIsReported runs a real (in-process) broker and a consumer
// group member that joins, takes every partition and commits only some of
// them: the others have lag and no progress. After STALL_AFTER they are a
// stall — /healthz 503 naming the group, the partitions and their owner,
// heartbeat_consumer_stalled_partitions, one WARN line — until the member
// commits (healthy, an INFO line). Then the member leaves and records keep
// arriving: a group with lag and no member at all is a stall too.
func TestConsumerStallIsReported(t *testing.T) {
	const (
		topic = "events.raw.v1"
		group = "cg.stall-test"
		stall = 1500 * time.Millisecond
	)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, topic))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	brokers := c.ListenAddrs()

	// Ten records on each of the four partitions.
	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	t.Cleanup(prod.Close)
	produce := func(partition int32, n int) {
		for i := range n {
			require.NoError(t, prod.ProduceSync(t.Context(), &kgo.Record{Topic: topic, Partition: partition, Value: []byte(strconv.Itoa(i))}).FirstErr())
		}
	}
	for p := range int32(4) {
		produce(p, 10)
	}

	// The member: consumes, never commits by itself.
	member, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ClientID("stuck-consumer"),
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	t.Cleanup(member.Close)
	fetched := map[int32]int{}
	deadline := time.Now().Add(20 * time.Second)
	for len(fetched) < 4 || fetched[0]+fetched[1]+fetched[2]+fetched[3] < 40 {
		require.True(t, time.Now().Before(deadline), "the member fetched %v", fetched)
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		member.PollFetches(ctx).EachRecord(func(r *kgo.Record) { fetched[r.Partition]++ })
		cancel()
	}
	// Partitions 0 and 1 are done and committed; 2 and 3 not yet.
	commit := func(partitions ...int32) {
		offsets := map[int32]kgo.EpochOffset{}
		for _, p := range partitions {
			offsets[p] = kgo.EpochOffset{Epoch: -1, Offset: 10}
		}
		var cerr error
		member.CommitOffsetsSync(t.Context(), map[string]map[int32]kgo.EpochOffset{topic: offsets},
			func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, _ *kmsg.OffsetCommitResponse, err error) { cerr = err })
		require.NoError(t, cerr)
	}
	commit(0, 1)

	logs := &telemetrytest.LogBuffer{}
	client, err := kafka.NewClient(brokers, config.Config{}, slog.New(slog.DiscardHandler), watermill.NopLogger{})
	require.NoError(t, err)
	watch := kafka.LagWatch{Groups: []string{group}, Interval: 100 * time.Millisecond, StallAfter: stall,
		Registry: telemetry.NewRegistry(), Health: telemetry.NewHealth(), Log: slog.New(slog.NewTextHandler(logs, nil))}
	url := telemetrytest.ServeHealth(t, watch.Registry.(*prometheus.Registry), watch.Health)
	ctx, cancel := context.WithCancel(context.Background())
	lagDone := make(chan error, 1)
	go func() { lagDone <- client.WatchLag(ctx, watch) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-lagDone)
	})

	// Lag alone is not a stall: healthy until STALL_AFTER has passed.
	started := time.Now()
	body := telemetrytest.WaitHealthz(t, url, http.StatusServiceUnavailable, 20*time.Second)
	require.GreaterOrEqual(t, time.Since(started), stall, "reported before STALL_AFTER")
	t.Logf("/healthz: %s", body)
	require.Contains(t, body, "consumer group "+group)
	require.Contains(t, body, "partitions "+topic+":2,3 have 20 records to consume")
	require.Contains(t, body, "client stuck-consumer")
	require.NotContains(t, body, topic+":0")
	v, ok := telemetrytest.Gauge(t, watch.Registry.(*prometheus.Registry), "heartbeat_consumer_stalled_partitions", map[string]string{"group": group})
	require.True(t, ok)
	require.Equal(t, 2.0, v)
	warn := logs.Lines("level=WARN", "consumer group stalled", "group="+group)
	require.Len(t, warn, 1, logs.String())
	require.Contains(t, warn[0], "partitions="+topic+":2,3")
	require.Contains(t, warn[0], "client stuck-consumer")
	require.Contains(t, warn[0], "lag=20")

	// Progress: the member commits what it read.
	commit(2, 3)
	require.Equal(t, "ok\n", telemetrytest.WaitHealthz(t, url, http.StatusOK, 20*time.Second))
	v, _ = telemetrytest.Gauge(t, watch.Registry.(*prometheus.Registry), "heartbeat_consumer_stalled_partitions", map[string]string{"group": group})
	require.Zero(t, v)
	require.Len(t, logs.Lines("level=INFO", "consumer group progressing again", "group="+group), 1, logs.String())

	// The consumers stop (the group has no member) while records arrive.
	member.Close()
	produce(1, 5)
	body = telemetrytest.WaitHealthz(t, url, http.StatusServiceUnavailable, 30*time.Second)
	t.Logf("/healthz: %s", body)
	require.Contains(t, body, "partitions "+topic+":1 have 5 records to consume")
	require.Contains(t, body, "no member (group Empty)")
	require.Len(t, logs.Lines("level=WARN", "consumer group stalled", "no member"), 1, logs.String())
}

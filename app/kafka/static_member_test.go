package kafka_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/sethvargo/go-envconfig"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/app/kafka"
	"github.com/heartbeat/heartbeat/messages"
)

// replica is one process's consumer: an App configured from env and the
// windowed subscriber persist uses, which can be killed like kill -9.
type replica struct {
	proc *process
	sub  message.Subscriber

	mu   sync.Mutex
	seen map[int32]int // records received by partition
}

func startReplica(t *testing.T, ctx context.Context, env map[string]string, group string) *replica {
	t.Helper()
	cfg, err := load(env)
	require.NoError(t, err)
	client, err := kafka.NewClient(cfg.Kafka.BootstrapServers, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), watermill.NopLogger{})
	require.NoError(t, err)
	r := &replica{proc: &process{name: env["KAFKA_CLIENT_ID"]}, seen: map[int32]int{}}
	r.sub, err = client.With(kgo.Dialer(r.proc.dial)).NewWindowedSubscriber(group)
	require.NoError(t, err)
	ch, err := r.sub.Subscribe(ctx, cfg.Kafka.TopicRaw)
	require.NoError(t, err)
	t.Cleanup(func() {
		if r.proc.dead {
			go r.sub.Close() // it cannot reach the broker any more
			return
		}
		require.NoError(t, r.sub.Close())
	})
	go func() {
		for m := range ch {
			if b, ok := messages.BatchOf(m); ok {
				r.mu.Lock()
				for _, rec := range b.Records {
					r.seen[rec.Source.Partition]++
				}
				r.mu.Unlock()
			}
			m.Ack()
		}
	}()
	return r
}

func (r *replica) received(partition int32) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[partition]
}

// TestStaticMemberTakesItsPartitionsBack: with KAFKA_GROUP_INSTANCE_ID, a
// replica killed and started again takes back its own partitions at once:
// the group stays Stable, the other replica keeps its membership and its
// partitions and never rejoins, and records of those partitions reach the
// restarted replica.
func TestStaticMemberTakesItsPartitionsBack(t *testing.T) {
	b, err := kafka.StartBroker("127.0.0.1:0", "", slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	t.Cleanup(b.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const group = "cg.static"
	env := func(instance string) map[string]string {
		return map[string]string{"ROUTER_HANDLERS": "simulate", "KAFKA_BOOTSTRAP_SERVERS": b.ListenAddrs()[0],
			"KAFKA_CLIENT_ID": instance, "KAFKA_GROUP_INSTANCE_ID": instance}
	}
	cfg, err := load(env("replica-a"))
	require.NoError(t, err)
	require.Equal(t, "replica-a", cfg.Kafka.GroupInstanceID)
	topic, partitions := cfg.Kafka.TopicRaw, cfg.Kafka.PartitionsRaw
	require.NoError(t, kafka.EnsureTopics(ctx, b.ListenAddrs(), nil, -1, kafka.Topics(cfg.Kafka), slog.New(slog.DiscardHandler)))

	cl, err := kgo.NewClient(kgo.SeedBrokers(b.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)

	a := startReplica(t, ctx, env("replica-a"), group)
	startReplica(t, ctx, env("replica-b"), group)
	before, err := waitGroup(adm, group, topic, 30*time.Second, "both replicas sharing the partitions",
		func(v groupView) bool { return ownsAll(v, partitions, "replica-a", "replica-b") })
	require.NoError(t, err)

	// From here on, any JoinGroup of the other replica would be a
	// rebalance it took part in.
	var mu sync.Mutex
	otherJoins := 0
	b.ControlKey(int16(kmsg.JoinGroup), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if j := req.(*kmsg.JoinGroupRequest); j.Group == group && (j.InstanceID != nil && *j.InstanceID == "replica-b") {
			mu.Lock()
			otherJoins++
			mu.Unlock()
		}
		return nil, nil, false
	})
	var states []string
	watching := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-watching:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if v, err := describe(adm, group, topic); err == nil && (len(states) == 0 || states[len(states)-1] != v.state) {
				states = append(states, v.state)
			}
		}
	}()

	a.proc.kill()
	restarted := time.Now()
	a2 := startReplica(t, ctx, env("replica-a"), group)
	after, err := waitGroup(adm, group, topic, 30*time.Second, "the restarted replica holding its partitions again",
		func(v groupView) bool {
			return ownsAll(v, partitions, "replica-a", "replica-b") && v.members["replica-a"].id != before.members["replica-a"].id
		})
	require.NoError(t, err)
	took := time.Since(restarted)

	// Records of the restarted replica's partitions reach it.
	mine := after.members["replica-a"].assigned
	for _, p := range mine {
		require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: p, Value: []byte(fmt.Sprintf("p%d", p))}).FirstErr())
	}
	for _, p := range mine {
		require.Eventually(t, func() bool { return a2.received(p) > 0 }, 30*time.Second, 10*time.Millisecond,
			"the restarted replica consumes partition %d", p)
	}
	close(watching)
	<-watched

	require.Equal(t, before.members["replica-a"].assigned, mine, "the restarted replica got its own partitions back")
	require.Equal(t, before.members["replica-b"], after.members["replica-b"], "the other replica kept its membership and partitions")
	mu.Lock()
	t.Logf("states %v", states)
	require.Zero(t, otherJoins, "the other replica did not rejoin: no rebalance")
	mu.Unlock()
	require.Equal(t, []string{"Stable"}, slices.Compact(states), "the group stayed Stable through the restart")
	t.Logf("restarted replica back in the group with partitions %v in %s; group states seen: %v", mine, took.Round(time.Millisecond), states)
}

func load(env map[string]string) (config.Config, error) {
	return config.LoadConfig(context.Background(), envconfig.MapLookuper(env))
}

package sql_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	hbsql "github.com/heartbeat/heartbeat/sql"
	"github.com/heartbeat/heartbeat/sql/pgtest"
)

// gatedPublisher records what reaches Kafka's side of the forwarder; its
// first publish waits until the test opens the gate.
type gatedPublisher struct {
	arrived chan struct{}
	gate    chan struct{}
	once    sync.Once

	mu    sync.Mutex
	count map[string]int
}

func (p *gatedPublisher) Publish(_ string, msgs ...*message.Message) error {
	p.once.Do(func() { close(p.arrived); <-p.gate })
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range msgs {
		p.count[m.UUID]++
	}
	return nil
}

func (p *gatedPublisher) Close() error { return nil }

func (p *gatedPublisher) snapshot() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.count))
	for k, v := range p.count {
		out[k] = v
	}
	return out
}

// TestForwarderPublishesOnceWhenItsProgressIsLost: the forwarder has
// published a batch of the outbox when PostgreSQL drops its connection, so
// the batch's progress is never recorded and the batch is selected again;
// each message still reaches Kafka once.
func TestForwarderPublishesOnceWhenItsProgressIsLost(t *testing.T) {
	url, pool := pgtest.Database(t, "hb_fwd_")
	ctx := context.Background()
	require.NoError(t, hbsql.InitOutbox(ctx, pool))

	const topic, n = "events.anomaly.v1", 5
	var ids []string
	require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		sqlPub, err := wmsql.NewPublisher(wmsql.TxFromPgx(tx), wmsql.PublisherConfig{SchemaAdapter: hbsql.OutboxSchema()}, watermill.NopLogger{})
		if err != nil {
			return err
		}
		pub := forwarder.NewPublisher(sqlPub, forwarder.PublisherConfig{ForwarderTopic: hbsql.OutboxTopic})
		for range n {
			m := message.NewMessage(watermill.NewUUID(), []byte(`{}`))
			ids = append(ids, m.UUID)
			if err := pub.Publish(topic, m); err != nil {
				return err
			}
		}
		return nil
	}))

	// The forwarder's own pool, named so that its connections can be cut.
	const appName = "hb-forwarder-under-test"
	pcfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	pcfg.ConnConfig.RuntimeParams["application_name"] = appName
	fpool, err := pgxpool.NewWithConfig(ctx, pcfg)
	require.NoError(t, err)
	t.Cleanup(fpool.Close)

	out := &gatedPublisher{arrived: make(chan struct{}), gate: make(chan struct{}), count: map[string]int{}}
	fwd, err := hbsql.NewForwarder(ctx, fpool, out, hbsql.ForwarderConfig{
		Poll: 10 * time.Millisecond, ShutdownTimeout: 2 * time.Second,
		Log: slog.New(slog.DiscardHandler), WLog: watermill.NopLogger{},
	})
	require.NoError(t, err)
	runCtx, stop := context.WithCancel(ctx)
	writersDone := make(chan struct{})
	close(writersDone)
	done := make(chan error, 1)
	go func() { done <- fwd.Run(runCtx, writersDone) }()
	t.Cleanup(func() {
		stop()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("forwarder did not stop")
		}
	})

	select {
	case <-out.arrived:
	case <-time.After(30 * time.Second):
		t.Fatal("the forwarder published nothing")
	}
	// The batch is in flight inside the subscriber's transaction: cut it.
	var cut int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = $1 AND datname = current_database()) t`, appName).Scan(&cut))
	require.Positive(t, cut, "no forwarder connection to cut")
	close(out.gate)

	// End state: the outbox forwarded (its progress recorded on a new
	// connection), and every message published exactly once.
	deadline := time.Now().Add(30 * time.Second)
	for {
		pending, err := hbsql.OutboxPending(ctx, pool)
		require.NoError(t, err)
		if pending == 0 && len(out.snapshot()) == n {
			break
		}
		require.True(t, time.Now().Before(deadline), "outbox not forwarded: %d pending, published %v", pending, out.snapshot())
		time.Sleep(20 * time.Millisecond)
	}
	got := out.snapshot()
	for _, id := range ids {
		require.Equal(t, 1, got[id], "message %s published %d times (all: %v)", id, got[id], got)
	}
}

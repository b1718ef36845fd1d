package windowed_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/app/kafka/windowed"
	"github.com/heartbeat/heartbeat/messages"
)

// gate is a BeforeCommit that makes durable what was acknowledged before
// it began, as persist writes the history of the readings it stored, and
// fails at random or while told to.
type gate struct {
	mu      sync.Mutex
	acked   map[messages.Source]bool // noted before the ack
	durable map[messages.Source]bool
	calls   atomic.Int64
	fail    atomic.Bool
	random  atomic.Bool
}

func newGate() *gate {
	return &gate{acked: map[messages.Source]bool{}, durable: map[messages.Source]bool{}}
}

func (g *gate) beforeCommit(context.Context) error {
	g.calls.Add(1)
	if g.fail.Load() || g.random.Load() && rand.IntN(2) == 0 {
		return errors.New("history unavailable")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for src := range g.acked {
		g.durable[src] = true
	}
	return nil
}

func (g *gate) note(src messages.Source) {
	g.mu.Lock()
	g.acked[src] = true
	g.mu.Unlock()
}

// notDurable lists the records below committed offsets that the gate has
// not made durable.
func (g *gate) notDurable(committed map[int32]int64) []messages.Source {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []messages.Source
	for p, next := range committed {
		for o := range max(next, 0) {
			if src := (messages.Source{Topic: topic, Partition: p, Offset: o}); !g.durable[src] {
				out = append(out, src)
			}
		}
	}
	return out
}

// Offsets are committed only past records BeforeCommit made durable: never
// while it fails, however the acks and its failures interleave, and up to
// the end once it succeeds; a close commits only after it succeeded.
func TestSubscriber_BeforeCommitGatesCommits(t *testing.T) {
	c := newCluster(t)
	parts := []int32{0, 1, 2, 3}
	c.produce(t, 300, parts...)
	g := newGate()
	g.fail.Store(true)
	_, ch := subscribe(t, c, "gated", func(cfg *windowed.Config) { cfg.BeforeCommit = g.beforeCommit })

	ackSome := func(n int) {
		for range n {
			msg := receive(t, ch)
			g.note(source(t, msg))
			msg.Ack()
		}
	}
	ackSome(200)
	calls := g.calls.Load()
	require.Eventually(t, func() bool { return g.calls.Load() >= calls+3 }, waitFor, tick, "BeforeCommit runs while it fails")
	for p, o := range c.committed(t, "gated") {
		require.Equal(t, int64(-1), o, "partition %d committed while BeforeCommit failed", p)
	}

	// Failing at random while records are acked: whatever is committed
	// is durable.
	g.fail.Store(false)
	g.random.Store(true)
	for range 10 {
		ackSome(100)
		require.Empty(t, g.notDurable(c.committed(t, "gated")))
	}
	g.random.Store(false)
	end := c.endOffsets(t)
	want := map[int32]int64{}
	for _, p := range parts {
		want[p] = end[p]
	}
	c.requireCommitted(t, "gated", want)
	require.Empty(t, g.notDurable(c.committed(t, "gated")))

	// Only a close commits now; it waits for BeforeCommit.
	g2 := newGate()
	closing, ch := subscribe(t, c, "gated-close", func(cfg *windowed.Config) {
		cfg.BeforeCommit, cfg.CommitInterval = g2.beforeCommit, time.Hour
	})
	for range 100 {
		msg := receive(t, ch)
		g2.note(source(t, msg))
		msg.Ack()
	}
	require.NoError(t, closing.Close())
	require.Equal(t, int64(1), g2.calls.Load(), "once, at close")
	committed := c.committed(t, "gated-close")
	var total int64
	for _, o := range committed {
		total += max(o, 0)
	}
	require.Equal(t, int64(100), total, "close commits what was acked")
	require.Empty(t, g2.notDurable(committed))
}

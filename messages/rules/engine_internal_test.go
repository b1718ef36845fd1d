package rules

// An internal test: eviction is measured against the engine's clock, which
// only this package can replace.

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/messages"
)

type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time          { return c.now }
func (c *fakeClock) Advance(d time.Duration) { c.now = c.now.Add(d) }

func newTestEngine(clock *fakeClock) *Engine {
	e := NewEngine(DefaultThresholds())
	e.now = clock.Now
	return e
}

func record(t *testing.T, e *Engine, customer string, at time.Time, rate int) (Finding, bool) {
	t.Helper()
	f, found, apply := e.Evaluate(Lane{}, messages.Heartbeat{EventID: customer, CustomerID: customer, Timestamp: at, HeartRate: rate})
	apply()
	return f, found
}

func TestEvict(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
	e := newTestEngine(clock)
	// Event time is independent of the wall clock used for idleness.
	eventTime := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)

	record(t, e, "idle-1", eventTime, 70)
	record(t, e, "idle-2", eventTime, 70)
	clock.Advance(6 * time.Minute)
	record(t, e, "boundary", eventTime, 70)
	clock.Advance(time.Minute)
	record(t, e, "active", eventTime, 70)
	require.Equal(t, 4, e.Customers())

	require.Equal(t, 2, e.Evict(5*time.Minute), "seen 7m ago")
	require.Equal(t, 2, e.Customers())
	require.Zero(t, e.Evict(time.Minute), "seen exactly 1m ago is not idle for more than 1m")
	require.Equal(t, 1, e.Evict(time.Minute-time.Nanosecond))
	require.Equal(t, 1, e.Customers())

	f, found := record(t, e, "idle-1", eventTime.Add(time.Second), 120)
	require.False(t, found, "an evicted customer starts again without a previous rate, got %+v", f)
	f, found = record(t, e, "active", eventTime.Add(time.Second), 120)
	require.True(t, found)
	require.Equal(t, messages.Spike, f.Rule)
}

func TestEvictRefreshedByApply(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
	e := newTestEngine(clock)
	at := clock.now

	record(t, e, "a", at, 70)
	clock.Advance(10 * time.Minute)
	record(t, e, "a", at.Add(time.Second), 72)
	require.Zero(t, e.Evict(5*time.Minute))

	_, _, apply := e.Evaluate(Lane{}, messages.Heartbeat{CustomerID: "a", Timestamp: at.Add(2 * time.Second), HeartRate: 74})
	clock.Advance(10 * time.Minute)
	_ = apply // never applied: an evaluation alone does not keep a customer alive
	require.Equal(t, 1, e.Evict(5*time.Minute))
	require.Zero(t, e.Customers())
}

func TestEvictEmpty(t *testing.T) {
	e := newTestEngine(&fakeClock{now: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)})
	require.Zero(t, e.Evict(0))
}

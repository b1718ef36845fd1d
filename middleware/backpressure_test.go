package middleware_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/app/telemetry/telemetrytest"
	"github.com/heartbeat/heartbeat/middleware"
)

func newBackpressure(log *telemetrytest.LogBuffer) *middleware.Backpressure {
	return &middleware.Backpressure{InitialInterval: time.Millisecond, MaxInterval: 2 * time.Millisecond,
		Logger:   slog.New(slog.NewTextHandler(log, nil)),
		Failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "failures"}, []string{"handler"}),
		Paused:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "paused"}, []string{"handler"})}
}

var refused = middleware.MarkTransient(errors.New("dial tcp 127.0.0.1:5432: connect: connection refused"))

// An outage is waited out: the handler is tried again, as long as it takes,
// until it succeeds; every failure is counted, the pause is logged once and
// its length added up.
func TestBackpressureWaitsOutAnOutage(t *testing.T) {
	var log telemetrytest.LogBuffer
	bp := newBackpressure(&log)
	const outage = 5
	calls := 0
	_, err := bp.Middleware(func(*message.Message) ([]*message.Message, error) {
		calls++
		if calls <= outage {
			return nil, refused
		}
		return nil, nil
	})(message.NewMessage(uuid.NewString(), nil))
	require.NoError(t, err)
	require.Equal(t, outage+1, calls)
	require.Equal(t, float64(outage), testutil.ToFloat64(bp.Failures.WithLabelValues("")))
	require.Positive(t, testutil.ToFloat64(bp.Paused.WithLabelValues("")))
	require.Len(t, log.Lines("pausing consumption until it recovers"), 1, log.Lines())
	require.Len(t, log.Lines("infrastructure recovered, consumption resumed"), 1, log.Lines())
}

// A failure of the message's own is not the infrastructure's: returned at
// once, for Retry and the poison queue, without a pause.
func TestBackpressurePassesOtherFailuresOn(t *testing.T) {
	var log telemetrytest.LogBuffer
	bp := newBackpressure(&log)
	bad := errors.New("value too long")
	calls := 0
	_, err := bp.Middleware(func(*message.Message) ([]*message.Message, error) { calls++; return nil, bad })(message.NewMessage(uuid.NewString(), nil))
	require.Same(t, bad, err)
	require.Equal(t, 1, calls)
	require.Zero(t, testutil.ToFloat64(bp.Failures.WithLabelValues("")))
	require.Empty(t, log.Lines())
}

// At shutdown (the message's context ends) it stops waiting and returns
// the error: the message is redelivered later, neither acked nor poisoned.
func TestBackpressureStopsWaitingAtShutdown(t *testing.T) {
	var log telemetrytest.LogBuffer
	bp := newBackpressure(&log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msg := message.NewMessage(uuid.NewString(), nil)
	msg.SetContext(ctx)
	calls := 0
	_, err := bp.Middleware(func(*message.Message) ([]*message.Message, error) {
		calls++
		if calls == 3 {
			cancel()
		}
		return nil, refused
	})(msg)
	require.ErrorIs(t, err, refused)
	require.Equal(t, 3, calls)
	require.Len(t, log.Lines("stopped waiting for infrastructure"), 1, log.Lines())
	require.Positive(t, testutil.ToFloat64(bp.Paused.WithLabelValues("")))
}

// Many messages waiting out one outage make one pause: logged once when the
// first starts waiting, once when the last stops.
func TestBackpressureOneOutageOnePause(t *testing.T) {
	var log telemetrytest.LogBuffer
	bp := newBackpressure(&log)
	var mu sync.Mutex
	calls := map[string]int{}
	over := false
	h := bp.Middleware(func(msg *message.Message) ([]*message.Message, error) {
		mu.Lock()
		defer mu.Unlock()
		calls[msg.UUID]++
		// The outage ends once both messages are waiting: each has been
		// tried again after its first failure.
		if !over && len(calls) == 2 && calls["a"] >= 2 && calls["b"] >= 2 {
			over = true
		}
		if over {
			return nil, nil
		}
		return nil, refused
	})
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, id := range []string{"a", "b"} {
		wg.Add(1)
		go func() { defer wg.Done(); _, errs[i] = h(message.NewMessage(id, nil)) }()
	}
	wg.Wait()
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	require.Len(t, log.Lines("pausing consumption"), 1, log.Lines())
	require.Len(t, log.Lines("consumption resumed"), 1, log.Lines())
}

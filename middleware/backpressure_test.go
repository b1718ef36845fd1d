package middleware_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/middleware"
)

// syncBuffer is a log destination safe for concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newBackpressure(log *syncBuffer) *middleware.Backpressure {
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
	var log syncBuffer
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
	require.Equal(t, 1, strings.Count(log.String(), "pausing consumption until it recovers"), log.String())
	require.Equal(t, 1, strings.Count(log.String(), "infrastructure recovered, consumption resumed"), log.String())
}

// A failure of the message's own is not the infrastructure's: returned at
// once, for Retry and the poison queue, without a pause.
func TestBackpressurePassesOtherFailuresOn(t *testing.T) {
	var log syncBuffer
	bp := newBackpressure(&log)
	bad := errors.New("value too long")
	calls := 0
	_, err := bp.Middleware(func(*message.Message) ([]*message.Message, error) { calls++; return nil, bad })(message.NewMessage(uuid.NewString(), nil))
	require.Same(t, bad, err)
	require.Equal(t, 1, calls)
	require.Zero(t, testutil.ToFloat64(bp.Failures.WithLabelValues("")))
	require.Empty(t, log.String())
}

// At shutdown (the message's context ends) it stops waiting and returns
// the error: the message is redelivered later, neither acked nor poisoned.
func TestBackpressureStopsWaitingAtShutdown(t *testing.T) {
	var log syncBuffer
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
	require.Contains(t, log.String(), "stopped waiting for infrastructure")
	require.Positive(t, testutil.ToFloat64(bp.Paused.WithLabelValues("")))
}

// Many messages waiting out one outage make one pause: logged once when the
// first starts waiting, once when the last stops.
func TestBackpressureOneOutageOnePause(t *testing.T) {
	var log syncBuffer
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
	require.Equal(t, 1, strings.Count(log.String(), "pausing consumption"), log.String())
	require.Equal(t, 1, strings.Count(log.String(), "consumption resumed"), log.String())
}

package handlers_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/handlers"
)

type recorder struct {
	mu      sync.Mutex
	batches [][]int
	fail    func([]int) error
}

func (r *recorder) write(_ context.Context, items []int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		if err := r.fail(items); err != nil {
			return err
		}
	}
	r.batches = append(r.batches, append([]int(nil), items...))
	return nil
}

func submitAll(t *testing.T, b *handlers.Batcher[int], n int) []error {
	t.Helper()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = b.Submit(context.Background(), i) }()
	}
	wg.Wait()
	return errs
}

func TestBatcherFillsBatchesBySize(t *testing.T) {
	r := &recorder{}
	// A long timeout: only the size can close a batch quickly.
	b := handlers.NewBatcher(handlers.BatcherConfig[int]{Size: 10, Timeout: time.Minute, Writers: 1}, r.write)
	defer b.Close(context.Background())
	for _, err := range submitAll(t, b, 30) {
		require.NoError(t, err)
	}
	require.Len(t, r.batches, 3)
	seen := map[int]bool{}
	for _, batch := range r.batches {
		require.Len(t, batch, 10)
		for _, i := range batch {
			seen[i] = true
		}
	}
	require.Len(t, seen, 30)
}

func TestBatcherFlushesOnTimeout(t *testing.T) {
	r := &recorder{}
	b := handlers.NewBatcher(handlers.BatcherConfig[int]{Size: 1000, Timeout: 5 * time.Millisecond, Writers: 2}, r.write)
	defer b.Close(context.Background())
	require.NoError(t, b.Submit(context.Background(), 7))
	require.Equal(t, [][]int{{7}}, r.batches)
}

func TestBatcherIsolatesTheBadItem(t *testing.T) {
	r := &recorder{fail: func(items []int) error {
		for _, i := range items {
			if i == 3 {
				return errors.New("value out of range for smallint")
			}
		}
		return nil
	}}
	b := handlers.NewBatcher(handlers.BatcherConfig[int]{Size: 8, Timeout: time.Minute, Writers: 1,
		Isolate: func(error) bool { return true }}, r.write)
	defer b.Close(context.Background())
	errs := submitAll(t, b, 8)
	for i, err := range errs {
		if i == 3 {
			require.ErrorContains(t, err, "out of range")
		} else {
			require.NoError(t, err, "item %d fails with the bad one only if not isolated", i)
		}
	}
}

func TestBatcherReportsTransientFailuresToEveryItem(t *testing.T) {
	outage := errors.New("connection refused")
	r := &recorder{fail: func([]int) error { return outage }}
	b := handlers.NewBatcher(handlers.BatcherConfig[int]{Size: 4, Timeout: time.Minute, Writers: 1,
		Isolate: func(err error) bool { return !errors.Is(err, outage) }}, r.write)
	defer b.Close(context.Background())
	for _, err := range submitAll(t, b, 4) {
		require.ErrorIs(t, err, outage)
	}
}

func TestBatcherRecoversPanics(t *testing.T) {
	b := handlers.NewBatcher(handlers.BatcherConfig[int]{Size: 1, Timeout: time.Millisecond, Writers: 1},
		func(context.Context, []int) error { panic("boom") })
	defer b.Close(context.Background())
	require.ErrorContains(t, b.Submit(context.Background(), 1), "panic writing batch of 1: boom")
	require.ErrorContains(t, b.Submit(context.Background(), 2), "boom", "the writer survives")
}

func TestBatcherCloseWaitsForInFlightWrites(t *testing.T) {
	writing, release := make(chan struct{}), make(chan struct{})
	b := handlers.NewBatcher(handlers.BatcherConfig[int]{Size: 1, Timeout: time.Millisecond, Writers: 1},
		func(context.Context, []int) error { close(writing); <-release; return nil })
	done := make(chan error, 1)
	go func() { done <- b.Submit(context.Background(), 1) }()
	<-writing
	closed := make(chan struct{})
	go func() { b.Close(context.Background()); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned while a batch was being written")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	<-closed
	require.NoError(t, <-done, "the in-flight batch committed")
	require.ErrorIs(t, b.Submit(context.Background(), 2), handlers.ErrBatcherClosed)
}

// With Order, the Submits waiting for a writer go into batches lowest
// first: persist writes the oldest readings first.
func TestBatcherTakesTheLowestOrderFirst(t *testing.T) {
	r := &recorder{}
	first, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	b := handlers.NewBatcher(handlers.BatcherConfig[int]{Size: 2, Timeout: time.Minute, Writers: 1,
		Order: func(items []int) int64 { return int64(items[0]) }, MaxDelay: time.Hour},
		func(ctx context.Context, items []int) error {
			once.Do(func() { close(first); <-release })
			return r.write(ctx, items)
		})
	defer b.Close(context.Background())

	// The writer is busy with the first batch while the others queue up.
	errs := make(chan error, 7)
	go func() { errs <- b.SubmitAll(context.Background(), []int{100, 101}) }()
	<-first
	for _, v := range []int{50, 10, 40, 20, 30, 60} {
		go func() { errs <- b.Submit(context.Background(), v) }()
	}
	require.Eventually(t, func() bool { return b.Waiting() == 6 }, 5*time.Second, time.Millisecond)
	close(release)
	for range 7 {
		require.NoError(t, <-errs)
	}
	require.Equal(t, [][]int{{100, 101}, {10, 20}, {30, 40}, {50, 60}}, r.batches)
}

// A Submit waiting longer than MaxDelay goes before lower ones, so that
// a stream of old readings cannot hold recent ones back.
func TestBatcherTakesOverdueSubmitsFirst(t *testing.T) {
	r := &recorder{}
	first, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	const maxDelay = 50 * time.Millisecond
	b := handlers.NewBatcher(handlers.BatcherConfig[int]{Size: 1, Timeout: time.Minute, Writers: 1,
		Order: func(items []int) int64 { return int64(items[0]) }, MaxDelay: maxDelay},
		func(ctx context.Context, items []int) error {
			once.Do(func() { close(first); <-release })
			return r.write(ctx, items)
		})
	defer b.Close(context.Background())

	errs := make(chan error, 4)
	go func() { errs <- b.Submit(context.Background(), 0) }()
	<-first
	go func() { errs <- b.Submit(context.Background(), 90) }()
	require.Eventually(t, func() bool { return b.Waiting() == 1 }, 5*time.Second, time.Millisecond)
	waiting := time.Now() // 90 was submitted before
	require.Eventually(t, func() bool { return time.Since(waiting) > maxDelay }, 5*time.Second, time.Millisecond)
	for _, v := range []int{20, 10} {
		go func() { errs <- b.Submit(context.Background(), v) }()
	}
	require.Eventually(t, func() bool { return b.Waiting() == 3 }, 5*time.Second, time.Millisecond)
	close(release)
	for range 4 {
		require.NoError(t, <-errs)
	}
	require.Len(t, r.batches, 4)
	require.Equal(t, []int{90}, r.batches[1], "the overdue Submit goes before the lower ones")
	require.ElementsMatch(t, [][]int{{10}, {20}}, r.batches[2:])
}

// Close writes every Submit still waiting, ordered or not.
func TestBatcherCloseWritesWhatWaits(t *testing.T) {
	for _, order := range []func([]int) int64{nil, func(items []int) int64 { return -int64(items[0]) }} {
		r := &recorder{}
		b := handlers.NewBatcher(handlers.BatcherConfig[int]{Size: 1000, Timeout: time.Hour, Writers: 2, Order: order, MaxDelay: time.Hour}, r.write)
		errs := make(chan error, 50)
		for i := range 50 {
			go func() { errs <- b.Submit(context.Background(), i) }()
		}
		require.Eventually(t, func() bool { return b.Waiting() == 50 }, 5*time.Second, time.Millisecond)
		b.Close(context.Background())
		for range 50 {
			require.NoError(t, <-errs)
		}
		require.Len(t, r.batches, 1, "one batch: the timeout never came")
		require.Len(t, r.batches[0], 50)
	}
}

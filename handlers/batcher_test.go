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
	b := handlers.NewBatcher(handlers.BatcherConfig{Size: 10, Timeout: time.Minute, Writers: 1}, r.write)
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
	b := handlers.NewBatcher(handlers.BatcherConfig{Size: 1000, Timeout: 5 * time.Millisecond, Writers: 2}, r.write)
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
	b := handlers.NewBatcher(handlers.BatcherConfig{Size: 8, Timeout: time.Minute, Writers: 1,
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
	b := handlers.NewBatcher(handlers.BatcherConfig{Size: 4, Timeout: time.Minute, Writers: 1,
		Isolate: func(err error) bool { return !errors.Is(err, outage) }}, r.write)
	defer b.Close(context.Background())
	for _, err := range submitAll(t, b, 4) {
		require.ErrorIs(t, err, outage)
	}
}

func TestBatcherRecoversPanics(t *testing.T) {
	b := handlers.NewBatcher(handlers.BatcherConfig{Size: 1, Timeout: time.Millisecond, Writers: 1},
		func(context.Context, []int) error { panic("boom") })
	defer b.Close(context.Background())
	require.ErrorContains(t, b.Submit(context.Background(), 1), "panic writing batch of 1: boom")
	require.ErrorContains(t, b.Submit(context.Background(), 2), "boom", "the writer survives")
}

func TestBatcherCloseWaitsForInFlightWrites(t *testing.T) {
	writing, release := make(chan struct{}), make(chan struct{})
	b := handlers.NewBatcher(handlers.BatcherConfig{Size: 1, Timeout: time.Millisecond, Writers: 1},
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

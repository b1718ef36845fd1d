package handlers

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"
)

// ErrBatcherClosed is returned by Submit after Close.
var ErrBatcherClosed = errors.New("batcher closed")

// WriteFunc writes one batch in one transaction.
type WriteFunc[T any] func(ctx context.Context, items []T) error

// BatcherConfig tunes a Batcher.
type BatcherConfig struct {
	// Size is the most items in one batch.
	Size int
	// Timeout is how long a batch waits for more items after its first.
	Timeout time.Duration
	// Writers is how many batches may be written at once (connections).
	Writers int
	// Isolate, when it reports true for a batch's error, retries the batch
	// one Submit's items at a time, so that one bad item fails alone (or
	// with the items submitted together with it) instead of its whole batch.
	Isolate func(error) bool
}

// pending is one Submit's items: written in one batch, failing or
// succeeding together.
type pending[T any] struct {
	items []T
	done  chan error
}

// Batcher gathers items submitted by concurrent handlers into batches by size
// and time and writes them on several writers. Submit returns only once the
// item's batch has committed (or failed), so a handler acks a message only
// after its row is durable.
type Batcher[T any] struct {
	cfg   BatcherConfig
	write WriteFunc[T]
	in    chan pending[T]

	mu     sync.RWMutex
	closed bool
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewBatcher starts cfg.Writers writers calling write.
func NewBatcher[T any](cfg BatcherConfig, write WriteFunc[T]) *Batcher[T] {
	cfg.Size = max(cfg.Size, 1)
	cfg.Writers = max(cfg.Writers, 1)
	ctx, cancel := context.WithCancel(context.Background())
	b := &Batcher[T]{cfg: cfg, write: write, in: make(chan pending[T], cfg.Size*cfg.Writers), ctx: ctx, cancel: cancel}
	for range cfg.Writers {
		b.wg.Add(1)
		go b.run()
	}
	return b
}

// Submit adds item to a batch and waits for that batch's result. If ctx
// ends first, Submit returns ctx's error; the batch may still commit, which
// is safe because writes are idempotent.
func (b *Batcher[T]) Submit(ctx context.Context, item T) error {
	return b.SubmitAll(ctx, []T{item})
}

// SubmitAll adds items to one batch, together, and waits for that batch's
// result, as Submit. When Isolate retries a failed batch piece by piece,
// items are one piece: they fail or commit together.
func (b *Batcher[T]) SubmitAll(ctx context.Context, items []T) error {
	if len(items) == 0 {
		return nil
	}
	p := pending[T]{items: items, done: make(chan error, 1)}
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return ErrBatcherClosed
	}
	select {
	case b.in <- p:
		b.mu.RUnlock()
	case <-ctx.Done():
		b.mu.RUnlock()
		return ctx.Err()
	}
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops accepting items, writes what was submitted, and returns when
// the writers are done or ctx ends (then in-flight writes are cancelled).
func (b *Batcher[T]) Close(ctx context.Context) {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.in)
	}
	b.mu.Unlock()
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		b.cancel()
		<-done
	}
	b.cancel()
}

func (b *Batcher[T]) run() {
	defer b.wg.Done()
	batch := make([]pending[T], 0, b.cfg.Size)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		first, ok := <-b.in
		if !ok {
			return
		}
		batch = append(batch[:0], first)
		n := len(first.items)
		timer.Reset(b.cfg.Timeout)
	fill:
		for n < b.cfg.Size {
			select {
			case p, ok := <-b.in:
				if !ok {
					break fill
				}
				batch = append(batch, p)
				n += len(p.items)
			case <-timer.C:
				break fill
			}
		}
		timer.Stop()
		b.flush(batch, n)
		clear(batch)
	}
}

func (b *Batcher[T]) flush(batch []pending[T], n int) {
	items := make([]T, 0, n)
	for _, p := range batch {
		items = append(items, p.items...)
	}
	err := b.safeWrite(items)
	if err != nil && len(batch) > 1 && b.cfg.Isolate != nil && b.cfg.Isolate(err) {
		for _, p := range batch {
			p.done <- b.safeWrite(p.items)
		}
		return
	}
	for _, p := range batch {
		p.done <- err
	}
}

// safeWrite turns a panic in write into an error for the batch's handlers,
// which retry and then poison it, instead of crashing the process.
func (b *Batcher[T]) safeWrite(items []T) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic writing batch of %d: %v\n%s", len(items), r, debug.Stack())
		}
	}()
	return b.write(b.ctx, items)
}

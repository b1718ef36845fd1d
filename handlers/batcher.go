package handlers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ErrBatcherClosed is returned by Submit after Close.
var ErrBatcherClosed = errors.New("batcher closed")

// WriteFunc writes one batch in one transaction.
type WriteFunc[T any] func(ctx context.Context, items []T) error

// BatcherConfig tunes a Batcher of items of type T.
type BatcherConfig[T any] struct {
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
	// Order, when set, orders the Submits waiting for a writer: a batch
	// takes those with the lowest Order of their items first (persist: the
	// time of their first reading), instead of the earliest submitted.
	// Submits waiting longer than MaxDelay go first, in the order
	// submitted, so that a run of low ones (a replay of old readings)
	// cannot hold others back (a MaxDelay of zero leaves every Submit in
	// the order submitted).
	Order    func(items []T) int64
	MaxDelay time.Duration
}

// pending is one Submit's items: written in one batch, failing or
// succeeding together.
type pending[T any] struct {
	items []T
	done  chan error
	at    time.Time // submitted
	order int64
}

// Batcher gathers items submitted by concurrent handlers into batches by size
// and time and writes them on several writers. Submit returns only once the
// item's batch has committed (or failed), so a handler acks a message only
// after its row is durable.
type Batcher[T any] struct {
	cfg   BatcherConfig[T]
	write WriteFunc[T]
	in    chan pending[T]
	// free receives, from each writer that has nothing to write, the
	// channel to hand it its next batch on; when dispatch is done it closes
	// those it holds, and done tells the others.
	free chan chan []pending[T]
	done chan struct{} // closed when dispatch returns
	// waiting counts the Submits dispatch holds for a writer.
	waiting atomic.Int64

	mu     sync.RWMutex
	closed bool
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewBatcher starts cfg.Writers writers calling write.
func NewBatcher[T any](cfg BatcherConfig[T], write WriteFunc[T]) *Batcher[T] {
	cfg.Size = max(cfg.Size, 1)
	cfg.Writers = max(cfg.Writers, 1)
	ctx, cancel := context.WithCancel(context.Background())
	b := &Batcher[T]{cfg: cfg, write: write, in: make(chan pending[T]), free: make(chan chan []pending[T]),
		done: make(chan struct{}), ctx: ctx, cancel: cancel}
	b.wg.Add(1)
	go b.dispatch()
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
	p := pending[T]{items: items, done: make(chan error, 1), at: time.Now()}
	if b.cfg.Order != nil {
		p.order = b.cfg.Order(items)
	}
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

// Waiting returns how many Submits wait for a writer.
func (b *Batcher[T]) Waiting() int { return int(b.waiting.Load()) }

// Close stops accepting items, writes what was submitted, and returns when
// the writers are done. When ctx ends first, it cancels the context of the
// writes (in flight and still to come: they fail at once unless the write
// ignores its context) and waits for them.
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

// dispatch gathers the Submits into batches and hands each to a free
// writer. A batch is ready when the Submits waiting hold Size items, or
// when the earliest of them has waited Timeout; it is made when a writer
// is free, of up to Size items, in the order of take. Once the input is
// closed, what waits is written without waiting for more.
func (b *Batcher[T]) dispatch() {
	defer b.wg.Done()
	var (
		waiting []pending[T] // in the order submitted
		items   int
		in      = b.in
		timer   = time.NewTimer(time.Hour)
		expired bool // the earliest waiting has waited Timeout
		writers []chan []pending[T]
	)
	timer.Stop()
	defer func() {
		close(b.done)
		for _, w := range writers {
			close(w)
		}
	}()
	for in != nil || len(waiting) > 0 {
		ready := len(waiting) > 0 && (items >= b.cfg.Size || expired || in == nil)
		if ready && len(writers) > 0 {
			w := writers[len(writers)-1]
			writers = writers[:len(writers)-1]
			var batch []pending[T]
			batch, waiting = b.take(waiting)
			items -= countItems(batch)
			b.waiting.Store(int64(len(waiting)))
			w <- batch // buffered: the writer is waiting for it
			timer.Stop()
			expired = false
			if len(waiting) > 0 {
				// The next batch waits from its earliest Submit on.
				if d := b.cfg.Timeout - time.Since(waiting[0].at); d > 0 {
					timer.Reset(d)
				} else {
					expired = true
				}
			}
			continue
		}
		select {
		case p, ok := <-in:
			if !ok {
				in = nil
				continue
			}
			if len(waiting) == 0 {
				timer.Reset(b.cfg.Timeout)
				expired = false
			}
			waiting = append(waiting, p)
			items += len(p.items)
			b.waiting.Store(int64(len(waiting)))
		case w := <-b.free:
			writers = append(writers, w)
		case <-timer.C:
			expired = true
		}
	}
}

// take splits waiting (in the order submitted) into the next batch, of up
// to Size items and at least one Submit, and the Submits left, in the
// order submitted. The batch takes Submits waiting longer than MaxDelay
// first, in the order submitted, then the others by Order when set, else
// in the order submitted.
func (b *Batcher[T]) take(waiting []pending[T]) (batch, rest []pending[T]) {
	order := make([]int, len(waiting))
	for i := range order {
		order[i] = i
	}
	if b.cfg.Order != nil {
		overdue := time.Now().Add(-b.cfg.MaxDelay)
		slices.SortStableFunc(order, func(x, y int) int {
			xo, yo := waiting[x].at.Before(overdue), waiting[y].at.Before(overdue)
			switch {
			case xo && yo:
				return 0 // both overdue: in the order submitted
			case xo:
				return -1
			case yo:
				return 1
			}
			return cmp.Compare(waiting[x].order, waiting[y].order)
		})
	}
	taken := make([]bool, len(waiting))
	for n, i := 0, 0; i < len(order) && n < b.cfg.Size; i++ {
		batch = append(batch, waiting[order[i]])
		taken[order[i]] = true
		n += len(waiting[order[i]].items)
	}
	rest = waiting[:0]
	for i, p := range waiting {
		if !taken[i] {
			rest = append(rest, p)
		}
	}
	clear(waiting[len(rest):])
	return batch, rest
}

func countItems[T any](batch []pending[T]) int {
	n := 0
	for _, p := range batch {
		n += len(p.items)
	}
	return n
}

// run writes the batches dispatch hands it until dispatch is done.
func (b *Batcher[T]) run() {
	defer b.wg.Done()
	next := make(chan []pending[T], 1)
	for {
		select {
		case b.free <- next:
		case <-b.done:
			return
		}
		batch, ok := <-next
		if !ok {
			return
		}
		b.flush(batch, countItems(batch))
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

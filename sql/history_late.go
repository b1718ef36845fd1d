package sql

import (
	"context"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heartbeat/heartbeat/messages"
)

// maxHeldHistory bounds the readings whose customer_history rows an
// EventWriter holds while writing them fails (about 70 bytes each): past
// it, writes wait for a history write to succeed. While they succeed,
// nothing waits, however many readings a FlushHistory interval brings.
const maxHeldHistory = 500_000

// maxLogReadings bounds the readings of one COPY (about 18 MB of them):
// past it, the readings held go on in another, so that a write is never
// too large to finish within the commit's timeout, and each write that
// succeeds leaves less to write.
const maxLogReadings = 1 << 18

// maxSpareHistory bounds the readings a written log may have room for to
// be reused as the next (1.2 MB): at higher rates a log is allocated anew.
const maxSpareHistory = 1 << 14

// lateHistory holds the customer_history rows of the readings an
// EventWriter committed until FlushHistory writes them.
//
// Why late: written in the readings' transaction, each batch wrote a row
// per customer it held, and from 10,000 customers on that was a row for
// about every reading, more than half of PostgreSQL's work per reading
// (docs/performance.md). Gathered for a second, a row holds every reading
// the customer sent meanwhile.
//
// Why nothing is lost: the rows are written before persist commits its
// Kafka offsets, never after (the windowed subscriber's BeforeCommit), so
// the offsets committed never pass a reading whose history is not
// written. After a crash, the records from the committed offset on come
// again; their readings are stored already, and the merge hands those
// stored from the same record back to the history (a reading can then
// be in two rows; the readers count it once). The detector waits for
// persist's committed offsets before it reads the history, so it never
// reads a history that lacks a reading persist has finished with.
type lateHistory struct {
	mu      sync.Mutex
	pending *historyLog
	full    []*historyLog // pending logs that reached maxLogReadings
	held    int           // readings pending, full or unwritten
	failing bool          // the last write failed
	// written is closed, and replaced, when a write succeeds.
	written chan struct{}

	// flushMu makes flushes one at a time; it guards unwritten and spare.
	flushMu   sync.Mutex
	unwritten []*historyLog // taken from pending, not written yet
	spare     *historyLog   // a written log, reset, for the next pending
}

func newLateHistory() *lateHistory {
	return &lateHistory{pending: newHistoryLog(), written: make(chan struct{})}
}

// add holds the readings of rows that keep selects (all when nil).
func (h *lateHistory) add(rows []messages.Ingest, ids [][16]byte, keep []int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := h.pending.readings()
	h.pending.add(rows, ids, keep)
	h.held += h.pending.readings() - n
	if h.pending.readings() >= maxLogReadings {
		h.full = append(h.full, h.pending)
		h.pending = newHistoryLog()
	}
}

// room waits, while the last write failed and more than maxHeldHistory
// readings are held, for a write to succeed or ctx to end.
func (h *lateHistory) room(ctx context.Context) error {
	for {
		h.mu.Lock()
		if !h.failing || h.held <= maxHeldHistory {
			h.mu.Unlock()
			return nil
		}
		written := h.written
		h.mu.Unlock()
		select {
		case <-written:
		case <-ctx.Done():
			return fmt.Errorf("wait for customer_history to be written: %w", ctx.Err())
		}
	}
}

// heldReadings is how many readings' customer_history is not written yet.
func (h *lateHistory) heldReadings() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held
}

// flush writes the rows of every reading added before it began and not
// written yet, a COPY per log. A failed write keeps what it did not write
// for the next.
func (h *lateHistory) flush(ctx context.Context, pool *pgxpool.Pool, parts *Partitions) error {
	h.flushMu.Lock()
	defer h.flushMu.Unlock()
	h.mu.Lock()
	h.unwritten = append(h.unwritten, h.full...)
	clear(h.full)
	h.full = h.full[:0]
	if h.pending.readings() > 0 {
		h.unwritten = append(h.unwritten, h.pending)
		h.pending, h.spare = h.spare, nil
		if h.pending == nil {
			h.pending = newHistoryLog()
		}
	}
	h.mu.Unlock()

	for len(h.unwritten) > 0 {
		l := h.unwritten[0]
		err := writeLog(ctx, pool, parts, l)
		h.mu.Lock()
		if err != nil {
			h.failing = true
			h.mu.Unlock()
			return err
		}
		h.held -= l.readings()
		h.mu.Unlock()
		h.unwritten[0] = nil
		h.unwritten = h.unwritten[1:]
		// A log grown by a burst is left to the collector.
		if cap(l.entries) <= maxSpareHistory {
			l.reset()
			h.spare = l
		}
	}
	h.unwritten = nil
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failing = false
	close(h.written)
	h.written = make(chan struct{})
	return nil
}

// writeLog COPYs l's rows into customer_history, in the partitions of
// their days (they exist, the readings being stored in them, unless one
// was dropped since: see Partitions.writeIn).
func writeLog(ctx context.Context, pool *pgxpool.Pool, parts *Partitions, l *historyLog) error {
	l.sort()
	err := parts.writeIn(ctx, l.days(nil), func() error {
		_, err := pool.CopyFrom(ctx, pgx.Identifier{"customer_history"}, historyColumns, historySource(l))
		return err
	})
	if err != nil {
		return fmt.Errorf("write customer_history of %d readings: %w", l.readings(), err)
	}
	return nil
}

package sql

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heartbeat/heartbeat/messages"
)

// maxHeldHistory bounds the readings a HistoryWriter holds while writing
// them fails (about 70 bytes each): past it, Room waits for a write to
// succeed.
const maxHeldHistory = 500_000

// flushEarlyAt is how many readings waiting for the next Flush make Keep
// write them at once (about 1.5 MB of them with their sort order),
// whatever the time to the next commit: a detector catching up on a
// backlog evaluates up to 200,000 readings a second, which would
// otherwise all be held until its next commit. Measured in the bench's
// memory phase (persist and detect, 100,000 customers): 65,536 held the
// peak RSS 20–30 MB higher.
const flushEarlyAt = 1 << 14

// earlyWriteTimeout bounds an early write, and the wait for a write in
// progress before it: a write stuck on the database must not hold the
// detector's handlers, whose readings stay held for the next commit.
const earlyWriteTimeout = 10 * time.Second

// maxLogReadings bounds the readings of one COPY (about 18 MB of them):
// past it, the readings held go on in another, so that a write is never
// too large to finish within the commit's timeout, and each write that
// succeeds leaves less to write.
const maxLogReadings = 1 << 18

// maxSpareHistory bounds the readings a written log may have room for to
// be reused as the next (1.2 MB), unless it held at least half of that
// room: a log a burst grew is left to the collector.
const maxSpareHistory = 1 << 14

// HistoryWriter writes customer_history, the detector's history of the
// readings it evaluated, from which [History] and [EpisodeHistory]
// rebuild a customer's state: one row per customer, source partition and
// UTC day for each write, its readings packed.
//
// Why late: a row per batch was a row for about every reading from 10,000
// customers on. Gathered between two commits of the detector's offsets
// (DETECT_COMMIT_INTERVAL), a row holds every reading the customer sent
// meanwhile.
//
// Why nothing is lost: the detector's subscriber calls Flush before each
// commit of its offsets (the windowed subscriber's BeforeCommit) and
// commits only if it succeeded, so the offsets committed never pass a
// reading whose history is not written. A detector given a partition
// starts at the committed offset: every reading before it is in
// customer_history, and the rebuild waits for nothing. After a crash, the
// records from the committed offset on come again and their readings are
// kept again; a reading can then be in two rows, and the readers count it
// once (by offset).
type HistoryWriter struct {
	pool  *pgxpool.Pool
	parts *Partitions

	mu      sync.Mutex
	pending *historyLog
	full    []*historyLog // pending logs that reached maxLogReadings
	held    int           // readings pending, full or unwritten
	failing bool          // the last write failed
	// written is closed, and replaced, when a write succeeds.
	written chan struct{}

	// flushing holds a token while a flush runs: flushes go one at a
	// time, and one waiting for another gives up with its context. The
	// token guards unwritten and spare.
	flushing  chan struct{}
	unwritten []*historyLog // taken from pending, not written yet
	spare     *historyLog   // a written log, reset, for the next pending
}

// NewHistoryWriter returns a writer of customer_history to pool; it
// creates the daily partitions its rows need.
func NewHistoryWriter(pool *pgxpool.Pool) *HistoryWriter {
	return &HistoryWriter{pool: pool, parts: NewPartitions(pool), pending: newHistoryLog(),
		written: make(chan struct{}), flushing: make(chan struct{}, 1)}
}

// Keep holds the readings of rows (refused ones carry none) for the next
// Flush. When more than flushEarlyAt readings wait and the last write did
// not fail, it writes them at once; its error is that write's, the
// readings staying held for the next Flush. An event id that is not a
// UUID (no valid reading has one) is an error, and nothing of rows is
// held.
func (w *HistoryWriter) Keep(ctx context.Context, rows []messages.Ingest) error {
	ids, err := eventIDs(rows)
	if err != nil {
		return fmt.Errorf("keep %d readings for customer_history: %w", len(rows), err)
	}
	if !w.add(rows, ids) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, earlyWriteTimeout)
	defer cancel()
	return w.Flush(ctx)
}

// add holds the readings of rows. It reports whether the readings not
// being written reached flushEarlyAt while writes succeed: the caller is
// to flush.
func (w *HistoryWriter) add(rows []messages.Ingest, ids [][16]byte) (flush bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := w.pending.readings()
	w.pending.add(rows, ids)
	w.held += w.pending.readings() - n
	if w.pending.readings() >= maxLogReadings {
		w.full = append(w.full, w.pending)
		w.pending = newHistoryLog()
	}
	return !w.failing && w.pending.readings()+len(w.full)*maxLogReadings >= flushEarlyAt
}

// Room waits, while the last write failed and more than maxHeldHistory
// readings are held, for a write to succeed or ctx to end: the detector
// calls it before it evaluates more.
func (w *HistoryWriter) Room(ctx context.Context) error {
	for {
		w.mu.Lock()
		if !w.failing || w.held <= maxHeldHistory {
			w.mu.Unlock()
			return nil
		}
		written := w.written
		w.mu.Unlock()
		select {
		case <-written:
		case <-ctx.Done():
			return fmt.Errorf("wait for customer_history to be written: %w", ctx.Err())
		}
	}
}

// Held is the number of readings kept whose customer_history is not
// written yet.
func (w *HistoryWriter) Held() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.held
}

// Flush writes the customer_history rows of every reading kept before it
// was called and not written yet, a COPY per log. A failed write keeps
// what it did not write for the next call.
func (w *HistoryWriter) Flush(ctx context.Context) error {
	select {
	case w.flushing <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("wait for the customer_history write in progress: %w", ctx.Err())
	}
	defer func() { <-w.flushing }()
	w.mu.Lock()
	w.unwritten = append(w.unwritten, w.full...)
	clear(w.full)
	w.full = w.full[:0]
	if w.pending.readings() > 0 {
		w.unwritten = append(w.unwritten, w.pending)
		w.pending, w.spare = w.spare, nil
		if w.pending == nil {
			w.pending = newHistoryLog()
		}
	}
	w.mu.Unlock()

	for len(w.unwritten) > 0 {
		l := w.unwritten[0]
		err := writeLog(ctx, w.pool, w.parts, l)
		w.mu.Lock()
		if err != nil {
			w.failing = true
			w.mu.Unlock()
			return err
		}
		w.held -= l.readings()
		w.mu.Unlock()
		w.unwritten[0] = nil
		w.unwritten = w.unwritten[1:]
		// A log grown by a burst is left to the collector; one about as
		// full as it can be is the next pending (at a backlog's rates,
		// each early write's).
		if c := cap(l.entries); c <= maxSpareHistory || c <= 2*l.readings() {
			l.reset()
			w.spare = l
		}
	}
	w.unwritten = nil
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failing = false
	close(w.written)
	w.written = make(chan struct{})
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

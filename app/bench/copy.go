package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// copyBatch is the ceiling's batch size, as persist's batches are at most
// PERSIST_BATCH_SIZE rows.
const copyBatch = 10_000

// benchColumns are the columns persist writes (ingest_time is defaulted).
var benchColumns = []string{"event_id", "customer_id", "event_time", "heart_rate", "source_topic", "source_partition", "source_offset"}

// rowMaker makes distinct heartbeat_events rows cheaply, so the bench's own
// CPU does not lower the ceiling it measures on a small machine.
type rowMaker struct {
	prefix    uint64
	customers []string
	base      time.Time
	n         uint64
}

func newRowMaker(customers int) *rowMaker {
	m := &rowMaker{prefix: randUint64(), base: time.Now().Add(-time.Hour).Truncate(time.Millisecond)}
	for i := range customers {
		m.customers = append(m.customers, fmt.Sprintf("cust_%05d", i+1))
	}
	return m
}

func (m *rowMaker) next() []any {
	m.n++
	return []any{pgtype.UUID{Bytes: seqUUID(m.prefix, m.n), Valid: true}, m.customers[m.n%uint64(len(m.customers))],
		m.base.Add(time.Duration(m.n) * time.Millisecond), int16(60 + m.n%40), "events.raw.v1", int32(m.n % 24), int64(m.n)}
}

// seqUUID is a version-4-shaped UUID whose last 8 bytes are seq, so that the
// phase that made it can find the sequence number again (seqOf).
func seqUUID(prefix, seq uint64) [16]byte {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], prefix)
	binary.BigEndian.PutUint64(b[8:], seq)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return b
}

// seqOf inverts seqUUID for sequence numbers below 2^56.
func seqOf(id [16]byte) uint64 {
	id[8] = 0 // the variant bits
	return binary.BigEndian.Uint64(id[8:])
}

// createLike creates table with the columns, constraints and indexes of
// heartbeat_events (not its partitions).
func (d *database) createLike(ctx context.Context, table string) error {
	_, err := d.pool.Exec(ctx, "DROP TABLE IF EXISTS "+table+"; CREATE TABLE "+table+" (LIKE heartbeat_events INCLUDING ALL)")
	return err
}

// copyCeiling writes rows rows with CopyFrom in batches of copyBatch, each
// its own transaction, on one connection, into a table shaped like
// heartbeat_events, and returns rows per second.
func (d *database) copyCeiling(ctx context.Context, rows, customers int) (float64, error) {
	if err := d.createLike(ctx, "bench_copy"); err != nil {
		return 0, fmt.Errorf("create bench_copy: %w", err)
	}
	defer d.pool.Exec(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS bench_copy")
	return d.copyInto(ctx, "bench_copy", rows, customers)
}

// bareResult is a bare COPY's rate and PostgreSQL's CPU per 1,000 rows.
type bareResult struct{ rate, postgresMS float64 }

// bareCopy is copyCeiling into a table with heartbeat_events' columns and
// nothing else — no key, no index, no constraint, no partitions: the limit
// of any sink that writes these rows to this server, and what a sink that
// keeps no key (Telegraf's postgresql output) writes into.
func (d *database) bareCopy(ctx context.Context, rows, customers int) (bareResult, error) {
	_, err := d.pool.Exec(ctx, "DROP TABLE IF EXISTS bench_bare; CREATE TABLE bench_bare (LIKE heartbeat_events INCLUDING DEFAULTS)")
	if err != nil {
		return bareResult{}, fmt.Errorf("create bench_bare: %w", err)
	}
	defer d.pool.Exec(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS bench_bare")
	_, _ = d.pool.Exec(ctx, "CHECKPOINT") // as the drain began: no earlier WAL to flush meanwhile
	before := postgresCPU(d.Name)
	rate, err := d.copyInto(ctx, "bench_bare", rows, customers)
	if err != nil {
		return bareResult{}, err
	}
	after := postgresCPU(d.Name)
	pg := after.bench - before.bench + after.shared - before.shared
	return bareResult{rate: rate, postgresMS: pg / float64(rows) * 1e6}, nil
}

// copyInto writes rows rows into table with CopyFrom in batches of
// copyBatch, each its own transaction, on one connection, and returns rows
// per second.
func (d *database) copyInto(ctx context.Context, table string, rows, customers int) (float64, error) {
	conn, err := d.pool.Acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Release()
	m := newRowMaker(customers)
	start := time.Now()
	for done := 0; done < rows; {
		n := min(copyBatch, rows-done)
		i := 0
		copied, err := conn.Conn().CopyFrom(ctx, pgx.Identifier{table}, benchColumns, pgx.CopyFromFunc(func() ([]any, error) {
			if i == n {
				return nil, nil
			}
			i++
			return m.next(), nil
		}))
		if err != nil {
			return 0, fmt.Errorf("copy into %s: %w", table, err)
		}
		done += int(copied)
	}
	return float64(rows) / time.Since(start).Seconds(), nil
}

// perRowInserts runs the naive write path for dur: one
// autocommitted INSERT … ON CONFLICT DO NOTHING per event, on one
// connection, and returns rows per second.
func (d *database) perRowInserts(ctx context.Context, dur time.Duration, customers int) (float64, error) {
	if err := d.createLike(ctx, "bench_per_row"); err != nil {
		return 0, fmt.Errorf("create bench_per_row: %w", err)
	}
	defer d.pool.Exec(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS bench_per_row")
	conn, err := d.pool.Acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Release()
	const insert = `INSERT INTO bench_per_row (event_id, customer_id, event_time, heart_rate, source_topic, source_partition, source_offset)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING`
	m := newRowMaker(customers)
	start := time.Now()
	n := 0
	for time.Since(start) < dur {
		if _, err := conn.Exec(ctx, insert, m.next()...); err != nil {
			return 0, fmt.Errorf("insert into bench_per_row: %w", err)
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func (r *runner) copyPhase(ctx context.Context) error {
	rate, err := r.db.copyCeiling(ctx, r.o.CopyRows, r.o.Customers)
	if err != nil {
		return err
	}
	r.res.CopyCeiling = rate
	r.progress("COPY ceiling: %d rows in batches of %d, %.0f rows/s", r.o.CopyRows, copyBatch, rate)
	return nil
}

func (r *runner) perRowPhase(ctx context.Context) error {
	rate, err := r.db.perRowInserts(ctx, r.o.PerRowTime, r.o.Customers)
	if err != nil {
		return err
	}
	r.res.PerRow = rate
	r.progress("per-row INSERT: %.0f rows/s", rate)
	return nil
}

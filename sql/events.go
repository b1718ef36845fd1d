package sql

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heartbeat/heartbeat/messages"
)

// stagingTable receives each batch by COPY before it is merged into
// heartbeat_events, so a redelivered reading is skipped instead of failing
// the batch. It is a temporary table, one per connection, emptied at commit.
const stagingTable = "hb_staging"

const createStaging = `CREATE TEMP TABLE IF NOT EXISTS ` + stagingTable + ` (
	event_id uuid, customer_id text, event_time timestamptz, heart_rate smallint,
	source_topic text, source_partition integer, source_offset bigint) ON COMMIT DELETE ROWS`

// mergeStaging moves a batch into heartbeat_events, skipping the readings
// stored already, and maintains the per-minute rollups and each customer's
// last minute for the new ones in the same statement. Rollup rows are
// written in key order, so concurrent writers lock them in the same order.
// It returns the number of readings inserted.
const mergeStaging = `WITH ins AS (
	INSERT INTO heartbeat_events
		(event_id, customer_id, event_time, heart_rate, source_topic, source_partition, source_offset)
	SELECT event_id, customer_id, event_time, heart_rate, source_topic, source_partition, source_offset FROM ` + stagingTable + `
	ON CONFLICT DO NOTHING
	RETURNING event_id, customer_id, event_time, heart_rate
), minutes AS (
	INSERT INTO heartbeat_minute_rates (minute, heart_rate, events)
	SELECT date_bin('1 minute', event_time, timestamptz '2000-01-01 00:00:00+00'), heart_rate, count(*) FROM ins GROUP BY 1, 2 ORDER BY 1, 2
	ON CONFLICT (minute, heart_rate) DO UPDATE SET events = heartbeat_minute_rates.events + EXCLUDED.events
), seen AS (
	INSERT INTO customer_last_seen (customer_id, last_minute)
	SELECT customer_id, max(date_bin('1 minute', event_time, timestamptz '2000-01-01 00:00:00+00')) FROM ins
	GROUP BY customer_id ORDER BY customer_id
	ON CONFLICT (customer_id) DO UPDATE SET last_minute = EXCLUDED.last_minute
	WHERE customer_last_seen.last_minute < EXCLUDED.last_minute
)
SELECT count(*) FROM ins`

// uniqueViolation is PostgreSQL's SQLSTATE for a duplicate key.
const uniqueViolation = "23505"

// eventColumns are the columns a batch writes, in eventSource's order.
var eventColumns = []string{"event_id", "customer_id", "event_time", "heart_rate", "source_topic", "source_partition", "source_offset"}

// upsertRollups adds a batch's new readings, counted by the writer, to the
// per-minute rollup and moves customers' last minute forward: the fast
// path's counterpart of mergeStaging's rollups, with keys in the same
// order.
const upsertRollups = `WITH minutes AS (
	INSERT INTO heartbeat_minute_rates (minute, heart_rate, events)
	SELECT * FROM unnest($1::timestamptz[], $2::smallint[], $3::bigint[])
	ON CONFLICT (minute, heart_rate) DO UPDATE SET events = heartbeat_minute_rates.events + EXCLUDED.events
)
INSERT INTO customer_last_seen (customer_id, last_minute)
SELECT * FROM unnest($4::text[], $5::timestamptz[])
ON CONFLICT (customer_id) DO UPDATE SET last_minute = EXCLUDED.last_minute
WHERE customer_last_seen.last_minute < EXCLUDED.last_minute`

// The checkpoint only moves forward: batches of one partition may commit out
// of order when several writers run.
const upsertCheckpoint = `INSERT INTO ingest_checkpoint (consumer_group, topic, partition, last_offset, updated_at)
	SELECT $1, t, p, o, now() FROM unnest($2::text[], $3::integer[], $4::bigint[]) AS c(t, p, o)
	ON CONFLICT (consumer_group, topic, partition) DO UPDATE
	SET last_offset = GREATEST(ingest_checkpoint.last_offset, EXCLUDED.last_offset), updated_at = now()`

// EventWriter writes batches of readings and the checkpoint of a consumer
// group in one transaction. (The detector's history of the readings,
// customer_history, is the detector's to write: [HistoryWriter].)
type EventWriter struct {
	pool  *pgxpool.Pool
	group string
	seen  *seenMinutes
	// Partitions creates the daily partitions the batches need; partition
	// maintenance shares it, so that the days it drops are forgotten.
	Partitions *Partitions
}

// NewEventWriter returns a writer checkpointing for consumer group group.
func NewEventWriter(pool *pgxpool.Pool, group string) *EventWriter {
	return &EventWriter{pool: pool, group: group, seen: newSeenMinutes(maxSeenCustomers), Partitions: NewPartitions(pool)}
}

// Write stores rows and advances the checkpoint of every partition they
// came from, atomically. It returns how many rows were new; rows whose
// event id is already stored are skipped.
//
// The daily partitions of the rows' days are created first, outside the
// batch's transaction (creating one locks heartbeat_events, which the
// transaction would hold until it commits). A partition dropped since it
// was created (retention, by this process or another) fails the batch with
// "no partition of relation found for row": the batch is rolled back
// whole, the partition created again, and the batch written again once.
func (w *EventWriter) Write(ctx context.Context, rows []messages.Ingest) (inserted int64, err error) {
	if len(rows) == 0 {
		return 0, nil
	}
	err = w.Partitions.writeIn(ctx, batchDays(rows), func() (err error) {
		inserted, err = w.write(ctx, rows)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("persist batch of %d: %w", len(rows), err)
	}
	return inserted, nil
}

// batchDays returns the UTC days of rows' readings, each once.
func batchDays(rows []messages.Ingest) []Day {
	var days []Day
	for _, r := range rows {
		if r.Refused {
			continue
		}
		// A partition's readings come mostly in time order: the day of the
		// row before is the usual answer.
		if d := DayOf(r.Reading.Timestamp); len(days) == 0 || d != days[len(days)-1] && !slices.Contains(days, d) {
			days = append(days, d)
		}
	}
	return days
}

func (w *EventWriter) write(ctx context.Context, rows []messages.Ingest) (inserted int64, err error) {
	ids, err := eventIDs(rows)
	if err != nil {
		return 0, err
	}
	ru := newRollups(rows, w.seen)
	inserted, err = w.writeTx(ctx, rows, func(tx pgx.Tx) (int64, error) { return copyRows(ctx, tx, rows, ids, ru) })
	if err == nil {
		w.seen.remember(ru.customers, ru.lastMinutes)
		return inserted, nil
	}
	if isUniqueViolation(err) {
		// A reading of the batch is stored already (a redelivery or a
		// replay): the transaction is gone, the batch is merged in a new one.
		inserted, err = w.writeTx(ctx, rows, func(tx pgx.Tx) (int64, error) { return mergeRows(ctx, tx, rows, ids) })
		if err == nil {
			return inserted, nil
		}
	}
	return 0, err
}

// writeTx stores rows' readings with store and advances the checkpoint, in
// one transaction.
func (w *EventWriter) writeTx(ctx context.Context, rows []messages.Ingest, store func(pgx.Tx) (int64, error)) (inserted int64, err error) {
	err = pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
		var err error
		if inserted, err = store(tx); err != nil {
			return err
		}
		topics, parts, offs := checkpoints(rows)
		if _, err := tx.Exec(ctx, upsertCheckpoint, w.group, topics, parts, offs); err != nil {
			return fmt.Errorf("checkpoint: %w", err)
		}
		return nil
	})
	return inserted, err
}

// isUniqueViolation reports whether err is PostgreSQL's duplicate key error.
func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == uniqueViolation
}

// copyRows, the fast path, COPYs rows' readings straight into
// heartbeat_events and upserts ru, the rollups computed here from the
// rows. A batch holding a reading already stored fails the COPY with a
// unique violation, which fails the transaction: the caller then writes
// the batch with mergeRows. (A savepoint around the COPY would save the
// checkpoint's round trip on that rare path, but makes every batch a
// subtransaction.)
func copyRows(ctx context.Context, tx pgx.Tx, rows []messages.Ingest, ids [][16]byte, ru rollups) (int64, error) {
	valid := validRows(rows)
	if valid == 0 {
		return 0, nil
	}
	n, err := tx.CopyFrom(ctx, pgx.Identifier{"heartbeat_events"}, eventColumns, eventSource(rows, ids))
	if err != nil {
		return 0, fmt.Errorf("copy %d rows: %w", valid, err)
	}
	if _, err := tx.Exec(ctx, upsertRollups, ru.args()...); err != nil {
		return 0, fmt.Errorf("rollups of %d rows: %w", n, err)
	}
	return n, nil
}

// mergeRows writes rows' readings through the staging table: those
// already stored are skipped, and the rollups cover the new ones only. It
// returns how many were new.
func mergeRows(ctx context.Context, tx pgx.Tx, rows []messages.Ingest, ids [][16]byte) (int64, error) {
	valid := validRows(rows)
	if valid == 0 {
		return 0, nil
	}
	if _, err := tx.Exec(ctx, createStaging); err != nil {
		return 0, fmt.Errorf("create staging table: %w", err)
	}
	n, err := tx.CopyFrom(ctx, pgx.Identifier{stagingTable}, eventColumns, eventSource(rows, ids))
	if err != nil {
		return 0, fmt.Errorf("copy %d rows: %w", valid, err)
	}
	var inserted int64
	if err := tx.QueryRow(ctx, mergeStaging).Scan(&inserted); err != nil {
		return 0, fmt.Errorf("merge %d rows: %w", n, err)
	}
	return inserted, nil
}

// validRows counts the rows that carry a reading (not refused).
func validRows(rows []messages.Ingest) int {
	valid := 0
	for _, r := range rows {
		if !r.Refused {
			valid++
		}
	}
	return valid
}

// rollups are upsertRollups' arguments for a batch of new readings:
// readings counted per minute and rate, and the customers whose latest
// minute in the batch the writer has not stored yet, with that minute; both
// in key order.
type rollups struct {
	minutes     []time.Time
	rates       []int16
	events      []int64
	customers   []string
	lastMinutes []time.Time
}

func newRollups(rows []messages.Ingest, seen *seenMinutes) rollups {
	type minuteRate struct {
		minute time.Time
		rate   int16
	}
	counts := make(map[minuteRate]int64, 256)
	latest := make(map[string]time.Time, 1024)
	for _, r := range rows {
		if r.Refused {
			continue
		}
		minute := r.Reading.Timestamp.Truncate(time.Minute)
		counts[minuteRate{minute, int16(r.Reading.HeartRate)}]++
		if l, ok := latest[r.Reading.CustomerID]; !ok || minute.After(l) {
			latest[r.Reading.CustomerID] = minute
		}
	}
	keys := slices.SortedFunc(maps.Keys(counts), func(a, b minuteRate) int {
		if c := a.minute.Compare(b.minute); c != 0 {
			return c
		}
		return cmp.Compare(a.rate, b.rate)
	})
	ru := rollups{minutes: make([]time.Time, len(keys)), rates: make([]int16, len(keys)), events: make([]int64, len(keys))}
	for i, k := range keys {
		ru.minutes[i], ru.rates[i], ru.events[i] = k.minute, k.rate, counts[k]
	}
	seen.drop(latest)
	ru.customers = slices.Sorted(maps.Keys(latest))
	ru.lastMinutes = make([]time.Time, len(ru.customers))
	for i, c := range ru.customers {
		ru.lastMinutes[i] = latest[c]
	}
	return ru
}

func (ru rollups) args() []any {
	return []any{ru.minutes, ru.rates, ru.events, ru.customers, ru.lastMinutes}
}

// maxSeenCustomers bounds seenMinutes: 23 bytes a customer at 100,000
// customers, 36–38 at one to two million.
const maxSeenCustomers = 1 << 21

// seenMinutes remembers, for each customer, the latest minute a writer has
// committed to customer_last_seen, so that a customer is written there
// once a minute instead of once a batch. A minute remembered is stored (the
// table's minute only moves forward), so skipping it is safe whatever other
// writers do. Past max customers it starts again empty: each is then
// written once more.
//
// Customers are remembered by a 64-bit hash of their id, seeded afresh by
// each process: two of a million customers share an entry with a
// probability of about 3×10⁻⁸, and then, in that process only, the one
// whose minute is not ahead of the other's is not written while both
// report. It assumes customer_last_seen loses no row while the process
// runs: after a TRUNCATE or a restore, a customer is written again when
// its minute next moves on.
type seenMinutes struct {
	max  int
	seed maphash.Seed
	mu   sync.Mutex
	m    map[uint64]int64 // Unix seconds of the minute
}

func newSeenMinutes(max int) *seenMinutes {
	return &seenMinutes{max: max, seed: maphash.MakeSeed(), m: map[uint64]int64{}}
}

// drop removes from latest the customers whose minute there is stored.
func (s *seenMinutes) drop(latest map[string]time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c, minute := range latest {
		if stored, ok := s.m[maphash.String(s.seed, c)]; ok && stored >= minute.Unix() {
			delete(latest, c)
		}
	}
}

// remember records that customers' minutes are committed.
func (s *seenMinutes) remember(customers []string, minutes []time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, c := range customers {
		k, m := maphash.String(s.seed, c), minutes[i].Unix()
		if stored, ok := s.m[k]; ok {
			s.m[k] = max(stored, m)
			continue
		}
		if len(s.m) >= s.max {
			clear(s.m)
		}
		s.m[k] = m
	}
}

// checkpoints returns the highest offset per source partition of rows, in
// (topic, partition) order: concurrent writers then lock checkpoint rows in
// the same order and cannot deadlock. A row read from no Kafka partition
// (offset -1: a message of another pub/sub) moves no checkpoint.
func checkpoints(rows []messages.Ingest) (topics []string, parts []int32, offsets []int64) {
	type tp struct {
		t string
		p int32
	}
	idx := make(map[tp]int, 32)
	for _, r := range rows {
		if r.Source.Offset < 0 {
			continue
		}
		k := tp{r.Source.Topic, r.Source.Partition}
		i, ok := idx[k]
		if !ok {
			idx[k] = len(topics)
			topics, parts, offsets = append(topics, k.t), append(parts, k.p), append(offsets, r.Source.Offset)
			continue
		}
		offsets[i] = max(offsets[i], r.Source.Offset)
	}
	order := make([]int, len(topics))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool {
		x, y := order[a], order[b]
		return topics[x] < topics[y] || topics[x] == topics[y] && parts[x] < parts[y]
	})
	st, sp, so := make([]string, len(order)), make([]int32, len(order)), make([]int64, len(order))
	for i, j := range order {
		st[i], sp[i], so[i] = topics[j], parts[j], offsets[j]
	}
	return st, sp, so
}

// eventIDs parses the event ids of rows' readings (zero for checkpoint-only
// rows): COPY sends them as 16 bytes, and pgx given a string for a uuid
// column first fails to encode it and builds an error, then parses it —
// the largest part of persist's CPU before this.
func eventIDs(rows []messages.Ingest) ([][16]byte, error) {
	ids := make([][16]byte, len(rows))
	for i := range rows {
		if rows[i].Refused {
			continue
		}
		id, err := uuid.Parse(rows[i].Reading.EventID)
		if err != nil {
			return nil, fmt.Errorf("event id %q of %s: %w", rows[i].Reading.EventID, rows[i].Reading.CustomerID, err)
		}
		ids[i] = id
	}
	return ids, nil
}

// eventSource is rows' readings as COPY rows of eventColumns, in event
// time order, each value of the Go type pgx encodes to its column's type
// directly. In time order, nearly every key of heartbeat_events' primary
// key (event_time, event_id) goes after the last one, to the rightmost
// leaf page, which PostgreSQL then finds without descending the tree; in
// the batch's own order (its partitions' records interleaved) about every
// insert descended it.
func eventSource(rows []messages.Ingest, ids [][16]byte) pgx.CopyFromSource {
	order := make([]int, 0, len(rows))
	for i := range rows {
		if !rows[i].Refused {
			order = append(order, i)
		}
	}
	slices.SortFunc(order, func(a, b int) int { return rows[a].Reading.Timestamp.Compare(rows[b].Reading.Timestamp) })
	next := 0
	vals := make([]any, len(eventColumns))
	return pgx.CopyFromFunc(func() ([]any, error) {
		if next == len(order) {
			return nil, nil
		}
		i := order[next]
		next++
		r := &rows[i]
		vals[0], vals[1], vals[2], vals[3] = ids[i], r.Reading.CustomerID, r.Reading.Timestamp, int16(r.Reading.HeartRate)
		vals[4], vals[5], vals[6] = r.Source.Topic, r.Source.Partition, r.Source.Offset
		return vals, nil
	})
}

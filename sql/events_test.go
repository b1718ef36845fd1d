package sql_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/messages"
	hbsql "github.com/heartbeat/heartbeat/sql"
)

// Both of EventWriter's paths — COPY straight into heartbeat_events, and the
// staging merge a batch holding a stored reading falls back to — store each
// reading once and keep the rollups equal to the readings.
func TestEventWriterStoresOnceAndKeepsRollups(t *testing.T) {
	pool, base := recentDatabase(t)
	ctx := context.Background()
	w := hbsql.NewEventWriter(pool, "g")
	row := readings(3)
	a1 := row("a", base.Add(5*time.Second), 70)
	a2 := row("a", base.Add(65*time.Second), 80)
	b1 := row("b", base.Add(10*time.Second), 70)

	// New readings: the fast path.
	n, err := w.Write(ctx, []messages.Ingest{a1, b1, a2})
	require.NoError(t, err)
	require.Equal(t, int64(3), n)

	// A redelivered reading with a new one, an invalid record's checkpoint
	// entry, and a reading twice in one batch: the merge path.
	b2 := row("b", base.Add(20*time.Second), 90)
	skip := messages.Ingest{Source: messages.Source{Topic: "raw", Partition: 3, Offset: 99}, Refused: true}
	n, err = w.Write(ctx, []messages.Ingest{a2, b2, b2, skip})
	require.NoError(t, err)
	require.Equal(t, int64(1), n, "only b2 is new")

	var events, distinct int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT event_id) FROM heartbeat_events`).Scan(&events, &distinct))
	require.Equal(t, 4, events)
	require.Equal(t, 4, distinct)

	rows, err := pool.Query(ctx, `SELECT minute, heart_rate, events FROM heartbeat_minute_rates ORDER BY 1, 2`)
	require.NoError(t, err)
	type minuteRate struct {
		minute time.Time
		rate   int16
		events int64
	}
	var got []minuteRate
	for rows.Next() {
		var m minuteRate
		require.NoError(t, rows.Scan(&m.minute, &m.rate, &m.events))
		m.minute = m.minute.UTC()
		got = append(got, m)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []minuteRate{{base, 70, 2}, {base, 90, 1}, {base.Add(time.Minute), 80, 1}}, got)

	require.Equal(t, map[string]time.Time{"a": base.Add(time.Minute), "b": base}, lastSeen(t, pool))
	cp, err := checkpoint(ctx, pool, "g", "raw")
	require.NoError(t, err)
	require.Equal(t, map[int32]int64{3: 99}, cp)
}

// customer_last_seen holds the minute of each customer's latest reading. A
// writer stores a customer's minute once: a batch whose readings fall in a
// minute already stored does not write the row again, and no batch — late
// readings, a writer started afresh, the merge path — moves it back.
func TestEventWriterStoresEachCustomersLastMinuteOnce(t *testing.T) {
	pool, base := recentDatabase(t)
	ctx := context.Background()
	reading := readings(0)
	row := func(customer string, at time.Duration) messages.Ingest { return reading(customer, base.Add(at), 70) }
	// version is the transactions that wrote and last locked a customer's
	// row: an upsert that finds the minute stored does not update the row
	// but still locks it.
	version := func(customer string) string {
		var v string
		require.NoError(t, pool.QueryRow(ctx, `SELECT xmin::text || '/' || xmax::text FROM customer_last_seen WHERE customer_id = $1`, customer).Scan(&v))
		return v
	}
	write := func(w *hbsql.EventWriter, rows ...messages.Ingest) {
		_, err := w.Write(ctx, rows)
		require.NoError(t, err)
	}
	w := hbsql.NewEventWriter(pool, "g")

	write(w, row("a", 10*time.Second), row("b", 20*time.Second))
	require.Equal(t, map[string]time.Time{"a": base, "b": base}, lastSeen(t, pool))
	stored := version("a")

	write(w, row("a", 50*time.Second), row("b", 61*time.Second))
	require.Equal(t, map[string]time.Time{"a": base, "b": base.Add(time.Minute)}, lastSeen(t, pool))
	require.Equal(t, stored, version("a"), "a's minute was stored: its row is not written or locked again")

	write(w, row("a", 5*time.Second), row("b", 3*time.Second)) // late readings
	fresh := hbsql.NewEventWriter(pool, "g")                   // remembers nothing
	write(fresh, row("a", 30*time.Second), row("b", 40*time.Second))
	require.Equal(t, map[string]time.Time{"a": base, "b": base.Add(time.Minute)}, lastSeen(t, pool))

	// The merge path (a stored reading in the batch) moves minutes forward
	// too, and a new customer appears.
	stale := row("a", 15*time.Second)
	write(w, stale)
	write(w, stale, row("a", 2*time.Minute+time.Second), row("c", 59*time.Second))
	require.Equal(t, map[string]time.Time{"a": base.Add(2 * time.Minute), "b": base.Add(time.Minute), "c": base}, lastSeen(t, pool))
}

// recentDatabase returns a migrated database with the partitions of the
// hour from base, a whole minute ten minutes ago.
func recentDatabase(t *testing.T) (*pgxpool.Pool, time.Time) {
	t.Helper()
	pool := migrated(t)
	base := time.Now().UTC().Truncate(time.Minute).Add(-10 * time.Minute)
	_, err := hbsql.EnsurePartitions(context.Background(), pool, base, time.Hour)
	require.NoError(t, err)
	return pool, base
}

// readings returns a maker of readings read from partition of topic "raw",
// at increasing offsets.
func readings(partition int32) func(customer string, at time.Time, rate int) messages.Ingest {
	offset := int64(0)
	return func(customer string, at time.Time, rate int) messages.Ingest {
		offset++
		return messages.Ingest{
			Reading: messages.Heartbeat{EventID: uuid.NewString(), CustomerID: customer, Timestamp: at, HeartRate: rate},
			Source:  messages.Source{Topic: "raw", Partition: partition, Offset: offset},
		}
	}
}

// lastSeen returns customer_last_seen, by customer.
func lastSeen(t *testing.T, pool *pgxpool.Pool) map[string]time.Time {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT customer_id, last_minute FROM customer_last_seen`)
	require.NoError(t, err)
	out := map[string]time.Time{}
	var c string
	var m time.Time
	_, err = pgx.ForEachRow(rows, []any{&c, &m}, func() error { out[c] = m.UTC(); return nil })
	require.NoError(t, err)
	return out
}

// A batch may hold readings of days years apart (a backfill beside live
// readings): the writer creates the partitions of those days only, on both
// of its paths, and writes again a batch whose day's partition was dropped
// behind its back.
func TestEventWriterCreatesTheDaysItNeeds(t *testing.T) {
	pool := migrated(t)
	ctx := context.Background()
	old := time.Date(2016, 3, 14, 23, 59, 59, 0, time.UTC)
	now := time.Now().UTC().Truncate(time.Millisecond)
	offset := int64(0)
	row := func(at time.Time) messages.Ingest {
		offset++
		return messages.Ingest{
			Reading: messages.Heartbeat{EventID: uuid.NewString(), CustomerID: "c", Timestamp: at, HeartRate: 70},
			Source:  messages.Source{Topic: "raw", Partition: 0, Offset: offset},
		}
	}
	count := func() int {
		var n int
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM heartbeat_events`).Scan(&n))
		return n
	}
	w := hbsql.NewEventWriter(pool, "g")

	// The fast path (COPY).
	a, b, c := row(old), row(now), row(old.Add(time.Second)) // c is the next day
	n, err := w.Write(ctx, []messages.Ingest{a, b, c})
	require.NoError(t, err)
	require.Equal(t, int64(3), n)
	want := []string{"heartbeat_events_p20160314", "heartbeat_events_p20160315", "heartbeat_events_p" + now.Format("20060102")}
	require.Equal(t, want, partitions(t, pool))

	// The merge path (a redelivered reading), with a day new to the writer.
	d := row(old.AddDate(-1, 0, 0))
	n, err = w.Write(ctx, []messages.Ingest{a, d, b})
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	require.Equal(t, 4, count())
	require.Contains(t, partitions(t, pool), "heartbeat_events_p20150314")

	// Another process dropped 2016-03-14's partition (retention): the
	// writer, which knows it as created, writes the batch again after
	// creating it — on the fast path and on the merge path.
	for _, c := range []struct {
		batch []messages.Ingest
		new   int64
		old   int // the reading of 2016-03-14
	}{
		{[]messages.Ingest{row(old.Add(-time.Hour)), row(now.Add(-time.Second))}, 2, 0}, // fast path
		{[]messages.Ingest{b, row(old.Add(-2 * time.Hour))}, 1, 1},                      // merge path: b is stored
	} {
		_, err = pool.Exec(ctx, `DROP TABLE heartbeat_events_p20160314`)
		require.NoError(t, err)
		before := count()
		n, err = w.Write(ctx, c.batch)
		require.NoError(t, err)
		require.Equal(t, c.new, n)
		require.Equal(t, before+int(c.new), count())
		var at time.Time
		require.NoError(t, pool.QueryRow(ctx, `SELECT event_time FROM heartbeat_events_p20160314 WHERE event_id = $1`, c.batch[c.old].Reading.EventID).Scan(&at))
		require.True(t, at.Equal(c.batch[c.old].Reading.Timestamp))
	}
}

// Persist replicas writing readings of the same new days at once each
// create what is missing, and no batch fails because another replica
// created a partition first.
func TestEventWritersCreatePartitionsConcurrently(t *testing.T) {
	pool := migrated(t)
	ctx := context.Background()
	days := make([]time.Time, 12)
	for i := range days {
		days[i] = time.Date(2015+rand.IntN(10), time.Month(1+rand.IntN(12)), 1+rand.IntN(28), rand.IntN(24), 0, 0, 0, time.UTC)
	}
	const replicas = 4
	errs := make(chan error, replicas)
	for r := range replicas {
		go func() {
			w := hbsql.NewEventWriter(pool, "g")
			var rows []messages.Ingest
			for i, d := range rand.Perm(len(days)) {
				rows = append(rows, messages.Ingest{
					Reading: messages.Heartbeat{EventID: uuid.NewString(), CustomerID: "c", Timestamp: days[d], HeartRate: 70},
					Source:  messages.Source{Topic: "raw", Partition: int32(r), Offset: int64(i)},
				})
			}
			_, err := w.Write(ctx, rows)
			errs <- err
		}()
	}
	for range replicas {
		require.NoError(t, <-errs)
	}
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM heartbeat_events`).Scan(&n))
	require.Equal(t, replicas*len(days), n)
	want := map[string]bool{}
	for _, d := range days {
		want["heartbeat_events_p"+d.Format("20060102")] = true
	}
	got := map[string]bool{}
	for _, p := range partitions(t, pool) {
		got[p] = true
	}
	require.Equal(t, want, got)
}

// checkpoint returns the stored last offsets of group on topic, by partition.
func checkpoint(ctx context.Context, pool *pgxpool.Pool, group, topic string) (map[int32]int64, error) {
	rows, err := pool.Query(ctx, `SELECT partition, last_offset FROM ingest_checkpoint WHERE consumer_group = $1 AND topic = $2`, group, topic)
	if err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	var p int32
	var o int64
	_, err = pgx.ForEachRow(rows, []any{&p, &o}, func() error { out[p] = o; return nil })
	return out, err
}

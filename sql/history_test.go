package sql_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/messages"
	hbsql "github.com/heartbeat/heartbeat/sql"
)

// historyRow is a reading of customer c at sec seconds after base, read
// from offset off of partition 5.
func historyRow(c string, base time.Time, sec int, rate int, off int64) messages.Ingest {
	return messages.Ingest{
		Reading: messages.Heartbeat{EventID: uuid.NewString(), CustomerID: c, Timestamp: base.Add(time.Duration(sec) * time.Second), HeartRate: rate},
		Source:  messages.Source{Topic: "events.raw.v1", Partition: 5, Offset: off},
	}
}

// keep keeps batches in w, as the detector does after each batch it
// evaluated, then writes them, as before a commit of its offsets.
func keep(t *testing.T, w *hbsql.HistoryWriter, batches ...[]messages.Ingest) {
	t.Helper()
	ctx := context.Background()
	for _, b := range batches {
		require.NoError(t, w.Keep(ctx, b))
	}
	require.NoError(t, w.Flush(ctx))
}

// The detector's per-event rebuild finds a customer's latest reading kept
// before a record — by event time, not offset; not one of another
// customer, not one from the record's offset on, not one older than the
// window — across batches, a batch split over two UTC days, and a batch
// kept again (redelivered).
func TestHistoryPreviousReading(t *testing.T) {
	pool := migrated(t)
	ctx := context.Background()
	midnight := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)

	old := historyRow("c1", midnight, -7200, 50, 1) // two hours before: outside a 1h window
	late := historyRow("c1", midnight, -30, 60, 2)  // the day before
	latest := historyRow("c1", midnight, 20, 70, 3) // the latest by time...
	early := historyRow("c1", midnight, 10, 80, 4)  // ...though this one came after it
	other := historyRow("c2", midnight, 25, 90, 5)  // another customer
	after := historyRow("c1", midnight, 40, 100, 7) // from the record's offset on
	keep(t, hbsql.NewHistoryWriter(pool), []messages.Ingest{old}, []messages.Ingest{late, latest},
		[]messages.Ingest{early, other, after}, []messages.Ingest{late, latest})
	h := hbsql.NewHistory(pool, time.Hour)
	rec := messages.Source{Topic: "events.raw.v1", Partition: 5, Offset: 6}

	at, rate, found, err := h.Previous(ctx, messages.Heartbeat{CustomerID: "c1", Timestamp: midnight.Add(45 * time.Second)}, rec)
	require.NoError(t, err)
	require.True(t, found)
	require.True(t, at.Equal(latest.Reading.Timestamp), "latest reading at %s, want %s", at, latest.Reading.Timestamp)
	require.Equal(t, 70, rate)

	// Only readings before offset 3: the one of the day before.
	at, rate, found, err = h.Previous(ctx, messages.Heartbeat{CustomerID: "c1", Timestamp: midnight.Add(45 * time.Second)},
		messages.Source{Topic: "events.raw.v1", Partition: 5, Offset: 3})
	require.NoError(t, err)
	require.True(t, found)
	require.True(t, at.Equal(late.Reading.Timestamp))
	require.Equal(t, 60, rate)

	// Only readings before offset 2, and the one there is outside the window.
	_, _, found, err = h.Previous(ctx, messages.Heartbeat{CustomerID: "c1", Timestamp: midnight.Add(45 * time.Second)},
		messages.Source{Topic: "events.raw.v1", Partition: 5, Offset: 2})
	require.NoError(t, err)
	require.False(t, found)

	// Another partition holds nothing of c1.
	_, _, found, err = h.Previous(ctx, messages.Heartbeat{CustomerID: "c1", Timestamp: midnight.Add(45 * time.Second)},
		messages.Source{Topic: "events.raw.v1", Partition: 6, Offset: 100})
	require.NoError(t, err)
	require.False(t, found)
}

// customer_history holds every reading the detector kept, at the offset
// it was kept from — a record kept twice (redelivered) maybe in two rows,
// a copy of a reading from another record (a replay, which the detector
// evaluates too) at both offsets — once Flush has run, whether or not
// persist stored the readings (the detector can run ahead of it: the days'
// partitions are made), and the rows of a day go with the day's
// partition.
func TestHistoryHoldsWhatTheDetectorKept(t *testing.T) {
	pool := migrated(t)
	ctx := context.Background()
	midnight := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	var rows []messages.Ingest
	for i := range 300 {
		rows = append(rows, historyRow([]string{"a", "b", "c"}[i%3], midnight, i-150, 60+i%50, int64(i)))
	}
	// A copy of a reading from another record: a replay.
	replayed := rows[10]
	replayed.Source.Offset = 1000
	// A record refused (invalid, or only a checkpoint) carries no reading.
	refused := historyRow("a", midnight, 0, 0, 1001)
	refused.Refused = true

	w := hbsql.NewHistoryWriter(pool)
	for _, batch := range [][]messages.Ingest{rows[:100], rows[50:200], rows[200:], {replayed, refused}} {
		require.NoError(t, w.Keep(ctx, batch))
	}
	require.Equal(t, 351, w.Held(), "the refused record carries none")
	require.Zero(t, count(t, pool, `SELECT count(*) FROM customer_history`), "written at Flush, not before")
	require.NoError(t, w.Flush(ctx))
	require.Zero(t, w.Held())

	kept := func() (readings, records int) {
		t.Helper()
		require.NoError(t, pool.QueryRow(ctx, `WITH packed AS (
				SELECT substring(readings FROM i * 34 + 1 FOR 16) AS id, substring(readings FROM i * 34 + 27 FOR 8) AS off
				FROM customer_history, generate_series(0, length(readings) / 34 - 1) AS i)
			SELECT count(DISTINCT id), count(DISTINCT (id, off)) FROM packed`).Scan(&readings, &records))
		return readings, records
	}
	readings, records := kept()
	require.Equal(t, 300, readings, "every reading kept")
	require.Equal(t, 301, records, "each at the offsets it was kept from: the replay's too")
	require.Zero(t, count(t, pool, `SELECT count(*) FROM heartbeat_events`), "persist stored nothing")

	dropped, err := hbsql.NewPartitions(pool).Drop(ctx, midnight.Add(24*time.Hour), 1)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"heartbeat_events_p20261125", "customer_history_p20261125"}, dropped)
	readings, records = kept()
	require.Equal(t, 150, readings, "the readings from midnight on are kept")
	require.Equal(t, 150, records, "the replayed reading was of the day before")
}

// A detector catching up on a backlog keeps more readings between two
// commits than its memory should hold: past its bound, Keep writes them
// at once. While writes fail, it leaves them to the commit's Flush.
func TestHistoryWrittenEarlyPastItsBound(t *testing.T) {
	pool := migrated(t)
	ctx := context.Background()
	midnight := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	w := hbsql.NewHistoryWriter(pool)
	batch := func(from, n int) []messages.Ingest {
		rows := make([]messages.Ingest, n)
		for i := range rows {
			rows[i] = historyRow("c"+string(rune('a'+(from+i)%26)), midnight, (from+i)/1000, 70, int64(from+i))
		}
		return rows
	}
	under := hbsql.FlushEarlyAt / 2
	require.NoError(t, w.Keep(ctx, batch(0, under)))
	require.Equal(t, under, w.Held(), "under the bound: held for the commit")
	require.NoError(t, w.Keep(ctx, batch(under, hbsql.FlushEarlyAt-under)))
	require.Zero(t, w.Held(), "at the bound: written")
	require.Equal(t, hbsql.FlushEarlyAt, count(t, pool, `SELECT sum(length(readings) / 34) FROM customer_history`))

	// The table is away: the commit's write fails, and Keep then holds
	// past the bound without trying.
	_, err := pool.Exec(ctx, `ALTER TABLE customer_history RENAME TO customer_history_away`)
	require.NoError(t, err)
	require.NoError(t, w.Keep(ctx, batch(hbsql.FlushEarlyAt, 10)))
	require.ErrorContains(t, w.Flush(ctx), "write customer_history of 10 readings")
	require.NoError(t, w.Keep(ctx, batch(hbsql.FlushEarlyAt+10, hbsql.FlushEarlyAt)))
	require.Equal(t, hbsql.FlushEarlyAt+10, w.Held())
	_, err = pool.Exec(ctx, `ALTER TABLE customer_history_away RENAME TO customer_history`)
	require.NoError(t, err)
	require.NoError(t, w.Room(ctx), "under maxHeldHistory: nothing waits")
	require.NoError(t, w.Flush(ctx))
	require.Zero(t, w.Held())
	require.Equal(t, 2*hbsql.FlushEarlyAt+10, count(t, pool, `SELECT sum(length(readings) / 34) FROM customer_history`))
}

// What a crash loses of the history comes back with the redelivery: a
// detector that kept readings and stopped before writing them (its offsets
// uncommitted) leaves them to the next, which is given their records
// again from the last committed offset — some of them with their history
// written already — and the rebuild then reads every reading once. A
// write that fails keeps its rows for the next, and one whose day's
// partition was dropped meanwhile creates it again.
func TestHistoryLostInACrashComesBackWithTheRedelivery(t *testing.T) {
	pool := migrated(t)
	ctx := context.Background()
	midnight := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	var rows []messages.Ingest
	for i := range 40 {
		rows = append(rows, historyRow("c1", midnight, i*10, 60+i, int64(i)))
	}
	crashed := hbsql.NewHistoryWriter(pool)
	keep(t, crashed, rows[:15])
	require.NoError(t, crashed.Keep(ctx, rows[15:30]))
	require.Equal(t, 15, crashed.Held(), "kept, not written: the crash loses them")

	// Its last commit was at offset 10: the next detector gets 10 onwards.
	next := hbsql.NewHistoryWriter(pool)
	require.NoError(t, next.Keep(ctx, rows[10:]))
	require.Equal(t, 30, next.Held())

	// Its first write fails (the table is away); the rows wait.
	_, err := pool.Exec(ctx, `ALTER TABLE customer_history RENAME TO customer_history_away`)
	require.NoError(t, err)
	err = next.Flush(ctx)
	require.ErrorContains(t, err, "write customer_history of 30 readings")
	_, err = pool.Exec(ctx, `ALTER TABLE customer_history_away RENAME TO customer_history`)
	require.NoError(t, err)
	require.Equal(t, 30, next.Held())

	require.NoError(t, next.Flush(ctx))
	require.Zero(t, next.Held())

	history := hbsql.NewHistory(pool, time.Hour)
	readings := func(before int64) []string {
		t.Helper()
		prime, rs, err := hbsql.NewEpisodeHistory(history).Readings(ctx, messages.Heartbeat{CustomerID: "c1", Timestamp: midnight.Add(time.Hour)},
			messages.Source{Topic: "events.raw.v1", Partition: 5, Offset: before}, midnight)
		require.NoError(t, err)
		require.Nil(t, prime)
		var got []string
		for _, r := range rs {
			got = append(got, r.EventID)
		}
		return got
	}
	ids := func(rows []messages.Ingest) (out []string) {
		for _, r := range rows {
			out = append(out, r.Reading.EventID)
		}
		return out
	}
	require.Equal(t, ids(rows), readings(40), "every reading once, in offset order")
	at, rate, found, err := history.Previous(ctx, messages.Heartbeat{CustomerID: "c1", Timestamp: midnight.Add(time.Hour)},
		messages.Source{Topic: "events.raw.v1", Partition: 5, Offset: 40})
	require.NoError(t, err)
	require.True(t, found)
	require.True(t, at.Equal(rows[39].Reading.Timestamp))
	require.Equal(t, 99, rate)

	// Retention dropped the day's history after the detector kept
	// readings of it, before they were written: the partition is made
	// again.
	more := []messages.Ingest{historyRow("c1", midnight, 500, 70, 40), historyRow("c1", midnight, 510, 71, 41)}
	require.NoError(t, next.Keep(ctx, more))
	_, err = pool.Exec(ctx, `DROP TABLE customer_history_p20261126`)
	require.NoError(t, err)
	require.NoError(t, next.Flush(ctx))
	require.Equal(t, ids(more), readings(42))
}

// A database of the previous schema migrates forward: its readings keep
// their rows, the key becomes (event_time, event_id) — a redelivery of a
// stored reading still stores nothing — the two other indexes go, and the
// detector's history holds the stored readings.
func TestMigrationToLeanSink(t *testing.T) {
	pool := database(t)
	ctx := context.Background()
	_, err := hbsql.MigrateTo(ctx, pool, 4)
	require.NoError(t, err)
	midnight := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	_, err = hbsql.NewPartitions(pool).EnsureRange(ctx, midnight.Add(-time.Hour), midnight.Add(time.Hour))
	require.NoError(t, err)
	var stored []messages.Ingest
	for i := range 10 {
		r := historyRow("c1", midnight, i*30-120, 60+i, int64(i))
		stored = append(stored, r)
		_, err := pool.Exec(ctx, `INSERT INTO heartbeat_events (event_id, customer_id, event_time, heart_rate, source_topic, source_partition, source_offset)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, r.Reading.EventID, r.Reading.CustomerID, r.Reading.Timestamp, r.Reading.HeartRate,
			r.Source.Topic, r.Source.Partition, r.Source.Offset)
		require.NoError(t, err)
	}

	applied, err := hbsql.Migrate(ctx, pool)
	require.NoError(t, err)
	require.Contains(t, applied, 5)

	var key string
	require.NoError(t, pool.QueryRow(ctx, `SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'heartbeat_events_pkey' AND conrelid = 'heartbeat_events'::regclass`).Scan(&key))
	require.Equal(t, "PRIMARY KEY (event_time, event_id)", key)
	var indexes []string
	rows, err := pool.Query(ctx, `SELECT indexname FROM pg_indexes WHERE tablename = 'heartbeat_events' ORDER BY 1`)
	require.NoError(t, err)
	for rows.Next() {
		var n string
		require.NoError(t, rows.Scan(&n))
		indexes = append(indexes, n)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []string{"heartbeat_events_pkey"}, indexes)

	w := hbsql.NewEventWriter(pool, "cg.db")
	n, err := w.Write(ctx, stored[3:5])
	require.NoError(t, err)
	require.Zero(t, n, "stored before the migration: redelivered, not stored again")

	hs := hbsql.NewEpisodeHistory(hbsql.NewHistory(pool, time.Hour))
	prime, rs, err := hs.Readings(ctx, messages.Heartbeat{CustomerID: "c1", Timestamp: midnight.Add(time.Hour)},
		messages.Source{Topic: "events.raw.v1", Partition: 5, Offset: 8}, midnight)
	require.NoError(t, err)
	require.NotNil(t, prime)
	require.Equal(t, stored[3].Reading.EventID, prime.EventID, "the latest before midnight")
	var got []string
	for _, r := range rs {
		got = append(got, r.EventID)
	}
	require.Equal(t, []string{stored[4].Reading.EventID, stored[5].Reading.EventID, stored[6].Reading.EventID, stored[7].Reading.EventID}, got,
		"from midnight on, before offset 8, in offset order")
}

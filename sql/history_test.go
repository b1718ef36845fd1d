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

// storedUpTo is persist's progress as NewHistory reads it: everything of
// partition part before offset next is stored, nothing of the others.
func storedUpTo(part int32, next int64) func(context.Context, string, int32) (int64, error) {
	return func(_ context.Context, _ string, p int32) (int64, error) {
		if p == part {
			return next, nil
		}
		return 0, nil
	}
}

// The detector's per-event rebuild finds a customer's latest reading stored
// before a record — by event time, not offset; not one of another
// customer, not one from the record's offset on, not one older than the
// window — across batches, a batch split over two UTC days, and a batch
// written again (redelivered), as persist writes them.
func TestHistoryPreviousReading(t *testing.T) {
	pool := migrated(t)
	ctx := context.Background()
	midnight := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	w := hbsql.NewEventWriter(pool, "cg.db")

	old := historyRow("c1", midnight, -7200, 50, 1) // two hours before: outside a 1h window
	late := historyRow("c1", midnight, -30, 60, 2)  // the day before
	latest := historyRow("c1", midnight, 20, 70, 3) // the latest by time...
	early := historyRow("c1", midnight, 10, 80, 4)  // ...though this one came after it
	other := historyRow("c2", midnight, 25, 90, 5)  // another customer
	after := historyRow("c1", midnight, 40, 100, 7) // from the record's offset on
	for _, batch := range [][]messages.Ingest{{old}, {late, latest}, {early, other, after}, {late, latest}} {
		_, err := w.Write(ctx, batch)
		require.NoError(t, err)
	}
	require.NoError(t, w.FlushHistory(ctx))
	h := hbsql.NewHistory(pool, storedUpTo(5, 100), time.Hour, time.Second)
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
	require.ErrorIs(t, err, messages.ErrHistoryIncomplete, "persist has stored nothing of partition 6")
	require.False(t, found)
}

// customer_history holds exactly the stored readings, whichever path
// stored them — a record written again (redelivered) maybe twice, a copy
// of a stored reading from another record (a replay) not — once
// FlushHistory has run, and the rows of a day go with the day's partition.
func TestHistoryMatchesStoredReadings(t *testing.T) {
	pool := migrated(t)
	ctx := context.Background()
	midnight := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	w := hbsql.NewEventWriter(pool, "cg.db")
	var rows []messages.Ingest
	for i := range 300 {
		rows = append(rows, historyRow([]string{"a", "b", "c"}[i%3], midnight, i-150, 60+i%50, int64(i)))
	}
	// A copy of a stored reading from another record: a replay.
	replayed := rows[10]
	replayed.Source.Offset = 1000
	// Fast path, then the merge path (a redelivery overlapping new rows).
	for _, batch := range [][]messages.Ingest{rows[:100], rows[50:200], rows[200:], append(rows, replayed)} {
		_, err := w.Write(ctx, batch)
		require.NoError(t, err)
	}
	var packed int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM customer_history`).Scan(&packed))
	require.Zero(t, packed, "written late")
	require.NoError(t, w.FlushHistory(ctx))
	compare := func() {
		t.Helper()
		var events, distinct, readings, offsets int
		require.NoError(t, pool.QueryRow(ctx, `WITH packed AS (
				SELECT substring(readings FROM i * 34 + 1 FOR 16) AS id, substring(readings FROM i * 34 + 27 FOR 8) AS off
				FROM customer_history, generate_series(0, length(readings) / 34 - 1) AS i)
			SELECT (SELECT count(*) FROM heartbeat_events),
			(SELECT count(DISTINCT id) FROM packed),
			(SELECT count(*) FROM heartbeat_events e WHERE EXISTS (SELECT 1 FROM customer_history h
				WHERE h.customer_id = e.customer_id AND position(uuid_send(e.event_id) IN h.readings) > 0)),
			(SELECT count(DISTINCT (id, off)) FROM packed)`).Scan(&events, &distinct, &readings, &offsets))
		require.Equal(t, events, distinct, "as many readings in customer_history as in heartbeat_events")
		require.Equal(t, events, readings, "every stored reading is in its customer's history")
		require.Equal(t, events, offsets, "each at its record's offset only, not the replay's")
	}
	compare()
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM heartbeat_events`).Scan(&n))
	require.Equal(t, 300, n)

	dropped, err := hbsql.NewPartitions(pool).Drop(ctx, midnight.Add(24*time.Hour), 1)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"heartbeat_events_p20261125", "customer_history_p20261125"}, dropped)
	compare()
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM heartbeat_events`).Scan(&n))
	require.Equal(t, 150, n, "the readings from midnight on are kept")
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
	require.NoError(t, w.FlushHistory(ctx))

	hs := hbsql.NewEpisodeHistory(hbsql.NewHistory(pool, storedUpTo(5, 100), time.Hour, time.Second))
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

// The history is written late, and what a crash loses of it comes back
// with the redelivery: a writer that stored readings and stopped before
// writing their history (its offsets uncommitted) leaves them to the next
// writer, which is given their records again from the last committed
// offset — some of them with their history written already — and the
// detector then reads every reading once. A history write that fails keeps
// its rows for the next, and one whose day's partition was dropped
// meanwhile creates it again.
func TestHistoryWrittenLateComesBackWithTheRedelivery(t *testing.T) {
	pool := migrated(t)
	ctx := context.Background()
	midnight := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	var rows []messages.Ingest
	for i := range 40 {
		rows = append(rows, historyRow("c1", midnight, i*10, 60+i, int64(i)))
	}
	crashed := hbsql.NewEventWriter(pool, "cg.db")
	_, err := crashed.Write(ctx, rows[:15])
	require.NoError(t, err)
	require.NoError(t, crashed.FlushHistory(ctx))
	_, err = crashed.Write(ctx, rows[15:30])
	require.NoError(t, err)
	require.Equal(t, 15, crashed.HistoryHeld(), "stored, history not written: the crash loses it")

	// Its last commit was at offset 10: the next writer gets 10 onwards.
	next := hbsql.NewEventWriter(pool, "cg.db")
	n, err := next.Write(ctx, rows[10:])
	require.NoError(t, err)
	require.Equal(t, int64(10), n, "only 30–39 are new")
	require.Equal(t, 30, next.HistoryHeld())

	// Its first history write fails (the table is away); the rows wait.
	_, err = pool.Exec(ctx, `ALTER TABLE customer_history RENAME TO customer_history_away`)
	require.NoError(t, err)
	err = next.FlushHistory(ctx)
	require.ErrorContains(t, err, "write customer_history of 30 readings")
	_, err = pool.Exec(ctx, `ALTER TABLE customer_history_away RENAME TO customer_history`)
	require.NoError(t, err)
	require.Equal(t, 30, next.HistoryHeld())

	require.NoError(t, next.FlushHistory(ctx))
	require.Zero(t, next.HistoryHeld())

	history := hbsql.NewHistory(pool, storedUpTo(5, 100), time.Hour, time.Second)
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

	// Retention dropped the day's history after readings of it were
	// stored, before their history was written: the partition is made
	// again.
	more := []messages.Ingest{historyRow("c1", midnight, 500, 70, 40), historyRow("c1", midnight, 510, 71, 41)}
	_, err = next.Write(ctx, more)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `DROP TABLE customer_history_p20261126`)
	require.NoError(t, err)
	require.NoError(t, next.FlushHistory(ctx))
	require.Equal(t, ids(more), readings(42))
}

// A record another writer (the partition's previous owner) is still
// committing when this one, given it again, merges its batch: the merge
// waits for that commit and skips the reading, and its history is written
// all the same — the previous owner may never write it.
func TestHistoryOfAReadingAnotherWriterCommittedDuringTheMerge(t *testing.T) {
	pool := migrated(t)
	ctx := context.Background()
	midnight := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	stored := historyRow("c1", midnight, 10, 70, 1)   // stored before: sends the batch to the merge
	inFlight := historyRow("c1", midnight, 20, 80, 2) // in the previous owner's open transaction
	w := hbsql.NewEventWriter(pool, "cg.db")
	_, err := w.Write(ctx, []messages.Ingest{stored})
	require.NoError(t, err)
	require.NoError(t, w.FlushHistory(ctx))

	previous, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = previous.Rollback(ctx) }()
	_, err = previous.Exec(ctx, `INSERT INTO heartbeat_events (event_id, customer_id, event_time, heart_rate, source_topic, source_partition, source_offset)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, inFlight.Reading.EventID, inFlight.Reading.CustomerID, inFlight.Reading.Timestamp,
		inFlight.Reading.HeartRate, inFlight.Source.Topic, inFlight.Source.Partition, inFlight.Source.Offset)
	require.NoError(t, err)

	next := hbsql.NewEventWriter(pool, "cg.db")
	done := make(chan error, 1)
	go func() {
		_, err := next.Write(ctx, []messages.Ingest{stored, inFlight})
		done <- err
	}()
	// The merge waits on the previous owner's row lock; then it commits.
	require.Eventually(t, func() bool {
		var waiting int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock' AND query LIKE '%ON CONFLICT DO NOTHING%'`).Scan(&waiting)
		return err == nil && waiting > 0
	}, 10*time.Second, 10*time.Millisecond, "the merge never waited for the other writer")
	require.NoError(t, previous.Commit(ctx))
	require.NoError(t, <-done)
	require.Equal(t, 2, next.HistoryHeld(), "both readings, the one it did not insert included")
	require.NoError(t, next.FlushHistory(ctx))

	at, rate, found, err := hbsql.NewHistory(pool, storedUpTo(5, 100), time.Hour, time.Second).Previous(ctx,
		messages.Heartbeat{CustomerID: "c1", Timestamp: midnight.Add(time.Minute)}, messages.Source{Topic: "events.raw.v1", Partition: 5, Offset: 3})
	require.NoError(t, err)
	require.True(t, found)
	require.True(t, at.Equal(inFlight.Reading.Timestamp), "the reading the merge skipped is in the history")
	require.Equal(t, 80, rate)
}

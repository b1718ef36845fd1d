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

// customer_history holds exactly the stored readings, each once, whichever
// path stored them, and the rows of a day go with the day's partition.
func TestHistoryMatchesStoredReadings(t *testing.T) {
	pool := migrated(t)
	ctx := context.Background()
	midnight := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	w := hbsql.NewEventWriter(pool, "cg.db")
	var rows []messages.Ingest
	for i := range 300 {
		rows = append(rows, historyRow([]string{"a", "b", "c"}[i%3], midnight, i-150, 60+i%50, int64(i)))
	}
	// Fast path, then the merge path (a redelivery overlapping new rows).
	for _, batch := range [][]messages.Ingest{rows[:100], rows[50:200], rows[200:], rows} {
		_, err := w.Write(ctx, batch)
		require.NoError(t, err)
	}
	compare := func() {
		t.Helper()
		var events, packed, readings int
		require.NoError(t, pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM heartbeat_events),
			(SELECT sum(length(readings)) / 34 FROM customer_history),
			(SELECT count(*) FROM heartbeat_events e WHERE EXISTS (SELECT 1 FROM customer_history h
				WHERE h.customer_id = e.customer_id AND position(uuid_send(e.event_id) IN h.readings) > 0))`).Scan(&events, &packed, &readings))
		require.Equal(t, events, packed, "as many readings in customer_history as in heartbeat_events")
		require.Equal(t, events, readings, "every stored reading is in its customer's history")
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

	n, err := hbsql.NewEventWriter(pool, "cg.db").Write(ctx, stored[3:5])
	require.NoError(t, err)
	require.Zero(t, n, "stored before the migration: redelivered, not stored again")

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

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

// Both of EventWriter's paths — COPY straight into heartbeat_events, and the
// staging merge a batch holding a stored reading falls back to — store each
// reading once and keep the rollups equal to the readings.
func TestEventWriterStoresOnceAndKeepsRollups(t *testing.T) {
	pool := database(t)
	ctx := context.Background()
	_, err := hbsql.Migrate(ctx, pool)
	require.NoError(t, err)
	base := time.Now().UTC().Truncate(time.Minute).Add(-10 * time.Minute)
	_, err = hbsql.EnsurePartitions(ctx, pool, base, time.Hour)
	require.NoError(t, err)
	w := hbsql.NewEventWriter(pool, "g")

	offset := int64(0)
	row := func(customer string, at time.Time, rate int) hbsql.EventRow {
		offset++
		return hbsql.EventRow{
			Event:  messages.Heartbeat{EventID: uuid.NewString(), CustomerID: customer, Timestamp: at, HeartRate: rate},
			Source: messages.Source{Topic: "raw", Partition: 3, Offset: offset},
		}
	}
	a1 := row("a", base.Add(5*time.Second), 70)
	a2 := row("a", base.Add(65*time.Second), 80)
	b1 := row("b", base.Add(10*time.Second), 70)

	// New readings: the fast path.
	n, err := w.Write(ctx, []hbsql.EventRow{a1, b1, a2})
	require.NoError(t, err)
	require.Equal(t, int64(3), n)

	// A redelivered reading with a new one, an invalid record's checkpoint
	// entry, and a reading twice in one batch: the merge path.
	b2 := row("b", base.Add(20*time.Second), 90)
	skip := hbsql.EventRow{Source: messages.Source{Topic: "raw", Partition: 3, Offset: 99}, CheckpointOnly: true}
	n, err = w.Write(ctx, []hbsql.EventRow{a2, b2, b2, skip})
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

	for customer, want := range map[string]hbsql.EventRow{"a": a2, "b": b2} {
		var at time.Time
		var rate int
		require.NoError(t, pool.QueryRow(ctx, `SELECT last_event_time, last_heart_rate FROM customer_last_seen WHERE customer_id = $1`, customer).Scan(&at, &rate))
		require.True(t, at.Equal(want.Event.Timestamp), "customer %s last seen %s, want %s", customer, at, want.Event.Timestamp)
		require.Equal(t, want.Event.HeartRate, rate)
	}
	cp, err := hbsql.Checkpoint(ctx, pool, "g", "raw")
	require.NoError(t, err)
	require.Equal(t, map[int32]int64{3: 99}, cp)
}

package sql

import (
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/messages"
)

// A historyLog groups readings by customer, partition and UTC day, each
// row's readings in offset order whatever the order they were added in,
// and packs them so that eachReading gives them back (times at
// PostgreSQL's microseconds); keep selects the readings added.
func TestHistoryLogPacksAndUnpacks(t *testing.T) {
	midnight := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	row := func(c string, at time.Time, off int64, rate int) messages.Ingest {
		return messages.Ingest{Reading: messages.Heartbeat{EventID: uuid.NewString(), CustomerID: c, Timestamp: at, HeartRate: rate},
			Source: messages.Source{Topic: "raw", Partition: 2, Offset: off}}
	}
	rows := []messages.Ingest{
		row("a", midnight.Add(2*time.Second+1500*time.Nanosecond), 12, 71),
		row("a", midnight.Add(time.Second), 11, 70),
		row("b", midnight.Add(time.Second), 13, 90),
		{Source: messages.Source{Topic: "raw", Partition: 2, Offset: 14}, Refused: true},
		row("a", midnight.Add(-time.Second), 10, 69), // the day before
	}
	ids, err := eventIDs(rows)
	require.NoError(t, err)
	// The log has served before (other groups, a larger buffer), as a
	// reused one has.
	log := newHistoryLog()
	before := append(slices.Clone(rows), rows...)
	before[0].Reading.CustomerID = "c"
	log.add(before, append(slices.Clone(ids), ids...), nil)
	_ = log.rows()
	log.reset()
	// Added in two parts, out of offset order, the second picking rows.
	log.add(rows, ids, []int{0, 2})
	log.add(rows, ids, []int{1, 3, 4})
	require.Equal(t, 4, log.readings(), "the refused row adds none")
	out := log.rows()
	require.Len(t, out, 3, "a on each day, b")
	require.ElementsMatch(t, []Day{DayOf(midnight), DayOf(midnight.Add(-time.Second))}, log.days(nil))

	type reading struct {
		id     string
		at     time.Time
		rate   int16
		offset int64
	}
	got := map[string][]reading{}
	for _, r := range out {
		key := r.key.customer + " " + r.first.Format(time.DateOnly)
		require.NoError(t, eachReading(r.readings, func(h historyReading) bool {
			got[key] = append(got[key], reading{uuid.UUID(h.id).String(), h.at, h.rate, h.offset})
			return true
		}))
	}
	want := func(r messages.Ingest) reading {
		return reading{r.Reading.EventID, r.Reading.Timestamp.Truncate(time.Microsecond), int16(r.Reading.HeartRate), r.Source.Offset}
	}
	require.Equal(t, map[string][]reading{
		"a 2026-11-26": {want(rows[1]), want(rows[0])},
		"b 2026-11-26": {want(rows[2])},
		"a 2026-11-25": {want(rows[4])},
	}, got)
	for _, r := range out {
		if r.key.customer == "a" && r.first.Equal(rows[1].Reading.Timestamp) {
			require.True(t, r.last.Equal(rows[0].Reading.Timestamp), "last_time is the latest reading's")
			require.Equal(t, []int64{11, 12}, []int64{r.firstOffset, r.lastOff}, "first and last offsets")
		}
	}

	require.ErrorContains(t, eachReading(make([]byte, readingSize+1), func(historyReading) bool { return true }),
		"not a whole number of 34-byte readings")
	_, err = eventIDs([]messages.Ingest{row("a", midnight, 1, 70), {Reading: messages.Heartbeat{EventID: "not-a-uuid", CustomerID: "a"}}})
	require.ErrorContains(t, err, `event id "not-a-uuid" of a`)
}

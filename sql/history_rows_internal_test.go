package sql

import (
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/messages"
)

// A historyLog's COPY rows group its readings by customer, partition and
// UTC day, each row's readings in offset order whatever the order they were
// added in, packed so that eachReading gives them back (times at
// PostgreSQL's microseconds), with the row's first and last times and
// offsets.
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
	// The log has served before (other rows, more readings), as a reused
	// one has.
	log := newHistoryLog()
	before := append(slices.Clone(rows), rows...)
	before[0].Reading.CustomerID = "c"
	log.add(before, append(slices.Clone(ids), ids...))
	log.reset()
	// Added in two parts, out of offset order.
	pick := func(is ...int) ([]messages.Ingest, [][16]byte) {
		var rs []messages.Ingest
		var ps [][16]byte
		for _, i := range is {
			rs, ps = append(rs, rows[i]), append(ps, ids[i])
		}
		return rs, ps
	}
	log.add(pick(0, 2))
	log.add(pick(1, 3, 4))
	require.Equal(t, 4, log.readings(), "the refused row adds none")
	require.ElementsMatch(t, []Day{DayOf(midnight), DayOf(midnight.Add(-time.Second))}, log.days(nil))
	log.sort()

	type reading struct {
		id     string
		at     time.Time
		rate   int16
		offset int64
	}
	type historyRow struct {
		first, last time.Time
		offsets     [2]int64
		readings    []reading
	}
	got := map[string]historyRow{}
	src := historySource(log)
	for src.Next() {
		vals, err := src.Values()
		require.NoError(t, err)
		require.Len(t, vals, len(historyColumns))
		r := historyRow{first: vals[3].(time.Time).UTC(), last: vals[4].(time.Time).UTC(), offsets: [2]int64{vals[5].(int64), vals[6].(int64)}}
		require.NoError(t, eachReading(vals[7].([]byte), func(h historyReading) bool {
			r.readings = append(r.readings, reading{uuid.UUID(h.id).String(), h.at, h.rate, h.offset})
			return true
		}))
		key := vals[0].(string) + " " + r.first.Format(time.DateOnly)
		require.NotContains(t, got, key, "one row per customer, partition and day")
		got[key] = r
	}
	require.NoError(t, src.Err())
	want := func(r messages.Ingest) reading {
		return reading{r.Reading.EventID, r.Reading.Timestamp.Truncate(time.Microsecond), int16(r.Reading.HeartRate), r.Source.Offset}
	}
	at := func(r messages.Ingest) time.Time { return r.Reading.Timestamp.Truncate(time.Microsecond) }
	require.Equal(t, map[string]historyRow{
		"a 2026-11-26": {first: at(rows[1]), last: at(rows[0]), offsets: [2]int64{11, 12}, readings: []reading{want(rows[1]), want(rows[0])}},
		"b 2026-11-26": {first: at(rows[2]), last: at(rows[2]), offsets: [2]int64{13, 13}, readings: []reading{want(rows[2])}},
		"a 2026-11-25": {first: at(rows[4]), last: at(rows[4]), offsets: [2]int64{10, 10}, readings: []reading{want(rows[4])}},
	}, got)

	require.ErrorContains(t, eachReading(make([]byte, readingSize+1), func(historyReading) bool { return true }),
		"not a whole number of 34-byte readings")
	_, err = eventIDs([]messages.Ingest{row("a", midnight, 1, 70), {Reading: messages.Heartbeat{EventID: "not-a-uuid", CustomerID: "a"}}})
	require.ErrorContains(t, err, `event id "not-a-uuid" of a`)
}

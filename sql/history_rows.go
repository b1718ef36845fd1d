package sql

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
)

// readingSize is the size of one reading packed in customer_history.readings:
// event id, event time in microseconds since 1970, heart rate, source offset.
const readingSize = 16 + 8 + 2 + 8

// historyColumns are the columns of customer_history, in historyRows' order.
var historyColumns = []string{"customer_id", "source_topic", "source_partition", "first_time", "last_time", "first_offset", "last_offset", "readings"}

// historyKey is one customer_history row of a batch: a customer's readings
// of one source partition and one UTC day (the row's partition).
type historyKey struct {
	customer string
	topic    string
	part     int32
	day      Day
}

// historyRows groups the readings of rows (all new; ids their parsed event
// ids) into customer_history rows: one per customer, source partition and
// UTC day, its readings packed in offset order.
func historyRows(rows []EventRow, ids [][16]byte) [][]any {
	idx := make(map[historyKey]int, 1024)
	var groups [][]int
	var keys []historyKey
	for i, r := range rows {
		if r.CheckpointOnly {
			continue
		}
		k := historyKey{r.Event.CustomerID, r.Source.Topic, r.Source.Partition, DayOf(r.Event.Timestamp)}
		g, ok := idx[k]
		if !ok {
			g = len(groups)
			idx[k] = g
			groups, keys = append(groups, nil), append(keys, k)
		}
		groups[g] = append(groups[g], i)
	}
	out := make([][]any, len(groups))
	for g, members := range groups {
		// A batch holds a partition's records in offset order, unless
		// submissions of one partition came out of order: sort to be sure.
		slices.SortStableFunc(members, func(a, b int) int { return cmp.Compare(rows[a].Source.Offset, rows[b].Source.Offset) })
		packed := make([]byte, 0, len(members)*readingSize)
		first, last := rows[members[0]].Event.Timestamp, rows[members[0]].Event.Timestamp
		for _, i := range members {
			r := &rows[i]
			packed = appendReading(packed, ids[i], r.Event.Timestamp, int16(r.Event.HeartRate), r.Source.Offset)
			first, last = minTime(first, r.Event.Timestamp), maxTime(last, r.Event.Timestamp)
		}
		k := keys[g]
		out[g] = []any{k.customer, k.topic, k.part, first, last,
			rows[members[0]].Source.Offset, rows[members[len(members)-1]].Source.Offset, packed}
	}
	return out
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// appendReading packs one reading as customer_history.readings holds it.
// PostgreSQL keeps microseconds: the time is truncated to them, as
// heartbeat_events.event_time is.
func appendReading(b []byte, id [16]byte, at time.Time, rate int16, offset int64) []byte {
	b = append(b, id[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(at.UnixMicro()))
	b = binary.BigEndian.AppendUint16(b, uint16(rate))
	return binary.BigEndian.AppendUint64(b, uint64(offset))
}

// historyReading is one reading unpacked from customer_history.
type historyReading struct {
	id     uuid.UUID
	at     time.Time
	rate   int16
	offset int64
}

// eachReading calls f with every reading packed in b, in order, until f
// returns false.
func eachReading(b []byte, f func(historyReading) bool) error {
	if len(b)%readingSize != 0 {
		return fmt.Errorf("customer_history readings of %d bytes are not a whole number of %d-byte readings", len(b), readingSize)
	}
	for ; len(b) > 0; b = b[readingSize:] {
		var r historyReading
		copy(r.id[:], b[:16])
		r.at = time.UnixMicro(int64(binary.BigEndian.Uint64(b[16:24]))).UTC()
		r.rate = int16(binary.BigEndian.Uint16(b[24:26]))
		r.offset = int64(binary.BigEndian.Uint64(b[26:34]))
		if !f(r) {
			return nil
		}
	}
	return nil
}

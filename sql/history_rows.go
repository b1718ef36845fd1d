package sql

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heartbeat/heartbeat/messages"
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

// historyGroup is one customer_history row.
type historyGroup struct {
	key                  historyKey
	first, last          time.Time
	firstOffset, lastOff int64
	readings             []byte // a window of historyRows' one buffer
	n                    int    // readings packed so far
	sorted               bool   // offsets ascending so far
}

// historyScratch is historyRows' working memory, reused across batches
// (historyScratches): with many customers a batch has about one
// customer_history row per reading, and allocating the groups, their index
// and the packed readings anew for every batch was a tenth of the
// pipeline's allocations.
type historyScratch struct {
	idx    map[historyKey]int32
	groups []historyGroup
	of     []int32
	buf    []byte
}

var historyScratches = sync.Pool{New: func() any { return &historyScratch{idx: map[historyKey]int32{}} }}

// release returns s to historyScratches once its groups are written.
func (s *historyScratch) release() {
	s.reset()
	historyScratches.Put(s)
}

func (s *historyScratch) reset() {
	clear(s.idx)
	clear(s.groups) // drop the customer ids they hold
	s.groups, s.of, s.buf = s.groups[:0], s.of[:0], s.buf[:0]
}

// historyRows groups the readings of rows (all new; ids their parsed event
// ids) into customer_history rows: one per customer, source partition and
// UTC day, its readings packed in offset order. With many customers a
// batch has about one row per reading, so it allocates per batch, not per
// row: one buffer holds every row's readings (a counting sort by row). The
// groups live in s until s is released.
func historyRows(s *historyScratch, rows []messages.Ingest, ids [][16]byte) []historyGroup {
	idx, groups := s.idx, s.groups[:0]
	of := slices.Grow(s.of[:0], len(rows))[:len(rows)] // each row's group
	defer func() { s.groups, s.of = groups, of }()
	for i := range rows {
		r := &rows[i]
		if r.Refused {
			of[i] = -1
			continue
		}
		k := historyKey{r.Reading.CustomerID, r.Source.Topic, r.Source.Partition, DayOf(r.Reading.Timestamp)}
		g, ok := idx[k]
		if !ok {
			g = int32(len(groups))
			idx[k] = g
			groups = append(groups, historyGroup{key: k, first: r.Reading.Timestamp, last: r.Reading.Timestamp,
				firstOffset: r.Source.Offset, lastOff: r.Source.Offset, sorted: true})
		}
		of[i] = g
		gr := &groups[g]
		gr.n++
		gr.first, gr.last = minTime(gr.first, r.Reading.Timestamp), maxTime(gr.last, r.Reading.Timestamp)
		if r.Source.Offset < gr.lastOff {
			gr.sorted = false
		}
		gr.firstOffset, gr.lastOff = min(gr.firstOffset, r.Source.Offset), max(gr.lastOff, r.Source.Offset)
	}
	total := 0
	for g := range groups {
		total += groups[g].n
	}
	buf := slices.Grow(s.buf[:0], total*readingSize)
	s.buf = buf
	for g := range groups {
		size := groups[g].n * readingSize
		groups[g].readings, buf = buf[len(buf):len(buf):len(buf)+size], buf[:len(buf)+size]
	}
	for i, g := range of {
		if g < 0 {
			continue
		}
		r, gr := &rows[i], &groups[g]
		gr.readings = appendReading(gr.readings, ids[i], r.Reading.Timestamp, int16(r.Reading.HeartRate), r.Source.Offset)
	}
	for g := range groups {
		if !groups[g].sorted {
			// Submissions of one partition came out of offset order: rare.
			sortReadings(groups[g].readings)
		}
	}
	return groups
}

// sortReadings sorts packed readings by offset.
func sortReadings(b []byte) {
	n := len(b) / readingSize
	tmp := make([][readingSize]byte, n)
	for i := range tmp {
		copy(tmp[i][:], b[i*readingSize:])
	}
	slices.SortStableFunc(tmp, func(x, y [readingSize]byte) int {
		return cmp.Compare(int64(binary.BigEndian.Uint64(x[26:])), int64(binary.BigEndian.Uint64(y[26:])))
	})
	for i := range tmp {
		copy(b[i*readingSize:], tmp[i][:])
	}
}

// historySource is groups as COPY rows of historyColumns.
func historySource(groups []historyGroup) pgx.CopyFromSource {
	i := -1
	vals := make([]any, len(historyColumns))
	return pgx.CopyFromFunc(func() ([]any, error) {
		i++
		if i >= len(groups) {
			return nil, nil
		}
		g := &groups[i]
		vals[0], vals[1], vals[2], vals[3] = g.key.customer, g.key.topic, g.key.part, g.first
		vals[4], vals[5], vals[6], vals[7] = g.last, g.firstOffset, g.lastOff, g.readings
		return vals, nil
	})
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
	id     [16]byte
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

package sql

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heartbeat/heartbeat/messages"
)

// readingSize is the size of one reading packed in customer_history.readings:
// event id, event time in microseconds since 1970, heart rate, source offset.
const readingSize = 16 + 8 + 2 + 8

// historyColumns are the columns of customer_history, in historySource's order.
var historyColumns = []string{"customer_id", "source_topic", "source_partition", "first_time", "last_time", "first_offset", "last_offset", "readings"}

// historyKey is one customer_history row of a historyLog: a customer's
// readings of one source partition and one UTC day (the row's partition).
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
	readings             []byte // a window of historyLog's one buffer, once packed
	n                    int    // readings in the row
	sorted               bool   // added in offset order
}

// historyEntry is one reading of a historyLog, packed, with its row.
type historyEntry struct {
	group  int32
	packed [readingSize]byte
}

// historyLog gathers readings into customer_history rows: one per
// customer, source partition and UTC day, its readings packed in offset
// order. Persist adds each batch's stored readings as it commits them and
// writes the rows every few seconds (lateHistory); with many customers
// that is a row for many readings instead of one for about each. It
// allocates per log, not per reading or row: the readings are appended to
// one slice and, when packed, sorted by row into one buffer (a counting
// sort). A log is reused once written (reset).
type historyLog struct {
	idx     map[historyKey]int32
	groups  []historyGroup
	entries []historyEntry
	buf     []byte
}

func newHistoryLog() *historyLog { return &historyLog{idx: map[historyKey]int32{}} }

// readings is the number of readings added since the last reset.
func (l *historyLog) readings() int { return len(l.entries) }

func (l *historyLog) reset() {
	clear(l.idx)
	clear(l.groups) // drop the customer ids they hold
	l.groups, l.entries, l.buf = l.groups[:0], l.entries[:0], l.buf[:0]
}

// add adds the readings of rows (ids their parsed event ids) that keep
// selects (all of them when keep is nil); refused rows carry none.
func (l *historyLog) add(rows []messages.Ingest, ids [][16]byte, keep []int) {
	if keep == nil {
		l.entries = slices.Grow(l.entries, len(rows))
		for i := range rows {
			if !rows[i].Refused {
				l.addOne(&rows[i], ids[i])
			}
		}
		return
	}
	l.entries = slices.Grow(l.entries, len(keep))
	for _, i := range keep {
		if !rows[i].Refused {
			l.addOne(&rows[i], ids[i])
		}
	}
}

func (l *historyLog) addOne(r *messages.Ingest, id [16]byte) {
	k := historyKey{r.Reading.CustomerID, r.Source.Topic, r.Source.Partition, DayOf(r.Reading.Timestamp)}
	g, ok := l.idx[k]
	if !ok {
		g = int32(len(l.groups))
		l.idx[k] = g
		l.groups = append(l.groups, historyGroup{key: k, first: r.Reading.Timestamp, last: r.Reading.Timestamp,
			firstOffset: r.Source.Offset, lastOff: r.Source.Offset, sorted: true})
	}
	gr := &l.groups[g]
	gr.n++
	gr.first, gr.last = minTime(gr.first, r.Reading.Timestamp), maxTime(gr.last, r.Reading.Timestamp)
	if r.Source.Offset < gr.lastOff {
		gr.sorted = false
	}
	gr.firstOffset, gr.lastOff = min(gr.firstOffset, r.Source.Offset), max(gr.lastOff, r.Source.Offset)
	l.entries = append(l.entries, historyEntry{group: g})
	packReading(l.entries[len(l.entries)-1].packed[:0], id, r.Reading.Timestamp, int16(r.Reading.HeartRate), r.Source.Offset)
}

// rows packs the readings added into their rows and returns the rows,
// valid until the next add or reset.
func (l *historyLog) rows() []historyGroup {
	buf := slices.Grow(l.buf[:0], len(l.entries)*readingSize)
	for g := range l.groups {
		size := l.groups[g].n * readingSize
		l.groups[g].readings, buf = buf[len(buf):len(buf):len(buf)+size], buf[:len(buf)+size]
	}
	l.buf = buf
	for i := range l.entries {
		gr := &l.groups[l.entries[i].group]
		gr.readings = append(gr.readings, l.entries[i].packed[:]...)
	}
	for g := range l.groups {
		if !l.groups[g].sorted {
			// A partition's readings came out of offset order: rare.
			sortReadings(l.groups[g].readings)
		}
	}
	return l.groups
}

// days returns the UTC days of the log's rows, each once.
func (l *historyLog) days(days []Day) []Day {
	for g := range l.groups {
		if d := l.groups[g].key.day; !slices.Contains(days, d) {
			days = append(days, d)
		}
	}
	return days
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

// historySource is the rows of groups, one slice after the other, as COPY
// rows of historyColumns.
func historySource(groups ...[]historyGroup) pgx.CopyFromSource {
	i := -1
	vals := make([]any, len(historyColumns))
	return pgx.CopyFromFunc(func() ([]any, error) {
		i++
		for len(groups) > 0 && i >= len(groups[0]) {
			groups, i = groups[1:], 0
		}
		if len(groups) == 0 {
			return nil, nil
		}
		g := &groups[0][i]
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

// packReading appends one reading to b packed as customer_history.readings
// holds it. PostgreSQL keeps microseconds: the time is truncated to them,
// as heartbeat_events.event_time is.
func packReading(b []byte, id [16]byte, at time.Time, rate int16, offset int64) []byte {
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

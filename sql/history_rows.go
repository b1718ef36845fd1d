package sql

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"hash/maphash"
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

// historyEntry is one reading of a historyLog: its row's key (customer,
// source topic and partition; the UTC day comes from its time) and the
// reading as customer_history.readings packs it. It holds no pointer (the
// customer id is in the log's names, the topic in its topics), so the
// garbage collector never scans a log's readings.
type historyEntry struct {
	row     uint64 // a hash of the row's key, which the log sorts by
	name    uint32 // the customer id: names[name:name+nameLen]
	part    int32
	nameLen uint16
	topic   uint16 // in topics
	packed  [readingSize]byte
}

func (e *historyEntry) micros() int64 { return int64(binary.BigEndian.Uint64(e.packed[16:24])) }
func (e *historyEntry) offset() int64 { return int64(binary.BigEndian.Uint64(e.packed[26:34])) }
func (e *historyEntry) day() Day      { return DayOf(time.UnixMicro(e.micros())) }

// historyLog gathers readings for customer_history rows: one per customer,
// source partition and UTC day, its readings packed in offset order.
// The detector keeps each batch's readings it evaluated, and
// [HistoryWriter] writes the rows before each commit of the detector's
// offsets, every DETECT_COMMIT_INTERVAL; with many
// customers that is a row for many readings instead of one for about
// each. It holds the readings only, about 70 bytes each with the customer
// id, and no per-customer index (with 100,000 customers an index cost more
// than the readings): they are sorted into rows when written. A log is
// reused once written (reset).
type historyLog struct {
	seed    maphash.Seed
	entries []historyEntry
	names   []byte     // the entries' customer ids, one after the other
	topics  []string   // the entries' source topics, each once
	order   []rowOrder // entries in row order, once sorted
	buf     []byte     // the readings of the row being written
}

// rowOrder is an entry's place in the sort: by the hash of its row's key,
// then offset. Sorting these, not the entries, keeps the sort in one
// small array. Two rows whose keys hash alike (one chance in 2⁶⁴ a pair)
// have their readings interleaved by offset and are written as more rows
// of each: more rows, nothing lost.
type rowOrder struct {
	row    uint64
	offset int64
	i      int32
}

func newHistoryLog() *historyLog { return &historyLog{seed: maphash.MakeSeed()} }

// readings is the number of readings added since the last reset.
func (l *historyLog) readings() int { return len(l.entries) }

func (l *historyLog) reset() {
	clear(l.topics)
	l.entries, l.names, l.topics, l.order = l.entries[:0], l.names[:0], l.topics[:0], l.order[:0]
}

// add adds the readings of rows (ids their parsed event ids); refused
// rows carry none.
func (l *historyLog) add(rows []messages.Ingest, ids [][16]byte) {
	l.entries = slices.Grow(l.entries, len(rows))
	for i := range rows {
		if !rows[i].Refused {
			l.addOne(&rows[i], ids[i])
		}
	}
}

func (l *historyLog) addOne(r *messages.Ingest, id [16]byte) {
	topic := slices.Index(l.topics, r.Source.Topic)
	if topic < 0 {
		topic = len(l.topics)
		l.topics = append(l.topics, r.Source.Topic)
	}
	day := DayOf(r.Reading.Timestamp)
	row := maphash.String(l.seed, r.Reading.CustomerID) ^ uint64(topic+1)*0xbf58476d1ce4e5b9 ^
		(uint64(day)<<32|uint64(uint32(r.Source.Partition)))*0x9e3779b97f4a7c15
	l.entries = append(l.entries, historyEntry{row: row, name: uint32(len(l.names)), part: r.Source.Partition,
		nameLen: uint16(len(r.Reading.CustomerID)), topic: uint16(topic)})
	l.names = append(l.names, r.Reading.CustomerID...)
	e := &l.entries[len(l.entries)-1]
	packReading(e.packed[:0], id, r.Reading.Timestamp, int16(r.Reading.HeartRate), r.Source.Offset)
}

// customer is e's customer id.
func (l *historyLog) customer(e *historyEntry) []byte {
	return l.names[e.name : e.name+uint32(e.nameLen)]
}

// sort orders the readings by row — customer, topic, partition, day —
// and, within a row, by offset.
func (l *historyLog) sort() {
	l.order = slices.Grow(l.order[:0], len(l.entries))[:len(l.entries)]
	for i := range l.entries {
		l.order[i] = rowOrder{l.entries[i].row, l.entries[i].offset(), int32(i)}
	}
	slices.SortFunc(l.order, func(a, b rowOrder) int {
		if c := cmp.Compare(a.row, b.row); c != 0 {
			return c
		}
		return cmp.Compare(a.offset, b.offset)
	})
}

// sameRow reports whether two of its entries go to one customer_history
// row.
func (l *historyLog) sameRow(x, y *historyEntry) bool {
	return x.row == y.row && x.topic == y.topic && x.part == y.part && x.day() == y.day() &&
		bytes.Equal(l.customer(x), l.customer(y))
}

// days returns the UTC days of the log's readings, each once.
func (l *historyLog) days(days []Day) []Day {
	for i := range l.entries {
		// A log's readings are mostly of one day: the one before is the
		// usual answer.
		if d := l.entries[i].day(); len(days) == 0 || d != days[len(days)-1] && !slices.Contains(days, d) {
			days = append(days, d)
		}
	}
	return days
}

// historySource is the rows of l, sorted, as COPY rows of historyColumns.
// A row's readings are packed into l.buf, reused for the next row: pgx
// encodes a row before it asks for the next.
func historySource(l *historyLog) pgx.CopyFromSource {
	next := 0 // in l.order
	vals := make([]any, len(historyColumns))
	return pgx.CopyFromFunc(func() ([]any, error) {
		if next >= len(l.order) {
			return nil, nil
		}
		first := &l.entries[l.order[next].i]
		l.buf = l.buf[:0]
		from, to := first.micros(), first.micros()
		last := first
		for ; next < len(l.order); next++ {
			e := &l.entries[l.order[next].i]
			if !l.sameRow(first, e) {
				break
			}
			l.buf = append(l.buf, e.packed[:]...)
			from, to, last = min(from, e.micros()), max(to, e.micros()), e
		}
		vals[0], vals[1], vals[2], vals[3] = string(l.customer(first)), l.topics[first.topic], first.part, time.UnixMicro(from)
		vals[4], vals[5], vals[6], vals[7] = time.UnixMicro(to), first.offset(), last.offset(), l.buf
		return vals, nil
	})
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

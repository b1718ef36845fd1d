// Package replay publishes a recorded heart-rate series — a CSV file of
// customer_id,timestamp,heart_rate — to the raw topic, as a sensor would
// have: as fast as possible or at a multiple of real time, keeping the
// recorded timestamps (or shifting them so the latest is now). Event ids
// are UUIDv5 of customer and recorded timestamp, so a recording replayed
// twice is stored once.
package replay

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	wmmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"

	"github.com/heartbeat/heartbeat/messages"
)

// Row is one reading of a recording.
type Row struct {
	CustomerID string
	// Time is the recorded timestamp, to the millisecond (what the wire
	// format carries).
	Time time.Time
	Rate int
	Line int
}

// Recording is a parsed CSV file.
type Recording struct {
	Rows []Row
	// Rounded counts rates given with a fraction, rounded to whole bpm.
	Rounded int
}

// ReadCSV parses a recording: a header line naming the columns
// customer_id, timestamp (RFC 3339 with a zone) and heart_rate (bpm, in
// any order; other columns are ignored), then one reading a line. A rate
// with a fraction is rounded to whole bpm. Errors name the line.
func ReadCSV(r io.Reader) (Recording, error) {
	br := bufio.NewReader(r)
	if b, err := br.Peek(3); err == nil && string(b) == "\ufeff" {
		_, _ = br.Discard(3)
	}
	cr := csv.NewReader(br)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err != nil {
		return Recording{}, fmt.Errorf("read header: %w", err)
	}
	col := map[string]int{}
	for i, h := range header {
		col[strings.ToLower(strings.TrimSpace(h))] = i
	}
	var idx [3]int
	for i, name := range []string{"customer_id", "timestamp", "heart_rate"} {
		c, ok := col[name]
		if !ok {
			return Recording{}, fmt.Errorf("line 1: the header %q has no column %s (want customer_id,timestamp,heart_rate)", strings.Join(header, ","), name)
		}
		idx[i] = c
	}
	var rec Recording
	for {
		fields, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		line, _ := cr.FieldPos(0)
		if err != nil {
			return rec, fmt.Errorf("line %d: %w", line, err)
		}
		if len(fields) == 1 && strings.TrimSpace(fields[0]) == "" {
			continue
		}
		if len(fields) <= max(idx[0], idx[1], idx[2]) {
			return rec, fmt.Errorf("line %d: %d fields, want customer_id,timestamp,heart_rate", line, len(fields))
		}
		row := Row{CustomerID: strings.TrimSpace(fields[idx[0]]), Line: line}
		if row.CustomerID == "" {
			return rec, fmt.Errorf("line %d: empty customer_id", line)
		}
		ts := strings.TrimSpace(fields[idx[1]])
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			return rec, fmt.Errorf("line %d: timestamp %q is not RFC 3339 with a zone (like 2023-04-05T09:23:50Z)", line, ts)
		}
		row.Time = t.UTC().Truncate(time.Millisecond)
		hr := strings.TrimSpace(fields[idx[2]])
		if n, err := strconv.Atoi(hr); err == nil {
			row.Rate = n
		} else if f, err := strconv.ParseFloat(hr, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) && math.Abs(f) < 1e6 {
			row.Rate = int(math.Round(f))
			rec.Rounded++
		} else {
			return rec, fmt.Errorf("line %d: heart_rate %q is not a number", line, hr)
		}
		rec.Rows = append(rec.Rows, row)
	}
	if len(rec.Rows) == 0 {
		return rec, errors.New("the recording has no readings")
	}
	return rec, nil
}

var eventNamespace = uuid.MustParse("8d0f3b1e-6a57-5c4e-9b3a-1f2e3d4c5b6a")

// EventID is the event id of a recorded reading: a UUIDv5 of the customer
// and the recorded timestamp, so replaying the recording again — shifted or
// not — yields the same ids and stores nothing twice.
func EventID(customer string, recorded time.Time) string {
	return uuid.NewSHA1(eventNamespace, []byte(customer+"|"+recorded.UTC().Format(messages.TimestampLayout))).String()
}

// Span returns the recording's earliest and latest timestamps.
func (r Recording) Span() (first, last time.Time) {
	first, last = r.Rows[0].Time, r.Rows[0].Time
	for _, row := range r.Rows {
		if row.Time.Before(first) {
			first = row.Time
		}
		if row.Time.After(last) {
			last = row.Time
		}
	}
	return first, last
}

// ShiftToNow is the shift that brings the recording's latest reading to
// within the hour before now: a whole number of hours, so that replaying
// the file again within that hour gives every reading the same timestamp
// and id again and stores nothing twice (heartbeat_events is keyed by event
// id and event time). A recording too long to fit MAX_EVENT_AGE (maxAge)
// that way is shifted by whole minutes, or seconds.
func (r Recording) ShiftToNow(now time.Time, maxAge time.Duration) time.Duration {
	first, last := r.Span()
	for _, g := range []time.Duration{time.Hour, time.Minute, time.Second} {
		shift := floor(now.Sub(last), g)
		if g == time.Second || now.Sub(first.Add(shift)) <= maxAge-time.Minute {
			return shift
		}
	}
	return 0
}

// floor rounds d down to a multiple of g, towards the past.
func floor(d, g time.Duration) time.Duration {
	q := d / g
	if d%g < 0 {
		q--
	}
	return q * g
}

// Options tune Publish.
type Options struct {
	Topic string
	// Speed is the multiple of real time; 0 publishes as fast as possible.
	Speed float64
	// Shift is added to every recorded timestamp.
	Shift time.Duration
	// Workers publish in parallel; one customer always uses the same one,
	// so its readings stay in order.
	Workers int
	// OnPublished is called after each acknowledged publish.
	OnPublished func()
}

// Summary tells what Publish did.
type Summary struct {
	Published  int
	Customers  int
	Duplicates int // rows repeating a customer and timestamp: one event id
}

// Publish sends the recording's rows to opts.Topic through pub, in file
// order per customer, keyed by customer id, each with its own correlation
// id. At Speed N, a row is sent (its time minus the first row's) / N after
// the start.
func Publish(ctx context.Context, pub message.Publisher, rec Recording, opts Options) (Summary, error) {
	workers := max(opts.Workers, 1)
	var sum Summary
	seen := make(map[string]struct{}, len(rec.Rows))
	customers := map[string]struct{}{}
	for _, r := range rec.Rows {
		customers[r.CustomerID] = struct{}{}
		id := EventID(r.CustomerID, r.Time)
		if _, dup := seen[id]; dup {
			sum.Duplicates++
		}
		seen[id] = struct{}{}
	}
	sum.Customers = len(customers)

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	queues := make([]chan Row, workers)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range queues {
		queues[i] = make(chan Row, 1024)
		wg.Go(func() {
			for r := range queues[i] {
				if ctx.Err() != nil {
					continue
				}
				if err := publishRow(pub, opts, r); err != nil {
					cancel(err)
					continue
				}
				mu.Lock()
				sum.Published++
				mu.Unlock()
				if opts.OnPublished != nil {
					opts.OnPublished()
				}
			}
		})
	}
	first, _ := rec.Span()
	start := time.Now()
dispatch:
	for _, r := range rec.Rows {
		if opts.Speed > 0 {
			due := start.Add(time.Duration(float64(r.Time.Sub(first)) / opts.Speed))
			if wait := time.Until(due); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					break dispatch
				case <-t.C:
				}
			}
		}
		select {
		case queues[shard(r.CustomerID, workers)] <- r:
		case <-ctx.Done():
			break dispatch
		}
	}
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return sum, err
	}
	return sum, nil
}

func publishRow(pub message.Publisher, opts Options, r Row) error {
	h := messages.Heartbeat{EventID: EventID(r.CustomerID, r.Time), CustomerID: r.CustomerID,
		Timestamp: r.Time.Add(opts.Shift), HeartRate: r.Rate}
	payload, err := h.Marshal()
	if err != nil {
		return err
	}
	msg := message.NewMessage(h.EventID, payload)
	msg.Metadata.Set(messages.KeyMetadata, r.CustomerID)
	msg.Metadata.Set(wmmw.CorrelationIDMetadataKey, watermill.NewUUID())
	if err := pub.Publish(opts.Topic, msg); err != nil {
		return fmt.Errorf("publish line %d to %s: %w", r.Line, opts.Topic, err)
	}
	return nil
}

func shard(key string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// Limits are what the pipeline's validation refuses, for the warnings.
type Limits struct {
	MinRate, MaxRate int
	MaxEventAge      time.Duration
	MaxClockSkew     time.Duration
}

// Warnings explains, before anything is sent, which readings the pipeline
// will refuse as domain failures at now once shifted by shift, and how to
// fix it.
func Warnings(rec Recording, shift time.Duration, now time.Time, l Limits) []string {
	var old, future, outOfRange, longID int
	var oldest time.Time
	for _, r := range rec.Rows {
		t := r.Time.Add(shift)
		switch {
		case t.Before(now.Add(-l.MaxEventAge)):
			old++
			if oldest.IsZero() || t.Before(oldest) {
				oldest = t
			}
		case t.After(now.Add(l.MaxClockSkew)):
			future++
		}
		if r.Rate < l.MinRate || r.Rate > l.MaxRate {
			outOfRange++
		}
		if len([]rune(r.CustomerID)) > messages.MaxCustomerIDLen {
			longID++
		}
	}
	var w []string
	if old > 0 {
		// now.Sub saturates at the longest duration, about 292 years.
		age := now.Sub(oldest)
		hours := math.Ceil(age.Hours()) + 1
		raise := "  - or run persist and detect with MAX_EVENT_AGE raised above the recording's age, e.g. MAX_EVENT_AGE=%s."
		if hours*float64(time.Hour) < math.MaxInt64 {
			raise = fmt.Sprintf(raise, strings.TrimSuffix((time.Duration(hours)*time.Hour).String(), "0m0s"))
		} else {
			raise = fmt.Sprintf("  - MAX_EVENT_AGE cannot be raised that far (its longest is %dh, about 292 years).", math.MaxInt64/int64(time.Hour))
		}
		ago := age.Round(time.Hour).String() + " ago"
		if age == math.MaxInt64 {
			ago = "more than 292 years ago"
		}
		w = append(w,
			fmt.Sprintf("%d of %d readings are older than MAX_EVENT_AGE (%s): the oldest is from %s, %s.",
				old, len(rec.Rows), l.MaxEventAge, oldest.UTC().Format(time.RFC3339), ago),
			"persist and detect refuse such readings as domain failures (to events.invalid.v1): they are neither stored nor checked for anomalies.",
			"Fix one of:",
			"  - replay with --shift-to-now: the latest reading becomes now, the others keep their spacing;",
			raise)
	}
	if future > 0 {
		w = append(w, fmt.Sprintf("%d readings are more than MAX_CLOCK_SKEW (%s) in the future: persist and detect refuse them; replay with --shift-to-now.",
			future, l.MaxClockSkew))
	}
	if outOfRange > 0 {
		w = append(w, fmt.Sprintf("%d readings are outside HEART_RATE_MIN..HEART_RATE_MAX (%d..%d): they are refused as sensor faults.",
			outOfRange, l.MinRate, l.MaxRate))
	}
	if longID > 0 {
		w = append(w, fmt.Sprintf("%d readings have a customer_id over %d characters: they are refused.", longID, messages.MaxCustomerIDLen))
	}
	return w
}

// Package handlerstest holds in-memory stand-ins for what the handlers
// need of storage, with storage's semantics, for tests of the handlers and
// of the router on Watermill's GoChannel.
package handlerstest

import (
	"context"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/heartbeat/heartbeat/messages"
)

// Events records the batches a writer is given; Fail, when set, decides per
// call (1, 2, …) whether the write fails.
type Events struct {
	mu    sync.Mutex
	calls int
	rows  []messages.Ingest
	Fail  func(call int) error
}

// Write stores rows, or fails as Fail says; it reports every row as new.
func (e *Events) Write(_ context.Context, rows []messages.Ingest) (int64, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls++
	if e.Fail != nil {
		if err := e.Fail(e.calls); err != nil {
			return 0, err
		}
	}
	e.rows = append(e.rows, rows...)
	return int64(len(rows)), nil
}

// SubmitAll writes items as one batch: Events is also the IngestSink a
// Persist stores into without a Batcher.
func (e *Events) SubmitAll(ctx context.Context, items []messages.Ingest) error {
	_, err := e.Write(ctx, items)
	return err
}

// Snapshot returns how many writes were tried and the rows written.
func (e *Events) Snapshot() (calls int, rows []messages.Ingest) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.calls, append([]messages.Ingest(nil), e.rows...)
}

// Failures makes the next Fail calls of a store fail with ErrDown.
type Failures struct {
	// Fail is how many calls are left to fail.
	Fail int
}

// take is ErrDown while calls are left to fail, counting one down.
func (f *Failures) take() error {
	if f.Fail == 0 {
		return nil
	}
	f.Fail--
	return ErrDown
}

// Anomalies is an AnomalyStore: an anomaly id is recorded once.
type Anomalies struct {
	Failures
	mu     sync.Mutex
	seen   map[string]messages.Anomaly
	msgs   []*message.Message
	topics []string
}

// Write records a and its message unless a was recorded already.
func (s *Anomalies) Write(_ context.Context, a messages.Anomaly, topic string, msg *message.Message) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.take(); err != nil {
		return false, err
	}
	if s.seen == nil {
		s.seen = map[string]messages.Anomaly{}
	}
	if _, dup := s.seen[a.AnomalyID]; dup {
		return false, nil
	}
	s.seen[a.AnomalyID] = a
	s.msgs = append(s.msgs, msg)
	s.topics = append(s.topics, topic)
	return true, nil
}

// Topics returns the topic each recorded message was queued for, in order.
func (s *Anomalies) Topics() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.topics...)
}

// Recorded returns the anomalies by id and their messages.
func (s *Anomalies) Recorded() (map[string]messages.Anomaly, []*message.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]messages.Anomaly, len(s.seen))
	for id, a := range s.seen {
		out[id] = a
	}
	return out, append([]*message.Message(nil), s.msgs...)
}

// Episodes is an EpisodeStore with the anomalies table's semantics: an
// opening inserts once, a reclassification (an open update with
// ReclassifiedFrom) changes an open row's type once, a closing updates a
// row not closed yet once.
type Episodes struct {
	Failures
	mu     sync.Mutex
	rows   map[string]string // anomaly id → status
	types  map[string]string // anomaly id → type
	writes []messages.EpisodeUpdate
	topics []string
	// Recent is what RecentEpisodes answers.
	Recent []messages.Episode
}

// ErrDown is the error of a failing write (see Failures).
var ErrDown = errorString("database down")

type errorString string

func (e errorString) Error() string { return string(e) }

// WriteEpisodes records the updates that change a row, with their messages.
func (s *Episodes) WriteEpisodes(_ context.Context, topic string, ups []messages.EpisodeUpdate) ([]bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.take(); err != nil {
		return nil, err
	}
	if s.rows == nil {
		s.rows, s.types = map[string]string{}, map[string]string{}
	}
	written := make([]bool, len(ups))
	for i, up := range ups {
		id := up.Episode.AnomalyID
		st, ok := s.rows[id]
		switch {
		case up.Episode.Status == messages.EpisodeClosed:
			if st == messages.EpisodeClosed {
				continue
			}
		case up.Episode.ReclassifiedFrom != "":
			if st != messages.EpisodeOpen || s.types[id] != up.Episode.ReclassifiedFrom {
				continue
			}
		case ok:
			continue
		}
		s.rows[id], s.types[id] = up.Episode.Status, up.Episode.Type
		s.writes = append(s.writes, up)
		s.topics = append(s.topics, topic)
		written[i] = true
	}
	return written, nil
}

// SetStatus records anomaly id as a row with status, as if written before.
func (s *Episodes) SetStatus(id, status string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rows == nil {
		s.rows, s.types = map[string]string{}, map[string]string{}
	}
	s.rows[id] = status
}

// Writes returns the updates that changed a row, in order, and the topic
// each message was queued for.
func (s *Episodes) Writes() ([]messages.EpisodeUpdate, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]messages.EpisodeUpdate(nil), s.writes...), append([]string(nil), s.topics...)
}

// RecentEpisodes answers Recent.
func (s *Episodes) RecentEpisodes(context.Context, string, time.Time) ([]messages.Episode, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Recent, nil
}

// EpisodeHistory answers every Readings call with Prime, Stored and Err,
// counting the calls. The zero value has no history: nothing stored.
type EpisodeHistory struct {
	mu     sync.Mutex
	Prime  *messages.Reading
	Stored []messages.Reading
	Err    error
	calls  int
}

// Readings answers Prime, Stored and Err.
func (h *EpisodeHistory) Readings(context.Context, messages.Heartbeat, messages.Source, time.Time) (*messages.Reading, []messages.Reading, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	return h.Prime, h.Stored, h.Err
}

// Calls is how many times Readings was asked.
func (h *EpisodeHistory) Calls() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls
}

// History is a per-event History answering every Previous call with At,
// Rate, Found and Err, counting the calls. The zero value has stored
// nothing.
type History struct {
	mu    sync.Mutex
	At    time.Time
	Rate  int
	Found bool
	Err   error
	calls int
}

// Previous answers At, Rate, Found and Err.
func (h *History) Previous(context.Context, messages.Heartbeat, messages.Source) (time.Time, int, bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	return h.At, h.Rate, h.Found, h.Err
}

// Calls is how many times Previous was asked.
func (h *History) Calls() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls
}

// Kept is a HistoryLog that holds the readings kept until Flush, which
// moves them to Written — what a History would then read — unless
// FlushErr is set. Room never waits.
type Kept struct {
	mu       sync.Mutex
	held     []messages.Ingest
	written  []messages.Ingest
	flushes  int
	FlushErr error
}

// Keep holds rs.
func (k *Kept) Keep(_ context.Context, rs []messages.Ingest) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.held = append(k.held, rs...)
	return nil
}

// Flush moves what is held to Written, or returns FlushErr.
func (k *Kept) Flush(context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.flushes++
	if k.FlushErr != nil {
		return k.FlushErr
	}
	k.written, k.held = append(k.written, k.held...), nil
	return nil
}

// Room returns at once.
func (k *Kept) Room(context.Context) error { return nil }

// Held returns the readings kept and not written, in order.
func (k *Kept) Held() []messages.Ingest {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]messages.Ingest(nil), k.held...)
}

// Written returns the readings written, in order.
func (k *Kept) Written() []messages.Ingest {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]messages.Ingest(nil), k.written...)
}

// Flushes is how many times Flush was called.
func (k *Kept) Flushes() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.flushes
}

// Readings answers, as a History reading what was written, the readings
// of h's customer written from records of src's partition before src:
// the latest before warmFrom, and those from warmFrom on in offset order.
func (k *Kept) Readings(_ context.Context, h messages.Heartbeat, src messages.Source, warmFrom time.Time) (*messages.Reading, []messages.Reading, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var prime *messages.Reading
	var rs []messages.Reading
	for _, w := range k.written {
		if w.Reading.CustomerID != h.CustomerID || w.Source.Topic != src.Topic || w.Source.Partition != src.Partition || w.Source.Offset >= src.Offset {
			continue
		}
		r := messages.Reading{EventID: w.Reading.EventID, Time: w.Reading.Timestamp, Rate: w.Reading.HeartRate}
		switch {
		case !r.Time.Before(warmFrom):
			rs = append(rs, r)
		case prime == nil || r.Time.After(prime.Time):
			prime = &r
		}
	}
	return prime, rs, nil
}

package handlers_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	wmmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/handlers"
	"github.com/heartbeat/heartbeat/handlers/rules"
	"github.com/heartbeat/heartbeat/messages"
	hbsql "github.com/heartbeat/heartbeat/sql"
)

// episodeStore is an in-memory EpisodeStore with the anomalies table's
// semantics: an opening inserts once, a closing updates an open row once.
type episodeStore struct {
	rows   map[string]string // anomaly id → status
	writes []hbsql.EpisodeWrite
	fail   int // fail this many WriteEpisodes calls
	recent []rules.Episode
}

func (s *episodeStore) WriteEpisodes(_ context.Context, ws []hbsql.EpisodeWrite) ([]bool, error) {
	if s.fail > 0 {
		s.fail--
		return nil, errors.New("database down")
	}
	written := make([]bool, len(ws))
	for i, w := range ws {
		st, ok := s.rows[w.Row.AnomalyID]
		switch {
		case w.Row.Status == hbsql.EpisodeOpen && !ok, w.Row.Status == hbsql.EpisodeClosed && st != hbsql.EpisodeClosed:
			s.rows[w.Row.AnomalyID] = w.Row.Status
			s.writes = append(s.writes, w)
			written[i] = true
		}
	}
	return written, nil
}

func (s *episodeStore) RecentEpisodes(context.Context, string, time.Time) ([]rules.Episode, error) {
	return s.recent, nil
}

type episodeHistory struct {
	prime    *rules.Reading
	readings []rules.Reading
	err      error
	calls    int
}

func (h *episodeHistory) Readings(context.Context, messages.Heartbeat, messages.Source, time.Time) (*rules.Reading, []rules.Reading, error) {
	h.calls++
	return h.prime, h.readings, h.err
}

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

type detectFixture struct {
	d        *handlers.DetectEpisodes
	store    *episodeStore
	history  *episodeHistory
	opened   []messages.Anomaly
	outcomes []string
	offset   int64
}

func newDetectFixture(t *testing.T) *detectFixture {
	t.Helper()
	e, err := rules.NewEpisodeEngine(rules.DefaultEpisodeParams())
	require.NoError(t, err)
	f := &detectFixture{store: &episodeStore{rows: map[string]string{}}, history: &episodeHistory{}}
	f.d = &handlers.DetectEpisodes{
		Limits: messages.DefaultLimits(), Engine: e, Store: f.store, History: f.history, AnomalyTopic: "events.anomaly.v1",
		Now:       func() time.Time { return t0.Add(time.Hour) },
		OnAnomaly: func(a messages.Anomaly) { f.opened = append(f.opened, a) },
		OnHistory: func(o string) { f.outcomes = append(f.outcomes, o) },
	}
	return f
}

func reading(customer string, at time.Duration, rate int) messages.Heartbeat {
	return messages.Heartbeat{EventID: uuid.NewSHA1(uuid.NameSpaceURL, fmt.Appendf(nil, "%s/%d", customer, at)).String(),
		CustomerID: customer, Timestamp: t0.Add(at), HeartRate: rate}
}

func (f *detectFixture) message(t *testing.T, h messages.Heartbeat) *message.Message {
	t.Helper()
	b, err := h.Marshal()
	require.NoError(t, err)
	m := message.NewMessage(h.EventID, b)
	m.Metadata.Set(wmmw.CorrelationIDMetadataKey, "corr-"+h.EventID)
	f.offset++
	m.SetContext(messages.WithSource(context.Background(), messages.Source{Topic: "events.raw.v1", Partition: 2, Offset: f.offset}))
	return m
}

func (f *detectFixture) handle(t *testing.T, h messages.Heartbeat) error {
	t.Helper()
	return f.d.Handle(f.message(t, h))
}

func TestDetectEpisodesRecordsOpeningAndClosing(t *testing.T) {
	f := newDetectFixture(t)
	s := time.Second
	jump := reading("c1", 1*s, 105)
	for i, h := range []messages.Heartbeat{reading("c1", 0, 70), jump, reading("c1", 2*s, 104), reading("c1", 3*s, 103)} {
		require.NoError(t, f.handle(t, h), "reading %d", i)
	}
	require.Len(t, f.store.writes, 1)
	w := f.store.writes[0]
	id := rules.EpisodeID("c1", rules.Spike, jump.EventID)
	require.Equal(t, hbsql.EpisodeOpen, w.Row.Status)
	require.Equal(t, id, w.Row.AnomalyID)
	require.Equal(t, jump.EventID, w.Row.EventID, "the episode's first reading")
	require.Equal(t, jump.Timestamp, w.Row.StartedAt)
	require.Equal(t, t0.Add(3*s), w.Row.OpenedAt)
	require.Equal(t, 3, w.Row.Samples)
	require.Equal(t, 70, *w.Row.PreviousHeartRate)
	require.Equal(t, "events.anomaly.v1", w.Topic)
	require.Equal(t, id, w.Msg.UUID, "the opening's message id is the anomaly id")
	require.Equal(t, "c1", w.Msg.Metadata.Get(messages.KeyMetadata))
	require.Equal(t, "open", w.Msg.Metadata.Get("anomaly_status"))
	require.Equal(t, "corr-"+reading("c1", 3*s, 103).EventID, wmmw.MessageCorrelationID(w.Msg))
	var body map[string]any
	require.NoError(t, json.Unmarshal(w.Msg.Payload, &body))
	require.Equal(t, "open", body["status"])
	require.Equal(t, "SPIKE", body["anomaly_type"])
	require.EqualValues(t, 105, body["peak_heart_rate"])
	require.Len(t, f.opened, 1)

	// Back to the base for a minute: the SPIKE closes, once.
	for i := range 62 {
		require.NoError(t, f.handle(t, reading("c1", time.Duration(4+i)*s, 71)))
	}
	require.Len(t, f.store.writes, 2)
	c := f.store.writes[1]
	require.Equal(t, hbsql.EpisodeClosed, c.Row.Status)
	require.Equal(t, id, c.Row.AnomalyID)
	require.Equal(t, t0.Add(3*s), *c.Row.EndedAt, "ends at its last holding reading")
	require.NotEqual(t, id, c.Msg.UUID, "the closing has its own message id")
	require.Equal(t, "closed", c.Msg.Metadata.Get("anomaly_status"))
	require.JSONEq(t, `{"close_reason":"cleared"}`, string(c.Row.Details))
	require.Len(t, f.opened, 1, "closings are not counted as anomalies")
}

func TestDetectEpisodesMovesOnOnlyAfterCommit(t *testing.T) {
	f := newDetectFixture(t)
	s := time.Second
	for _, h := range []messages.Heartbeat{reading("c1", 0, 70), reading("c1", s, 105), reading("c1", 2*s, 104)} {
		require.NoError(t, f.handle(t, h))
	}
	confirm := f.message(t, reading("c1", 3*s, 103))
	f.store.fail = 1
	require.Error(t, f.d.Handle(confirm), "nacked: redelivered")
	require.Empty(t, f.store.writes)
	require.NoError(t, f.d.Handle(confirm), "the redelivery raises the same opening")
	require.Len(t, f.store.writes, 1)
	require.NoError(t, f.d.Handle(confirm), "a duplicate changes nothing")
	require.Len(t, f.store.writes, 1)
}

func TestDetectEpisodesAcksInvalidReadings(t *testing.T) {
	f := newDetectFixture(t)
	m := message.NewMessage(uuid.NewString(), []byte(`{"event_id":"nope"}`))
	require.NoError(t, f.d.Handle(m))
	require.Empty(t, f.store.writes)
	require.Zero(t, f.history.calls)
}

// TestDetectEpisodesRebuildsState: a customer the engine does not know is
// rebuilt from its stored readings before its reading is evaluated.
func TestDetectEpisodesRebuildsState(t *testing.T) {
	f := newDetectFixture(t)
	s := time.Second
	prime := rules.ReadingOf(reading("c1", 0, 70))
	jump := reading("c1", s, 105)
	f.history.prime = &prime
	f.history.readings = []rules.Reading{rules.ReadingOf(jump), rules.ReadingOf(reading("c1", 2*s, 104))}
	require.NoError(t, f.handle(t, reading("c1", 3*s, 103)))
	require.Equal(t, []string{"found"}, f.outcomes)
	require.Len(t, f.store.writes, 1, "the jump before the restart is confirmed after it")
	require.Equal(t, rules.EpisodeID("c1", rules.Spike, jump.EventID), f.store.writes[0].Row.AnomalyID)
	require.NoError(t, f.handle(t, reading("c1", 4*s, 103)))
	require.Equal(t, 1, f.history.calls, "once per customer")
}

// TestDetectEpisodesWithoutHistory: persist not running — the episodes
// recorded open are taken as they are, so one closes instead of a second
// one opening.
func TestDetectEpisodesWithoutHistory(t *testing.T) {
	f := newDetectFixture(t)
	f.history.err = fmt.Errorf("wait: %w", hbsql.ErrHistoryIncomplete)
	start := rules.ReadingOf(reading("c1", 0, 125))
	recorded := rules.Episode{CustomerID: "c1", Rule: rules.SustainedHigh, Severity: rules.SeverityHigh, Threshold: 120,
		Start: start, OpenedAt: start.Time.Add(10 * time.Minute), Last: start, Peak: 130, Trough: 121, Samples: 600}
	f.store.recent = []rules.Episode{recorded}
	f.store.rows[recorded.ID()] = hbsql.EpisodeOpen
	for i := range 62 {
		require.NoError(t, f.handle(t, reading("c1", 11*time.Minute+time.Duration(i)*time.Second, 80)))
	}
	require.Equal(t, []string{"incomplete"}, f.outcomes)
	require.Len(t, f.store.writes, 1)
	require.Equal(t, recorded.ID(), f.store.writes[0].Row.AnomalyID)
	require.Equal(t, hbsql.EpisodeClosed, f.store.writes[0].Row.Status)
}

// A batch's episode changes are recorded in one write at its end, the same
// changes as reading by reading; a failed write drops the partition's
// state, and the batch tried again records the same changes once.
func TestDetectEpisodesBatchMatchesOneByOneAndSurvivesAFailedWrite(t *testing.T) {
	var hs []messages.Heartbeat
	at := time.Duration(0)
	for i, rate := range []int{70, 71, 70, 72, 110, 111, 112, 110, 111, 70, 71, 70, 72, 71} {
		at = time.Duration(i) * time.Second
		hs = append(hs, reading("c1", at, rate), reading("c2", at, 65))
	}

	one := newDetectFixture(t)
	for _, h := range hs {
		require.NoError(t, one.handle(t, h))
	}
	require.NotEmpty(t, one.store.writes, "the jump is a SPIKE")

	batch := newDetectFixture(t)
	b := &messages.Batch{}
	for _, h := range hs {
		m := batch.message(t, h)
		src, _ := messages.SourceFromContext(m.Context())
		b.Records = append(b.Records, messages.Record{Source: src, Value: m.Payload,
			Headers: []messages.Header{{Key: messages.CorrelationIDMetadata, Value: []byte("corr-" + h.EventID)}}})
	}
	batch.store.fail = 1
	require.EqualError(t, batch.d.HandleBatch(context.Background(), b, nil), "database down")
	require.Zero(t, b.Done)
	require.Empty(t, batch.store.writes)
	calls := batch.history.calls
	require.NoError(t, batch.d.HandleBatch(context.Background(), b, nil))
	require.Equal(t, len(hs), b.Done)
	require.Greater(t, batch.history.calls, calls, "the forgotten customers are rebuilt from storage")

	require.Equal(t, len(one.store.writes), len(batch.store.writes))
	for i := range one.store.writes {
		w1, w2 := one.store.writes[i], batch.store.writes[i]
		require.Equal(t, w1.Row.AnomalyID, w2.Row.AnomalyID)
		require.Equal(t, w1.Row.Status, w2.Row.Status)
		require.Equal(t, w1.Msg.UUID, w2.Msg.UUID)
		require.Equal(t, w1.Msg.Metadata.Get(wmmw.CorrelationIDMetadataKey), w2.Msg.Metadata.Get(wmmw.CorrelationIDMetadataKey))
	}
	require.Equal(t, len(one.opened), len(batch.opened))
}

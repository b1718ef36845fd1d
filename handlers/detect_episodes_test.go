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
	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/messages/rules"
	hbsql "github.com/heartbeat/heartbeat/sql"
)

// episodeStore is an in-memory EpisodeStore with the anomalies table's
// semantics: an opening inserts once, a reclassification changes an open
// row's type once, a closing updates an open row once.
type episodeStore struct {
	rows   map[string]string // anomaly id → status
	types  map[string]string // anomaly id → type
	writes []hbsql.EpisodeWrite
	fail   int // fail this many WriteEpisodes calls
	recent []messages.Episode
}

func (s *episodeStore) WriteEpisodes(_ context.Context, ws []hbsql.EpisodeWrite) ([]bool, error) {
	if s.fail > 0 {
		s.fail--
		return nil, errors.New("database down")
	}
	written := make([]bool, len(ws))
	for i, w := range ws {
		id := w.Row.AnomalyID
		st, ok := s.rows[id]
		switch {
		case w.Row.Status == hbsql.EpisodeOpen && !ok,
			w.Row.ReclassifiedFrom != "" && st == hbsql.EpisodeOpen && s.types[id] == w.Row.ReclassifiedFrom,
			w.Row.Status == hbsql.EpisodeClosed && st != hbsql.EpisodeClosed:
			s.rows[id], s.types[id] = w.Row.Status, w.Row.Type
			s.writes = append(s.writes, w)
			written[i] = true
		}
	}
	return written, nil
}

func (s *episodeStore) RecentEpisodes(context.Context, string, time.Time) ([]messages.Episode, error) {
	return s.recent, nil
}

type episodeHistory struct {
	prime    *messages.Reading
	readings []messages.Reading
	err      error
	calls    int
}

func (h *episodeHistory) Readings(context.Context, messages.Heartbeat, messages.Source, time.Time) (*messages.Reading, []messages.Reading, error) {
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
	f := &detectFixture{store: &episodeStore{rows: map[string]string{}, types: map[string]string{}}, history: &episodeHistory{}}
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

// settled is customer's four readings at 70 from t0: what a jump needs
// before it.
func settled(customer string) []messages.Heartbeat {
	var hs []messages.Heartbeat
	for i := range 4 {
		hs = append(hs, reading(customer, time.Duration(i)*time.Second, 70))
	}
	return hs
}

func TestDetectEpisodesRecordsOpeningAndClosing(t *testing.T) {
	f := newDetectFixture(t)
	s := time.Second
	jump := reading("c1", 4*s, 105)
	for i, h := range append(settled("c1"), jump, reading("c1", 5*s, 104), reading("c1", 6*s, 103)) {
		require.NoError(t, f.handle(t, h), "reading %d", i)
	}
	require.Len(t, f.store.writes, 1)
	w := f.store.writes[0]
	id := messages.EpisodeID("c1", messages.Spike, jump.EventID)
	require.Equal(t, hbsql.EpisodeOpen, w.Row.Status)
	require.Equal(t, id, w.Row.AnomalyID)
	require.Equal(t, jump.EventID, w.Row.EventID, "the episode's first reading")
	require.Equal(t, jump.Timestamp, w.Row.StartedAt)
	require.Equal(t, t0.Add(6*s), w.Row.OpenedAt)
	require.Equal(t, 3, w.Row.Samples)
	require.Equal(t, 70, *w.Row.PreviousHeartRate)
	require.Equal(t, "events.anomaly.v1", w.Topic)
	require.Equal(t, id, w.Msg.UUID, "the opening's message id is the anomaly id")
	require.Equal(t, "c1", w.Msg.Metadata.Get(messages.KeyMetadata))
	require.Equal(t, "open", w.Msg.Metadata.Get("anomaly_status"))
	require.Equal(t, "corr-"+reading("c1", 6*s, 103).EventID, wmmw.MessageCorrelationID(w.Msg))
	var body map[string]any
	require.NoError(t, json.Unmarshal(w.Msg.Payload, &body))
	require.Equal(t, "open", body["status"])
	require.Equal(t, "SPIKE", body["anomaly_type"])
	require.EqualValues(t, 105, body["peak_heart_rate"])
	require.Len(t, f.opened, 1)

	// Back to the base for a minute: the SPIKE closes, once.
	for i := range 62 {
		require.NoError(t, f.handle(t, reading("c1", time.Duration(7+i)*s, 71)))
	}
	require.Len(t, f.store.writes, 2)
	c := f.store.writes[1]
	require.Equal(t, hbsql.EpisodeClosed, c.Row.Status)
	require.Equal(t, id, c.Row.AnomalyID)
	require.Equal(t, t0.Add(6*s), *c.Row.EndedAt, "ends at its last holding reading")
	require.NotEqual(t, id, c.Msg.UUID, "the closing has its own message id")
	require.Equal(t, "closed", c.Msg.Metadata.Get("anomaly_status"))
	require.JSONEq(t, `{"close_reason":"cleared"}`, string(c.Row.Details))
	require.Len(t, f.opened, 1, "closings are not counted as anomalies")
}

func TestDetectEpisodesMovesOnOnlyAfterCommit(t *testing.T) {
	f := newDetectFixture(t)
	s := time.Second
	for _, h := range append(settled("c1"), reading("c1", 4*s, 105), reading("c1", 5*s, 104)) {
		require.NoError(t, f.handle(t, h))
	}
	confirm := f.message(t, reading("c1", 6*s, 103))
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
	jump := reading("c1", 4*s, 105)
	f.history.prime = &prime
	for _, h := range append(settled("c1")[1:], jump, reading("c1", 5*s, 104)) {
		f.history.readings = append(f.history.readings, rules.ReadingOf(h))
	}
	require.NoError(t, f.handle(t, reading("c1", 6*s, 103)))
	require.Equal(t, []string{"found"}, f.outcomes)
	require.Len(t, f.store.writes, 1, "the jump before the restart is confirmed after it")
	require.Equal(t, messages.EpisodeID("c1", messages.Spike, jump.EventID), f.store.writes[0].Row.AnomalyID)
	require.NoError(t, f.handle(t, reading("c1", 7*s, 103)))
	require.Equal(t, 1, f.history.calls, "once per customer")
}

// TestDetectEpisodesWithoutHistory: persist not running — the episodes
// recorded open are taken as they are, so one closes instead of a second
// one opening.
func TestDetectEpisodesWithoutHistory(t *testing.T) {
	f := newDetectFixture(t)
	f.history.err = fmt.Errorf("wait: %w", hbsql.ErrHistoryIncomplete)
	start := rules.ReadingOf(reading("c1", 0, 125))
	recorded := messages.Episode{CustomerID: "c1", Rule: messages.SustainedHigh, Severity: messages.SeverityHigh, Threshold: 120,
		Start: start, OpenedAt: start.Time.Add(10 * time.Minute), Last: start, Peak: 130, Trough: 121, Samples: 600}
	f.store.recent = []messages.Episode{recorded}
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

// plateaus is customer's readings at 1 Hz from t0: n readings at each rate.
func plateaus(customer string, steps ...[2]int) []messages.Heartbeat {
	var hs []messages.Heartbeat
	at := time.Duration(0)
	for _, s := range steps {
		for range s[0] {
			hs = append(hs, reading(customer, at, s[1]))
			at += time.Second
		}
	}
	return hs
}

// bothPaths runs hs through the per-reading path (one message each) and
// the batch path (batches of 500 records, as detect's subscriber delivers
// them), checks that both record the same writes, and returns them.
func bothPaths(t *testing.T, hs []messages.Heartbeat) []hbsql.EpisodeWrite {
	t.Helper()
	one := newDetectFixture(t)
	for _, h := range hs {
		require.NoError(t, one.handle(t, h))
	}
	batch := newDetectFixture(t)
	for from := 0; from < len(hs); from += 500 {
		b := &messages.Batch{}
		for _, h := range hs[from:min(from+500, len(hs))] {
			m := batch.message(t, h)
			src, _ := messages.SourceFromContext(m.Context())
			b.Records = append(b.Records, messages.Record{Source: src, Value: m.Payload,
				Headers: []messages.Header{{Key: messages.CorrelationIDMetadata, Value: []byte("corr-" + h.EventID)}}})
		}
		require.NoError(t, batch.d.HandleBatch(context.Background(), b, nil))
	}
	require.Equal(t, len(one.store.writes), len(batch.store.writes))
	for i, w := range one.store.writes {
		b := batch.store.writes[i]
		require.Equal(t, w.Row, b.Row, "write %d", i)
		require.Equal(t, w.Msg.UUID, b.Msg.UUID)
		require.Equal(t, string(w.Msg.Payload), string(b.Msg.Payload))
	}
	require.Equal(t, len(one.opened), len(batch.opened))
	return one.store.writes
}

// write is what a test checks of an episode write.
type write struct {
	Status, Type, From string
	Start, Opened      time.Duration // from t0
}

func writesOf(ws []hbsql.EpisodeWrite) []write {
	var out []write
	for _, w := range ws {
		out = append(out, write{Status: w.Row.Status, Type: w.Row.Type, From: w.Row.ReclassifiedFrom,
			Start: w.Row.StartedAt.Sub(t0), Opened: w.Row.OpenedAt.Sub(t0)})
	}
	return out
}

// TestDetectEpisodesBradycardiaAfterADrop: issue 14 — a jump down to a
// new resting level, then 12 minutes at 38 bpm. When the new level has
// settled first (20 minutes at 65), the SPIKE has closed and the
// SUSTAINED_LOW is its own episode; when the rate falls to 38 while the
// SPIKE is open, the SPIKE becomes the SUSTAINED_LOW. Either way the
// SUSTAINED_LOW is recorded when the low timer has run 10 minutes from
// the first reading at or below 40, as without the jump.
func TestDetectEpisodesBradycardiaAfterADrop(t *testing.T) {
	t.Run("after the new level settled", func(t *testing.T) {
		ws := bothPaths(t, plateaus("c1", [2]int{120, 95}, [2]int{20 * 60, 65}, [2]int{12 * 60, 38}, [2]int{120, 60}))
		jump, low := 2*time.Minute, 22*time.Minute
		require.Equal(t, []write{
			{Status: "open", Type: messages.Spike, Start: jump, Opened: jump + 2*time.Second},
			{Status: "closed", Type: messages.Spike, Start: jump, Opened: jump + 2*time.Second},
			{Status: "open", Type: messages.SustainedLow, Start: low, Opened: low + 10*time.Minute},
			{Status: "closed", Type: messages.SustainedLow, Start: low, Opened: low + 10*time.Minute},
		}, writesOf(ws))
		require.JSONEq(t, `{"close_reason":"settled"}`, string(ws[1].Row.Details))
		require.Equal(t, jump+10*time.Minute, ws[1].Row.EndedAt.Sub(t0))
		require.Equal(t, messages.EpisodeID("c1", messages.SustainedLow, ws[2].Row.EventID), ws[2].Row.AnomalyID)
		require.Equal(t, messages.SeverityHigh, ws[2].Row.Severity)
	})
	t.Run("while the drop's SPIKE is open", func(t *testing.T) {
		ws := bothPaths(t, plateaus("c1", [2]int{60, 95}, [2]int{3 * 60, 62}, [2]int{12 * 60, 38}, [2]int{120, 60}))
		jump, low := time.Minute, 4*time.Minute
		require.Equal(t, []write{
			{Status: "open", Type: messages.Spike, Start: jump, Opened: jump + 2*time.Second},
			{Status: "open", Type: messages.SustainedLow, From: messages.Spike, Start: jump, Opened: jump + 2*time.Second},
			{Status: "closed", Type: messages.SustainedLow, Start: jump, Opened: jump + 2*time.Second},
		}, writesOf(ws))
		id := ws[0].Row.AnomalyID
		require.Equal(t, id, ws[1].Row.AnomalyID, "one episode: the SPIKE became the SUSTAINED_LOW")
		require.Equal(t, id, ws[2].Row.AnomalyID)
		require.Equal(t, messages.SeverityHigh, ws[1].Row.Severity)
		var details map[string]any
		require.NoError(t, json.Unmarshal(ws[1].Row.Details, &details))
		require.Equal(t, t0.Add(low+10*time.Minute).Format(time.RFC3339), details["reclassified_at"], "when the low timer had run 10 minutes")
		require.Equal(t, "SPIKE", details["reclassified_from"])
		require.EqualValues(t, 40, details["threshold"])
		require.Equal(t, messages.AnomalyID(id, "reclassified"), ws[1].Msg.UUID)
		var body map[string]any
		require.NoError(t, json.Unmarshal(ws[1].Msg.Payload, &body))
		require.Equal(t, "SUSTAINED_LOW", body["anomaly_type"])
		require.Equal(t, "SPIKE", body["reclassified_from"])
		require.Equal(t, "open", body["status"])
		require.Equal(t, "open", ws[1].Msg.Metadata.Get("anomaly_status"))
	})
}

// TestDetectEpisodesJumpIntoTachycardia: a jump up into 12 minutes at 150
// bpm is exactly one clinical episode, opened as a SPIKE at the jump's
// second confirming reading and reclassified SUSTAINED_HIGH ten minutes
// after the jump: one opening, one reclassification, one closing, one id.
func TestDetectEpisodesJumpIntoTachycardia(t *testing.T) {
	ws := bothPaths(t, plateaus("c1", [2]int{60, 80}, [2]int{12 * 60, 150}, [2]int{120, 80}))
	jump := time.Minute
	require.Equal(t, []write{
		{Status: "open", Type: messages.Spike, Start: jump, Opened: jump + 2*time.Second},
		{Status: "open", Type: messages.SustainedHigh, From: messages.Spike, Start: jump, Opened: jump + 2*time.Second},
		{Status: "closed", Type: messages.SustainedHigh, Start: jump, Opened: jump + 2*time.Second},
	}, writesOf(ws))
	ids := map[string]bool{}
	msgs := map[string]bool{}
	for _, w := range ws {
		ids[w.Row.AnomalyID] = true
		msgs[w.Msg.UUID] = true
	}
	require.Len(t, ids, 1, "one episode")
	require.Len(t, msgs, 3, "three messages")
	require.Equal(t, 80, *ws[1].Row.PreviousHeartRate, "the jump it began with stays")
	require.Equal(t, 12*60, ws[2].Row.Samples)
}

// TestDetectEpisodesReclassificationIsRecordedOnce: a reclassification
// whose write failed is recorded when the reading comes again, once.
func TestDetectEpisodesReclassificationIsRecordedOnce(t *testing.T) {
	f := newDetectFixture(t)
	hs := plateaus("c1", [2]int{60, 80}, [2]int{10*60 + 1, 150})
	for _, h := range hs[:len(hs)-1] {
		require.NoError(t, f.handle(t, h))
	}
	require.Len(t, f.store.writes, 1)
	m := f.message(t, hs[len(hs)-1]) // ten minutes after the jump
	f.store.fail = 1
	require.Error(t, f.d.Handle(m))
	require.NoError(t, f.d.Handle(m))
	require.NoError(t, f.d.Handle(m), "a duplicate changes nothing")
	require.Len(t, f.store.writes, 2)
	require.Equal(t, messages.SustainedHigh, f.store.writes[1].Row.Type)
	require.Len(t, f.opened, 1, "a reclassification is not a new anomaly")
}

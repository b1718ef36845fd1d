package handlers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	wmmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/handlers"
	"github.com/heartbeat/heartbeat/handlers/handlerstest"
	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/messages/rules"
	hbmw "github.com/heartbeat/heartbeat/middleware"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

type detectFixture struct {
	d        *handlers.DetectEpisodes
	store    *handlerstest.Episodes
	history  *handlerstest.EpisodeHistory
	kept     *handlerstest.Kept
	opened   []messages.Anomaly
	outcomes []string
	offset   int64
	// assignment is the one the next records come in (Source.Assignment).
	assignment uint64
}

func newDetectFixture(t *testing.T) *detectFixture {
	t.Helper()
	f := &detectFixture{store: &handlerstest.Episodes{}, history: &handlerstest.EpisodeHistory{}, kept: &handlerstest.Kept{}}
	f.d = f.detector(t, f.history)
	return f
}

// detector is a DetectEpisodes of f's store and log reading history.
func (f *detectFixture) detector(t *testing.T, history handlers.EpisodeHistory) *handlers.DetectEpisodes {
	t.Helper()
	e, err := rules.NewEpisodeEngine(rules.DefaultEpisodeParams())
	require.NoError(t, err)
	d, err := handlers.NewDetectEpisodes(handlers.DetectEpisodesConfig{
		Limits: messages.DefaultLimits(), Engine: e, Store: f.store, History: history, Kept: f.kept, Topic: "events.anomaly.v1",
		Now: func() time.Time { return t0.Add(time.Hour) }, NewID: uuid.NewString, Log: slog.New(slog.DiscardHandler),
		Observe: handlers.Observer{
			Anomaly: func(a messages.Anomaly) { f.opened = append(f.opened, a) },
			History: func(o string) { f.outcomes = append(f.outcomes, o) },
		},
	})
	require.NoError(t, err)
	return d
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
	m.SetContext(messages.WithSource(context.Background(), messages.Source{Topic: "events.raw.v1", Partition: 2, Offset: f.offset, Assignment: f.assignment}))
	return m
}

func (f *detectFixture) handle(t *testing.T, h messages.Heartbeat) error {
	t.Helper()
	return handlers.Handler(f.d)(f.message(t, h))
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
	require.Len(t, writes(f.store), 1)
	w := writes(f.store)[0]
	id := messages.EpisodeID("c1", messages.Spike, jump.EventID)
	require.Equal(t, messages.EpisodeOpen, w.Episode.Status)
	require.Equal(t, id, w.Episode.AnomalyID)
	require.Equal(t, jump.EventID, w.Episode.EventID, "the episode's first reading")
	require.Equal(t, jump.Timestamp, w.Episode.StartedAt)
	require.Equal(t, t0.Add(6*s), w.Episode.OpenedAt)
	require.Equal(t, 3, w.Episode.Samples)
	require.Equal(t, 70, *w.Episode.PreviousHeartRate)
	require.Equal(t, "events.anomaly.v1", topics(f.store)[0])
	require.Equal(t, id, w.Message.UUID, "the opening's message id is the anomaly id")
	require.Equal(t, "c1", w.Message.Metadata.Get(messages.KeyMetadata))
	require.Equal(t, "open", w.Message.Metadata.Get("anomaly_status"))
	require.Equal(t, "corr-"+reading("c1", 6*s, 103).EventID, wmmw.MessageCorrelationID(w.Message))
	var body map[string]any
	require.NoError(t, json.Unmarshal(w.Message.Payload, &body))
	require.Equal(t, "open", body["status"])
	require.Equal(t, "SPIKE", body["anomaly_type"])
	require.EqualValues(t, 105, body["peak_heart_rate"])
	require.Len(t, f.opened, 1)

	// Back to the base for a minute: the SPIKE closes, once.
	for i := range 62 {
		require.NoError(t, f.handle(t, reading("c1", time.Duration(7+i)*s, 71)))
	}
	require.Len(t, writes(f.store), 2)
	c := writes(f.store)[1]
	require.Equal(t, messages.EpisodeClosed, c.Episode.Status)
	require.Equal(t, id, c.Episode.AnomalyID)
	require.Equal(t, t0.Add(6*s), *c.Episode.EndedAt, "ends at its last holding reading")
	require.NotEqual(t, id, c.Message.UUID, "the closing has its own message id")
	require.Equal(t, "closed", c.Message.Metadata.Get("anomaly_status"))
	require.JSONEq(t, `{"close_reason":"cleared"}`, string(c.Episode.Details))
	require.Len(t, f.opened, 1, "closings are not counted as anomalies")
}

func TestDetectEpisodesMovesOnOnlyAfterCommit(t *testing.T) {
	f := newDetectFixture(t)
	s := time.Second
	for _, h := range append(settled("c1"), reading("c1", 4*s, 105), reading("c1", 5*s, 104)) {
		require.NoError(t, f.handle(t, h))
	}
	confirm := f.message(t, reading("c1", 6*s, 103))
	f.store.Fail = 1
	require.Error(t, handlers.Handler(f.d)(confirm), "nacked: redelivered")
	require.Empty(t, writes(f.store))
	require.NoError(t, handlers.Handler(f.d)(confirm), "the redelivery raises the same opening")
	require.Len(t, writes(f.store), 1)
	require.NoError(t, handlers.Handler(f.d)(confirm), "a duplicate changes nothing")
	require.Len(t, writes(f.store), 1)
}

func TestDetectEpisodesAcksInvalidReadings(t *testing.T) {
	f := newDetectFixture(t)
	m := message.NewMessage(uuid.NewString(), []byte(`{"event_id":"nope"}`))
	require.NoError(t, handlers.Handler(f.d)(m))
	require.Empty(t, writes(f.store))
	require.Zero(t, f.history.Calls())
}

// TestDetectEpisodesRebuildsState: a customer the engine does not know is
// rebuilt from its stored readings before its reading is evaluated.
func TestDetectEpisodesRebuildsState(t *testing.T) {
	f := newDetectFixture(t)
	s := time.Second
	prime := rules.ReadingOf(reading("c1", 0, 70))
	jump := reading("c1", 4*s, 105)
	f.history.Prime = &prime
	for _, h := range append(settled("c1")[1:], jump, reading("c1", 5*s, 104)) {
		f.history.Stored = append(f.history.Stored, rules.ReadingOf(h))
	}
	require.NoError(t, f.handle(t, reading("c1", 6*s, 103)))
	require.Equal(t, []string{"found"}, f.outcomes)
	require.Len(t, writes(f.store), 1, "the jump before the restart is confirmed after it")
	require.Equal(t, messages.EpisodeID("c1", messages.Spike, jump.EventID), writes(f.store)[0].Episode.AnomalyID)
	require.NoError(t, f.handle(t, reading("c1", 7*s, 103)))
	require.Equal(t, 1, f.history.Calls(), "once per customer")
}

// A partition that comes back to this detector after another one had it:
// the lane of its customers from before is stale — the other detector
// evaluated the jump between — so their state is rebuilt from storage, as
// after a restart, and the jump the other detector saw is confirmed here.
func TestDetectEpisodesRebuildsAPartitionThatCameBack(t *testing.T) {
	f := newDetectFixture(t)
	s := time.Second
	f.assignment = 1
	for _, h := range settled("c1") {
		require.NoError(t, f.handle(t, h))
	}
	require.Equal(t, []string{"none"}, f.outcomes)
	// Another detector had the partition: it evaluated the jump, persist
	// stored it.
	prime := rules.ReadingOf(reading("c1", 0, 70))
	jump := reading("c1", 4*s, 105)
	f.history.Prime = &prime
	for _, h := range append(settled("c1")[1:], jump, reading("c1", 5*s, 104)) {
		f.history.Stored = append(f.history.Stored, rules.ReadingOf(h))
	}
	f.offset += 2
	f.assignment = 2
	require.NoError(t, f.handle(t, reading("c1", 6*s, 103)))
	require.Equal(t, []string{"none", "found"}, f.outcomes, "rebuilt when the partition came back")
	require.Len(t, writes(f.store), 1)
	require.Equal(t, messages.EpisodeID("c1", messages.Spike, jump.EventID), writes(f.store)[0].Episode.AnomalyID)
	require.NoError(t, f.handle(t, reading("c1", 7*s, 103)))
	require.Equal(t, 2, f.history.Calls(), "once per customer and assignment")
}

// TestDetectEpisodesWithoutStoredReadings: no readings in the history
// (stored by another tool, or past retention) — the episodes recorded open
// are taken as they are, so one closes instead of a second one opening.
func TestDetectEpisodesWithoutStoredReadings(t *testing.T) {
	f := newDetectFixture(t)
	start := rules.ReadingOf(reading("c1", 0, 125))
	recorded := messages.Episode{CustomerID: "c1", Rule: messages.SustainedHigh, Severity: messages.SeverityHigh, Threshold: 120,
		Start: start, OpenedAt: start.Time.Add(10 * time.Minute), Last: start, Peak: 130, Trough: 121, Samples: 600}
	f.store.Recent = []messages.Episode{recorded}
	f.store.SetStatus(recorded.ID(), messages.EpisodeOpen)
	for i := range 62 {
		require.NoError(t, f.handle(t, reading("c1", 11*time.Minute+time.Duration(i)*time.Second, 80)))
	}
	require.Equal(t, []string{"none"}, f.outcomes)
	require.Len(t, writes(f.store), 1)
	require.Equal(t, recorded.ID(), writes(f.store)[0].Episode.AnomalyID)
	require.Equal(t, messages.EpisodeClosed, writes(f.store)[0].Episode.Status)
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
	require.NotEmpty(t, writes(one.store), "the jump is a SPIKE")

	batch := newDetectFixture(t)
	b := batch.batchOf(t, hs...)
	batch.store.Fail = 1
	require.EqualError(t, batch.d.HandleBatch(context.Background(), b), handlerstest.ErrDown.Error())
	require.Zero(t, b.Done)
	require.Empty(t, writes(batch.store))
	calls := batch.history.Calls()
	require.NoError(t, batch.d.HandleBatch(context.Background(), b))
	require.Equal(t, len(hs), b.Done)
	require.Greater(t, batch.history.Calls(), calls, "the forgotten customers are rebuilt from storage")

	require.Equal(t, len(writes(one.store)), len(writes(batch.store)))
	for i := range writes(one.store) {
		w1, w2 := writes(one.store)[i], writes(batch.store)[i]
		require.Equal(t, w1.Episode.AnomalyID, w2.Episode.AnomalyID)
		require.Equal(t, w1.Episode.Status, w2.Episode.Status)
		require.Equal(t, w1.Message.UUID, w2.Message.UUID)
		require.Equal(t, w1.Message.Metadata.Get(wmmw.CorrelationIDMetadataKey), w2.Message.Metadata.Get(wmmw.CorrelationIDMetadataKey))
	}
	require.Equal(t, len(one.opened), len(batch.opened))
}

// batchOf is hs as one batch message's records of f's partition.
func (f *detectFixture) batchOf(t *testing.T, hs ...messages.Heartbeat) *messages.Batch {
	t.Helper()
	b := &messages.Batch{}
	for _, h := range hs {
		m := f.message(t, h)
		src, _ := messages.SourceFromContext(m.Context())
		b.Records = append(b.Records, messages.Record{Source: src, Value: m.Payload,
			Headers: []messages.Header{{Key: messages.CorrelationIDMetadata, Value: []byte("corr-" + h.EventID)}}})
	}
	return b
}

// spikeAcrossTwoBatches is c1 settled, then its jump — the SPIKE's base in
// the first batch and the SPIKE in the second — and the writes of an
// uninterrupted detector over both.
func spikeAcrossTwoBatches(t *testing.T) (before, after []messages.Heartbeat, uninterrupted []messages.EpisodeUpdate) {
	t.Helper()
	before = settled("c1")
	after = []messages.Heartbeat{reading("c1", 4*time.Second, 110), reading("c1", 5*time.Second, 111),
		reading("c1", 6*time.Second, 112), reading("c1", 7*time.Second, 110)}
	one := newDetectFixture(t)
	for _, h := range append(slices.Clone(before), after...) {
		require.NoError(t, one.handle(t, h))
	}
	require.NotEmpty(t, writes(one.store), "the jump is a SPIKE")
	return before, after, writes(one.store)
}

// requireWrites checks that f recorded the episode changes want, in order.
func requireWrites(t *testing.T, want []messages.EpisodeUpdate, f *detectFixture) {
	t.Helper()
	got := writes(f.store)
	require.Equal(t, len(want), len(got))
	for i := range want {
		require.Equal(t, want[i].Episode.AnomalyID, got[i].Episode.AnomalyID)
		require.Equal(t, want[i].Episode.Status, got[i].Episode.Status)
	}
}

// The detector keeps the readings it evaluated — a batch's once it is
// done, not an invalid one's, nothing of a failed batch — for the history
// it rebuilds from. A failed batch drops its partition's state, and the
// readings kept of the partition's earlier batches may not be written
// yet (they are, before the next commit): they are written before the
// rebuild reads the history, so that the SPIKE across the two batches is
// found as in an uninterrupted run.
func TestDetectEpisodesWritesKeptReadingsBeforeARebuild(t *testing.T) {
	before, after, uninterrupted := spikeAcrossTwoBatches(t)
	f := newDetectFixture(t)
	f.d = f.detector(t, f.kept) // the history is what the log wrote
	invalid := reading("c1", 3500*time.Millisecond, 400)
	first := f.batchOf(t, append(slices.Clone(before), invalid)...)
	require.NoError(t, f.d.HandleBatch(context.Background(), first))
	held := f.kept.Held()
	require.Len(t, held, len(before), "the valid readings evaluated, not the invalid one")
	for i, k := range held {
		require.Equal(t, before[i].EventID, k.Reading.EventID)
		require.Equal(t, first.Records[i].Source, k.Source)
	}
	require.Empty(t, f.kept.Written(), "written before the next commit, not yet")

	second := f.batchOf(t, after...)
	f.store.Fail = 1
	require.Error(t, f.d.HandleBatch(context.Background(), second))
	require.Len(t, f.kept.Held(), len(before), "nothing of the failed batch is kept")

	require.NoError(t, f.d.HandleBatch(context.Background(), second))
	require.Equal(t, 1, f.kept.Flushes(), "written once, before the rebuild")
	require.Len(t, f.kept.Written(), len(before))
	require.Len(t, f.kept.Held(), len(after))
	require.Equal(t, []string{"none", "found"}, f.outcomes, "c1 met, then rebuilt from the written readings")
	requireWrites(t, uninterrupted, f)

	// The next rebuild of another customer writes nothing more first.
	require.NoError(t, f.d.HandleBatch(context.Background(), f.batchOf(t, reading("c2", 8*time.Second, 70))))
	require.Equal(t, 1, f.kept.Flushes())
}

// The same after an eviction (DETECT_STATE_TTL): the customers' readings
// kept may not be written yet when one of them comes back, so the rebuild
// writes them first; a failure to write them is waited out (transient),
// never poisons the record.
func TestDetectEpisodesWritesKeptReadingsBeforeARebuildAfterEviction(t *testing.T) {
	before, after, uninterrupted := spikeAcrossTwoBatches(t)
	f := newDetectFixture(t)
	f.d = f.detector(t, f.kept)
	require.NoError(t, f.d.HandleBatch(context.Background(), f.batchOf(t, before...)))
	require.Equal(t, 1, f.d.Evict(0), "c1 is idle")
	require.Empty(t, f.kept.Written())

	second := f.batchOf(t, after...)
	f.kept.FlushErr = handlerstest.ErrDown
	err := f.d.HandleBatch(context.Background(), second)
	require.ErrorIs(t, err, handlerstest.ErrDown)
	require.True(t, hbmw.IsTransient(err), "another batch's write failing is not this record's fault: %v", err)
	require.Zero(t, second.Done)

	f.kept.FlushErr = nil
	require.NoError(t, f.d.HandleBatch(context.Background(), second))
	require.Len(t, f.kept.Written(), len(before))
	require.Equal(t, []string{"none", "found"}, f.outcomes)
	requireWrites(t, uninterrupted, f)
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
func bothPaths(t *testing.T, hs []messages.Heartbeat) []messages.EpisodeUpdate {
	t.Helper()
	one := newDetectFixture(t)
	for _, h := range hs {
		require.NoError(t, one.handle(t, h))
	}
	batch := newDetectFixture(t)
	for from := 0; from < len(hs); from += 500 {
		require.NoError(t, batch.d.HandleBatch(context.Background(), batch.batchOf(t, hs[from:min(from+500, len(hs))]...)))
	}
	require.Equal(t, len(writes(one.store)), len(writes(batch.store)))
	for i, w := range writes(one.store) {
		b := writes(batch.store)[i]
		require.Equal(t, w.Episode, b.Episode, "write %d", i)
		require.Equal(t, w.Message.UUID, b.Message.UUID)
		require.Equal(t, string(w.Message.Payload), string(b.Message.Payload))
	}
	require.Equal(t, len(one.opened), len(batch.opened))
	return writes(one.store)
}

// write is what a test checks of an episode write.
type write struct {
	Status, Type, From string
	Start, Opened      time.Duration // from t0
}

func writesOf(ws []messages.EpisodeUpdate) []write {
	var out []write
	for _, w := range ws {
		from := w.Episode.ReclassifiedFrom
		if w.Episode.Status == messages.EpisodeClosed {
			from = "" // a closing names it too; only an open update is a reclassification
		}
		out = append(out, write{Status: w.Episode.Status, Type: w.Episode.Type, From: from,
			Start: w.Episode.StartedAt.Sub(t0), Opened: w.Episode.OpenedAt.Sub(t0)})
	}
	return out
}

// TestDetectEpisodesBradycardiaAfterADrop: a jump down to a
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
		require.JSONEq(t, `{"close_reason":"settled"}`, string(ws[1].Episode.Details))
		require.Equal(t, jump+10*time.Minute, ws[1].Episode.EndedAt.Sub(t0))
		require.Equal(t, messages.EpisodeID("c1", messages.SustainedLow, ws[2].Episode.EventID), ws[2].Episode.AnomalyID)
		require.Equal(t, messages.SeverityHigh, ws[2].Episode.Severity)
	})
	t.Run("while the drop's SPIKE is open", func(t *testing.T) {
		ws := bothPaths(t, plateaus("c1", [2]int{60, 95}, [2]int{3 * 60, 62}, [2]int{12 * 60, 38}, [2]int{120, 60}))
		jump, low := time.Minute, 4*time.Minute
		require.Equal(t, []write{
			{Status: "open", Type: messages.Spike, Start: jump, Opened: jump + 2*time.Second},
			{Status: "open", Type: messages.SustainedLow, From: messages.Spike, Start: jump, Opened: jump + 2*time.Second},
			{Status: "closed", Type: messages.SustainedLow, Start: jump, Opened: jump + 2*time.Second},
		}, writesOf(ws))
		id := ws[0].Episode.AnomalyID
		require.Equal(t, id, ws[1].Episode.AnomalyID, "one episode: the SPIKE became the SUSTAINED_LOW")
		require.Equal(t, id, ws[2].Episode.AnomalyID)
		require.Equal(t, messages.SeverityHigh, ws[1].Episode.Severity)
		var details map[string]any
		require.NoError(t, json.Unmarshal(ws[1].Episode.Details, &details))
		require.Equal(t, t0.Add(low+10*time.Minute).Format(time.RFC3339), details["reclassified_at"], "when the low timer had run 10 minutes")
		require.Equal(t, "SPIKE", details["reclassified_from"])
		require.EqualValues(t, 40, details["threshold"])
		require.Equal(t, messages.AnomalyID(id, "reclassified"), ws[1].Message.UUID)
		var body map[string]any
		require.NoError(t, json.Unmarshal(ws[1].Message.Payload, &body))
		require.Equal(t, "SUSTAINED_LOW", body["anomaly_type"])
		require.Equal(t, "SPIKE", body["reclassified_from"])
		require.Equal(t, "open", body["status"])
		require.Equal(t, "open", ws[1].Message.Metadata.Get("anomaly_status"))
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
		ids[w.Episode.AnomalyID] = true
		msgs[w.Message.UUID] = true
	}
	require.Len(t, ids, 1, "one episode")
	require.Len(t, msgs, 3, "three messages")
	require.Equal(t, 80, *ws[1].Episode.PreviousHeartRate, "the jump it began with stays")
	require.Equal(t, 12*60, ws[2].Episode.Samples)
}

// TestDetectEpisodesReclassificationIsRecordedOnce: a reclassification
// whose write failed is recorded when the reading comes again, once.
func TestDetectEpisodesReclassificationIsRecordedOnce(t *testing.T) {
	f := newDetectFixture(t)
	hs := plateaus("c1", [2]int{60, 80}, [2]int{10*60 + 1, 150})
	for _, h := range hs[:len(hs)-1] {
		require.NoError(t, f.handle(t, h))
	}
	require.Len(t, writes(f.store), 1)
	m := f.message(t, hs[len(hs)-1]) // ten minutes after the jump
	f.store.Fail = 1
	require.Error(t, handlers.Handler(f.d)(m))
	require.NoError(t, handlers.Handler(f.d)(m))
	require.NoError(t, handlers.Handler(f.d)(m), "a duplicate changes nothing")
	require.Len(t, writes(f.store), 2)
	require.Equal(t, messages.SustainedHigh, writes(f.store)[1].Episode.Type)
	require.Len(t, f.opened, 1, "a reclassification is not a new anomaly")
}

func writes(s *handlerstest.Episodes) []messages.EpisodeUpdate { w, _ := s.Writes(); return w }

func topics(s *handlerstest.Episodes) []string { _, t := s.Writes(); return t }

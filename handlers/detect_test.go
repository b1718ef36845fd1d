package handlers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
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
)

// perEvent is a Detect (DETECTION_MODE=per_event) with the default
// thresholds (LOW ≤ 50, HIGH ≥ 140, SPIKE ±30) on in-memory storage.
type perEvent struct {
	d        *handlers.Detect
	store    *handlerstest.Anomalies
	history  *handlerstest.History
	kept     *handlerstest.Kept
	log      bytes.Buffer
	recorded []messages.Anomaly
	outcomes []string
	offset   int64
	ids      int
	// assignment is the one the next records come in (Source.Assignment).
	assignment uint64
}

func newPerEvent(t *testing.T) *perEvent {
	t.Helper()
	f := &perEvent{store: &handlerstest.Anomalies{}, history: &handlerstest.History{}, kept: &handlerstest.Kept{}}
	var err error
	f.d, err = handlers.NewDetect(handlers.DetectConfig{
		Limits: messages.DefaultLimits(), Engine: rules.NewEngine(rules.DefaultThresholds()), Store: f.store, History: f.history, Kept: f.kept,
		Topic: "events.anomaly.v1", Now: func() time.Time { return t0.Add(time.Hour) },
		NewID: func() string { f.ids++; return fmt.Sprintf("new-id-%d", f.ids) },
		Log:   slog.New(slog.NewTextHandler(&f.log, nil)),
		Observe: handlers.Observer{
			Anomaly: func(a messages.Anomaly) { f.recorded = append(f.recorded, a) },
			History: func(o string) { f.outcomes = append(f.outcomes, o) },
		},
	})
	require.NoError(t, err)
	return f
}

// record is h as the next record of partition 5, with a correlation id.
func (f *perEvent) record(t *testing.T, h messages.Heartbeat) messages.Record {
	t.Helper()
	b, err := h.Marshal()
	require.NoError(t, err)
	f.offset++
	return messages.Record{Source: messages.Source{Topic: "events.raw.v1", Partition: 5, Offset: f.offset, Assignment: f.assignment}, Key: []byte(h.CustomerID), Value: b,
		Headers: []messages.Header{{Key: messages.CorrelationIDMetadata, Value: []byte("corr-" + h.EventID)}}}
}

func (f *perEvent) handle(t *testing.T, hs ...messages.Heartbeat) *messages.Batch {
	t.Helper()
	b := &messages.Batch{}
	for _, h := range hs {
		b.Records = append(b.Records, f.record(t, h))
	}
	require.NoError(t, f.d.HandleBatch(context.Background(), b))
	require.Equal(t, len(hs), b.Done)
	return b
}

func TestDetectRaisesLowHighAndSpikeOncePerReading(t *testing.T) {
	f := newPerEvent(t)
	s := time.Second
	steps := []struct {
		rate     int
		rule     string
		severity string
		previous int
	}{
		{70, "", "", 0},
		{35, messages.LowHeartRate, messages.SeverityHigh, 0}, // -35: LOW, first match, not also a SPIKE
		{51, "", "", 0},
		{81, messages.Spike, messages.SeverityMedium, 51}, // +30: SPIKE at its threshold
		{140, messages.HighHeartRate, messages.SeverityHigh, 0},
		{139, "", "", 0},
		{110, "", "", 0}, // -29
		{50, messages.LowHeartRate, messages.SeverityHigh, 0}, // LOW at its threshold
	}
	var hs []messages.Heartbeat
	for i, st := range steps {
		hs = append(hs, reading("c1", time.Duration(i)*s, st.rate))
	}
	f.handle(t, hs...)

	seen, msgs := f.store.Recorded()
	var want []string
	for i, st := range steps {
		if st.rule == "" {
			continue
		}
		id := messages.AnomalyID(hs[i].EventID, st.rule)
		want = append(want, id)
		a, ok := seen[id]
		require.True(t, ok, "reading %d (%d bpm) raises %s", i, st.rate, st.rule)
		require.Equal(t, st.rule, a.Type)
		require.Equal(t, st.severity, a.Severity)
		require.Equal(t, hs[i].EventID, a.EventID)
		require.Equal(t, "c1", a.CustomerID)
		require.Equal(t, st.rate, a.HeartRate)
		require.True(t, hs[i].Timestamp.Equal(a.EventTime))
		require.Equal(t, t0.Add(time.Hour), a.DetectedAt)
		var details map[string]any
		require.NoError(t, json.Unmarshal(a.Details, &details))
		require.EqualValues(t, st.rate, details["measured"])
		if st.rule == messages.Spike {
			require.Equal(t, st.previous, *a.PreviousHeartRate)
			require.EqualValues(t, st.previous, details["previous_heart_rate"])
			require.EqualValues(t, st.rate-st.previous, details["delta"])
			require.EqualValues(t, 30, details["threshold"])
		} else {
			require.Nil(t, a.PreviousHeartRate)
		}
	}
	require.Len(t, seen, len(want), "one anomaly per reading that breaks a rule, no more")
	require.Equal(t, []string{"events.anomaly.v1", "events.anomaly.v1", "events.anomaly.v1", "events.anomaly.v1"}, f.store.Topics())
	for i, m := range msgs {
		require.Equal(t, want[i], m.UUID, "the message id is the anomaly id")
		require.Equal(t, "c1", m.Metadata.Get(messages.KeyMetadata), "keyed by customer")
		require.Equal(t, seen[want[i]].Type, m.Metadata.Get("anomaly_type"))
		require.Equal(t, "corr-"+seen[want[i]].EventID, wmmw.MessageCorrelationID(m), "the reading's correlation id")
		var body messages.Anomaly
		require.NoError(t, json.Unmarshal(m.Payload, &body))
		require.Equal(t, want[i], body.AnomalyID)
	}
	require.Len(t, f.recorded, len(want))

	// The same readings again (a producer's retry): nothing new recorded
	// or counted.
	f.handle(t, hs...)
	seen, _ = f.store.Recorded()
	require.Len(t, seen, len(want))
	require.Len(t, f.recorded, len(want), "a duplicate is not counted as a new anomaly")
}

// A record without a correlation id gets a new one, carried by its anomaly.
func TestDetectGivesARecordWithoutCorrelationIDOne(t *testing.T) {
	f := newPerEvent(t)
	r := f.record(t, reading("c1", 0, 45))
	r.Headers = nil
	b := &messages.Batch{Records: []messages.Record{r}}
	require.NoError(t, f.d.HandleBatch(context.Background(), b))
	_, msgs := f.store.Recorded()
	require.Len(t, msgs, 1)
	require.Equal(t, "new-id-1", wmmw.MessageCorrelationID(msgs[0]))
	require.Equal(t, "new-id-1", b.Records[0].Header(messages.CorrelationIDMetadata), "kept on the record for what else derives from it")
}

// The customer's state moves on only once the anomaly is committed: a
// failed write leaves the reading not done, and its retry raises the same
// SPIKE against the same previous rate.
func TestDetectMovesOnOnlyAfterTheStoreCommits(t *testing.T) {
	f := newPerEvent(t)
	f.handle(t, reading("c1", 0, 70))
	jump := reading("c1", time.Second, 105)
	b := &messages.Batch{Records: []messages.Record{f.record(t, jump), f.record(t, reading("c1", 2*time.Second, 106))}}
	f.store.Fail = 1

	require.ErrorIs(t, f.d.HandleBatch(context.Background(), b), handlerstest.ErrDown)
	require.Zero(t, b.Done)
	seen, _ := f.store.Recorded()
	require.Empty(t, seen)
	require.Empty(t, f.recorded)

	require.NoError(t, f.d.HandleBatch(context.Background(), b), "the retry")
	require.Equal(t, 2, b.Done)
	seen, _ = f.store.Recorded()
	require.Len(t, seen, 1)
	a := seen[messages.AnomalyID(jump.EventID, messages.Spike)]
	require.Equal(t, messages.Spike, a.Type)
	require.Equal(t, 70, *a.PreviousHeartRate, "compared with the reading before, not with itself")
}

// Invalid readings are persist's to route: the detector passes over them
// without evaluating them or asking storage for the customer's history.
func TestDetectPassesOverInvalidReadings(t *testing.T) {
	f := newPerEvent(t)
	b := &messages.Batch{Records: []messages.Record{
		{Source: messages.Source{Topic: "events.raw.v1", Partition: 5, Offset: 1}, Value: []byte(`not json`)},
		f.record(t, reading("c1", 0, 250)), // a sensor fault, not a HIGH_HEART_RATE
		f.record(t, reading("c1", time.Second, 20)),
	}}
	require.NoError(t, f.d.HandleBatch(context.Background(), b))
	require.Equal(t, 3, b.Done)
	seen, _ := f.store.Recorded()
	require.Empty(t, seen)
	require.Zero(t, f.history.Calls())
	require.Empty(t, f.outcomes)
	require.Empty(t, b.Refused, "refusing is persist's")
}

// A customer the engine does not know is rebuilt from storage once, before
// its first reading is evaluated; each outcome is reported.
func TestDetectRebuildsACustomerFromHistory(t *testing.T) {
	s := time.Second
	t.Run("found: the stored reading is the previous one", func(t *testing.T) {
		f := newPerEvent(t)
		f.history.At, f.history.Rate, f.history.Found = t0, 70, true
		jump := reading("c1", s, 101)
		f.handle(t, jump, reading("c1", 2*s, 102))
		require.Equal(t, []string{"found"}, f.outcomes)
		require.Equal(t, 1, f.history.Calls(), "once per customer")
		seen, _ := f.store.Recorded()
		require.Len(t, seen, 1)
		require.Equal(t, 70, *seen[messages.AnomalyID(jump.EventID, messages.Spike)].PreviousHeartRate)
	})
	t.Run("none: nothing stored, no previous rate", func(t *testing.T) {
		f := newPerEvent(t)
		f.handle(t, reading("c1", s, 101), reading("c1", 2*s, 102))
		require.Equal(t, []string{"none"}, f.outcomes)
		seen, _ := f.store.Recorded()
		require.Empty(t, seen, "no SPIKE without a previous reading")
	})
	t.Run("failure: the reading is not done", func(t *testing.T) {
		f := newPerEvent(t)
		down := errors.New("connection refused")
		f.history.Err = down
		b := &messages.Batch{Records: []messages.Record{f.record(t, reading("c1", s, 45))}}
		require.ErrorIs(t, f.d.HandleBatch(context.Background(), b), down)
		require.Zero(t, b.Done)
		require.Empty(t, f.outcomes)
		seen, _ := f.store.Recorded()
		require.Empty(t, seen)
		require.Empty(t, f.kept.Held(), "not evaluated: not kept")
		f.history.Err = nil
		require.NoError(t, f.d.HandleBatch(context.Background(), b))
		require.Equal(t, []string{"none"}, f.outcomes, "asked again on the retry")
		require.Len(t, f.kept.Held(), 1)
	})
	t.Run("the records done before a failure are kept", func(t *testing.T) {
		f := newPerEvent(t)
		b := &messages.Batch{Records: []messages.Record{f.record(t, reading("c1", s, 70)), f.record(t, reading("c1", 2*s, 45)),
			f.record(t, reading("c1", 3*s, 46))}}
		f.store.Fail = 1
		require.Error(t, f.d.HandleBatch(context.Background(), b))
		require.Equal(t, 1, b.Done, "the LOW's write failed")
		require.Len(t, f.kept.Held(), 1)
		require.Equal(t, b.Records[0].Source, f.kept.Held()[0].Source)
		require.NoError(t, f.d.HandleBatch(context.Background(), b))
		var offsets []int64
		for _, k := range f.kept.Held() {
			offsets = append(offsets, k.Source.Offset)
		}
		require.Equal(t, []int64{1, 2, 3}, offsets, "each reading evaluated kept once, in order")
	})
	t.Run("a message from no Kafka partition has no history to ask", func(t *testing.T) {
		f := newPerEvent(t)
		payload, err := reading("c1", s, 45).Marshal()
		require.NoError(t, err)
		require.NoError(t, handlers.Handler(f.d)(message.NewMessage(uuid.NewString(), payload)))
		require.Zero(t, f.history.Calls())
		seen, _ := f.store.Recorded()
		require.Len(t, seen, 1)
	})
}

// A partition that comes back to this detector after another one had it
// (a second detector joined, then left): the state of its customers from
// before is stale — the other detector evaluated the readings between — so
// it is rebuilt from storage, once, as after a restart. Stale, the SPIKE
// into the drop would be missed, and the return to an unchanged rate
// raised.
func TestDetectRebuildsAPartitionThatCameBack(t *testing.T) {
	s := time.Second
	for _, tt := range []struct {
		name            string
		before, between int // this detector's last rate, and the other one's
		after           int
		spike           bool
	}{
		{"a drop from the rate the other detector saw", 80, 120, 85, true},
		{"no change from the rate the other detector saw", 60, 100, 95, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newPerEvent(t)
			f.assignment = 1
			f.handle(t, reading("c1", s, tt.before))
			// The other detector's reading is stored by now.
			f.history.At, f.history.Rate, f.history.Found = t0.Add(2*s), tt.between, true
			f.offset++
			f.assignment = 2
			after := reading("c1", 3*s, tt.after)
			f.handle(t, after, reading("c1", 4*s, tt.after+1))
			require.Equal(t, []string{"none", "found"}, f.outcomes, "rebuilt when the partition came back, once")
			seen, _ := f.store.Recorded()
			if !tt.spike {
				require.Empty(t, seen)
				return
			}
			require.Len(t, seen, 1)
			a, ok := seen[messages.AnomalyID(after.EventID, messages.Spike)]
			require.True(t, ok, "the SPIKE into the drop")
			require.Equal(t, tt.between, *a.PreviousHeartRate)
		})
	}
}

// A customer evicted (DETECT_STATE_TTL) is rebuilt from a history that
// holds its readings kept before: they are written first.
func TestDetectWritesKeptReadingsBeforeARebuildAfterEviction(t *testing.T) {
	f := newPerEvent(t)
	f.handle(t, reading("c1", time.Second, 70))
	require.Len(t, f.kept.Held(), 1)
	f.handle(t, reading("c2", 2*time.Second, 70))
	require.Zero(t, f.kept.Flushes(), "no drop: nothing to write first")
	require.Equal(t, 2, f.d.Evict(0))
	f.handle(t, reading("c1", 3*time.Second, 71))
	require.Equal(t, 1, f.kept.Flushes())
	require.Len(t, f.kept.Written(), 2, "written before c1's rebuild")
	f.handle(t, reading("c2", 4*time.Second, 71))
	require.Equal(t, 1, f.kept.Flushes(), "once per drop")
	require.Equal(t, []string{"none", "none", "none", "none"}, f.outcomes)
}

func TestNewDetectorsRefuseMissingDependencies(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	now := func() time.Time { return t0 }
	episodes, err := rules.NewEpisodeEngine(rules.DefaultEpisodeParams())
	require.NoError(t, err)
	full := handlers.DetectConfig{Limits: messages.DefaultLimits(), Engine: rules.NewEngine(rules.DefaultThresholds()),
		Store: &handlerstest.Anomalies{}, History: &handlerstest.History{}, Kept: &handlerstest.Kept{}, Topic: "events.anomaly.v1", Now: now,
		NewID: uuid.NewString, Log: log}
	fullEpisodes := handlers.DetectEpisodesConfig{Limits: messages.DefaultLimits(), Engine: episodes,
		Store: &handlerstest.Episodes{}, History: &handlerstest.EpisodeHistory{}, Kept: &handlerstest.Kept{}, Topic: "events.anomaly.v1", Now: now,
		NewID: uuid.NewString, Log: log}
	_, err = handlers.NewDetect(full)
	require.NoError(t, err, "Observe is optional")
	_, err = handlers.NewDetectEpisodes(fullEpisodes)
	require.NoError(t, err)

	cases := []struct {
		missing  string
		detect   func(*handlers.DetectConfig)
		episodes func(*handlers.DetectEpisodesConfig)
	}{
		{"an Engine", func(c *handlers.DetectConfig) { c.Engine = nil }, func(c *handlers.DetectEpisodesConfig) { c.Engine = nil }},
		{"a Store", func(c *handlers.DetectConfig) { c.Store = nil }, func(c *handlers.DetectEpisodesConfig) { c.Store = nil }},
		{"a History", func(c *handlers.DetectConfig) { c.History = nil }, func(c *handlers.DetectEpisodesConfig) { c.History = nil }},
		{"a HistoryLog (Kept)", func(c *handlers.DetectConfig) { c.Kept = nil }, func(c *handlers.DetectEpisodesConfig) { c.Kept = nil }},
		{"a Topic", func(c *handlers.DetectConfig) { c.Topic = "" }, func(c *handlers.DetectEpisodesConfig) { c.Topic = "" }},
		{"a clock (Now)", func(c *handlers.DetectConfig) { c.Now = nil }, func(c *handlers.DetectEpisodesConfig) { c.Now = nil }},
		{"NewID", func(c *handlers.DetectConfig) { c.NewID = nil }, func(c *handlers.DetectEpisodesConfig) { c.NewID = nil }},
		{"a Log", func(c *handlers.DetectConfig) { c.Log = nil }, func(c *handlers.DetectEpisodesConfig) { c.Log = nil }},
	}
	for _, c := range cases {
		t.Run(c.missing, func(t *testing.T) {
			cfg := full
			c.detect(&cfg)
			d, err := handlers.NewDetect(cfg)
			require.EqualError(t, err, "handlers: Detect needs "+c.missing)
			require.Nil(t, d)
			ecfg := fullEpisodes
			c.episodes(&ecfg)
			e, err := handlers.NewDetectEpisodes(ecfg)
			require.EqualError(t, err, "handlers: DetectEpisodes needs "+c.missing)
			require.Nil(t, e)
		})
	}
	t.Run("all of them, named together", func(t *testing.T) {
		_, err := handlers.NewDetect(handlers.DetectConfig{})
		require.EqualError(t, err, "handlers: Detect needs "+strings.Join([]string{"an Engine", "a Store", "a History", "a HistoryLog (Kept)", "a Topic", "a clock (Now)", "NewID", "a Log"}, ", "))
	})
}

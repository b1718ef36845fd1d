package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	wmmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sethvargo/go-envconfig"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/app/telemetry"
	"github.com/heartbeat/heartbeat/messages"
	hbmw "github.com/heartbeat/heartbeat/middleware"
	hbsql "github.com/heartbeat/heartbeat/sql"
)

// fakeEvents records the batches persist writes; fail decides per call.
type fakeEvents struct {
	mu    sync.Mutex
	calls int
	rows  []hbsql.EventRow
	fail  func(call int) error
}

func (f *fakeEvents) Write(_ context.Context, rows []hbsql.EventRow) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fail != nil {
		if err := f.fail(f.calls); err != nil {
			return 0, err
		}
	}
	f.rows = append(f.rows, rows...)
	return int64(len(rows)), nil
}

func (f *fakeEvents) snapshot() (int, []hbsql.EventRow) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls, append([]hbsql.EventRow(nil), f.rows...)
}

type fakeAnomalies struct {
	mu   sync.Mutex
	seen map[string]messages.Anomaly
	msgs []*message.Message
}

func (f *fakeAnomalies) Write(_ context.Context, a messages.Anomaly, _ string, msg *message.Message) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, dup := f.seen[a.AnomalyID]; dup {
		return false, nil
	}
	f.seen[a.AnomalyID] = a
	f.msgs = append(f.msgs, msg)
	return true, nil
}

type testRouter struct {
	pubsub    *gochannel.GoChannel
	events    *fakeEvents
	anomalies *fakeAnomalies
	metrics   *telemetry.Metrics
	cfg       config.Config
}

func startTestRouter(t *testing.T, handlers string, fail func(int) error) *testRouter {
	t.Helper()
	cfg, err := config.LoadConfig(context.Background(), envconfig.MapLookuper(map[string]string{
		"ROUTER_HANDLERS":        handlers,
		"DETECTION_MODE":         "per_event", // the wiring below has no episode engine
		"RETRY_MAX_RETRIES":      "2",
		"RETRY_INITIAL_INTERVAL": "1ms",
		"RETRY_MAX_INTERVAL":     "5ms",
		"PERSIST_BATCH_TIMEOUT":  "1ms",
	}))
	require.NoError(t, err)
	logger := watermill.NopLogger{}
	ps := gochannel.NewGoChannel(gochannel.Config{Persistent: true, OutputChannelBuffer: 100, BlockPublishUntilSubscriberAck: true}, logger)
	tr := &testRouter{pubsub: ps, events: &fakeEvents{fail: fail}, anomalies: &fakeAnomalies{seen: map[string]messages.Anomaly{}},
		metrics: telemetry.NewMetrics(telemetry.NewRegistry()), cfg: cfg}
	w := wiring{
		cfg: cfg, metrics: tr.metrics, registry: telemetry.NewRegistry(), log: telemetry.NewLogger("error"), wlog: logger, pub: ps,
		subscriber:      func(string) (message.Subscriber, error) { return ps, nil },
		batchSubscriber: func(string) (message.Subscriber, error) { return ps, nil },
		events:          tr.events.Write, anomalies: tr.anomalies, engine: newEngine(cfg),
	}
	router, closers, err := w.router()
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- router.Run(ctx) }()
	<-router.Running()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
		for _, c := range closers {
			c(context.Background())
		}
	})
	return tr
}

func (tr *testRouter) publish(t *testing.T, payload string) *message.Message {
	t.Helper()
	msg := message.NewMessage(watermill.NewUUID(), []byte(payload))
	msg.Metadata.Set(wmmw.CorrelationIDMetadataKey, "corr-"+msg.UUID)
	require.NoError(t, tr.pubsub.Publish(tr.cfg.Kafka.TopicRaw, msg))
	return msg
}

// read returns the first n messages of topic, failing after a deadline.
func (tr *testRouter) read(t *testing.T, topic string, n int) []*message.Message {
	t.Helper()
	ch, err := tr.pubsub.Subscribe(context.Background(), topic)
	require.NoError(t, err)
	var out []*message.Message
	deadline := time.After(10 * time.Second)
	for len(out) < n {
		select {
		case m := <-ch:
			m.Ack()
			out = append(out, m)
		case <-deadline:
			t.Fatalf("got %d of %d messages on %s", len(out), n, topic)
		}
	}
	return out
}

func reading(rate int, at time.Time) (string, messages.Heartbeat) {
	h := messages.Heartbeat{EventID: uuid.NewString(), CustomerID: "cust_1", Timestamp: at.UTC().Truncate(time.Millisecond), HeartRate: rate}
	b, _ := h.Marshal()
	return string(b), h
}

func TestPersistStoresValidReadings(t *testing.T) {
	tr := startTestRouter(t, "persist", nil)
	payload, want := reading(72, time.Now())
	tr.publish(t, payload)

	require.Eventually(t, func() bool { _, rows := tr.events.snapshot(); return len(rows) == 1 }, 10*time.Second, 5*time.Millisecond)
	_, rows := tr.events.snapshot()
	require.Equal(t, want.EventID, rows[0].Event.EventID)
	require.Equal(t, 72, rows[0].Event.HeartRate)
	require.True(t, want.Timestamp.Equal(rows[0].Event.Timestamp))
	require.Equal(t, tr.cfg.Kafka.TopicRaw, rows[0].Source.Topic)
	require.Eventually(t, func() bool { return testutil.ToFloat64(tr.metrics.DBInserts) == 1 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, 1.0, testutil.ToFloat64(tr.metrics.Consumed.WithLabelValues("persist")))
}

func TestPersistRoutesInvalidEventsWithReason(t *testing.T) {
	tr := startTestRouter(t, "persist", nil)
	cases := []struct {
		payload string
		class   messages.Class
		field   string
	}{
		{`not json`, messages.ClassSchema, "payload"},
		{`{"event_id":"x","customer_id":"c","timestamp":"2026-11-25T10:00:00Z","heart_rate":72}`, messages.ClassSchema, "event_id"},
		{fmt.Sprintf(`{"event_id":%q,"customer_id":"c","timestamp":%q,"heart_rate":250}`, uuid.NewString(), time.Now().UTC().Format(time.RFC3339)), messages.ClassDomain, "heart_rate"},
	}
	sent := map[string]*message.Message{}
	for _, c := range cases {
		m := tr.publish(t, c.payload)
		sent[c.payload] = m
	}
	got := tr.read(t, tr.cfg.Kafka.TopicInvalid, len(cases))
	byPayload := map[string]messages.InvalidEvent{}
	corr := map[string]string{}
	for _, m := range got {
		var env messages.InvalidEvent
		require.NoError(t, json.Unmarshal(m.Payload, &env))
		byPayload[env.Payload] = env
		corr[env.Payload] = wmmw.MessageCorrelationID(m)
	}
	for _, c := range cases {
		env, ok := byPayload[c.payload]
		require.True(t, ok, "no envelope for %s", c.payload)
		require.Equal(t, c.class, env.Class)
		require.Equal(t, c.field, env.Field)
		require.Contains(t, env.Reason+env.Field, c.field)
		require.NotEmpty(t, env.Reason)
		require.Equal(t, tr.cfg.Kafka.TopicRaw, env.SourceTopic)
		require.Equal(t, "corr-"+sent[c.payload].UUID, corr[c.payload], "correlation id kept")
	}
	calls, _ := tr.events.snapshot()
	require.Zero(t, calls, "invalid events are never written")
	require.Equal(t, 2.0, testutil.ToFloat64(tr.metrics.Invalid.WithLabelValues("persist", "schema")))
	require.Equal(t, 1.0, testutil.ToFloat64(tr.metrics.Invalid.WithLabelValues("persist", "domain")))
}

func TestPersistRetriesThenPoisons(t *testing.T) {
	tr := startTestRouter(t, "persist", func(int) error { return errors.New("value too long for type character varying(64)") })
	payload, _ := reading(72, time.Now())
	sent := tr.publish(t, payload)

	dlq := tr.read(t, tr.cfg.Kafka.TopicDLQ, 1)[0]
	require.Equal(t, sent.UUID, dlq.UUID)
	require.Equal(t, payload, string(dlq.Payload))
	require.Contains(t, dlq.Metadata.Get(wmmw.ReasonForPoisonedKey), "value too long")
	require.Equal(t, "persist", dlq.Metadata.Get(wmmw.PoisonedHandlerKey))
	require.Equal(t, tr.cfg.Kafka.TopicRaw, dlq.Metadata.Get(wmmw.PoisonedTopicKey))
	require.Equal(t, "corr-"+sent.UUID, wmmw.MessageCorrelationID(dlq))
	calls, _ := tr.events.snapshot()
	require.Equal(t, tr.cfg.Retry.MaxRetries+1, calls, "one try and MaxRetries retries")
	require.Equal(t, 1.0, testutil.ToFloat64(tr.metrics.DLQ.WithLabelValues("persist")))
	require.Equal(t, float64(tr.cfg.Retry.MaxRetries), testutil.ToFloat64(tr.metrics.Retries.WithLabelValues("persist")))
}

func TestPersistWaitsOutTransientFailuresInsteadOfPoisoning(t *testing.T) {
	const outage = 8 // failing calls, more than the retry budget
	tr := startTestRouter(t, "persist", func(call int) error {
		if call <= outage {
			return hbmw.MarkTransient(errors.New("dial tcp 127.0.0.1:5432: connect: connection refused"))
		}
		return nil
	})
	payload, want := reading(72, time.Now())
	tr.publish(t, payload)

	require.Eventually(t, func() bool { _, rows := tr.events.snapshot(); return len(rows) == 1 }, 10*time.Second, 5*time.Millisecond)
	_, rows := tr.events.snapshot()
	require.Equal(t, want.EventID, rows[0].Event.EventID)
	require.Zero(t, testutil.ToFloat64(tr.metrics.DLQ.WithLabelValues("persist")))
	require.Equal(t, float64(outage), testutil.ToFloat64(tr.metrics.TransientFails.WithLabelValues("persist")))
}

func TestPersistPoisonsPanics(t *testing.T) {
	tr := startTestRouter(t, "persist", func(int) error { panic("nil map") })
	payload, _ := reading(72, time.Now())
	tr.publish(t, payload)
	dlq := tr.read(t, tr.cfg.Kafka.TopicDLQ, 1)[0]
	require.Contains(t, dlq.Metadata.Get(wmmw.ReasonForPoisonedKey), "nil map")
}

func TestDetectRaisesEachRuleOnce(t *testing.T) {
	tr := startTestRouter(t, "detect", nil)
	t0 := time.Now().Add(-time.Minute)
	type step struct {
		rate int
		rule string
	}
	steps := []step{{70, ""}, {50, "LOW_HEART_RATE"}, {51, ""}, {81, "SPIKE"}, {140, "HIGH_HEART_RATE"}, {139, ""}, {110, ""}, {80, "SPIKE"}}
	var events []messages.Heartbeat
	for i, s := range steps {
		p, h := reading(s.rate, t0.Add(time.Duration(i)*time.Second))
		events = append(events, h)
		tr.publish(t, p)
	}
	want := map[string]string{}
	for i, s := range steps {
		if s.rule != "" {
			want[messages.AnomalyID(events[i].EventID, s.rule)] = s.rule
		}
	}
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(tr.metrics.Consumed.WithLabelValues("detect")) == float64(len(steps))
	}, 10*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool {
		tr.anomalies.mu.Lock()
		defer tr.anomalies.mu.Unlock()
		return len(tr.anomalies.seen) == len(want)
	}, 10*time.Second, 5*time.Millisecond)
	tr.anomalies.mu.Lock()
	defer tr.anomalies.mu.Unlock()
	for id, rule := range want {
		a, ok := tr.anomalies.seen[id]
		require.True(t, ok, "missing %s in %v", rule, tr.anomalies.seen)
		require.Equal(t, rule, a.Type)
	}
	for _, m := range tr.anomalies.msgs {
		require.Equal(t, "cust_1", m.Metadata.Get(messages.KeyMetadata))
		require.NotEmpty(t, wmmw.MessageCorrelationID(m))
	}
}

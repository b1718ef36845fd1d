package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
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
	hb "github.com/heartbeat/heartbeat/handlers"
	"github.com/heartbeat/heartbeat/handlers/handlerstest"
	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/messages/rules"
	hbmw "github.com/heartbeat/heartbeat/middleware"
)

type testRouter struct {
	pubsub    *gochannel.GoChannel
	events    *handlerstest.Events
	anomalies *handlerstest.Anomalies
	episodes  *handlerstest.Episodes
	metrics   *telemetry.Metrics
	cfg       config.Config
}

// startTestRouter runs the router of router.go on Watermill's GoChannel
// with in-memory storage: the handlers of ROUTER_HANDLERS=handlers, in the
// detection mode of env (the default, episode, unless it says otherwise).
func startTestRouter(t *testing.T, handlers string, env map[string]string, fail func(int) error) *testRouter {
	t.Helper()
	vars := map[string]string{
		"ROUTER_HANDLERS":        handlers,
		"RETRY_MAX_RETRIES":      "2",
		"RETRY_INITIAL_INTERVAL": "1ms",
		"RETRY_MAX_INTERVAL":     "5ms",
		"PERSIST_BATCH_TIMEOUT":  "1ms",
	}
	maps.Copy(vars, env)
	cfg, err := config.LoadConfig(context.Background(), envconfig.MapLookuper(vars))
	require.NoError(t, err)
	logger := watermill.NopLogger{}
	log := telemetry.NewLogger("error")
	ps := gochannel.NewGoChannel(gochannel.Config{Persistent: true, OutputChannelBuffer: 100, BlockPublishUntilSubscriberAck: true}, logger)
	tr := &testRouter{pubsub: ps, events: &handlerstest.Events{Fail: fail}, anomalies: &handlerstest.Anomalies{},
		episodes: &handlerstest.Episodes{}, metrics: telemetry.NewMetrics(telemetry.NewRegistry()), cfg: cfg}
	w := wiring{
		cfg: cfg, metrics: tr.metrics, registry: telemetry.NewRegistry(), log: log, wlog: logger, pub: ps,
		persistSub: func(string) (message.Subscriber, error) { return ps, nil },
		detectSub:  func(string) (message.Subscriber, error) { return ps, nil },
	}
	var closers []func(context.Context)
	if cfg.Runs(config.HandlerPersist) {
		batching := persistBatching(cfg)
		batching.Writers = 1
		batcher := hb.NewBatcher(batching,
			hb.EventWrite(tr.events.Write, func(_, inserted int, _ time.Duration) { tr.metrics.DBInserts.Add(float64(inserted)) }))
		closers = append(closers, batcher.Close)
		w.persist, err = hb.NewPersist(cfg.Validation.Limits(), batcher, time.Now)
		require.NoError(t, err)
	}
	if cfg.Runs(config.HandlerDetect) {
		observe := hb.Observer{Anomaly: func(a messages.Anomaly) { tr.metrics.Anomalies.WithLabelValues(a.Type, a.Severity).Inc() }}
		if cfg.Detection.Mode == rules.ModePerEvent {
			engine := rules.NewEngine(rules.Thresholds{Low: cfg.Anomaly.LowThreshold, High: cfg.Anomaly.HighThreshold, SpikeDelta: cfg.Anomaly.SpikeDelta})
			w.detect, err = hb.NewDetect(hb.DetectConfig{Limits: cfg.Validation.Limits(), Engine: engine, Store: tr.anomalies,
				History: &handlerstest.History{}, Kept: &handlerstest.Kept{}, Topic: cfg.Kafka.TopicAnomaly, Now: time.Now, NewID: watermill.NewUUID, Log: log, Observe: observe})
		} else {
			engine, eerr := rules.NewEpisodeEngine(cfg.Detection.EpisodeParams(cfg.Anomaly))
			require.NoError(t, eerr)
			w.detect, err = hb.NewDetectEpisodes(hb.DetectEpisodesConfig{Limits: cfg.Validation.Limits(), Engine: engine, Store: tr.episodes,
				History: &handlerstest.EpisodeHistory{}, Kept: &handlerstest.Kept{}, Topic: cfg.Kafka.TopicAnomaly, Now: time.Now, NewID: watermill.NewUUID, Log: log, Observe: observe})
		}
		require.NoError(t, err)
	}
	router, routerClosers, err := w.router()
	require.NoError(t, err)
	// Closed once the router has stopped: cleanups run last first.
	t.Cleanup(func() {
		for _, c := range append(routerClosers, closers...) {
			c(context.Background())
		}
	})
	handlerstest.Run(t, router)
	return tr
}

func (tr *testRouter) publish(t *testing.T, payload string) *message.Message {
	t.Helper()
	msg := message.NewMessage(watermill.NewUUID(), []byte(payload))
	msg.Metadata.Set(wmmw.CorrelationIDMetadataKey, "corr-"+msg.UUID)
	require.NoError(t, tr.pubsub.Publish(tr.cfg.Kafka.TopicRaw, msg))
	return msg
}

func reading(rate int, at time.Time) (string, messages.Heartbeat) {
	h := messages.Heartbeat{EventID: uuid.NewString(), CustomerID: "cust_1", Timestamp: at.UTC().Truncate(time.Millisecond), HeartRate: rate}
	b, _ := h.Marshal()
	return string(b), h
}

func TestPersistStoresValidReadings(t *testing.T) {
	tr := startTestRouter(t, "persist", nil, nil)
	payload, want := reading(72, time.Now())
	tr.publish(t, payload)

	require.Eventually(t, func() bool { _, rows := tr.events.Snapshot(); return len(rows) == 1 }, 10*time.Second, 5*time.Millisecond)
	_, rows := tr.events.Snapshot()
	require.Equal(t, want.EventID, rows[0].Reading.EventID)
	require.Equal(t, 72, rows[0].Reading.HeartRate)
	require.True(t, want.Timestamp.Equal(rows[0].Reading.Timestamp))
	require.Equal(t, tr.cfg.Kafka.TopicRaw, rows[0].Source.Topic)
	require.Eventually(t, func() bool { return testutil.ToFloat64(tr.metrics.DBInserts) == 1 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, 1.0, testutil.ToFloat64(tr.metrics.Consumed.WithLabelValues("persist")))
}

func TestPersistRoutesInvalidEventsWithReason(t *testing.T) {
	tr := startTestRouter(t, "persist", nil, nil)
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
	got := handlerstest.Read(t, tr.pubsub, tr.cfg.Kafka.TopicInvalid, len(cases))
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
	calls, _ := tr.events.Snapshot()
	require.Zero(t, calls, "invalid events are never written (nor checkpointed: they come from no Kafka partition)")
	require.Equal(t, 2.0, testutil.ToFloat64(tr.metrics.Invalid.WithLabelValues("persist", "schema")))
	require.Equal(t, 1.0, testutil.ToFloat64(tr.metrics.Invalid.WithLabelValues("persist", "domain")))
}

func TestPersistRetriesThenPoisons(t *testing.T) {
	tr := startTestRouter(t, "persist", nil, func(int) error { return errors.New("value too long for type character varying(64)") })
	payload, _ := reading(72, time.Now())
	sent := tr.publish(t, payload)

	dlq := handlerstest.Read(t, tr.pubsub, tr.cfg.Kafka.TopicDLQ, 1)[0]
	require.Equal(t, sent.UUID, dlq.UUID)
	require.Equal(t, payload, string(dlq.Payload))
	require.Contains(t, dlq.Metadata.Get(wmmw.ReasonForPoisonedKey), "value too long")
	require.Equal(t, "persist", dlq.Metadata.Get(wmmw.PoisonedHandlerKey))
	require.Equal(t, tr.cfg.Kafka.TopicRaw, dlq.Metadata.Get(wmmw.PoisonedTopicKey))
	require.Equal(t, "corr-"+sent.UUID, wmmw.MessageCorrelationID(dlq))
	calls, _ := tr.events.Snapshot()
	require.Equal(t, tr.cfg.Retry.MaxRetries+1, calls, "one try and MaxRetries retries")
	require.Equal(t, 1.0, testutil.ToFloat64(tr.metrics.DLQ.WithLabelValues("persist")))
	require.Equal(t, float64(tr.cfg.Retry.MaxRetries), testutil.ToFloat64(tr.metrics.Retries.WithLabelValues("persist")))
}

func TestPersistWaitsOutTransientFailuresInsteadOfPoisoning(t *testing.T) {
	const outage = 8 // failing calls, more than the retry budget
	tr := startTestRouter(t, "persist", nil, func(call int) error {
		if call <= outage {
			return hbmw.MarkTransient(errors.New("dial tcp 127.0.0.1:5432: connect: connection refused"))
		}
		return nil
	})
	payload, want := reading(72, time.Now())
	tr.publish(t, payload)

	require.Eventually(t, func() bool { _, rows := tr.events.Snapshot(); return len(rows) == 1 }, 10*time.Second, 5*time.Millisecond)
	_, rows := tr.events.Snapshot()
	require.Equal(t, want.EventID, rows[0].Reading.EventID)
	require.Zero(t, testutil.ToFloat64(tr.metrics.DLQ.WithLabelValues("persist")))
	require.Equal(t, float64(outage), testutil.ToFloat64(tr.metrics.TransientFails.WithLabelValues("persist")))
}

func TestPersistPoisonsPanics(t *testing.T) {
	tr := startTestRouter(t, "persist", nil, func(int) error { panic("nil map") })
	payload, _ := reading(72, time.Now())
	tr.publish(t, payload)
	dlq := handlerstest.Read(t, tr.pubsub, tr.cfg.Kafka.TopicDLQ, 1)[0]
	require.Contains(t, dlq.Metadata.Get(wmmw.ReasonForPoisonedKey), "nil map")
}

func TestDetectRaisesEachRuleOnce(t *testing.T) {
	tr := startTestRouter(t, "detect", map[string]string{"DETECTION_MODE": "per_event"}, nil)
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
	require.Eventually(t, func() bool { seen, _ := tr.anomalies.Recorded(); return len(seen) == len(want) }, 10*time.Second, 5*time.Millisecond)
	seen, msgs := tr.anomalies.Recorded()
	for id, rule := range want {
		a, ok := seen[id]
		require.True(t, ok, "missing %s in %v", rule, seen)
		require.Equal(t, rule, a.Type)
	}
	for _, m := range msgs {
		require.Equal(t, "cust_1", m.Metadata.Get(messages.KeyMetadata))
		require.NotEmpty(t, wmmw.MessageCorrelationID(m))
	}
}

// With nothing about detection set — the episode rules — a held jump
// through the router is one SPIKE: its opening recorded once, at the
// reading that confirmed it, with its message for the anomaly topic.
func TestDetectDefaultModeRecordsAHeldJumpOnce(t *testing.T) {
	tr := startTestRouter(t, "detect", nil, nil)
	t0 := time.Now().Add(-time.Minute)
	rates := []int{70, 71, 70, 72, 110, 111, 112, 110}
	var sent []*message.Message
	for i, r := range rates {
		p, _ := reading(r, t0.Add(time.Duration(i)*time.Second))
		sent = append(sent, tr.publish(t, p))
	}
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(tr.metrics.Consumed.WithLabelValues("detect")) == float64(len(rates))
	}, 10*time.Second, 5*time.Millisecond)
	ups, topics := tr.episodes.Writes()
	require.Len(t, ups, 1)
	ep := ups[0].Episode
	require.Equal(t, messages.Spike, ep.Type)
	require.Equal(t, messages.EpisodeOpen, ep.Status)
	require.Equal(t, 110, ep.HeartRate, "starts at the jump")
	require.Equal(t, 72, *ep.PreviousHeartRate, "the rate before the jump")
	require.Equal(t, tr.cfg.Kafka.TopicAnomaly, topics[0])
	require.Equal(t, "corr-"+sent[6].UUID, wmmw.MessageCorrelationID(ups[0].Message), "opened by the second confirming reading")
	require.Equal(t, 1.0, testutil.ToFloat64(tr.metrics.Anomalies.WithLabelValues(messages.Spike, messages.SeverityMedium)))
}

package telemetry_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/app/telemetry"
	"github.com/heartbeat/heartbeat/app/telemetry/telemetrytest"
	"github.com/heartbeat/heartbeat/messages"
	hbsql "github.com/heartbeat/heartbeat/sql"
	"github.com/heartbeat/heartbeat/sql/pgtest"
)

// TestOutboxStallIsReported: an anomaly committed with its outbox message
// and not forwarded (no forwarder runs) is, after STALL_AFTER, a stall —
// /healthz 503 with the count and age, the gauges, a WARN line. Once
// Watermill's forwarder moves it to the anomaly topic the outbox is healthy
// again (an INFO line).
func TestOutboxStallIsReported(t *testing.T) {
	const (
		anomalyTopic = "events.anomaly.v1"
		stall        = time.Second
	)
	_, pool := pgtest.Database(t, "heartbeat_outbox_")
	ctx := t.Context()
	_, err := hbsql.Migrate(ctx, pool)
	require.NoError(t, err)
	wlog := watermill.NopLogger{}
	// The forwarder's subscriber creates the outbox tables, as at start-up.
	sub, err := wmsql.NewSubscriber(wmsql.BeginnerFromPgx(pool), wmsql.SubscriberConfig{
		SchemaAdapter: hbsql.OutboxSchema(), OffsetsAdapter: hbsql.OutboxOffsets(),
		InitializeSchema: true, PollInterval: 10 * time.Millisecond,
	}, wlog)
	require.NoError(t, err)
	require.NoError(t, sub.SubscribeInitialize(hbsql.OutboxTopic))

	logs := &telemetrytest.LogBuffer{}
	reg := telemetry.NewRegistry()
	watch := telemetry.OutboxWatch{
		Backlog: func(ctx context.Context) (int64, time.Duration, error) { return hbsql.OutboxBacklog(ctx, pool) },
		Topic:   anomalyTopic, StallAfter: stall, Interval: 50 * time.Millisecond,
		Registry: reg, Health: telemetry.NewHealth(), Log: slog.New(slog.NewTextHandler(logs, nil)),
	}
	url := telemetrytest.ServeHealth(t, reg, watch.Health)
	wctx, cancel := context.WithCancel(context.Background())
	watchDone := make(chan error, 1)
	go func() { watchDone <- watch.Run(wctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-watchDone)
	})

	// An empty outbox: healthy, nothing waiting.
	require.Eventually(t, func() bool {
		_, ok := telemetrytest.Gauge(t, reg, "heartbeat_outbox_unforwarded_messages", nil)
		return ok
	}, 10*time.Second, 20*time.Millisecond)
	code, _ := telemetrytest.GetHealthz(t, url)
	require.Equal(t, http.StatusOK, code)

	eventID := uuid.NewString()
	an := messages.Anomaly{AnomalyID: messages.AnomalyID(eventID, "SPIKE"), EventID: eventID, CustomerID: "cust_1",
		Type: "SPIKE", Severity: "medium", HeartRate: 130, EventTime: time.Now(), DetectedAt: time.Now(), Details: json.RawMessage(`{}`)}
	payload, err := json.Marshal(an)
	require.NoError(t, err)
	written := time.Now()
	inserted, err := hbsql.NewAnomalyWriter(pool, wlog).Write(ctx, an, anomalyTopic, message.NewMessage(an.AnomalyID, payload))
	require.NoError(t, err)
	require.True(t, inserted)

	body := telemetrytest.WaitHealthz(t, url, http.StatusServiceUnavailable, 20*time.Second)
	require.GreaterOrEqual(t, time.Since(written), stall, "reported before STALL_AFTER")
	t.Logf("/healthz: %s", body)
	require.Contains(t, body, "outbox not forwarding: 1 committed anomaly messages wait for "+anomalyTopic)
	n, _ := telemetrytest.Gauge(t, reg, "heartbeat_outbox_unforwarded_messages", nil)
	require.Equal(t, 1.0, n)
	age, _ := telemetrytest.Gauge(t, reg, "heartbeat_outbox_oldest_unforwarded_seconds", nil)
	require.GreaterOrEqual(t, age, stall.Seconds())
	require.Len(t, logs.Lines("level=WARN", "outbox not forwarding", "unforwarded=1"), 1, logs.String())

	// Watermill's forwarder moves it to the anomaly topic.
	topic := gochannel.NewGoChannel(gochannel.Config{}, wlog)
	received, err := topic.Subscribe(ctx, anomalyTopic)
	require.NoError(t, err)
	fwd, err := forwarder.NewForwarder(sub, topic, wlog, forwarder.Config{ForwarderTopic: hbsql.OutboxTopic})
	require.NoError(t, err)
	fctx, fcancel := context.WithCancel(context.Background())
	fwdDone := make(chan error, 1)
	go func() { fwdDone <- fwd.Run(fctx) }()
	t.Cleanup(func() {
		fcancel()
		require.NoError(t, <-fwdDone)
	})
	select {
	case msg := <-received:
		require.Equal(t, an.AnomalyID, msg.UUID)
		msg.Ack()
	case <-time.After(20 * time.Second):
		t.Fatal("the forwarder did not publish the anomaly")
	}

	require.Equal(t, "ok\n", telemetrytest.WaitHealthz(t, url, http.StatusOK, 20*time.Second))
	n, _ = telemetrytest.Gauge(t, reg, "heartbeat_outbox_unforwarded_messages", nil)
	require.Zero(t, n)
	age, _ = telemetrytest.Gauge(t, reg, "heartbeat_outbox_oldest_unforwarded_seconds", nil)
	require.Zero(t, age)
	require.Len(t, logs.Lines("level=INFO", "outbox forwarding again"), 1, logs.String())
}

package sql_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/messages"
	hbsql "github.com/heartbeat/heartbeat/sql"
)

// TestAnomalyWriterRecordsAnAnomalyOnce (DETECTION_MODE=per_event): the row
// and its message for the anomaly topic are written together, once; a
// redelivered reading's anomaly writes and queues nothing; a write that
// fails leaves neither.
func TestAnomalyWriterRecordsAnAnomalyOnce(t *testing.T) {
	pool := episodeDB(t)
	ctx := context.Background()
	w := hbsql.NewAnomalyWriter(pool, watermill.NopLogger{})
	prev := 70
	a := messages.Anomaly{AnomalyID: uuid.NewString(), EventID: uuid.NewString(), CustomerID: "c1", Type: messages.Spike,
		Severity: messages.SeverityMedium, HeartRate: 105, PreviousHeartRate: &prev, EventTime: at, DetectedAt: at.Add(time.Second),
		Details: json.RawMessage(`{"threshold":30,"measured":105,"previous_heart_rate":70,"delta":35}`)}
	msg := message.NewMessage(a.AnomalyID, []byte(`{"anomaly_id":"x"}`))

	inserted, err := w.Write(ctx, a, "events.anomaly.v1", msg)
	require.NoError(t, err)
	require.True(t, inserted)
	var typ, severity, customer, details string
	var rate int
	var eventTime time.Time
	require.NoError(t, pool.QueryRow(ctx, `SELECT anomaly_type, severity, customer_id, heart_rate, event_time, details::text
		FROM anomalies WHERE anomaly_id = $1 AND event_id = $2`, a.AnomalyID, a.EventID).Scan(&typ, &severity, &customer, &rate, &eventTime, &details))
	require.Equal(t, []any{messages.Spike, messages.SeverityMedium, "c1", 105}, []any{typ, severity, customer, rate})
	require.True(t, at.Equal(eventTime))
	require.JSONEq(t, string(a.Details), details)
	var topic, id string
	require.NoError(t, pool.QueryRow(ctx, `SELECT payload->>'destination_topic', payload->>'uuid' FROM watermill_outbox`).Scan(&topic, &id))
	require.Equal(t, "events.anomaly.v1", topic, "queued for the anomaly topic")
	require.Equal(t, a.AnomalyID, id, "the message itself")

	inserted, err = w.Write(ctx, a, "events.anomaly.v1", message.NewMessage(a.AnomalyID, []byte(`{}`)))
	require.NoError(t, err)
	require.False(t, inserted, "a redelivered reading")
	require.Equal(t, 1, count(t, pool, "SELECT count(*) FROM anomalies"))
	require.Equal(t, 1, count(t, pool, "SELECT count(*) FROM watermill_outbox"), "no second message")

	bad := a
	bad.AnomalyID, bad.EventID, bad.Details = uuid.NewString(), uuid.NewString(), json.RawMessage(`{"threshold":`)
	inserted, err = w.Write(ctx, bad, "events.anomaly.v1", message.NewMessage(bad.AnomalyID, []byte(`{}`)))
	require.ErrorContains(t, err, "record anomaly "+bad.AnomalyID+": insert anomaly")
	require.False(t, inserted)
	require.Equal(t, 1, count(t, pool, "SELECT count(*) FROM anomalies"))
	require.Equal(t, 1, count(t, pool, "SELECT count(*) FROM watermill_outbox"))
}

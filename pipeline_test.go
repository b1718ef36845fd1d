package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/messages"
	hbsql "github.com/heartbeat/heartbeat/sql"
)

// fixture is a known stream: normal readings, the rules at their
// boundaries, every invalid class, and duplicates of valid records.
func fixture(now time.Time) (recs []*record, anomalies map[string]string) {
	anomalies = map[string]string{}
	t0 := now.Add(-10 * time.Minute)
	for c := range 5 {
		for i := range 20 {
			recs = append(recs, validRecord(fmt.Sprintf("cust_n%d", c), 70+(i%3), t0.Add(time.Duration(i)*time.Second)))
		}
	}
	steps := []struct {
		rate int
		rule string
	}{{70, ""}, {50, "LOW_HEART_RATE"}, {51, ""}, {81, "SPIKE"}, {140, "HIGH_HEART_RATE"}, {139, ""}, {110, ""}, {80, "SPIKE"}, {30, "LOW_HEART_RATE"}, {220, "HIGH_HEART_RATE"}}
	for i, s := range steps {
		r := validRecord("cust_rules", s.rate, t0.Add(time.Duration(i)*time.Second))
		recs = append(recs, r)
		if s.rule != "" {
			anomalies[messages.AnomalyID(r.eventID, s.rule)] = s.rule
		}
	}
	// A late reading: LOW still fires, but it neither spikes nor moves state.
	late := validRecord("cust_rules", 45, t0.Add(-time.Second))
	recs = append(recs, late)
	anomalies[messages.AnomalyID(late.eventID, "LOW_HEART_RATE")] = "LOW_HEART_RATE"

	ts := now.UTC().Format(time.RFC3339)
	id := uuid.NewString()
	recs = append(recs,
		invalidRecord(`not json`, messages.ClassSchema, "payload"),
		invalidRecord(``, messages.ClassSchema, "payload"),
		invalidRecord(`[1,2]`, messages.ClassSchema, "payload"),
		invalidRecord(fmt.Sprintf(`{"event_id":%q,"customer_id":"c","timestamp":%q}`, id, ts), messages.ClassSchema, "heart_rate"),
		invalidRecord(fmt.Sprintf(`{"event_id":"nope","customer_id":"c","timestamp":%q,"heart_rate":70}`, ts), messages.ClassSchema, "event_id"),
		invalidRecord(fmt.Sprintf(`{"event_id":%q,"customer_id":"  ","timestamp":%q,"heart_rate":70}`, id, ts), messages.ClassSchema, "customer_id"),
		invalidRecord(fmt.Sprintf(`{"event_id":%q,"customer_id":%q,"timestamp":%q,"heart_rate":70}`, id, strings.Repeat("x", 65), ts), messages.ClassSchema, "customer_id"),
		invalidRecord(fmt.Sprintf(`{"event_id":%q,"customer_id":"c","timestamp":"2026-11-25 10:00:00","heart_rate":70}`, id), messages.ClassSchema, "timestamp"),
		invalidRecord(fmt.Sprintf(`{"event_id":%q,"customer_id":"c","timestamp":%q,"heart_rate":70.5}`, id, ts), messages.ClassSchema, "heart_rate"),
		invalidRecord(fmt.Sprintf(`{"event_id":%q,"customer_id":"c","timestamp":%q,"heart_rate":"70"}`, id, ts), messages.ClassSchema, "heart_rate"),
		invalidRecord(fmt.Sprintf(`{"event_id":%q,"customer_id":"c","timestamp":%q,"heart_rate":70,"heart_rate":71}`, id, ts), messages.ClassSchema, "heart_rate"),
		invalidRecord(fmt.Sprintf(`{"event_id":%q,"customer_id":"c","timestamp":%q,"heart_rate":29}`, id, ts), messages.ClassDomain, "heart_rate"),
		invalidRecord(fmt.Sprintf(`{"event_id":%q,"customer_id":"c","timestamp":%q,"heart_rate":221}`, id, ts), messages.ClassDomain, "heart_rate"),
		invalidRecord(fmt.Sprintf(`{"event_id":%q,"customer_id":"c","timestamp":%q,"heart_rate":70}`, id, now.Add(time.Hour).UTC().Format(time.RFC3339)), messages.ClassDomain, "timestamp"),
		invalidRecord(fmt.Sprintf(`{"event_id":%q,"customer_id":"c","timestamp":"0001-01-01T00:00:00Z","heart_rate":70}`, id), messages.ClassDomain, "timestamp"),
	)
	return recs, anomalies
}

// duplicates re-sends copies of every third valid record.
func duplicates(recs []*record) []*record {
	var out []*record
	for i, r := range recs {
		if r.valid && i%3 == 0 {
			c := *r
			out = append(out, &c)
		}
	}
	return out
}

type expectation struct {
	events      map[string]bool
	checkpoints map[int32]int64
	invalid     map[[2]int64]*record
	anomalies   map[string]string
}

func expect(recs []*record, anomalies map[string]string) expectation {
	e := expectation{events: map[string]bool{}, checkpoints: map[int32]int64{}, invalid: map[[2]int64]*record{}, anomalies: anomalies}
	for _, r := range recs {
		// The checkpoint covers every record persist finished with.
		e.checkpoints[r.partition] = max(e.checkpoints[r.partition], r.offset)
		if r.valid {
			e.events[r.eventID] = true
		} else {
			e.invalid[[2]int64{int64(r.partition), r.offset}] = r
		}
	}
	return e
}

// verify asserts the exact end state in PostgreSQL and on the topics.
func verify(t *testing.T, broker string, pool *pgxpool.Pool, e expectation) {
	t.Helper()
	ctx := context.Background()
	waitForRows(t, pool, "SELECT count(*) FROM heartbeat_events", len(e.events))
	waitForRows(t, pool, "SELECT count(*) FROM anomalies", len(e.anomalies))

	rows, err := pool.Query(ctx, "SELECT event_id::text FROM heartbeat_events")
	require.NoError(t, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	got := map[string]bool{}
	for _, id := range ids {
		require.False(t, got[id], "event %s stored twice", id)
		got[id] = true
	}
	require.Equal(t, e.events, got, "stored events")

	require.Eventually(t, func() bool {
		cp := map[int32]int64{}
		rows, _ := pool.Query(ctx, "SELECT partition, last_offset FROM ingest_checkpoint WHERE consumer_group = 'cg.db-writer.v1' AND topic = 'events.raw.v1'")
		var p int32
		var o int64
		_, _ = pgx.ForEachRow(rows, []any{&p, &o}, func() error { cp[p] = o; return nil })
		return fmt.Sprint(cp) == fmt.Sprint(e.checkpoints)
	}, 10*time.Second, 20*time.Millisecond, "checkpoints must equal the last offset per partition: %v", e.checkpoints)

	require.Equal(t, e.anomalies, anomalyRows(t, pool), "anomaly rows")

	msgs := consume(t, broker, "events.anomaly.v1", len(e.anomalies))
	seen := map[string]bool{}
	for _, m := range msgs {
		var a messages.Anomaly
		require.NoError(t, json.Unmarshal(m.Value, &a))
		require.False(t, seen[a.AnomalyID], "anomaly message %s published twice", a.AnomalyID)
		seen[a.AnomalyID] = true
		require.Equal(t, e.anomalies[a.AnomalyID], a.Type)
		require.Equal(t, a.CustomerID, string(m.Key), "anomaly keyed by customer")
		require.Equal(t, a.AnomalyID, header(m, "_watermill_message_uuid"), "message id is the anomaly id")
		require.NotEmpty(t, header(m, "correlation_id"))
	}
	require.Len(t, seen, len(e.anomalies))

	envs := consume(t, broker, "events.invalid.v1", len(e.invalid))
	gotInvalid := map[[2]int64]bool{}
	envelopeIDs := map[[2]int64]string{}
	for _, m := range envs {
		var env messages.InvalidEvent
		require.NoError(t, json.Unmarshal(m.Value, &env))
		k := [2]int64{int64(env.SourcePartition), env.SourceOffset}
		want, ok := e.invalid[k]
		require.True(t, ok, "unexpected envelope %+v", env)
		// Envelopes are at least once: a crash between publishing one and
		// checkpointing its record publishes it again, with the same id.
		id := header(m, "_watermill_message_uuid")
		if prev, dup := envelopeIDs[k]; dup {
			require.Equal(t, prev, id, "a republished envelope keeps its id")
			continue
		}
		envelopeIDs[k] = id
		gotInvalid[k] = true
		orig, err := env.OriginalPayload()
		require.NoError(t, err)
		if env.PayloadTruncated {
			require.True(t, strings.HasPrefix(want.payload, string(orig)), "a truncated payload is a prefix of the original")
			require.Equal(t, len(want.payload), env.PayloadBytes)
		} else {
			require.Equal(t, want.payload, string(orig), "original payload kept")
		}
		require.Equal(t, want.class, env.Class, "class of %q", want.payload)
		require.Equal(t, want.field, env.Field, "field of %q: %s", want.payload, env.Reason)
		require.Equal(t, "events.raw.v1", env.SourceTopic)
		require.NotEmpty(t, header(m, "correlation_id"))
	}
	require.Len(t, gotInvalid, len(e.invalid))

	// The rollups agree with the readings they summarise.
	var mismatched int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM (
		SELECT date_trunc('minute', event_time) AS minute, heart_rate, count(*) AS events FROM heartbeat_events GROUP BY 1, 2
		EXCEPT SELECT minute, heart_rate, events FROM heartbeat_minute_rates) d`).Scan(&mismatched))
	require.Zero(t, mismatched, "heartbeat_minute_rates equals the per-minute counts of heartbeat_events")
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM (
		(SELECT customer_id, date_bin('1 minute', max(event_time), timestamptz '2000-01-01 00:00:00+00') FROM heartbeat_events GROUP BY customer_id)
		EXCEPT SELECT customer_id, last_minute FROM customer_last_seen) d`).Scan(&mismatched))
	require.Zero(t, mismatched, "customer_last_seen holds the minute of each customer's latest reading")

	// Every anomaly message was forwarded, so the outbox can be emptied
	// (once the forwarder has recorded its last ack).
	var pruned int64
	require.Eventually(t, func() bool {
		n, err := hbsql.PruneOutbox(ctx, pool, 0)
		require.NoError(t, err)
		pruned += n
		var left int
		require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM watermill_outbox").Scan(&left))
		return left == 0
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, int64(len(e.anomalies)), pruned)
}

func TestPipelineStoresExactlyTheValidEvents(t *testing.T) {
	dbURL, pool := testDatabase(t)
	broker := testBroker(t)
	// The fixture's anomalies are the per-event rules'.
	env := pipelineEnv(broker, dbURL, map[string]string{"DETECTION_MODE": "per_event"})
	p := startPipeline(t, env)

	recs, anomalies := fixture(time.Now())
	produce(t, broker, "events.raw.v1", recs)
	dups := duplicates(recs)
	produce(t, broker, "events.raw.v1", dups)
	verify(t, broker, pool, expect(append(recs, dups...), anomalies))
	p.stop(t)
	requireHistoryOfEveryReading(t, pool)
}

// requireHistoryOfEveryReading checks, once detect has stopped (its last
// commit writes the history it held), that every stored reading is in the
// detector's history (customer_history) at the offset of its record: what
// a rebuild of its customer's state reads.
func requireHistoryOfEveryReading(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	var stored, missing int
	require.NoError(t, pool.QueryRow(context.Background(), `WITH packed AS (
			SELECT h.customer_id, h.source_partition, substring(h.readings FROM i * 34 + 1 FOR 16) AS id,
				substring(h.readings FROM i * 34 + 27 FOR 8) AS off
			FROM customer_history h, generate_series(0, length(h.readings) / 34 - 1) AS i)
		SELECT (SELECT count(*) FROM heartbeat_events), count(*) FROM heartbeat_events e WHERE NOT EXISTS (
			SELECT 1 FROM packed p WHERE p.customer_id = e.customer_id AND p.source_partition = e.source_partition
				AND p.id = uuid_send(e.event_id) AND p.off = int8send(e.source_offset))`).Scan(&stored, &missing))
	require.Positive(t, stored)
	require.Zero(t, missing, "stored readings missing from the detector's history, of %d", stored)
}

func TestPipelineRestartMidStreamLosesAndDuplicatesNothing(t *testing.T) {
	dbURL, pool := testDatabase(t)
	broker := testBroker(t)
	env := pipelineEnv(broker, dbURL, map[string]string{"DETECTION_MODE": "per_event"})
	recs, anomalies := fixture(time.Now())
	// Enough readings that the restart lands mid-stream.
	base := time.Now().Add(-20 * time.Minute)
	for i := range 6000 {
		recs = append(recs, validRecord(fmt.Sprintf("cust_m%03d", i%500), 65+(i%7), base.Add(time.Duration(i)*time.Millisecond*50)))
	}
	produce(t, broker, "events.raw.v1", recs)

	p := startPipeline(t, env)
	waitForRows(t, pool, "SELECT count(*) FROM heartbeat_events", 1000)
	p.stop(t)
	var stored int
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT count(*) FROM heartbeat_events").Scan(&stored))
	t.Logf("stopped with %d of %d rows stored", stored, len(recs))

	p = startPipeline(t, env)
	dups := duplicates(recs)
	produce(t, broker, "events.raw.v1", dups)
	verify(t, broker, pool, expect(append(recs, dups...), anomalies))
	p.stop(t)
	requireHistoryOfEveryReading(t, pool)
}

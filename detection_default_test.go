package main

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// TestDefaultDetectionAlertsOncePerEpisode runs the pipeline with nothing
// about detection set: the episode rules. At 1 Hz, sixteen minutes of five
// customers: a sudden jump held for three minutes is one SPIKE, a gradual
// rise to 130 bpm held for eleven minutes one SUSTAINED_HIGH (not a SPIKE,
// not 660 HIGH_HEART_RATE), a jump into twelve minutes at 150 one episode
// (a SPIKE become SUSTAINED_HIGH, not both), an isolated motion artefact
// (one reading 35 bpm off) nothing, and neither does an artefact 24 above
// the readings before it and 30 above the one after. The episodes close
// once the rate has been back for a minute.
func TestDefaultDetectionAlertsOncePerEpisode(t *testing.T) {
	dbURL, pool := testDatabase(t)
	broker := testBroker(t)
	startPipeline(t, pipelineEnv(broker, dbURL, nil))

	// Twenty minutes ago: no customer is live, so none falls silent when
	// the stream ends.
	t0 := time.Now().Add(-20 * time.Minute).Truncate(time.Second)
	const span = 16 * 60
	var recs []*record
	for s := range span {
		at := t0.Add(time.Duration(s) * time.Second)
		jump := 70 + s%3
		if s >= 2*60 && s < 5*60 {
			jump = 110 + s%3 // at once, held for 3 minutes
		}
		tachy := 70 + s%3
		switch {
		case s >= 60 && s < 3*60:
			tachy = 70 + (s-60)/2 // +0.5 bpm a second: never a jump
		case s >= 3*60 && s < 14*60:
			tachy = 128 + s%5
		case s >= 14*60:
			tachy = 100
		}
		artefact := 70 + s%3
		if s == 7*60 {
			artefact = 105
		}
		jumpTachy := 80 + s%3
		if s >= 60 && s < 13*60 {
			jumpTachy = 150 + s%3
		}
		boundary := 70
		switch {
		case s == 7*60:
			boundary = 94
		case s > 7*60:
			boundary = 64
		}
		recs = append(recs, validRecord("cust_jump", jump, at), validRecord("cust_tachy", tachy, at), validRecord("cust_artefact", artefact, at),
			validRecord("cust_jump_tachy", jumpTachy, at), validRecord("cust_boundary", boundary, at))
	}
	produce(t, broker, "events.raw.v1", recs)

	waitForRows(t, pool, "SELECT count(*) FROM heartbeat_events", len(recs))
	waitForGroup(t, broker, "cg.anomaly.v1", int64(len(recs)))
	want := map[string]string{"cust_jump|SPIKE|": "closed", "cust_tachy|SUSTAINED_HIGH|": "closed",
		"cust_jump_tachy|SUSTAINED_HIGH|SPIKE": "closed"}
	got := map[string]string{}
	_ = poll(30*time.Second, 50*time.Millisecond, func() (bool, error) {
		rows, err := pool.Query(context.Background(), `SELECT customer_id || '|' || anomaly_type || '|' || coalesce(details->>'reclassified_from', ''),
			status FROM anomalies`)
		require.NoError(t, err)
		got = map[string]string{}
		var key, status string
		_, err = pgx.ForEachRow(rows, []any{&key, &status}, func() error { got[key] = status; return nil })
		require.NoError(t, err)
		return reflect.DeepEqual(got, want), nil
	})
	require.Equal(t, want, got, "one row per episode, none for the artefacts")
	var rows int
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT count(*) FROM anomalies").Scan(&rows))
	require.Equal(t, 3, rows)
}

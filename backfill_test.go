package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/app/cli"
	"github.com/heartbeat/heartbeat/app/replay"
)

// The backfill tests replay real recordings as recorded — years old, no
// --shift-to-now — into persist and detect run with MAX_EVENT_AGE raised,
// as README's "Replaying a recording" says to: every reading is stored
// once, the anomalies are exactly those of the rules, and the partitions
// created are those of the readings' days, not of every day since.

// olderCopy writes rec's readings moved back a whole number of years, as
// customer customer: the same real signal, recorded longer ago.
func olderCopy(t *testing.T, file, customer string, years int) string {
	t.Helper()
	f, err := os.Open(file)
	require.NoError(t, err)
	rec, err := replay.ReadCSV(f)
	require.NoError(t, f.Close())
	require.NoError(t, err)
	var b strings.Builder
	b.WriteString("customer_id,timestamp,heart_rate\n")
	for _, r := range rec.Rows {
		fmt.Fprintf(&b, "%s,%s,%d\n", customer, r.Time.AddDate(-years, 0, 0).Format(time.RFC3339Nano), r.Rate)
	}
	name := filepath.Join(t.TempDir(), fmt.Sprintf("%s.csv", customer))
	require.NoError(t, os.WriteFile(name, []byte(b.String()), 0o600))
	return name
}

// maxAgeFor is a MAX_EVENT_AGE that accepts every reading of files (a day
// more than the oldest's age, in whole hours).
func maxAgeFor(t *testing.T, files ...string) string {
	t.Helper()
	oldest := time.Now()
	for _, file := range files {
		f, err := os.Open(file)
		require.NoError(t, err)
		rec, err := replay.ReadCSV(f)
		require.NoError(t, f.Close())
		require.NoError(t, err)
		if first, _ := rec.Span(); first.Before(oldest) {
			oldest = first
		}
	}
	return fmt.Sprintf("%dh", int(time.Since(oldest).Hours())+24)
}

// runReplayAsRecorded is `go run . replay FILE` with maxAge as
// MAX_EVENT_AGE: no shift, and no warning (every reading is young enough).
func runReplayAsRecorded(t *testing.T, broker, maxAge, file string) {
	t.Helper()
	t.Setenv("KAFKA_BOOTSTRAP_SERVERS", broker)
	t.Setenv("LOG_LEVEL", "warn")
	t.Setenv("MAX_EVENT_AGE", maxAge)
	var out, errOut bytes.Buffer
	require.Zero(t, cli.Main(context.Background(), []string{"replay", file}, &out, &errOut, newPipeline), errOut.String())
	require.Empty(t, errOut.String(), "no warning: MAX_EVENT_AGE covers the recording")
	require.NotContains(t, out.String(), "shifted")
	t.Log(strings.TrimSpace(out.String()))
}

// requireDaysPartitioned checks that heartbeat_events has the partitions of
// days and of start-up's days (today and the two after; a day more when
// the test crossed midnight), and no others.
func requireDaysPartitioned(t *testing.T, pool interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, start time.Time, days ...string) {
	t.Helper()
	want := map[string]bool{}
	for _, d := range days {
		want["heartbeat_events_p"+d] = true
	}
	for d := start.UTC(); !d.After(time.Now().UTC().AddDate(0, 0, 2)); d = d.AddDate(0, 0, 1) {
		want["heartbeat_events_p"+d.Format("20060102")] = true
	}
	rows, err := pool.Query(context.Background(), `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'heartbeat_events'::regclass`)
	require.NoError(t, err)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	got := map[string]bool{}
	for _, n := range names {
		got[n] = true
	}
	require.Equal(t, slices.Sorted(maps.Keys(want)), slices.Sorted(maps.Keys(got)), "the partitions of the readings' days, not of every day since")
}

// TestBackfillOldRecordingEpisodes: the Empatica recording as recorded
// (2023), the same readings eight years older (2015), and the synthetic
// recording with a gap seven years older (2016, for SUSTAINED_LOW and
// SIGNAL_LOSS), in episode mode.
func TestBackfillOldRecordingEpisodes(t *testing.T) {
	dbURL, pool := testDatabase(t)
	broker := testBroker(t)
	older := olderCopy(t, empaticaCSV, "e4_subject_01_2015", 8)
	gap := olderCopy(t, gapRecording(t), "gap_2016", 7)
	maxAge := maxAgeFor(t, empaticaCSV, older, gap)
	start := time.Now()
	startPipeline(t, pipelineEnv(broker, dbURL, withEnv(episodeEnv, "MAX_EVENT_AGE", maxAge)))
	for _, f := range []string{empaticaCSV, older, gap} {
		runReplayAsRecorded(t, broker, maxAge, f)
	}

	stored := storedReadings(t, pool, empaticaCSV, older, gap)
	kinds := map[string]int{}
	for _, customer := range []string{"e4_subject_01", "e4_subject_01_2015", "gap_2016"} {
		require.Less(t, stored[customer][0].at.Year(), 2024, "stored as recorded")
		want := sortEpisodes(expectedEpisodes(stored[customer], episodeEnv))
		require.NotEmpty(t, want)
		for _, e := range want {
			kinds[e.Type]++
		}
		require.Equal(t, want, waitForEpisodes(t, pool, customer, want), "%s: anomalies are exactly those the rules imply", customer)
	}
	t.Logf("episodes: %v", kinds)
	for _, typ := range []string{"SUSTAINED_HIGH", "SUSTAINED_LOW", "SPIKE", "SIGNAL_LOSS"} {
		require.Positive(t, kinds[typ], "the recordings exercise %s", typ)
	}
	waitForGroup(t, broker, "cg.anomaly.v1", 2*3651+1980)
	for _, customer := range []string{"e4_subject_01", "e4_subject_01_2015", "gap_2016"} {
		require.Equal(t, sortEpisodes(expectedEpisodes(stored[customer], episodeEnv)), storedEpisodes(t, pool, customer), "nothing more once detect is through")
	}
	requireDaysPartitioned(t, pool, start, "20230405", "20150405", "20160405")
}

// TestBackfillOldRecordingPerEvent: the same two recordings in the
// per-event mode.
func TestBackfillOldRecordingPerEvent(t *testing.T) {
	dbURL, pool := testDatabase(t)
	broker := testBroker(t)
	older := olderCopy(t, empaticaCSV, "e4_subject_01_2015", 8)
	maxAge := maxAgeFor(t, empaticaCSV, older)
	start := time.Now()
	env := map[string]string{"DETECTION_MODE": "per_event", "ANOMALY_LOW_THRESHOLD": "62", "ANOMALY_HIGH_THRESHOLD": "110",
		"ANOMALY_SPIKE_DELTA": "5", "MAX_EVENT_AGE": maxAge}
	startPipeline(t, pipelineEnv(broker, dbURL, env))
	runReplayAsRecorded(t, broker, maxAge, empaticaCSV)
	runReplayAsRecorded(t, broker, maxAge, older)

	stored := storedReadings(t, pool, empaticaCSV, older)
	want := map[string]string{}
	for _, customer := range []string{"e4_subject_01", "e4_subject_01_2015"} {
		require.Less(t, stored[customer][0].at.Year(), 2024, "stored as recorded")
		maps.Copy(want, expectedPerEvent(stored[customer], 62, 110, 5))
	}
	require.NotEmpty(t, want)
	waitForRows(t, pool, "SELECT count(*) FROM anomalies", len(want))
	waitForGroup(t, broker, "cg.anomaly.v1", 2*3651)
	require.Equal(t, want, anomalyRows(t, pool))
	requireDaysPartitioned(t, pool, start, "20230405", "20150405")
}

// withEnv returns env with k set to v.
func withEnv(env map[string]string, k, v string) map[string]string {
	out := maps.Clone(env)
	out[k] = v
	return out
}

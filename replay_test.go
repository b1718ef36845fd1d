package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/app/cli"
	"github.com/heartbeat/heartbeat/app/replay"
	"github.com/heartbeat/heartbeat/messages"
)

// The replay tests publish real recordings with `replay` (its Main, as `go
// run . replay --shift-to-now FILE` does) into the pipeline running on the
// in-process broker and PostgreSQL, then check that every reading is stored
// and that the anomalies are exactly those an independent computation of
// the rules — written here from README's definitions, not with the rules
// package — finds in the stored readings.

const empaticaCSV = "testdata/empatica-e4-hr.csv"

// episodeEnv makes the rules bite on the Empatica recording (60–122 bpm):
// with the defaults (120 bpm for 10 minutes, 40 bpm, a jump of 30) it has
// no anomaly at all.
var episodeEnv = map[string]string{
	"DETECTION_MODE":                   "episode",
	"ANOMALY_SUSTAINED_HIGH_THRESHOLD": "100",
	"ANOMALY_SUSTAINED_LOW_THRESHOLD":  "72",
	"ANOMALY_SUSTAINED_FOR":            "2m",
	"ANOMALY_HYSTERESIS":               "5",
	"ANOMALY_CLEAR_FOR":                "30s",
	"ANOMALY_SPIKE_DELTA":              "8",
	"ANOMALY_SPIKE_CONFIRM_READINGS":   "2",
	"ANOMALY_SIGNAL_LOSS_AFTER":        "5m",
}

// gapRecording is a second, synthetic customer: a gradual fall to a low
// plateau, a gap of 7 minutes in the signal, a jump, a jump into a
// tachycardia (in episodeEnv's terms: at or above 100 for 2 minutes), and a
// drop to a new level that settles before a gradual fall to a low of its
// own — 53 minutes of readings.
func gapRecording(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("customer_id,timestamp,heart_rate\n")
	start := time.Date(2023, 4, 5, 9, 30, 0, 0, time.UTC)
	for s := 0; s < 60*60; s++ {
		if s >= 20*60 && s < 27*60 {
			continue // the wearable is off
		}
		rate := 80 + s%3
		switch {
		case s >= 4*60 && s < 5*60:
			rate = 80 - (s-4*60)/5 // a gradual fall: no SPIKE
		case s >= 5*60 && s < 9*60:
			rate = 68 + s%2
		case s >= 30*60 && s < 33*60:
			rate = 95 + s%2
		case s >= 36*60 && s < 40*60:
			rate = 104 + s%2 // a SPIKE, then SUSTAINED_HIGH: one episode
		case s >= 43*60 && s < 44*60:
			rate = 80 + (s-43*60)/6 // a gradual rise to 90
		case s >= 44*60 && s < 45*60:
			rate = 90 + s%2
		case s >= 45*60 && s < 49*60:
			rate = 80 + s%2 // a drop: a SPIKE that settles after 2 minutes
		case s >= 49*60 && s < 50*60:
			rate = 80 - (s-49*60)/6 // a gradual fall to 70
		case s >= 50*60 && s < 54*60:
			rate = 70 + s%2 // SUSTAINED_LOW of its own
		}
		fmt.Fprintf(&b, "gap_01,%s,%d\n", start.Add(time.Duration(s)*time.Second).Format(time.RFC3339), rate)
	}
	name := filepath.Join(t.TempDir(), "gap.csv")
	require.NoError(t, os.WriteFile(name, []byte(b.String()), 0o600))
	return name
}

// runReplay is `go run . replay --shift-to-now FILE` against broker; it
// returns what it printed.
func runReplay(t *testing.T, broker, file string) string {
	t.Helper()
	t.Setenv("KAFKA_BOOTSTRAP_SERVERS", broker)
	t.Setenv("LOG_LEVEL", "warn")
	var out, errOut bytes.Buffer
	require.Zero(t, cli.Main(context.Background(), []string{"replay", "--shift-to-now", file}, &out, &errOut, newPipeline), errOut.String())
	require.Empty(t, errOut.String(), "no warning once shifted")
	t.Log(strings.TrimSpace(out.String()))
	return out.String()
}

// shiftOf is the shift a replay printed.
func shiftOf(out string) string {
	_, after, _ := strings.Cut(out, "shifted by ")
	shift, _, _ := strings.Cut(after, ")")
	return shift
}

type storedReading struct {
	id, customer string
	at           time.Time
	rate         int
	offset       int64
}

// storedReadings checks that every row of the recordings is stored, once,
// with its id, rate and (shifted) time, and returns them per customer in
// the order their partition delivered them.
func storedReadings(t *testing.T, pool *pgxpool.Pool, files ...string) map[string][]storedReading {
	t.Helper()
	want := map[string]replay.Row{}
	for _, f := range files {
		fh, err := os.Open(f)
		require.NoError(t, err)
		rec, err := replay.ReadCSV(fh)
		_ = fh.Close()
		require.NoError(t, err)
		for _, r := range rec.Rows {
			want[replay.EventID(r.CustomerID, r.Time)] = r
		}
	}
	waitForRows(t, pool, "SELECT count(*) FROM heartbeat_events", len(want))
	rows, err := pool.Query(context.Background(), `SELECT event_id::text, customer_id, event_time, heart_rate, source_offset
		FROM heartbeat_events ORDER BY customer_id, source_offset`)
	require.NoError(t, err)
	got := map[string][]storedReading{}
	shift := map[string]time.Duration{}
	var r storedReading
	_, err = pgx.ForEachRow(rows, []any{&r.id, &r.customer, &r.at, &r.rate, &r.offset}, func() error {
		w, ok := want[r.id]
		require.True(t, ok, "stored %s is no reading of the recordings", r.id)
		require.Equal(t, w.CustomerID, r.customer)
		require.Equal(t, w.Rate, r.rate)
		d := r.at.Sub(w.Time)
		if s, ok := shift[r.customer]; ok {
			require.Equal(t, s, d, "one shift for the whole recording")
		}
		shift[r.customer] = d
		got[r.customer] = append(got[r.customer], r)
		return nil
	})
	require.NoError(t, err)
	n := 0
	for _, rs := range got {
		n += len(rs)
	}
	require.Equal(t, len(want), n, "every reading stored, once")
	return got
}

// episode is an anomalies row of the episode mode, as compared. From is
// the rule a reclassified episode opened as.
type episode struct {
	Type, From, StartEvent, Status string
	Start, End                     time.Time
	Peak, Trough, Samples          int
}

func (e episode) String() string {
	return fmt.Sprintf("%s (from %q) from %s (%s) to %s %s peak %d trough %d samples %d", e.Type, e.From, e.Start.Format("15:04:05"), e.StartEvent[:8],
		e.End.Format("15:04:05"), e.Status, e.Peak, e.Trough, e.Samples)
}

// expectedEpisodes computes README's episode rules over one customer's
// readings, independently of package rules. p holds the environment's
// values.
func expectedEpisodes(stored []storedReading, p map[string]string) []episode {
	num := func(k string) int {
		var n int
		_, _ = fmt.Sscan(p[k], &n)
		return n
	}
	dur := func(k string) time.Duration { d, _ := time.ParseDuration(p[k]); return d }
	high, low, hyst, delta, confirm := num("ANOMALY_SUSTAINED_HIGH_THRESHOLD"), num("ANOMALY_SUSTAINED_LOW_THRESHOLD"),
		num("ANOMALY_HYSTERESIS"), num("ANOMALY_SPIKE_DELTA"), num("ANOMALY_SPIKE_CONFIRM_READINGS")
	sustain, clear, loss := dur("ANOMALY_SUSTAINED_FOR"), dur("ANOMALY_CLEAR_FOR"), dur("ANOMALY_SIGNAL_LOSS_AFTER")
	far := delta - hyst

	// A reading not later than the customer's latest changes nothing.
	var rs []storedReading
	for _, r := range stored {
		if len(rs) == 0 || r.at.After(rs[len(rs)-1].at) {
			rs = append(rs, r)
		}
	}
	var out []episode
	var open *episode // the open clinical episode
	var row episode   // what its row says until it closes
	var openBase, openDir int
	var clearingSince *time.Time
	highFrom, lowFrom := -1, -1 // index of the sustain timer's first reading
	segStart := 0               // first reading after the last gap
	closeOpen := func() {
		open.Status = "closed"
		out = append(out, *open)
		open, clearingSince = nil, nil
	}
	inBand := func(typ string, rate int) bool {
		switch typ {
		case "SUSTAINED_HIGH":
			return rate >= high-hyst
		case "SUSTAINED_LOW":
			return rate <= low+hyst
		}
		return openDir*(rate-openBase) >= far
	}
	hold := func(r storedReading) {
		open.End = r.at // the latest holding reading
		open.Peak, open.Trough, open.Samples = max(open.Peak, r.rate), min(open.Trough, r.rate), open.Samples+1
		clearingSince = nil
	}
	fresh := func(typ string, from, to int) *episode {
		ep := &episode{Type: typ, StartEvent: rs[from].id, Start: rs[from].at, End: rs[to].at, Peak: rs[from].rate, Trough: rs[from].rate}
		for _, r := range rs[from : to+1] {
			ep.Peak, ep.Trough, ep.Samples = max(ep.Peak, r.rate), min(ep.Trough, r.rate), ep.Samples+1
		}
		return ep
	}
	// timer is the Schmitt trigger of rule 2.
	timer := func(from, k int, at, band bool) int {
		switch {
		case from >= 0 && band:
			return from
		case at:
			return k
		}
		return -1
	}
	for k, r := range rs {
		// 1. Gaps.
		if k > 0 && r.at.Sub(rs[k-1].at) >= loss {
			if open != nil {
				closeOpen()
			}
			out = append(out, episode{Type: "SIGNAL_LOSS", StartEvent: rs[k-1].id, Start: rs[k-1].at, End: r.at, Status: "closed",
				Peak: rs[k-1].rate, Trough: rs[k-1].rate})
			highFrom, lowFrom, segStart = -1, -1, k
		}
		// 2. Sustain timers, on every reading but the open SUSTAINED's own.
		if open == nil || open.Type != "SUSTAINED_LOW" {
			lowFrom = timer(lowFrom, k, r.rate <= low, r.rate <= low+hyst)
		}
		if open == nil || open.Type != "SUSTAINED_HIGH" {
			highFrom = timer(highFrom, k, r.rate >= high, r.rate >= high-hyst)
		}
		// 3. A SUSTAINED condition met: opens, reclassifies the SPIKE of its
		// side, or supersedes.
		met, from := "", -1
		switch {
		case lowFrom >= 0 && r.at.Sub(rs[lowFrom].at) >= sustain:
			met, from = "SUSTAINED_LOW", lowFrom
		case highFrom >= 0 && r.at.Sub(rs[highFrom].at) >= sustain:
			met, from = "SUSTAINED_HIGH", highFrom
		}
		if met != "" {
			if open != nil && open.Type == "SPIKE" && (openDir > 0) == (met == "SUSTAINED_HIGH") {
				open.Type, open.From = met, "SPIKE"
				hold(r)
				row = *open
			} else {
				if open != nil {
					closeOpen()
				}
				open = fresh(met, from, k)
				row = *open
			}
			highFrom, lowFrom = -1, -1
			continue
		}
		// 4. The open episode holds, clears, or (a SPIKE) settles, unless a
		// SPIKE's side's timer runs.
		if open != nil {
			if inBand(open.Type, r.rate) {
				hold(r)
			} else if clearingSince == nil {
				at := r.at
				clearingSince = &at
			}
			waiting := open.Type == "SPIKE" && ((openDir > 0 && highFrom >= 0) || (openDir < 0 && lowFrom >= 0))
			cleared := clearingSince != nil && r.at.Sub(*clearingSince) >= clear
			settled := open.Type == "SPIKE" && r.at.Sub(open.Start) >= sustain
			if !waiting && (cleared || settled) {
				closeOpen()
			}
			if open != nil {
				continue
			}
		}
		// 5. SPIKE: the jump `confirm` readings ago, its N+2 readings before
		// it since the gap, settled, and the readings from the jump far
		// from every one of them.
		j := k - confirm
		first := j - confirm - 2
		if first < segStart {
			continue
		}
		base := rs[j-1].rate
		if abs(rs[j].rate-base) < delta {
			continue
		}
		dir := 1
		if rs[j].rate < base {
			dir = -1
		}
		ok := true
		for m := first; m <= j-2; m++ {
			ok = ok && abs(rs[m].rate-base) < far
		}
		for _, x := range rs[j : k+1] {
			for m := first; m <= j-1; m++ {
				ok = ok && dir*(x.rate-rs[m].rate) >= far
			}
		}
		if ok {
			open = fresh("SPIKE", j, k)
			row = *open
			openBase, openDir = base, dir
		}
	}
	if open != nil {
		row.Status = "open"
		out = append(out, row)
	}
	return out
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func storedEpisodes(t *testing.T, pool *pgxpool.Pool, customer string) []episode {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT anomaly_type, coalesce(details->>'reclassified_from', ''), event_id::text, status, started_at,
		coalesce(ended_at, started_at + duration_ms * interval '1 millisecond'), peak_rate, trough_rate, samples, anomaly_id::text, customer_id
		FROM anomalies WHERE customer_id = $1 ORDER BY started_at, anomaly_type`, customer)
	require.NoError(t, err)
	var out []episode
	var e episode
	var id, cust string
	_, err = pgx.ForEachRow(rows, []any{&e.Type, &e.From, &e.StartEvent, &e.Status, &e.Start, &e.End, &e.Peak, &e.Trough, &e.Samples, &id, &cust}, func() error {
		identity := e.Type
		if e.From != "" {
			identity = e.From
		}
		require.Equal(t, messages.EpisodeID(cust, identity, e.StartEvent), id, "anomaly id derives from customer, the rule it opened as and start event")
		e.Start, e.End = e.Start.UTC(), e.End.UTC()
		out = append(out, e)
		return nil
	})
	require.NoError(t, err)
	return out
}

func sortEpisodes(es []episode) []episode {
	sort.Slice(es, func(i, j int) bool {
		if !es[i].Start.Equal(es[j].Start) {
			return es[i].Start.Before(es[j].Start)
		}
		return es[i].Type < es[j].Type
	})
	for i := range es {
		es[i].Start, es[i].End = es[i].Start.UTC(), es[i].End.UTC()
	}
	return es
}

func waitForEpisodes(t *testing.T, pool *pgxpool.Pool, customer string, want []episode) []episode {
	t.Helper()
	var got []episode
	_ = poll(30*time.Second, 50*time.Millisecond, func() (bool, error) {
		got = storedEpisodes(t, pool, customer)
		return reflect.DeepEqual(got, want), nil
	})
	return got
}

// TestReplayEmpaticaEpisodes replays the real Empatica E4 recording and a
// synthetic one with a gap in episode mode.
func TestReplayEmpaticaEpisodes(t *testing.T) {
	dbURL, pool := testDatabase(t)
	broker := testBroker(t)
	startPipeline(t, pipelineEnv(broker, dbURL, episodeEnv))
	gap := gapRecording(t)
	runReplay(t, broker, empaticaCSV)
	first := runReplay(t, broker, gap)

	stored := storedReadings(t, pool, empaticaCSV, gap)
	kinds := map[string]int{}
	for _, customer := range []string{"e4_subject_01", "gap_01"} {
		want := sortEpisodes(expectedEpisodes(stored[customer], episodeEnv))
		for _, e := range want {
			kinds[e.Type]++
			if e.From != "" {
				kinds[e.From+"→"+e.Type]++
			}
		}
		got := waitForEpisodes(t, pool, customer, want)
		require.Equal(t, want, got, "%s: anomalies are exactly those the rules imply", customer)
	}
	t.Logf("episodes: %v", kinds)
	for _, typ := range []string{"SUSTAINED_HIGH", "SUSTAINED_LOW", "SPIKE", "SIGNAL_LOSS", "SPIKE→SUSTAINED_HIGH"} {
		require.Positive(t, kinds[typ], "the recordings exercise %s", typ)
	}
	var settled int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*) FROM anomalies WHERE details->>'close_reason' = 'settled'`).Scan(&settled))
	require.Positive(t, settled, "a SPIKE that settles at its new level")
	// Each opening, reclassification and closing is one message on the
	// anomaly topic.
	msgs := 0
	for _, c := range []string{"e4_subject_01", "gap_01"} {
		for _, e := range storedEpisodes(t, pool, c) {
			msgs++
			if e.Status == "closed" {
				msgs++
			}
			if e.From != "" {
				msgs++
			}
		}
	}
	seen := map[string]int{}
	for _, m := range consume(t, broker, "events.anomaly.v1", msgs) {
		seen[header(m, "_watermill_message_uuid")]++
		require.NotEmpty(t, header(m, "anomaly_status"))
	}
	require.Len(t, seen, msgs, "one message per opening and per closing")
	for id, n := range seen {
		require.Equal(t, 1, n, "message %s published once", id)
	}

	// Replaying the same recording again (within the hour: the same shift)
	// stores nothing twice, and raises no anomaly twice.
	if again := runReplay(t, broker, gap); shiftOf(again) != shiftOf(first) {
		t.Skipf("the hour turned between the two replays (%s, then %s)", shiftOf(first), shiftOf(again))
	}
	before := storedEpisodes(t, pool, "gap_01")
	const records = 3651 + 2*3180
	waitForRows(t, pool, "SELECT coalesce(sum(last_offset + 1), 0) FROM ingest_checkpoint WHERE consumer_group = 'cg.db-writer.v1'", records)
	waitForGroup(t, broker, "cg.anomaly.v1", records)
	storedReadings(t, pool, empaticaCSV, gap)
	require.Equal(t, before, storedEpisodes(t, pool, "gap_01"))
}

// TestReplayEmpaticaEpisodesAcrossARestart stops the pipeline mid-stream:
// the restarted detector rebuilds each customer's episodes from the
// anomalies table and its readings from heartbeat_events, and the
// anomalies are still exactly those of one uninterrupted run.
func TestReplayEmpaticaEpisodesAcrossARestart(t *testing.T) {
	dbURL, pool := testDatabase(t)
	broker := testBroker(t)
	gap := gapRecording(t)
	runReplay(t, broker, empaticaCSV)
	runReplay(t, broker, gap)

	env := pipelineEnv(broker, dbURL, episodeEnv)
	for _, after := range []int{2, 5} {
		p := startPipeline(t, env)
		waitForRows(t, pool, "SELECT count(*) FROM anomalies", after)
		p.stop(t)
		var n, open int
		require.NoError(t, pool.QueryRow(context.Background(), "SELECT count(*), count(*) FILTER (WHERE status = 'open') FROM anomalies").Scan(&n, &open))
		t.Logf("stopped with %d anomalies, %d open", n, open)
	}
	startPipeline(t, env)

	stored := storedReadings(t, pool, empaticaCSV, gap)
	for _, customer := range []string{"e4_subject_01", "gap_01"} {
		want := sortEpisodes(expectedEpisodes(stored[customer], episodeEnv))
		require.Equal(t, want, waitForEpisodes(t, pool, customer, want), customer)
	}
}

// TestReplayEmpaticaPerEvent replays the recording in the original
// per-event mode: every reading at or below LOW, at or above HIGH, or
// SPIKE_DELTA away from the previous one is one anomaly.
func TestReplayEmpaticaPerEvent(t *testing.T) {
	dbURL, pool := testDatabase(t)
	broker := testBroker(t)
	env := map[string]string{"DETECTION_MODE": "per_event", "ANOMALY_LOW_THRESHOLD": "62", "ANOMALY_HIGH_THRESHOLD": "110", "ANOMALY_SPIKE_DELTA": "5"}
	startPipeline(t, pipelineEnv(broker, dbURL, env))
	runReplay(t, broker, empaticaCSV)

	rs := storedReadings(t, pool, empaticaCSV)["e4_subject_01"]
	want := expectedPerEvent(rs, 62, 110, 5)
	require.NotEmpty(t, want)
	waitForRows(t, pool, "SELECT count(*) FROM anomalies", len(want))
	require.Equal(t, want, anomalyRows(t, pool))
}

// expectedPerEvent computes README's per-event rules over one customer's
// readings, in their partition's order: anomaly id -> rule.
func expectedPerEvent(rs []storedReading, low, high, delta int) map[string]string {
	want := map[string]string{}
	for i, r := range rs {
		rule := ""
		switch {
		case r.rate <= low:
			rule = "LOW_HEART_RATE"
		case r.rate >= high:
			rule = "HIGH_HEART_RATE"
		case i > 0 && abs(r.rate-rs[i-1].rate) >= delta:
			rule = "SPIKE"
		}
		if rule != "" {
			want[messages.AnomalyID(r.id, rule)] = rule
		}
	}
	return want
}

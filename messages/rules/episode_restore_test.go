package rules_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/messages/rules"
)

// episodeRows is what the anomalies table holds of the episodes: one row per
// id, its latest state.
type episodeRows map[string]messages.Episode

func (rows episodeRows) record(cs []rules.Change) {
	for _, c := range cs {
		if old, ok := rows[c.Episode.ID()]; ok && old.Closed {
			continue // a closed row is final
		}
		if c.Kind == rules.Opened {
			if _, ok := rows[c.Episode.ID()]; ok {
				continue // ON CONFLICT DO NOTHING
			}
		}
		rows[c.Episode.ID()] = c.Episode
	}
}

// randomStream is several customers' readings interleaved in time, with
// what the rules are about: plateaus above and below the thresholds and
// hovering in their hysteresis bands, gradual and sudden changes (into
// tachycardia or bradycardia, to a new resting level, a jump during a
// tachycardia), artefacts, gaps, late and duplicate readings.
func randomStream(seed uint64, customers int, span time.Duration) []messages.Heartbeat {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	type cust struct {
		level, target float64
		until         time.Duration
		off           time.Duration // silent until
	}
	cs := make([]cust, customers)
	for i := range cs {
		cs[i].level, cs[i].target = 70, 70
	}
	var out []messages.Heartbeat
	for at := time.Duration(0); at < span; at += time.Second {
		for i := range cs {
			c := &cs[i]
			if at < c.off {
				continue
			}
			if at >= c.until {
				c.until = at + time.Duration(1+rng.IntN(20))*time.Minute
				switch rng.IntN(13) {
				case 0:
					c.target = 118 + rng.Float64()*20 // a gradual rise
				case 1:
					c.target = 32 + rng.Float64()*8 // a gradual fall
				case 2:
					c.target += 30 + rng.Float64()*15
					c.level = c.target // a sudden jump
				case 3:
					// A silence that outlasts the stream would be a customer
					// silent for good: after a restart the engine does not know
					// it, so only an uninterrupted one's watermark declares it.
					if at < span-10*time.Minute {
						c.off = at + time.Duration(rng.IntN(9))*time.Minute
					}
				case 4:
					c.target = 125 + rng.Float64()*35
					c.level = c.target // a jump into tachycardia
				case 5:
					c.target = 33 + rng.Float64()*8
					c.level = c.target // a sudden fall into bradycardia
				case 6:
					c.target -= 30 + rng.Float64()*10
					c.level = c.target // a sudden fall to a new level
				case 7:
					c.target = 116.5 + rng.Float64()*2 // hovering under the high threshold
				case 8:
					c.target = 41.5 + rng.Float64()*2 // hovering above the low one
				default:
					c.target = 60 + rng.Float64()*30
				}
				c.target = max(c.target, 31)
				c.level = max(c.level, 31)
			}
			c.level += 0.05*(c.target-c.level) + rng.NormFloat64()*0.8
			rate := int(c.level + rng.NormFloat64())
			if rng.IntN(300) == 0 {
				rate += 35 // motion artefact
			}
			h := hb(fmt.Sprintf("c%d", i), at, rate)
			out = append(out, h)
			if rng.IntN(200) == 0 { // a late reading
				late := h
				late.EventID = eventID(h.CustomerID+"-late", at)
				late.Timestamp = late.Timestamp.Add(-time.Duration(1+rng.IntN(8)) * time.Second)
				out = append(out, late)
			}
			if rng.IntN(500) == 0 { // a duplicate
				out = append(out, h)
			}
		}
	}
	return out
}

// TestRestoredEngineMatchesUninterrupted rebuilds the engine, at random
// points, the way the detector does after a restart — its episodes open or
// recently closed, then its readings replayed from the point
// EpisodeParams.Recall finds — and checks the episodes recorded are the same
// as an uninterrupted engine's.
func TestRestoredEngineMatchesUninterrupted(t *testing.T) {
	seeds := []uint64{1, 2, 3}
	if raceEnabled {
		seeds = seeds[:1]
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			p := rules.DefaultEpisodeParams()
			if seed == 3 {
				p.SpikeConfirm = 3 // a longer SPIKE window
			}
			stream := randomStream(seed, 10, 6*time.Hour)

			whole, err := rules.NewEpisodeEngine(p)
			require.NoError(t, err)
			want := episodeRows{}
			changes := map[string]int{}
			for _, h := range stream {
				cs := whole.Process(rules.Lane{}, h, time.Time{})
				for _, c := range cs {
					changes[c.Kind.String()+" "+c.Episode.Rule+" "+c.Episode.CloseReason]++
				}
				want.record(cs)
			}
			// The stream exercises the rules that reach back furthest.
			for _, k := range []string{"reclassified SUSTAINED_HIGH ", "reclassified SUSTAINED_LOW ", "closed SPIKE settled", "closed SPIKE cleared"} {
				require.Positive(t, changes[k], "%q in %v", k, changes)
			}

			rng := rand.New(rand.NewPCG(seed, 99))
			got := episodeRows{}
			var e *rules.EpisodeEngine
			history := map[string][]messages.Reading{} // heartbeat_events, in offset order
			stored := map[string]bool{}
			restarts, restores := 0, 0
			for _, h := range stream {
				if e == nil || rng.IntN(3000) == 0 {
					e, err = rules.NewEpisodeEngine(p)
					require.NoError(t, err)
					restarts++
				}
				if !e.Known(rules.Lane{}, h.CustomerID) {
					restores++
					restore(e, p, h, history[h.CustomerID], got)
				}
				got.record(e.Process(rules.Lane{}, h, time.Time{}))
				if !stored[h.EventID] { // heartbeat_events keeps one row per event id
					stored[h.EventID] = true
					history[h.CustomerID] = append(history[h.CustomerID], rules.ReadingOf(h))
				}
			}
			require.Greater(t, restarts, 20)
			require.NotEmpty(t, want)
			kinds := map[string]int{}
			for _, ep := range want {
				kinds[ep.Rule]++
			}
			t.Logf("%d readings, %d restarts, %d restores, episodes %v, changes %v", len(stream), restarts, restores, kinds, changes)
			require.Equal(t, want, got)
		})
	}
}

// restore is the detector's rebuild, on in-memory storage.
func restore(e *rules.EpisodeEngine, p rules.EpisodeParams, h messages.Heartbeat, history []messages.Reading, rows episodeRows) {
	recent, warmFrom, fullFrom, _ := p.Recall(h.Timestamp, func(since time.Time) ([]messages.Episode, error) {
		var recent []messages.Episode
		for _, ep := range rows {
			if ep.CustomerID == h.CustomerID && (!ep.Closed || !ep.End.Before(since)) {
				recent = append(recent, ep)
			}
		}
		return recent, nil
	})
	var prime *messages.Reading
	var replay []messages.Reading
	for _, r := range history {
		if r.Time.Before(warmFrom) {
			if prime == nil || r.Time.After(prime.Time) {
				r := r
				prime = &r
			}
			continue
		}
		replay = append(replay, r)
	}
	e.Restore(rules.Lane{}, h.CustomerID, prime, replay, fullFrom, recent)
}

// restartedAt runs stream through one engine, restarting it (and restoring
// every customer as the detector does) before each reading whose index is
// in restarts, and returns the episode rows it records.
func restartedAt(t *testing.T, p rules.EpisodeParams, stream []messages.Heartbeat, restarts map[int]bool) episodeRows {
	t.Helper()
	rows := episodeRows{}
	history := map[string][]messages.Reading{}
	var e *rules.EpisodeEngine
	for i, h := range stream {
		if e == nil || restarts[i] {
			var err error
			e, err = rules.NewEpisodeEngine(p)
			require.NoError(t, err)
		}
		if !e.Known(rules.Lane{}, h.CustomerID) {
			restore(e, p, h, history[h.CustomerID], rows)
		}
		rows.record(e.Process(rules.Lane{}, h, time.Time{}))
		history[h.CustomerID] = append(history[h.CustomerID], rules.ReadingOf(h))
	}
	return rows
}

// TestRestoreCases restarts the engine before every reading of streams
// built for the rules that reach back furthest, and compares the episode
// rows with an uninterrupted run's.
func TestRestoreCases(t *testing.T) {
	p := rules.DefaultEpisodeParams()
	type step struct {
		n, rate int
	}
	tests := []struct {
		name  string
		steps []step
	}{
		// One reading at the threshold, then the band below it: the timer
		// must not outlive SustainFor, or a restart could not rebuild it
		// from a bounded stretch of readings.
		{"hovering in the band", []step{{60, 95}, {60, 110}, {1, 120}, {25 * 60, 117}, {1, 121}, {120, 100}}},
		// A timer that started before the jump reclassifies the SPIKE.
		{"a jump during a pending tachycardia", []step{{60, 95}, {60, 110}, {5 * 60, 125}, {10 * 60, 160}, {120, 100}}},
		{"a jump into tachycardia", []step{{60, 95}, {12 * 60, 150}, {120, 80}}},
		{"a drop into bradycardia", []step{{60, 95}, {3 * 60, 62}, {12 * 60, 38}, {120, 60}}},
		{"a drop to a new level, then bradycardia", []step{{120, 95}, {20 * 60, 65}, {14 * 60, 39}, {120, 60}}},
		{"a jump below the threshold, then rising", []step{{60, 80}, {120, 116}, {11 * 60, 124}, {120, 80}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stream []messages.Heartbeat
			at := time.Duration(0)
			for _, s := range tc.steps {
				for range s.n {
					stream = append(stream, hb("a", at, s.rate))
					at += time.Second
				}
			}
			want := restartedAt(t, p, stream, nil)
			require.NotEmpty(t, want)
			for i := 0; i < len(stream); i += 60 {
				got := restartedAt(t, p, stream, map[int]bool{i: true})
				require.Equal(t, want, got, "restarted before reading %d", i)
			}
		})
	}
}

// TestEvaluateMatchesProcess: the detector's path (Evaluate, then apply)
// records what Process does, also with SPIKE windows longer than the
// buffers Evaluate copies a customer's recent readings into.
func TestEvaluateMatchesProcess(t *testing.T) {
	for _, confirm := range []int{2, 4} {
		t.Run(fmt.Sprint("confirm=", confirm), func(t *testing.T) {
			p := rules.DefaultEpisodeParams()
			p.SpikeConfirm = confirm
			stream := randomStream(7, 6, 3*time.Hour)
			a, err := rules.NewEpisodeEngine(p)
			require.NoError(t, err)
			b, err := rules.NewEpisodeEngine(p)
			require.NoError(t, err)
			var want, got []rules.Change
			for _, h := range stream {
				want = append(want, a.Process(rules.Lane{}, h, time.Time{})...)
				cs, apply := b.Evaluate(rules.Lane{}, h, time.Time{})
				apply()
				got = append(got, cs...)
			}
			require.NotEmpty(t, want)
			require.Equal(t, want, got)
		})
	}
}

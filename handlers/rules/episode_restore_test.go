package rules_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/handlers/rules"
	"github.com/heartbeat/heartbeat/messages"
)

// episodeRows is what the anomalies table holds of the episodes: one row per
// id, its latest state.
type episodeRows map[string]rules.Episode

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
// what the rules are about: plateaus above and below the thresholds, jumps,
// artefacts, gaps, late and duplicate readings.
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
				switch rng.IntN(8) {
				case 0:
					c.target = 118 + rng.Float64()*20
				case 1:
					c.target = 32 + rng.Float64()*8
				case 2:
					c.target += 30 + rng.Float64()*15
					c.level = c.target // a sudden jump
				case 3:
					c.off = at + time.Duration(rng.IntN(9))*time.Minute
				default:
					c.target = 60 + rng.Float64()*30
				}
			}
			c.level += 0.05*(c.target-c.level) + rng.NormFloat64()*0.8
			rate := int(c.level + rng.NormFloat64())
			if rng.IntN(300) == 0 {
				rate += 35 // motion artefact
			}
			h := messages.Heartbeat{EventID: fmt.Sprintf("c%d@%d", i, at), CustomerID: fmt.Sprintf("c%d", i), Timestamp: t0.Add(at), HeartRate: rate}
			out = append(out, h)
			if rng.IntN(200) == 0 { // a late reading
				late := h
				late.EventID += "-late"
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
// recently closed, then its readings replayed from
// EpisodeParams.ReplayFrom — and checks the episodes recorded are the same
// as an uninterrupted engine's.
func TestRestoredEngineMatchesUninterrupted(t *testing.T) {
	seeds := []uint64{1, 2, 3}
	if raceEnabled {
		seeds = seeds[:1]
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			p := rules.DefaultEpisodeParams()
			stream := randomStream(seed, 6, 4*time.Hour)

			whole, err := rules.NewEpisodeEngine(p)
			require.NoError(t, err)
			want := episodeRows{}
			for _, h := range stream {
				want.record(whole.Process(0, h, time.Time{}))
			}

			rng := rand.New(rand.NewPCG(seed, 99))
			got := episodeRows{}
			var e *rules.EpisodeEngine
			history := map[string][]rules.Reading{} // heartbeat_events, in offset order
			restarts, restores := 0, 0
			for _, h := range stream {
				if e == nil || rng.IntN(1500) == 0 {
					e, err = rules.NewEpisodeEngine(p)
					require.NoError(t, err)
					restarts++
				}
				if !e.Known(0, h.CustomerID) {
					restores++
					restore(e, p, h, history[h.CustomerID], got)
				}
				got.record(e.Process(0, h, time.Time{}))
				history[h.CustomerID] = append(history[h.CustomerID], rules.ReadingOf(h))
			}
			require.Greater(t, restarts, 20)
			require.NotEmpty(t, want)
			kinds := map[string]int{}
			for _, ep := range want {
				kinds[ep.Rule]++
			}
			t.Logf("%d readings, %d restarts, %d restores, episodes %v", len(stream), restarts, restores, kinds)
			require.Equal(t, want, got)
		})
	}
}

// restore is the detector's rebuild, on in-memory storage.
func restore(e *rules.EpisodeEngine, p rules.EpisodeParams, h messages.Heartbeat, history []rules.Reading, rows episodeRows) {
	since := p.RecentSince(h.Timestamp)
	var starts []time.Time
	var recent []rules.Episode
	for _, ep := range rows {
		if ep.CustomerID != h.CustomerID || (ep.Closed && ep.End.Before(since)) {
			continue
		}
		starts = append(starts, ep.Start.Time)
		recent = append(recent, ep)
	}
	warmFrom, fullFrom := p.RestoreWindow(h.Timestamp, starts)
	var prime *rules.Reading
	var replay []rules.Reading
	seen := map[string]bool{} // heartbeat_events keeps one row per event id
	for _, r := range history {
		if seen[r.EventID] {
			continue
		}
		seen[r.EventID] = true
		if r.Time.Before(warmFrom) {
			if prime == nil || r.Time.After(prime.Time) {
				r := r
				prime = &r
			}
			continue
		}
		replay = append(replay, r)
	}
	e.Restore(0, h.CustomerID, prime, replay, fullFrom, recent)
}

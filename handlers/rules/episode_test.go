package rules_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/handlers/rules"
	"github.com/heartbeat/heartbeat/messages"
)

// feed is a test harness around an EpisodeEngine: readings of customers at
// offsets from t0, changes collected with the offset they happened at.
type feed struct {
	t       *testing.T
	e       *rules.EpisodeEngine
	changes []rules.Change
	at      []time.Duration
}

func newFeed(t *testing.T, p rules.EpisodeParams) *feed {
	t.Helper()
	e, err := rules.NewEpisodeEngine(p)
	require.NoError(t, err)
	return &feed{t: t, e: e}
}

func hb(customer string, at time.Duration, rate int) messages.Heartbeat {
	return messages.Heartbeat{EventID: fmt.Sprintf("%s@%s", customer, at), CustomerID: customer, Timestamp: t0.Add(at), HeartRate: rate}
}

func (f *feed) reading(customer string, at time.Duration, rate int) []rules.Change {
	cs := f.e.Process(0, hb(customer, at, rate), time.Time{})
	for range cs {
		f.at = append(f.at, at)
	}
	f.changes = append(f.changes, cs...)
	return cs
}

// series feeds one reading a second from `from`, one per rate.
func (f *feed) series(customer string, from time.Duration, rates ...int) time.Duration {
	for i, r := range rates {
		f.reading(customer, from+time.Duration(i)*time.Second, r)
	}
	return from + time.Duration(len(rates))*time.Second
}

// hold feeds n readings of rate, one a second, from `from`.
func (f *feed) hold(customer string, from time.Duration, n, rate int) time.Duration {
	for i := range n {
		f.reading(customer, from+time.Duration(i)*time.Second, rate)
	}
	return from + time.Duration(n)*time.Second
}

func (f *feed) summary() []string {
	var out []string
	for i, c := range f.changes {
		ep := c.Episode
		s := fmt.Sprintf("%s %s %s@%s start=%s", f.at[i], c.Kind, ep.CustomerID, ep.Rule, ep.Start.Time.Sub(t0))
		if c.Kind == rules.Closed {
			s += fmt.Sprintf(" end=%s %s", ep.End.Sub(t0), ep.CloseReason)
		}
		out = append(out, s)
	}
	return out
}

const (
	sec = time.Second
	mn  = time.Minute
)

func TestSustainedHighOpensAfterExactlySustainFor(t *testing.T) {
	f := newFeed(t, rules.DefaultEpisodeParams())
	f.hold("a", 0, 600, 120) // 0..599 s: 599 s of readings at 120
	require.Empty(t, f.changes, "599 s at 120 is not yet 10 minutes")
	f.reading("a", 600*sec, 120)
	require.Equal(t, []string{"10m0s open a@SUSTAINED_HIGH start=0s"}, f.summary())
	ep := f.changes[0].Episode
	require.Equal(t, 601, ep.Samples)
	require.Equal(t, 120, ep.Peak)
	require.Equal(t, rules.SeverityHigh, ep.Severity)
	require.Equal(t, t0.Add(600*sec), ep.OpenedAt)
	require.Equal(t, rules.EpisodeID("a", rules.SustainedHigh, "a@0s"), ep.ID())
}

func TestSustainedHighTimerIsASchmittTrigger(t *testing.T) {
	f := newFeed(t, rules.DefaultEpisodeParams())
	next := f.hold("a", 0, 300, 125)
	next = f.series("a", next, 114) // below 120-5 stops the timer
	next = f.series("a", next, 119) // in the band, but a timer starts at 120
	next = f.hold("a", next, 300, 121)
	next = f.series("a", next, 115)    // in the band: keeps it
	next = f.hold("a", next, 299, 121) // 5m2s..9m59s after the 120 at 5m2s
	require.Empty(t, f.changes)
	next = f.series("a", next, 116) // 10 minutes, but not at the threshold
	require.Empty(t, f.changes)
	f.reading("a", next, 120)
	require.Equal(t, []string{"15m3s open a@SUSTAINED_HIGH start=5m2s"}, f.summary())
	require.Equal(t, 115, f.changes[0].Episode.Trough)
}

func TestSustainedHighHysteresisAndClear(t *testing.T) {
	p := rules.DefaultEpisodeParams() // hold >= 115, clear after 60 s below
	f := newFeed(t, p)
	next := f.hold("a", 0, 601, 130)
	require.Len(t, f.changes, 1)
	next = f.hold("a", next, 30, 115) // 115 holds
	next = f.hold("a", next, 59, 114) // 114 releases; 58 s is not 60
	next = f.series("a", next, 115)   // back in the band: the clear timer restarts
	lastHold := next - sec
	next = f.hold("a", next, 60, 100) // 0..59 s below
	require.Len(t, f.changes, 1, "59 s below is not ClearFor")
	f.reading("a", next, 100) // 60 s below
	require.Len(t, f.changes, 2)
	c := f.changes[1]
	require.Equal(t, rules.Closed, c.Kind)
	require.Equal(t, rules.ClosedCleared, c.Episode.CloseReason)
	require.Equal(t, t0.Add(lastHold), c.Episode.End, "ends at the last reading that held")
	require.Equal(t, 601+30+1, c.Episode.Samples, "only readings in the band count")
	require.Equal(t, 115, c.Episode.Trough)
	require.Equal(t, 130, c.Episode.Peak)
	require.Equal(t, lastHold, c.Episode.Duration())
}

func TestClearForZeroClosesOnFirstReleasedReading(t *testing.T) {
	p := rules.DefaultEpisodeParams()
	p.ClearFor = 0
	f := newFeed(t, p)
	next := f.hold("a", 0, 601, 130)
	f.series("a", next, 114)
	require.Equal(t, []string{"10m0s open a@SUSTAINED_HIGH start=0s", "10m1s closed a@SUSTAINED_HIGH start=0s end=10m0s cleared"}, f.summary())
}

func TestSustainedLowBoundaries(t *testing.T) {
	f := newFeed(t, rules.DefaultEpisodeParams())
	next := f.hold("a", 0, 601, 41)
	require.Empty(t, f.changes, "41 is not at or below 40")
	next = f.hold("a", next, 601, 40)
	require.Len(t, f.changes, 1)
	require.Equal(t, rules.SustainedLow, f.changes[0].Episode.Rule)
	next = f.hold("a", next, 120, 45) // 45 = 40 + hysteresis holds
	require.Len(t, f.changes, 1)
	next = f.hold("a", next, 61, 46)
	require.Len(t, f.changes, 2)
	require.Equal(t, rules.Closed, f.changes[1].Kind)
	require.Equal(t, 40, f.changes[1].Episode.Trough)
	require.Equal(t, 45, f.changes[1].Episode.Peak)
	_ = next
}

func TestHealthySleeperAt45DoesNotAlert(t *testing.T) {
	f := newFeed(t, rules.DefaultEpisodeParams())
	f.hold("a", 0, 8*3600, 45)
	require.Empty(t, f.changes)
}

func TestSpikeConfirmation(t *testing.T) {
	tests := []struct {
		name  string
		rates []int
		want  []string
	}{
		{"isolated artefact", []int{70, 71, 105, 70, 71, 70}, nil},
		{"artefact of two readings", []int{70, 105, 104, 70, 70}, nil},
		{"jump of 29 is no candidate", []int{70, 99, 99, 99, 99}, nil},
		{"jump of 30 confirmed by two readings", []int{70, 100, 96, 95, 95},
			[]string{"3s open a@SPIKE start=1s"}},
		{"second confirmation 24 away fails", []int{70, 100, 96, 94, 94, 94}, nil},
		{"an artefact just under the delta and its return over it", []int{70, 70, 70, 70, 99, 68, 69, 69}, nil},
		{"downward", []int{110, 80, 85, 84, 84}, []string{"3s open a@SPIKE start=1s"}},
		{"a jump from a rate not yet settled after an artefact", []int{70, 110, 70, 100, 100, 100}, nil},
		{"a jump once the rate settled after an artefact", []int{70, 110, 70, 70, 70, 70, 100, 100, 100},
			[]string{"8s open a@SPIKE start=6s"}},
		{"a climb in steps below the delta never spikes", []int{70, 90, 110, 130, 130, 130}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFeed(t, rules.DefaultEpisodeParams())
			f.series("a", 0, tc.rates...)
			require.Equal(t, tc.want, f.summary())
			for _, c := range f.changes {
				require.Equal(t, rules.SeverityMedium, c.Episode.Severity)
				require.Equal(t, 30, c.Episode.Threshold)
			}
		})
	}
}

func TestSpikeEpisodeHoldsThenClears(t *testing.T) {
	f := newFeed(t, rules.DefaultEpisodeParams())
	next := f.series("a", 0, 70, 110, 108, 109)
	require.Len(t, f.changes, 1)
	ep := f.changes[0].Episode
	require.Equal(t, 70, ep.Base)
	require.Equal(t, 40, ep.Delta())
	next = f.hold("a", next, 120, 95) // 95 - 70 = 25 holds
	next = f.hold("a", next, 61, 72)  // back near the base: clears after 60 s
	require.Len(t, f.changes, 2)
	c := f.changes[1].Episode
	require.Equal(t, rules.ClosedCleared, c.CloseReason)
	require.Equal(t, t0.Add(next-62*sec), c.End)
	require.Equal(t, 3+120, c.Samples)
	// the return to the base is not a new SPIKE, and nothing follows
	f.hold("a", next, 60, 72)
	require.Len(t, f.changes, 2)
}

func TestSpikeConfirmZeroOpensOnTheJump(t *testing.T) {
	p := rules.DefaultEpisodeParams()
	p.SpikeConfirm = 0
	f := newFeed(t, p)
	f.series("a", 0, 70, 100)
	require.Equal(t, []string{"1s open a@SPIKE start=1s"}, f.summary())
}

func TestOneClinicalEpisodeAtATime(t *testing.T) {
	f := newFeed(t, rules.DefaultEpisodeParams())
	// A sudden jump into tachycardia is one SPIKE, not also a SUSTAINED_HIGH
	// ten minutes later.
	next := f.hold("a", 0, 60, 95)
	next = f.hold("a", next, 30*60, 135)
	require.Equal(t, []string{"1m2s open a@SPIKE start=1m0s"}, f.summary())
	// An abrupt end of a SUSTAINED_HIGH is not also a SPIKE.
	g := newFeed(t, rules.DefaultEpisodeParams())
	next = g.hold("b", 0, 700, 140)
	g.hold("b", next, 300, 75)
	require.Equal(t, []string{"10m0s open b@SUSTAINED_HIGH start=0s", "12m40s closed b@SUSTAINED_HIGH start=0s end=11m39s cleared"}, g.summary())
}

func TestSustainTimersStartAfreshAfterAnEpisode(t *testing.T) {
	f := newFeed(t, rules.DefaultEpisodeParams())
	next := f.hold("a", 0, 60, 95)
	next = f.hold("a", next, 5*60, 125) // SPIKE (from 95)
	next = f.hold("a", next, 8*60, 121) // 121 - 95 = 26: still the SPIKE
	next = f.hold("a", next, 61, 118)   // clears the SPIKE; 118 < 120 ends any run
	require.Len(t, f.changes, 2)
	next = f.hold("a", next, 600, 122)
	require.Len(t, f.changes, 2)
	f.reading("a", next, 122)
	require.Equal(t, rules.SustainedHigh, f.changes[2].Episode.Rule)
}

func TestSignalLossByGap(t *testing.T) {
	f := newFeed(t, rules.DefaultEpisodeParams())
	f.reading("a", 0, 70)
	f.reading("a", 5*mn-time.Millisecond, 70)
	require.Empty(t, f.changes, "a gap just under 5 minutes is no signal loss")
	f.reading("a", 10*mn-time.Millisecond, 71)
	require.Equal(t, []string{
		"9m59.999s open a@SIGNAL_LOSS start=4m59.999s",
		"9m59.999s closed a@SIGNAL_LOSS start=4m59.999s end=9m59.999s signal_restored",
	}, f.summary())
	ep := f.changes[1].Episode
	require.Equal(t, rules.SeverityLow, ep.Severity)
	require.Equal(t, t0.Add(9*mn+59999*time.Millisecond), ep.OpenedAt, "opened, in event time, when the silence reached 5 minutes")
	require.Equal(t, 5*mn, ep.Duration())
	require.Zero(t, ep.Samples)
	require.Equal(t, 300, ep.Threshold)
}

func TestSignalLossClosesTheOpenEpisodeAndResetsTimers(t *testing.T) {
	f := newFeed(t, rules.DefaultEpisodeParams())
	next := f.hold("a", 0, 601, 130)
	next = f.hold("a", next+6*mn, 9*60, 130) // after the gap: a new run, 9 minutes
	require.Equal(t, []string{
		"10m0s open a@SUSTAINED_HIGH start=0s",
		"16m1s closed a@SUSTAINED_HIGH start=0s end=10m0s signal_loss",
		"16m1s open a@SIGNAL_LOSS start=10m0s",
		"16m1s closed a@SIGNAL_LOSS start=10m0s end=16m1s signal_restored",
	}, f.summary())
	// the jump across the gap was no SPIKE, and the new run has not reached 10 minutes
	f.hold("a", next, 61, 130)
	require.Len(t, f.changes, 5)
	require.Equal(t, rules.SustainedHigh, f.changes[4].Episode.Rule)
	require.Equal(t, t0.Add(16*mn+1*sec), f.changes[4].Episode.Start.Time)
}

func TestSignalLossByWatermark(t *testing.T) {
	f := newFeed(t, rules.DefaultEpisodeParams())
	f.reading("quiet", 0, 70)
	for s := time.Duration(0); s < 5*mn; s += sec {
		f.reading("busy", s, 70)
	}
	require.Empty(t, f.changes)
	f.reading("busy", 5*mn, 70) // the partition's event time reaches quiet's last + 5m
	require.Equal(t, []string{"5m0s open quiet@SIGNAL_LOSS start=0s"}, f.summary())
	f.reading("busy", 6*mn, 70)
	require.Len(t, f.changes, 1, "opened once")
	f.reading("quiet", 7*mn, 72)
	require.Equal(t, "7m0s closed quiet@SIGNAL_LOSS start=0s end=7m0s signal_restored", f.summary()[1])
	require.Len(t, f.changes, 2)
}

func TestWatermarkNeverPassesTheWallClock(t *testing.T) {
	e, err := rules.NewEpisodeEngine(rules.DefaultEpisodeParams())
	require.NoError(t, err)
	require.Empty(t, e.Process(0, hb("quiet", 0, 70), t0))
	// a reading from a clock 10 minutes ahead of the detector's
	require.Empty(t, e.Process(0, hb("skewed", 10*mn, 70), t0.Add(4*mn)))
	cs := e.Process(0, hb("skewed", 10*mn+sec, 70), t0.Add(5*mn))
	require.Len(t, cs, 1)
	require.Equal(t, "quiet", cs[0].Episode.CustomerID)
}

// TestReplayedHistoryIsNotLive: readings that arrive long after their time
// (a recording replayed customer after customer) never let the watermark
// declare a customer silent; their own gaps still do.
func TestReplayedHistoryIsNotLive(t *testing.T) {
	e, err := rules.NewEpisodeEngine(rules.DefaultEpisodeParams())
	require.NoError(t, err)
	replayedAt := t0.Add(24 * time.Hour)
	var all []rules.Change
	for s := time.Duration(0); s < time.Hour; s += sec {
		all = append(all, e.Process(0, hb("first", s, 70), replayedAt)...)
	}
	for s := time.Duration(0); s < 10*mn; s += sec {
		all = append(all, e.Process(0, hb("second", s, 70), replayedAt)...)
	}
	all = append(all, e.Process(0, hb("second", 20*mn, 70), replayedAt)...)
	require.Len(t, all, 2, "only second's own gap: %v", all)
	require.Equal(t, rules.SignalLoss, all[0].Episode.Rule)
	require.Equal(t, "second", all[0].Episode.CustomerID)

	// A live reading's customer can be declared silent; Evaluate agrees with Process.
	g, err := rules.NewEpisodeEngine(rules.DefaultEpisodeParams())
	require.NoError(t, err)
	_, apply := g.Evaluate(0, hb("live", 0, 70), t0.Add(time.Second))
	apply()
	_, apply = g.Evaluate(0, hb("old", -mn, 70), t0.Add(time.Hour)) // arrived an hour late
	apply()
	cs, _ := g.Evaluate(0, hb("other", 6*mn, 70), t0.Add(6*mn))
	require.Len(t, cs, 1)
	require.Equal(t, "live", cs[0].Episode.CustomerID)
}

func TestPartitionsHaveTheirOwnWatermark(t *testing.T) {
	e, err := rules.NewEpisodeEngine(rules.DefaultEpisodeParams())
	require.NoError(t, err)
	require.Empty(t, e.Process(0, hb("a", 0, 70), time.Time{}))
	require.Empty(t, e.Process(1, hb("b", 30*mn, 70), time.Time{}))
	require.True(t, e.Known(0, "a"))
	require.False(t, e.Known(1, "a"))
}

func TestLateReadingsChangeNothing(t *testing.T) {
	f := newFeed(t, rules.DefaultEpisodeParams())
	next := f.hold("a", 0, 300, 125)
	f.reading("a", 100*sec, 60)   // late: does not break the run
	f.reading("a", next-sec, 200) // a duplicate timestamp is late too
	next = f.hold("a", next, 301, 125)
	require.Equal(t, []string{"10m0s open a@SUSTAINED_HIGH start=0s"}, f.summary())
	require.Equal(t, 601, f.changes[0].Episode.Samples)
	require.Equal(t, 125, f.changes[0].Episode.Peak)
	// a late reading never triggers SPIKE either
	g := newFeed(t, rules.DefaultEpisodeParams())
	g.series("b", 10*sec, 70, 70, 70)
	g.reading("b", 0, 140)
	g.reading("b", sec, 140)
	g.reading("b", 2*sec, 140)
	require.Empty(t, g.changes)
	_ = next
}

func TestEvaluateWithoutApplyIsRepeatable(t *testing.T) {
	e, err := rules.NewEpisodeEngine(rules.DefaultEpisodeParams())
	require.NoError(t, err)
	for i := range 3 {
		_, apply := e.Evaluate(0, hb("a", time.Duration(i)*sec, []int{70, 105, 104}[i]), time.Time{})
		apply()
	}
	h := hb("a", 3*sec, 103)
	first, _ := e.Evaluate(0, h, time.Time{}) // failed to commit: not applied
	again, apply := e.Evaluate(0, h, time.Time{})
	require.Len(t, first, 1)
	require.Equal(t, first, again)
	apply()
	apply() // a second apply of the same evaluation is stale and ignored
	require.Len(t, e.Open(0, "a"), 1)
	next, _ := e.Evaluate(0, hb("a", 4*sec, 103), time.Time{})
	require.Empty(t, next, "already open")
}

func TestEpisodeParamsValidate(t *testing.T) {
	require.NoError(t, rules.DefaultEpisodeParams().Validate())
	for name, mutate := range map[string]func(*rules.EpisodeParams){
		"SustainedLow":    func(p *rules.EpisodeParams) { p.SustainedLow = 112 },
		"SustainFor":      func(p *rules.EpisodeParams) { p.SustainFor = 0 },
		"Hysteresis":      func(p *rules.EpisodeParams) { p.Hysteresis = -1 },
		"SpikeDelta":      func(p *rules.EpisodeParams) { p.SpikeDelta = 5 },
		"ClearFor":        func(p *rules.EpisodeParams) { p.ClearFor = -time.Second },
		"SpikeConfirm":    func(p *rules.EpisodeParams) { p.SpikeConfirm = -1 },
		"SignalLossAfter": func(p *rules.EpisodeParams) { p.SignalLossAfter = 0 },
	} {
		p := rules.DefaultEpisodeParams()
		mutate(&p)
		err := p.Validate()
		require.Error(t, err, name)
		require.Contains(t, err.Error(), name)
		_, err = rules.NewEpisodeEngine(p)
		require.Error(t, err)
	}
}

func TestEpisodeEngineEvictAndRestore(t *testing.T) {
	e, err := rules.NewEpisodeEngine(rules.DefaultEpisodeParams())
	require.NoError(t, err)
	e.Process(0, hb("a", 0, 70), time.Time{})
	require.Equal(t, 1, e.Customers())
	require.Zero(t, e.Evict(time.Hour))
	require.Equal(t, 1, e.Evict(-time.Second))
	require.False(t, e.Known(0, "a"))

	// Restored from its readings, the customer is exactly where it was: in
	// the middle of a SPIKE confirmation.
	prime := rules.ReadingOf(hb("a", 0, 70))
	open := e.Restore(0, "a", &prime, []rules.Reading{rules.ReadingOf(hb("a", sec, 100)), rules.ReadingOf(hb("a", 2*sec, 99))}, t0, nil)
	require.Empty(t, open)
	cs := e.Process(0, hb("a", 3*sec, 99), time.Time{})
	require.Len(t, cs, 1)
	require.Equal(t, rules.EpisodeID("a", rules.Spike, "a@1s"), cs[0].Episode.ID())
}

package rules_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/messages/rules"
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

// eventID is the event id of customer's reading at t0+at: a UUID, as
// validation requires.
func eventID(customer string, at time.Duration) string {
	return uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "%s@%s", customer, at)).String()
}

func hb(customer string, at time.Duration, rate int) messages.Heartbeat {
	return messages.Heartbeat{EventID: eventID(customer, at), CustomerID: customer, Timestamp: t0.Add(at), HeartRate: rate}
}

func (f *feed) reading(customer string, at time.Duration, rate int) []rules.Change {
	cs := f.e.Process(rules.Lane{}, hb(customer, at, rate), time.Time{})
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
	require.Equal(t, messages.SeverityHigh, ep.Severity)
	require.Equal(t, t0.Add(600*sec), ep.OpenedAt)
	require.Equal(t, messages.EpisodeID("a", messages.SustainedHigh, eventID("a", 0)), ep.ID())
}

func TestSustainedHighTimerIsASchmittTrigger(t *testing.T) {
	f := newFeed(t, rules.DefaultEpisodeParams())
	next := f.hold("a", 0, 300, 125)
	next = f.series("a", next, 114) // below 120-5 stops the timer
	next = f.series("a", next, 119) // in the band, but a timer starts at 120
	next = f.hold("a", next, 300, 121)
	next = f.series("a", next, 115)    // in the band: keeps it
	next = f.hold("a", next, 299, 121) // 5m2s..9m59s after the 121 at 5m2s
	require.Empty(t, f.changes)
	// Ten minutes after the timer's first reading: the episode opens at
	// this reading, whatever its rate in the band, so that a timer never
	// runs longer than SustainFor (the state a restart rebuilds stays
	// bounded).
	f.series("a", next, 116)
	require.Equal(t, []string{"15m2s open a@SUSTAINED_HIGH start=5m2s"}, f.summary())
	ep := f.changes[0].Episode
	require.Equal(t, 115, ep.Trough)
	require.Equal(t, 601, ep.Samples)
	require.Equal(t, 116, ep.Opened.Rate)
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
	require.Equal(t, messages.ClosedCleared, c.Episode.CloseReason)
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
	require.Equal(t, messages.SustainedLow, f.changes[0].Episode.Rule)
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

// settledAt70 is the N+2 = 4 settled readings a jump needs before it.
var settledAt70 = []int{70, 70, 70, 70}

func TestSpikeConfirmation(t *testing.T) {
	lead := func(rates ...int) []int { return append(append([]int(nil), settledAt70...), rates...) }
	tests := []struct {
		name  string
		rates []int
		want  []string
	}{
		{"isolated artefact", lead(71, 105, 70, 71, 70), nil},
		{"artefact of two readings", lead(105, 104, 70, 70), nil},
		{"jump of 29 is no candidate", lead(99, 99, 99, 99), nil},
		{"jump of 30 confirmed by two readings", lead(100, 96, 95, 95),
			[]string{"6s open a@SPIKE start=4s"}},
		{"confirmations exactly 25 from the rates before", lead(100, 95, 95), []string{"6s open a@SPIKE start=4s"}},
		{"second confirmation 24 away fails", lead(100, 96, 94, 94, 94), nil},
		{"an artefact just under the delta and its return over it", lead(99, 68, 69, 69), nil},
		{"downward", []int{110, 110, 110, 110, 80, 85, 84, 84}, []string{"6s open a@SPIKE start=4s"}},
		{"a jump from a rate not yet settled after an artefact", lead(110, 70, 100, 100, 100), nil},
		{"a jump once the rate settled after an artefact", lead(110, 70, 70, 70, 70, 100, 100, 100),
			[]string{"11s open a@SPIKE start=9s"}},
		{"a climb in steps below the delta never spikes", lead(90, 110, 130, 130, 130), nil},
		// The settled test: each of the N+1 readings before the base less
		// than 25 (delta - hysteresis) from it.
		{"a reading 24 below the base leaves it settled", []int{70, 46, 70, 70, 100, 100, 100}, []string{"6s open a@SPIKE start=4s"}},
		{"a reading 25 below the base unsettles it", []int{70, 45, 70, 70, 100, 100, 100}, nil},
		// An artefact as the base, 24 above the readings before it and 30
		// above the one after: the readings around it are 6 apart, so no
		// SPIKE (the readings after the jump must be 25 from every settled
		// reading, not only from the base).
		{"an artefact 24 above, then 30 below it", lead(94, 64, 64, 64), nil},
		{"an artefact 24 below, then 30 above it", lead(46, 76, 76, 76), nil},
		// But a genuine drop of 30 after such an artefact is one.
		{"an artefact 24 above, then a genuine drop", lead(94, 40, 40, 40), []string{"7s open a@SPIKE start=5s"}},
		// The jump needs its N+2 settled readings since the last gap (or
		// the first reading): a base with no history is not settled.
		{"a jump from the first reading", []int{123, 155, 164, 164}, nil},
		{"three readings before the jump are too few", []int{70, 70, 70, 100, 100, 100}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFeed(t, rules.DefaultEpisodeParams())
			f.series("a", 0, tc.rates...)
			require.Equal(t, tc.want, f.summary())
			for _, c := range f.changes {
				require.Equal(t, messages.SeverityMedium, c.Episode.Severity)
				require.Equal(t, 30, c.Episode.Threshold)
			}
		})
	}
}

// TestSpikeAfterAGapNeedsASettledBase: a sensor reconnecting mid-exercise
// after 3 h 45 min (readings 123, 155, 164, 164, from a real recording)
// opens no SPIKE from its first reading; a jump once four readings after
// the gap have settled does.
func TestSpikeAfterAGapNeedsASettledBase(t *testing.T) {
	f := newFeed(t, rules.DefaultEpisodeParams())
	next := f.series("a", 0, settledAt70...)
	gap := 3*time.Hour + 45*mn
	f.series("a", next+gap, 123, 155, 164, 164, 165, 164)
	require.Equal(t, []string{"3h45m4s open a@SIGNAL_LOSS start=3s", "3h45m4s closed a@SIGNAL_LOSS start=3s end=3h45m4s signal_restored"}, f.summary())
	f.series("a", next+gap+6*sec, 130, 131, 130)
	require.Len(t, f.changes, 3)
	require.Equal(t, "3h45m12s open a@SPIKE start=3h45m10s", f.summary()[2])
}

func TestSpikeEpisodeHoldsThenClears(t *testing.T) {
	f := newFeed(t, rules.DefaultEpisodeParams())
	next := f.series("a", 0, 70, 70, 70, 70, 110, 108, 109)
	require.Len(t, f.changes, 1)
	ep := f.changes[0].Episode
	require.Equal(t, 70, ep.Base)
	require.Equal(t, 40, ep.Delta())
	next = f.hold("a", next, 120, 95) // 95 - 70 = 25 holds
	next = f.hold("a", next, 61, 72)  // back near the base: clears after 60 s
	require.Len(t, f.changes, 2)
	c := f.changes[1].Episode
	require.Equal(t, messages.ClosedCleared, c.CloseReason)
	require.Equal(t, t0.Add(next-62*sec), c.End)
	require.Equal(t, 3+120, c.Samples)
	// the return to the base is not a new SPIKE, and nothing follows
	f.hold("a", next, 60, 72)
	require.Len(t, f.changes, 2)
}

// TestSpikeSettlesAtItsNewLevel: a SPIKE is the sudden change, not the
// level after it. A new level held for SustainFor (no sustain timer
// running) is the customer's settled rate: the SPIKE closes there, and a
// later jump back is a new SPIKE.
func TestSpikeSettlesAtItsNewLevel(t *testing.T) {
	f := newFeed(t, rules.DefaultEpisodeParams())
	next := f.series("a", 0, settledAt70...) // 0..3 s
	next = f.hold("a", next, 15*60, 105)     // the jump at 4 s, held 15 minutes
	require.Equal(t, []string{"6s open a@SPIKE start=4s", "10m4s closed a@SPIKE start=4s end=10m4s settled"}, f.summary())
	require.Equal(t, 601, f.changes[1].Episode.Samples)
	f.hold("a", next, 60, 70)
	require.Equal(t, "15m6s open a@SPIKE start=15m4s", f.summary()[2], "the return, long after, is a sudden change of its own")
	require.Equal(t, 105, f.changes[2].Episode.Base)
}

func TestSpikeConfirmZeroOpensOnTheJump(t *testing.T) {
	p := rules.DefaultEpisodeParams()
	p.SpikeConfirm = 0
	f := newFeed(t, p)
	f.series("a", 0, 70, 100)
	require.Empty(t, f.changes, "the base needs N+1 = 1 reading before it")
	g := newFeed(t, p)
	g.series("a", 0, 70, 70, 100)
	require.Equal(t, []string{"2s open a@SPIKE start=2s"}, g.summary())
}

// TestAJumpIntoTachycardiaIsOneEpisode: a sudden jump into a tachycardia
// opens a SPIKE at once, and when the tachycardia has lasted SustainFor the
// SPIKE becomes SUSTAINED_HIGH — one alert (same id, start and opening),
// reclassified, at the time the sustained rule alone would have opened
// one.
func TestAJumpIntoTachycardiaIsOneEpisode(t *testing.T) {
	f := newFeed(t, rules.DefaultEpisodeParams())
	next := f.hold("a", 0, 60, 95)
	jump := next
	next = f.hold("a", next, 12*60, 150)
	next = f.hold("a", next, 120, 80)
	require.Equal(t, []string{
		"1m2s open a@SPIKE start=1m0s",
		"11m0s reclassified a@SUSTAINED_HIGH start=1m0s",
		"14m0s closed a@SUSTAINED_HIGH start=1m0s end=12m59s cleared",
	}, f.summary())
	opened, re := f.changes[0].Episode, f.changes[1].Episode
	require.Equal(t, messages.SustainedHigh, re.Rule)
	require.Equal(t, messages.Spike, re.OpenedAs)
	require.Equal(t, messages.SeverityHigh, re.Severity)
	require.Equal(t, 120, re.Threshold)
	require.Equal(t, opened.ID(), re.ID(), "the alert keeps its identity")
	require.Equal(t, messages.EpisodeID("a", messages.Spike, eventID("a", jump)), re.ID())
	require.Equal(t, opened.OpenedAt, re.OpenedAt)
	require.Equal(t, 95, re.Base)
	require.Equal(t, t0.Add(11*mn), re.Reclassified.Time)
	require.Equal(t, 601, re.Samples)
	require.Equal(t, 720, f.changes[2].Episode.Samples)

	// The sustained rule alone (no SPIKE: a gradual rise) opens at the
	// same reading.
	p := rules.DefaultEpisodeParams()
	p.SpikeDelta = 200
	g := newFeed(t, p)
	g.hold("a", 0, 60, 95)
	g.hold("a", jump, 12*60, 150)
	require.Equal(t, "11m0s open a@SUSTAINED_HIGH start=1m0s", g.summary()[0])
}

// TestAJumpBelowTheThresholdThenRisingIsOneEpisode: the jump lands in the
// band (116, no timer yet) and the rate reaches 120 two minutes later: the
// SPIKE does not settle while that timer runs, and becomes SUSTAINED_HIGH
// when it completes.
func TestAJumpBelowTheThresholdThenRisingIsOneEpisode(t *testing.T) {
	f := newFeed(t, rules.DefaultEpisodeParams())
	next := f.hold("a", 0, 60, 80)
	next = f.hold("a", next, 120, 116)
	f.hold("a", next, 11*60, 124)
	require.Equal(t, []string{"1m2s open a@SPIKE start=1m0s", "13m0s reclassified a@SUSTAINED_HIGH start=1m0s"}, f.summary())
}

// TestADropToANewRestThenBradycardia is a real recording's case: the rate
// falls from 95 to 65 across a 95 s gap (a SPIKE down) and rests there;
// 14 minutes at 39 bpm later are a SUSTAINED_LOW of their own, opened when
// the low timer has run 10 minutes, as without the SPIKE.
func TestADropToANewRestThenBradycardia(t *testing.T) {
	for _, spike := range []bool{true, false} {
		t.Run(fmt.Sprint("spike=", spike), func(t *testing.T) {
			p := rules.DefaultEpisodeParams()
			if !spike {
				p.SpikeDelta = 200
			}
			f := newFeed(t, p)
			next := f.hold("a", 0, 120, 95)
			next = f.hold("a", next+95*sec, 20*60, 65) // 3m35s..23m34s
			next = f.hold("a", next, 14*60, 39)        // 23m35s..37m34s
			f.hold("a", next, 120, 60)
			want := []string{
				"33m35s open a@SUSTAINED_LOW start=23m35s",
				"38m35s closed a@SUSTAINED_LOW start=23m35s end=37m34s cleared",
			}
			if spike {
				want = append([]string{"3m37s open a@SPIKE start=3m35s", "13m35s closed a@SPIKE start=3m35s end=13m35s settled"}, want...)
			}
			require.Equal(t, want, f.summary())
		})
	}
}

// TestADropIntoBradycardiaIsOneEpisode: 95 to 62 at once (a SPIKE down), 38
// from three minutes later for twelve: the SPIKE does not settle while the
// low timer runs and becomes SUSTAINED_LOW when it completes — at the time
// the sustained rule alone opens it.
func TestADropIntoBradycardiaIsOneEpisode(t *testing.T) {
	for _, spike := range []bool{true, false} {
		t.Run(fmt.Sprint("spike=", spike), func(t *testing.T) {
			p := rules.DefaultEpisodeParams()
			if !spike {
				p.SpikeDelta = 200
			}
			f := newFeed(t, p)
			next := f.hold("a", 0, 60, 95)
			next = f.hold("a", next, 3*60, 62)
			next = f.hold("a", next, 12*60, 38)
			f.hold("a", next, 120, 60)
			if spike {
				require.Equal(t, []string{
					"1m2s open a@SPIKE start=1m0s",
					"14m0s reclassified a@SUSTAINED_LOW start=1m0s",
					"17m0s closed a@SUSTAINED_LOW start=1m0s end=15m59s cleared",
				}, f.summary())
				require.Equal(t, messages.Spike, f.changes[1].Episode.OpenedAs)
				return
			}
			require.Equal(t, []string{
				"14m0s open a@SUSTAINED_LOW start=4m0s",
				"17m0s closed a@SUSTAINED_LOW start=4m0s end=15m59s cleared",
			}, f.summary())
		})
	}
}

// TestTheAbruptEndOfATachycardiaIsNoSpike: a jump during an open SUSTAINED
// episode — its abrupt end — is part of it.
func TestTheAbruptEndOfATachycardiaIsNoSpike(t *testing.T) {
	g := newFeed(t, rules.DefaultEpisodeParams())
	next := g.hold("b", 0, 700, 140)
	g.hold("b", next, 300, 75)
	require.Equal(t, []string{"10m0s open b@SUSTAINED_HIGH start=0s", "12m40s closed b@SUSTAINED_HIGH start=0s end=11m39s cleared"}, g.summary())
}

// TestSustainedSupersedesTheOtherSide: with ClearFor longer than
// SustainFor, a SUSTAINED_HIGH condition is met while a SUSTAINED_LOW is
// still clearing: the low closes (superseded) and the high opens.
func TestSustainedSupersedesTheOtherSide(t *testing.T) {
	p := rules.DefaultEpisodeParams()
	p.SustainFor, p.ClearFor = time.Minute, 5*time.Minute
	f := newFeed(t, p)
	next := f.hold("a", 0, 120, 38)
	f.hold("a", next, 120, 130)
	require.Equal(t, []string{
		"1m0s open a@SUSTAINED_LOW start=0s",
		"3m0s closed a@SUSTAINED_LOW start=0s end=1m59s superseded",
		"3m0s open a@SUSTAINED_HIGH start=2m0s",
	}, f.summary())
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
	require.Equal(t, messages.SeverityLow, ep.Severity)
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
	require.Equal(t, messages.SustainedHigh, f.changes[4].Episode.Rule)
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
	require.Empty(t, e.Process(rules.Lane{}, hb("quiet", 0, 70), t0))
	// a reading from a clock 10 minutes ahead of the detector's
	require.Empty(t, e.Process(rules.Lane{}, hb("skewed", 10*mn, 70), t0.Add(4*mn)))
	cs := e.Process(rules.Lane{}, hb("skewed", 10*mn+sec, 70), t0.Add(5*mn))
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
		all = append(all, e.Process(rules.Lane{}, hb("first", s, 70), replayedAt)...)
	}
	for s := time.Duration(0); s < 10*mn; s += sec {
		all = append(all, e.Process(rules.Lane{}, hb("second", s, 70), replayedAt)...)
	}
	all = append(all, e.Process(rules.Lane{}, hb("second", 20*mn, 70), replayedAt)...)
	require.Len(t, all, 2, "only second's own gap: %v", all)
	require.Equal(t, messages.SignalLoss, all[0].Episode.Rule)
	require.Equal(t, "second", all[0].Episode.CustomerID)

	// A live reading's customer can be declared silent; Evaluate agrees with Process.
	g, err := rules.NewEpisodeEngine(rules.DefaultEpisodeParams())
	require.NoError(t, err)
	_, apply := g.Evaluate(rules.Lane{}, hb("live", 0, 70), t0.Add(time.Second))
	apply()
	_, apply = g.Evaluate(rules.Lane{}, hb("old", -mn, 70), t0.Add(time.Hour)) // arrived an hour late
	apply()
	cs, _ := g.Evaluate(rules.Lane{}, hb("other", 6*mn, 70), t0.Add(6*mn))
	require.Len(t, cs, 1)
	require.Equal(t, "live", cs[0].Episode.CustomerID)
}

func TestPartitionsHaveTheirOwnWatermark(t *testing.T) {
	e, err := rules.NewEpisodeEngine(rules.DefaultEpisodeParams())
	require.NoError(t, err)
	require.Empty(t, e.Process(rules.Lane{}, hb("a", 0, 70), time.Time{}))
	require.Empty(t, e.Process(rules.Lane{Partition: 1}, hb("b", 30*mn, 70), time.Time{}))
	require.True(t, e.Known(rules.Lane{}, "a"))
	require.False(t, e.Known(rules.Lane{Partition: 1}, "a"))
}

// A partition's state is its assignment's: a new assignment of the
// partition begins it empty (its customers are rebuilt from storage); a
// reading of the superseded one still in flight changes nothing, and its
// failure forgets nothing of the new one.
func TestANewAssignmentBeginsThePartitionsStateAgain(t *testing.T) {
	e, err := rules.NewEpisodeEngine(rules.DefaultEpisodeParams())
	require.NoError(t, err)
	first, second := rules.Lane{Partition: 4, Assignment: 7}, rules.Lane{Partition: 4, Assignment: 9}
	require.Empty(t, e.Process(first, hb("a", 0, 70), time.Time{}))
	require.True(t, e.Known(first, "a"))
	require.Equal(t, 1, e.Customers())

	require.False(t, e.Known(second, "a"))
	require.Zero(t, e.Customers(), "the old assignment's state is dropped")
	require.Empty(t, e.Process(second, hb("b", sec, 70), time.Time{}))

	// An hour of silence then a reading, in the superseded lane: nothing.
	cs, apply := e.Evaluate(first, hb("b", time.Hour, 70), time.Time{})
	require.Empty(t, cs)
	apply()
	require.True(t, e.Known(first, "a"), "superseded: nothing to rebuild")
	require.Empty(t, e.Open(first, "b"))
	open, current := e.Restore(first, "c", nil, nil, t0, nil)
	require.Empty(t, open)
	require.False(t, current)
	require.True(t, e.Known(second, "b"))
	require.False(t, e.Known(second, "c"), "a superseded lane's restore installs nothing")
	require.Equal(t, 1, e.Customers())
	// The same silence in the partition's lane is a SIGNAL_LOSS (opened,
	// and closed by the reading that ends it).
	cs = e.Process(second, hb("b", time.Hour, 70), time.Time{})
	require.Len(t, cs, 2)
	require.Equal(t, messages.SignalLoss, cs[0].Episode.Rule)

	e.ForgetLane(first)
	require.True(t, e.Known(second, "b"), "a superseded lane's failure forgets nothing")
	e.ForgetLane(second)
	require.False(t, e.Known(second, "b"))
	require.True(t, e.Known(first, "b"), "still superseded after the new lane's state was forgotten")
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
	for i, rate := range []int{70, 70, 70, 70, 105, 104} {
		_, apply := e.Evaluate(rules.Lane{}, hb("a", time.Duration(i)*sec, rate), time.Time{})
		apply()
	}
	h := hb("a", 6*sec, 103)
	first, _ := e.Evaluate(rules.Lane{}, h, time.Time{}) // failed to commit: not applied
	again, apply := e.Evaluate(rules.Lane{}, h, time.Time{})
	require.Len(t, first, 1)
	require.Equal(t, first, again)
	apply()
	apply() // a second apply of the same evaluation is stale and ignored
	require.Len(t, e.Open(rules.Lane{}, "a"), 1)
	next, _ := e.Evaluate(rules.Lane{}, hb("a", 7*sec, 103), time.Time{})
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
	e.Process(rules.Lane{}, hb("a", 0, 70), time.Time{})
	require.Equal(t, 1, e.Customers())
	require.Zero(t, e.Evict(time.Hour))
	require.Equal(t, 1, e.Evict(-time.Second))
	require.False(t, e.Known(rules.Lane{}, "a"))

	// Restored from its readings, the customer is exactly where it was: in
	// the middle of a SPIKE confirmation.
	prime := rules.ReadingOf(hb("a", 0, 70))
	var rs []messages.Reading
	for i, rate := range []int{70, 70, 70, 100, 99} {
		rs = append(rs, rules.ReadingOf(hb("a", time.Duration(i+1)*sec, rate)))
	}
	open, _ := e.Restore(rules.Lane{}, "a", &prime, rs, t0, nil)
	require.Empty(t, open)
	cs := e.Process(rules.Lane{}, hb("a", 6*sec, 99), time.Time{})
	require.Len(t, cs, 1)
	require.Equal(t, messages.EpisodeID("a", messages.Spike, eventID("a", 4*sec)), cs[0].Episode.ID())
}

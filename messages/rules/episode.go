package rules

import (
	"errors"
	"fmt"
	"time"

	"github.com/heartbeat/heartbeat/messages"
)

// Detection modes (DETECTION_MODE).
const (
	// ModePerEvent checks every reading on its own against LOW, HIGH and
	// SPIKE ([Engine]).
	ModePerEvent = "per_event"
	// ModeEpisode alerts once per sustained episode ([EpisodeEngine]).
	ModeEpisode = "episode"
)

// EpisodeParams tune the episode rules. [DefaultEpisodeParams] are
// Apple-Watch-like: 120 bpm and 40 bpm held for 10 minutes.
type EpisodeParams struct {
	// SustainedHigh: a reading at or above it starts the SUSTAINED_HIGH
	// timer, which runs while the readings stay at or above
	// SustainedHigh-Hysteresis; the episode opens at the first reading
	// SustainFor or more after the timer's first.
	SustainedHigh int
	// SustainedLow: the same below, at or below SustainedLow and
	// SustainedLow+Hysteresis.
	SustainedLow int
	// SustainFor is how long a sustain timer runs before its episode opens,
	// and how long a SPIKE's new level holds before it is the customer's
	// settled rate.
	SustainFor time.Duration
	// Hysteresis (bpm) is the band that keeps a sustain timer running and
	// an open episode open: SUSTAINED_HIGH at or above
	// SustainedHigh-Hysteresis, SUSTAINED_LOW at or below
	// SustainedLow+Hysteresis, SPIKE while the rate stays
	// SpikeDelta-Hysteresis away from the rate before the jump.
	Hysteresis int
	// ClearFor is how long the condition must stay released before an open
	// episode closes (Prometheus's keep_firing_for): 0 closes on the first
	// released reading.
	ClearFor time.Duration
	// SpikeDelta is the jump between consecutive readings that starts a
	// SPIKE candidate.
	SpikeDelta int
	// SpikeConfirm is how many readings after the jump must stay at least
	// SpikeDelta-Hysteresis away from the rates before it for the SPIKE to
	// open; 0 opens on the jump itself.
	SpikeConfirm int
	// SignalLossAfter is the silence, in event time, after which a customer
	// has lost signal.
	SignalLossAfter time.Duration
}

// DefaultEpisodeParams are the defaults of the episode mode.
func DefaultEpisodeParams() EpisodeParams {
	return EpisodeParams{
		SustainedHigh: 120, SustainedLow: 40, SustainFor: 10 * time.Minute,
		Hysteresis: 5, ClearFor: time.Minute,
		SpikeDelta: 30, SpikeConfirm: 2,
		SignalLossAfter: 5 * time.Minute,
	}
}

// Validate reports every parameter out of its range, by field name.
func (p EpisodeParams) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if p.SustainedLow+p.Hysteresis >= p.SustainedHigh-p.Hysteresis {
		bad("SustainedLow %d + Hysteresis %d must be below messages.SustainedHigh %d - Hysteresis", p.SustainedLow, p.Hysteresis, p.SustainedHigh)
	}
	if p.SustainFor <= 0 {
		bad("SustainFor must be positive, got %s", p.SustainFor)
	}
	if p.Hysteresis < 0 {
		bad("Hysteresis must be 0 or more, got %d", p.Hysteresis)
	}
	if p.SpikeDelta <= 0 || p.Hysteresis >= p.SpikeDelta {
		bad("SpikeDelta %d must be positive and above Hysteresis %d", p.SpikeDelta, p.Hysteresis)
	}
	if p.ClearFor < 0 {
		bad("ClearFor must be 0 or more, got %s", p.ClearFor)
	}
	if p.SpikeConfirm < 0 {
		bad("SpikeConfirm must be 0 or more, got %d", p.SpikeConfirm)
	}
	if p.SignalLossAfter <= 0 {
		bad("SignalLossAfter must be positive, got %s", p.SignalLossAfter)
	}
	return errors.Join(errs...)
}

// A customer's state is rebuilt after a restart (or an eviction) by
// replaying its stored readings through the same rules from a point X at
// which, in the uninterrupted run, no clinical episode was open and no
// sustain timer running that the replay cannot restart the same way. Three
// bounds find such a point.
//
//   - A sustain timer opens its episode at the first reading SustainFor
//     after its start, and readings are less than SignalLossAfter apart (a
//     longer gap resets every timer): a timer still pending at time T
//     started after T-SustainFor-SignalLossAfter. From there on, a replay
//     runs the same timers: a timer running before X either stops at a
//     reading (the replay's with it) or opens or reclassifies an episode,
//     which starts after X by the next bound.
//   - Every episode whose close was decided after X is known, and X is
//     SustainFor+SignalLossAfter before its start (a SPIKE may be
//     reclassified by a timer that started before its jump). An episode's
//     close is decided at most closeDelay after its end: ClearFor and two
//     gaps, plus, for a SPIKE, the SustainFor and gap it may wait for a
//     timer of its side. [EpisodeParams.Recall] fetches the customer's
//     episodes open or ended since X-closeDelay, moving X back before each
//     one's start until no earlier episode matters.
//   - SPIKE is a predicate over the latest 2*SpikeConfirm+3 readings, which
//     span at most 2*SpikeConfirm+2 gaps: those readings before X only warm
//     it up.

func (p EpisodeParams) timerReach() time.Duration { return p.SustainFor + p.SignalLossAfter }

func (p EpisodeParams) closeDelay() time.Duration {
	return p.ClearFor + 3*p.SignalLossAfter + p.SustainFor
}

// RecentSince is the earliest end of an episode that may matter to a
// customer's state at a reading of time now, before the episodes found
// move the replay further back ([EpisodeParams.Recall]).
func (p EpisodeParams) RecentSince(now time.Time) time.Time {
	return now.Add(-p.timerReach() - p.closeDelay())
}

// Recall finds which stored episodes and readings rebuild a customer's
// state at a reading of time now. fetch returns the customer's episodes
// open or ended at or after since; Recall calls it until no episode it has
// not seen can matter (usually once, twice when a recent episode started
// long ago). The readings from warmFrom on, in the order their partition
// delivered them, rebuild the state, those from fullFrom on through every
// rule ([EpisodeEngine.Restore]).
func (p EpisodeParams) Recall(now time.Time, fetch func(since time.Time) ([]messages.Episode, error)) (recent []messages.Episode, warmFrom, fullFrom time.Time, err error) {
	since := p.RecentSince(now)
	for {
		if recent, err = fetch(since); err != nil {
			return nil, time.Time{}, time.Time{}, err
		}
		fullFrom = now.Add(-p.timerReach())
		for _, ep := range recent {
			if s := ep.Start.Time.Add(-p.timerReach()); s.Before(fullFrom) {
				fullFrom = s
			}
		}
		need := fullFrom.Add(-p.closeDelay())
		if !need.Before(since) {
			break
		}
		since = need
	}
	return recent, fullFrom.Add(-time.Duration(2*p.SpikeConfirm+2) * p.SignalLossAfter), fullFrom, nil
}

// ChangeKind says whether a change opens, reclassifies or closes an
// episode.
type ChangeKind int

// Change kinds.
const (
	Opened ChangeKind = iota + 1
	Closed
	// Reclassified: an open SPIKE became a SUSTAINED episode, keeping its
	// identity (id, start, opening).
	Reclassified
)

func (k ChangeKind) String() string {
	switch k {
	case Opened:
		return "open"
	case Closed:
		return "closed"
	case Reclassified:
		return "reclassified"
	}
	return "unknown"
}

// Change is an episode opening, reclassification or closing; Episode is
// its state then.
type Change struct {
	Kind    ChangeKind
	Episode messages.Episode
}

package rules

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Detection modes (DETECTION_MODE).
const (
	// ModePerEvent is the original system's: every reading is checked on
	// its own against LOW, HIGH and SPIKE ([Engine]).
	ModePerEvent = "per_event"
	// ModeEpisode alerts once per sustained episode ([EpisodeEngine]).
	ModeEpisode = "episode"
)

// Rule names of the episode mode, stored in anomalies.anomaly_type. SPIKE
// keeps its name: in the episode mode it is confirmed by the readings that
// follow the jump.
const (
	SustainedHigh = "SUSTAINED_HIGH"
	SustainedLow  = "SUSTAINED_LOW"
	SignalLoss    = "SIGNAL_LOSS"
)

// SeverityLow is SIGNAL_LOSS's: a technical alert, not a clinical one.
const SeverityLow = "low"

// Why an episode closed.
const (
	ClosedCleared        = "cleared"         // the condition released for ClearFor
	ClosedSignalLoss     = "signal_loss"     // the readings stopped
	ClosedSignalRestored = "signal_restored" // SIGNAL_LOSS: readings came back
)

// EpisodeParams tune the episode rules. [DefaultEpisodeParams] are
// Apple-Watch-like: 120 bpm and 40 bpm held for 10 minutes.
type EpisodeParams struct {
	// SustainedHigh: SUSTAINED_HIGH opens at a reading at or above it when
	// every reading for SustainFor, from one at or above it, has been at or
	// above SustainedHigh-Hysteresis.
	SustainedHigh int
	// SustainedLow: SUSTAINED_LOW opens at a reading at or below it when
	// every reading for SustainFor, from one at or below it, has been at or
	// below SustainedLow+Hysteresis.
	SustainedLow int
	SustainFor   time.Duration
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
	// SpikeDelta-Hysteresis away from the rate before it for the SPIKE to
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
		bad("SustainedLow %d + Hysteresis %d must be below SustainedHigh %d - Hysteresis", p.SustainedLow, p.Hysteresis, p.SustainedHigh)
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
// replaying its stored readings through the same rules; three bounds say
// which readings that takes, at a reading of time now.
//
//   - A pending sustain timer started less than SustainFor plus one gap
//     (SignalLossAfter; a longer gap resets every timer) ago, or it would
//     have opened: readings from now-SustainFor-SignalLossAfter on
//     rebuild it.
//   - An episode whose close was decided after that point must be replayed
//     from its start; its close was decided at most ClearFor plus two gaps
//     after its end. [EpisodeParams.RecentSince] is the earliest end of
//     such an episode: the detector reloads the customer's episodes that
//     are open or ended since.
//   - SPIKE is a predicate over the latest 2*SpikeConfirm+3 readings, which
//     span at most 2*SpikeConfirm+2 gaps: those readings before the replay
//     only warm it up.

// RecentSince is the earliest end of an episode that may matter to a
// customer's state at a reading of time now.
func (p EpisodeParams) RecentSince(now time.Time) time.Time {
	return p.fullFrom(now).Add(-p.ClearFor - 2*p.SignalLossAfter)
}

func (p EpisodeParams) fullFrom(now time.Time) time.Time {
	return now.Add(-p.SustainFor - p.SignalLossAfter)
}

// RestoreWindow says which stored readings rebuild a customer's state at a
// reading of time now, given the starts of its episodes open or ended at or
// after RecentSince(now): the readings from warmFrom on, in the order their
// partition delivered them, those from fullFrom on through every rule.
func (p EpisodeParams) RestoreWindow(now time.Time, episodeStarts []time.Time) (warmFrom, fullFrom time.Time) {
	fullFrom = p.fullFrom(now)
	for _, s := range episodeStarts {
		if s.Before(fullFrom) {
			fullFrom = s
		}
	}
	return fullFrom.Add(-time.Duration(2*p.SpikeConfirm+2) * p.SignalLossAfter), fullFrom
}

// Reading is one heart-rate sample of a customer.
type Reading struct {
	EventID string
	Time    time.Time
	Rate    int
}

// Episode is one anomaly of the episode mode: from its first reading to its
// last, one row and two messages (opened, closed).
type Episode struct {
	CustomerID string
	Rule       string
	Severity   string
	// Threshold is the rate of SUSTAINED_*, the jump of SPIKE, and the
	// silence in seconds of SIGNAL_LOSS.
	Threshold int
	// Start is the episode's first reading: the first of the sustained run,
	// the jump of a SPIKE, the last reading before a SIGNAL_LOSS.
	Start Reading
	// OpenedAt is when, in event time, the rule's condition was met: the
	// reading that completed the run or confirmed the jump, or
	// Start+SignalLossAfter for SIGNAL_LOSS.
	OpenedAt time.Time
	// Opened is the reading that opened the episode (none for SIGNAL_LOSS).
	Opened Reading
	// Last is the latest reading that held the condition.
	Last Reading
	// Peak, Trough and Samples are over the readings that held the
	// condition (SIGNAL_LOSS: the last reading's rate, no samples).
	Peak, Trough, Samples int
	// Base is the rate before a SPIKE's jump.
	Base int
	// Closed episodes have End (the last holding reading's time, or for
	// SIGNAL_LOSS the first reading after the silence) and a CloseReason.
	Closed      bool
	End         time.Time
	CloseReason string
}

// ID is the episode's anomaly id: a UUIDv5 of customer, rule and the start
// reading's event id, the same however often or late it is computed.
func (e Episode) ID() string { return EpisodeID(e.CustomerID, e.Rule, e.Start.EventID) }

// Duration is from the first reading to the end, or to the latest holding
// reading while open.
func (e Episode) Duration() time.Duration {
	if e.Closed {
		return e.End.Sub(e.Start.Time)
	}
	return e.Last.Time.Sub(e.Start.Time)
}

// Delta is a SPIKE's jump: the start reading's rate minus the rate before.
func (e Episode) Delta() int { return e.Start.Rate - e.Base }

var episodeNamespace = uuid.MustParse("2b8f6f0e-4a8e-5d1c-9c57-6e0f3f1d2a44")

// EpisodeID is the anomaly id of the episode of rule for customer that
// started at reading startEventID.
func EpisodeID(customer, rule, startEventID string) string {
	return uuid.NewSHA1(episodeNamespace, []byte(customer+"/"+rule+"/"+startEventID)).String()
}

// ChangeKind says whether a change opens or closes an episode.
type ChangeKind int

// Change kinds.
const (
	Opened ChangeKind = iota + 1
	Closed
)

func (k ChangeKind) String() string {
	switch k {
	case Opened:
		return "open"
	case Closed:
		return "closed"
	}
	return "unknown"
}

// Change is an episode opening or closing; Episode is its state then.
type Change struct {
	Kind    ChangeKind
	Episode Episode
}

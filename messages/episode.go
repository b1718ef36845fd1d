package messages

import (
	"time"

	"github.com/google/uuid"
)

// Anomaly types (anomalies.anomaly_type, the anomaly_type of
// events.anomaly.v1). The per-event mode raises LOW_HEART_RATE,
// HIGH_HEART_RATE and SPIKE, one per reading; the episode mode raises
// SUSTAINED_HIGH, SUSTAINED_LOW, SPIKE (confirmed by the readings after
// the jump) and SIGNAL_LOSS, one per episode.
const (
	LowHeartRate  = "LOW_HEART_RATE"
	HighHeartRate = "HIGH_HEART_RATE"
	Spike         = "SPIKE"
	SustainedHigh = "SUSTAINED_HIGH"
	SustainedLow  = "SUSTAINED_LOW"
	SignalLoss    = "SIGNAL_LOSS"
)

// Severities. Low is SIGNAL_LOSS's: a technical alert, not a clinical one.
const (
	SeverityHigh   = "high"
	SeverityMedium = "medium"
	SeverityLow    = "low"
)

// Why an episode closed.
const (
	ClosedCleared        = "cleared"         // the condition released for ClearFor
	ClosedSettled        = "settled"         // SPIKE: its new level held for SustainFor
	ClosedSuperseded     = "superseded"      // a SUSTAINED condition of the other side was met
	ClosedSignalLoss     = "signal_loss"     // the readings stopped
	ClosedSignalRestored = "signal_restored" // SIGNAL_LOSS: readings came back
)

// Reading is one heart-rate sample of a customer. EventID is a UUID (the
// validation refuses any other); the episode engine keeps it as its 16
// bytes, so the readings of the episodes it returns carry its canonical
// lower-case form, the form storage returns too.
type Reading struct {
	EventID string
	Time    time.Time
	Rate    int
}

// Episode is one anomaly of the episode mode: from its first reading to its
// last, one row and its messages (opened, reclassified, closed).
type Episode struct {
	CustomerID string
	// Rule is the episode's rule now: a SPIKE whose side's SUSTAINED
	// condition was met while it was open has become that SUSTAINED
	// episode (Reclassified).
	Rule     string
	Severity string
	// OpenedAs is the rule the episode opened as, its identity; empty when
	// it is Rule.
	OpenedAs string
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
	// Reclassified is the reading at which a SPIKE became a SUSTAINED
	// episode (zero if it did not).
	Reclassified Reading
	// Closed episodes have End (the last holding reading's time, or for
	// SIGNAL_LOSS the first reading after the silence) and a CloseReason.
	Closed      bool
	End         time.Time
	CloseReason string
}

// ID is the episode's anomaly id: a UUIDv5 of customer, the rule it opened
// as and the start reading's event id, the same however often or late it
// is computed, and the same after a reclassification.
func (e Episode) ID() string { return EpisodeID(e.CustomerID, e.Identity(), e.Start.EventID) }

// Identity is the rule the episode opened as.
func (e Episode) Identity() string {
	if e.OpenedAs != "" {
		return e.OpenedAs
	}
	return e.Rule
}

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

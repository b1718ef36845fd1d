package config

import (
	"errors"
	"fmt"
	"time"

	"github.com/heartbeat/heartbeat/messages/rules"
)

// DetectionConfig chooses the detector's rules. DETECTION_MODE=episode, the
// default, alerts once per sustained episode, with the thresholds below and
// ANOMALY_SPIKE_DELTA; per_event keeps the per-reading
// LOW/HIGH/SPIKE (AnomalyConfig's thresholds).
type DetectionConfig struct {
	Mode string `env:"DETECTION_MODE, default=episode"`
	// Apple Watch's high-rate notification defaults to 120 bpm held for 10
	// minutes; its low-rate one offers 40 or 50.
	SustainedHigh int           `env:"ANOMALY_SUSTAINED_HIGH_THRESHOLD, default=120"`
	SustainedLow  int           `env:"ANOMALY_SUSTAINED_LOW_THRESHOLD, default=40"`
	SustainedFor  time.Duration `env:"ANOMALY_SUSTAINED_FOR, default=10m"`
	Hysteresis    int           `env:"ANOMALY_HYSTERESIS, default=5"`
	ClearFor      time.Duration `env:"ANOMALY_CLEAR_FOR, default=1m"`
	SpikeConfirm  int           `env:"ANOMALY_SPIKE_CONFIRM_READINGS, default=2"`
	SignalLoss    time.Duration `env:"ANOMALY_SIGNAL_LOSS_AFTER, default=5m"`
}

// EpisodeParams are the episode rules' parameters; the SPIKE delta is
// ANOMALY_SPIKE_DELTA, shared with the per-event mode.
func (d DetectionConfig) EpisodeParams(a AnomalyConfig) rules.EpisodeParams {
	return rules.EpisodeParams{
		SustainedHigh: d.SustainedHigh, SustainedLow: d.SustainedLow, SustainFor: d.SustainedFor,
		Hysteresis: d.Hysteresis, ClearFor: d.ClearFor,
		SpikeDelta: a.SpikeDelta, SpikeConfirm: d.SpikeConfirm, SignalLossAfter: d.SignalLoss,
	}
}

// Validate names each variable out of range and how to fix it: the
// episode mode's parameters when it is the mode chosen.
func (d DetectionConfig) Validate(a AnomalyConfig) error {
	switch d.Mode {
	case rules.ModePerEvent:
		return nil
	case rules.ModeEpisode:
		return d.ValidateEpisode(a)
	}
	return fmt.Errorf("DETECTION_MODE: %q is not one of %s, %s", d.Mode, rules.ModePerEvent, rules.ModeEpisode)
}

// ValidateEpisode checks the episode mode's parameters, whatever the mode.
func (d DetectionConfig) ValidateEpisode(a AnomalyConfig) error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
	}
	for _, t := range []struct {
		name string
		v    int
	}{{"ANOMALY_SUSTAINED_HIGH_THRESHOLD", d.SustainedHigh}, {"ANOMALY_SUSTAINED_LOW_THRESHOLD", d.SustainedLow}} {
		if t.v < 0 || t.v > maxRate {
			bad(t.name, "must be between 0 and %d bpm, got %d", maxRate, t.v)
		}
	}
	if d.Hysteresis < 0 || d.Hysteresis >= a.SpikeDelta {
		bad("ANOMALY_HYSTERESIS", "must be 0 or more and below ANOMALY_SPIKE_DELTA %d, got %d", a.SpikeDelta, d.Hysteresis)
	}
	// The thresholds and the band are bounded above, so the sums cannot
	// overflow.
	if d.SustainedLow <= maxRate && d.SustainedHigh <= maxRate && d.Hysteresis <= maxRate &&
		d.SustainedLow+d.Hysteresis >= d.SustainedHigh-d.Hysteresis {
		bad("ANOMALY_SUSTAINED_LOW_THRESHOLD", "%d plus ANOMALY_HYSTERESIS %d must stay below ANOMALY_SUSTAINED_HIGH_THRESHOLD %d minus it",
			d.SustainedLow, d.Hysteresis, d.SustainedHigh)
	}
	if d.SustainedFor <= 0 || d.SustainedFor > maxRuleDuration {
		bad("ANOMALY_SUSTAINED_FOR", "must be a positive duration (like 10m) up to %s, got %s", maxRuleDuration, d.SustainedFor)
	}
	if d.ClearFor < 0 || d.ClearFor > maxRuleDuration {
		bad("ANOMALY_CLEAR_FOR", "must be 0 (close at once) or a duration up to %s, got %s", maxRuleDuration, d.ClearFor)
	}
	if d.SpikeConfirm < 0 || d.SpikeConfirm > 20 {
		bad("ANOMALY_SPIKE_CONFIRM_READINGS", "must be between 0 and 20, got %d", d.SpikeConfirm)
	}
	if d.SignalLoss <= 0 || d.SignalLoss > maxRuleDuration {
		bad("ANOMALY_SIGNAL_LOSS_AFTER", "must be a positive duration (like 5m) up to %s, got %s", maxRuleDuration, d.SignalLoss)
	}
	return errors.Join(errs...)
}

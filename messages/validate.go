package messages

import (
	"errors"
	"fmt"
	"time"
)

// Class says why an event was refused: its shape, or its values.
type Class string

const (
	// ClassSchema: not JSON, not an object, a field missing or of the wrong type.
	ClassSchema Class = "schema"
	// ClassDomain: well formed, but a value outside what a sensor can report.
	ClassDomain Class = "domain"
)

// ValidationError is a refusal of one event. It is final: the event goes to
// the invalid topic and is never retried.
type ValidationError struct {
	Class  Class
	Field  string
	Reason string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("%s: %s %s", e.Class, e.Field, e.Reason)
}

// AsValidationError reports whether err is, or wraps, a *ValidationError.
func AsValidationError(err error) (*ValidationError, bool) {
	var v *ValidationError
	ok := errors.As(err, &v)
	return v, ok
}

// Limits are the domain bounds of a valid reading.
type Limits struct {
	MinHeartRate int
	MaxHeartRate int
	// MaxClockSkew is how far in the future a timestamp may lie.
	MaxClockSkew time.Duration
	// MaxEventAge is how old a timestamp may be.
	MaxEventAge time.Duration
}

// DefaultLimits are the limits used when none are configured: outside
// 30..220 bpm a reading is a sensor fault, not physiology.
func DefaultLimits() Limits {
	return Limits{MinHeartRate: 30, MaxHeartRate: 220, MaxClockSkew: 5 * time.Minute, MaxEventAge: 24 * time.Hour}
}

// Validate is the one validation both handlers use: it decodes payload and
// checks the reading against the limits at time now.
func (l Limits) Validate(payload []byte, now time.Time) (Heartbeat, error) {
	h, err := Decode(payload)
	if err != nil {
		return h, err
	}
	return h, l.Check(h, now)
}

// Check applies the domain rules to a decoded reading.
func (l Limits) Check(h Heartbeat, now time.Time) error {
	if h.HeartRate < l.MinHeartRate || h.HeartRate > l.MaxHeartRate {
		return &ValidationError{Class: ClassDomain, Field: "heart_rate",
			Reason: fmt.Sprintf("%d is outside [%d, %d] bpm", h.HeartRate, l.MinHeartRate, l.MaxHeartRate)}
	}
	if h.Timestamp.After(now.Add(l.MaxClockSkew)) {
		return &ValidationError{Class: ClassDomain, Field: "timestamp",
			Reason: fmt.Sprintf("%s is more than %s in the future", h.Timestamp.Format(time.RFC3339Nano), l.MaxClockSkew)}
	}
	if h.Timestamp.Before(now.Add(-l.MaxEventAge)) {
		return &ValidationError{Class: ClassDomain, Field: "timestamp",
			Reason: fmt.Sprintf("%s is older than %s", h.Timestamp.Format(time.RFC3339Nano), l.MaxEventAge)}
	}
	return nil
}

package messages

import (
	"encoding/json"
	"time"
)

// MaxCustomerIDLen is the longest customer id accepted, in characters; the
// heartbeat_events.customer_id column is varchar(64).
const MaxCustomerIDLen = 64

// Heartbeat is one heart-rate reading, as published on events.raw.v1.
type Heartbeat struct {
	EventID    string    `json:"event_id"`
	CustomerID string    `json:"customer_id"`
	Timestamp  time.Time `json:"timestamp"`
	HeartRate  int       `json:"heart_rate"`
}

// Marshal encodes h in the wire format of events.raw.v1.
func (h Heartbeat) Marshal() ([]byte, error) {
	return json.Marshal(struct {
		EventID    string `json:"event_id"`
		CustomerID string `json:"customer_id"`
		Timestamp  string `json:"timestamp"`
		HeartRate  int    `json:"heart_rate"`
	}{h.EventID, h.CustomerID, h.Timestamp.UTC().Format(TimestampLayout), h.HeartRate})
}

// TimestampLayout is how timestamps are written: RFC 3339, UTC, milliseconds.
const TimestampLayout = "2006-01-02T15:04:05.000Z07:00"

// Decode parses payload as a heartbeat event and checks its schema: a JSON
// object with event_id (a UUID), customer_id (1..64 printable characters),
// timestamp (RFC 3339 with a zone) and heart_rate (an integer). Unknown
// fields are ignored; a field given twice is refused, since JSON parsers
// disagree about which copy wins. Every failure is a *ValidationError of
// class [ClassSchema], or [ClassDomain] for an integer too large to hold.
//
// Both handlers decode every event, so Decode is on the hot path: a
// hand-written scanner decodes the everyday event in a few hundred
// nanoseconds and leaves every input it does not decide to the original
// encoding/json implementation, so that each answer is the original's.
func Decode(payload []byte) (Heartbeat, error) {
	if h, err := decodeFast(payload); err != errUndecided {
		return h, err
	}
	return decodeSlow(payload)
}

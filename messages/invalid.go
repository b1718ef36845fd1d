package messages

import (
	"encoding/base64"
	"encoding/json"
	"time"
	"unicode/utf8"
)

// MaxEnvelopePayload is the most of an original payload an invalid envelope
// carries. Larger payloads are cut, so the envelope stays under the broker's
// message size limit; the source coordinates still point at the whole record.
const MaxEnvelopePayload = 256 << 10

// InvalidEvent is the envelope published on events.invalid.v1.
type InvalidEvent struct {
	// Payload is the original payload: as text when it is valid UTF-8,
	// otherwise base64 (PayloadEncoding says which). Never re-encoded JSON.
	Payload          string    `json:"payload"`
	PayloadEncoding  string    `json:"payload_encoding"`
	PayloadBytes     int       `json:"payload_bytes"`
	PayloadTruncated bool      `json:"payload_truncated"`
	Class            Class     `json:"class"`
	Field            string    `json:"field"`
	Reason           string    `json:"reason"`
	SourceTopic      string    `json:"source_topic"`
	SourcePartition  int32     `json:"source_partition"`
	SourceOffset     int64     `json:"source_offset"`
	RejectedAt       time.Time `json:"rejected_at"`
}

// Source locates a record in Kafka, and says which delivery brought it.
type Source struct {
	Topic     string
	Partition int32
	Offset    int64
	// Assignment names the assignment of the partition to this process
	// that delivered the record (0: unknown, a message of another
	// pub/sub). Within one assignment a partition's records come in offset
	// order, none skipped; state built from one assignment's records
	// (the detectors') is only good for that assignment: between two, the
	// partition may have been another consumer's, which went on without
	// this one.
	Assignment uint64
}

// NewInvalidEvent builds the envelope for a refused payload.
func NewInvalidEvent(payload []byte, verr *ValidationError, src Source, rejectedAt time.Time) InvalidEvent {
	e := InvalidEvent{
		PayloadBytes:    len(payload),
		Class:           verr.Class,
		Field:           verr.Field,
		Reason:          verr.Reason,
		SourceTopic:     src.Topic,
		SourcePartition: src.Partition,
		SourceOffset:    src.Offset,
		RejectedAt:      rejectedAt.UTC(),
	}
	if len(payload) > MaxEnvelopePayload {
		payload = payload[:MaxEnvelopePayload]
		e.PayloadTruncated = true
	}
	if utf8.Valid(payload) || e.PayloadTruncated && utf8.Valid(trimPartialRune(payload)) {
		e.Payload, e.PayloadEncoding = string(trimPartialRune(payload)), "text"
	} else {
		e.Payload, e.PayloadEncoding = base64.StdEncoding.EncodeToString(payload), "base64"
	}
	return e
}

// OriginalPayload returns the payload bytes the envelope carries.
func (e InvalidEvent) OriginalPayload() ([]byte, error) {
	if e.PayloadEncoding == "base64" {
		return base64.StdEncoding.DecodeString(e.Payload)
	}
	return []byte(e.Payload), nil
}

// Marshal encodes the envelope as JSON.
func (e InvalidEvent) Marshal() ([]byte, error) { return json.Marshal(e) }

// trimPartialRune drops a multi-byte character cut at the end of p.
func trimPartialRune(p []byte) []byte {
	for i := 0; i < utf8.UTFMax && len(p) > 0; i++ {
		if r, size := utf8.DecodeLastRune(p); r != utf8.RuneError || size != 1 {
			return p
		}
		p = p[:len(p)-1]
	}
	return p
}

package messages_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/messages"
)

// maxSeed keeps the seed corpus small enough for the fuzzer to mutate
// quickly; the large cases run in TestValidate.
const maxSeed = 4 << 10

func FuzzValidate(f *testing.F) {
	for _, tc := range validateCases() {
		if len(tc.payload) <= maxSeed {
			f.Add(tc.payload)
		}
	}
	limits := messages.DefaultLimits()
	f.Fuzz(func(t *testing.T, payload []byte) {
		h, err := limits.Validate(payload, testNow)
		if err != nil {
			var verr *messages.ValidationError
			require.ErrorAs(t, err, &verr)
			require.Contains(t, []messages.Class{messages.ClassSchema, messages.ClassDomain}, verr.Class)
			require.NotEmpty(t, verr.Field)
			require.NotEmpty(t, verr.Reason)
			require.True(t, utf8.ValidString(verr.Reason), "the reason is readable text: %q", verr.Reason)
			return
		}
		require.True(t, utf8.ValidString(h.CustomerID))
		require.LessOrEqual(t, utf8.RuneCountInString(h.CustomerID), messages.MaxCustomerIDLen)

		b, err := h.Marshal()
		require.NoError(t, err)
		again, err := limits.Validate(b, testNow)
		require.NoError(t, err, "re-marshalled: %s", b)
		require.Equal(t, h.EventID, again.EventID)
		require.Equal(t, h.CustomerID, again.CustomerID)
		require.Equal(t, h.HeartRate, again.HeartRate)
		// The wire format keeps milliseconds (TimestampLayout).
		require.True(t, again.Timestamp.Equal(h.Timestamp.Truncate(time.Millisecond)),
			"timestamp %s came back as %s", h.Timestamp, again.Timestamp)
	})
}

func FuzzInvalidEnvelope(f *testing.F) {
	for _, tc := range validateCases() {
		if len(tc.payload) <= maxSeed {
			f.Add(tc.payload, tc.reason)
		}
	}
	f.Add([]byte("\xff\xfe\x00"), "reason with \xff invalid UTF-8")
	f.Add([]byte("🫀"), "")
	f.Fuzz(func(t *testing.T, payload []byte, reason string) {
		verr := &messages.ValidationError{Class: messages.ClassSchema, Field: "payload", Reason: reason}
		e := messages.NewInvalidEvent(payload, verr, testSource, testNow)
		b, err := e.Marshal()
		require.NoError(t, err)
		require.True(t, json.Valid(b), "the envelope is always JSON: %q", b)

		var back messages.InvalidEvent
		require.NoError(t, json.Unmarshal(b, &back))
		got, err := back.OriginalPayload()
		require.NoError(t, err)
		require.Equal(t, len(payload), back.PayloadBytes)
		require.Equal(t, len(payload) > messages.MaxEnvelopePayload, back.PayloadTruncated)
		if back.PayloadTruncated {
			require.True(t, bytes.HasPrefix(payload, got))
			require.GreaterOrEqual(t, len(got), messages.MaxEnvelopePayload-utf8.UTFMax)
		} else {
			require.True(t, bytes.Equal(payload, got), "want %q, got %q", payload, got)
		}
		switch back.PayloadEncoding {
		case "text":
			require.True(t, utf8.Valid(got))
		case "base64":
			require.False(t, utf8.Valid(payload) && !back.PayloadTruncated, "valid UTF-8 is carried as text")
		default:
			t.Fatalf("payload_encoding %q", back.PayloadEncoding)
		}
		if utf8.ValidString(reason) {
			require.Equal(t, reason, back.Reason)
		}
	})
}

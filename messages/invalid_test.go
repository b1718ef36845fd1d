package messages_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/messages"
)

var testSource = messages.Source{Topic: "events.raw.v1", Partition: 17, Offset: 1234567890123}

func schemaError() *messages.ValidationError {
	return &messages.ValidationError{Class: messages.ClassSchema, Field: "payload", Reason: "is not valid JSON"}
}

// roundTrip marshals e and reads it back the way a consumer of
// events.invalid.v1 would.
func roundTrip(t *testing.T, e messages.InvalidEvent) (messages.InvalidEvent, []byte) {
	t.Helper()
	b, err := e.Marshal()
	require.NoError(t, err)
	require.True(t, json.Valid(b), "the envelope is JSON")
	var back messages.InvalidEvent
	require.NoError(t, json.Unmarshal(b, &back))
	return back, b
}

func TestInvalidEventKeepsTextPayload(t *testing.T) {
	tests := []struct {
		name    string
		payload string
	}{
		{name: "empty", payload: ""},
		{name: "not JSON", payload: "heart_rate=72;customer=cust_00042"},
		{name: "JSON kept as written, not re-encoded", payload: "{ \"heart_rate\" :  72.50,\n\t\"customer_id\":\"cust\\u00e9\\\"x\\\\\" , \"z\":1e2 }"},
		{name: "HTML-sensitive characters", payload: `{"note":"<script>&amp;</script>"}`},
		{name: "control characters", payload: "a\x00b\x01c\td\ne\rf\x7f"},
		{name: "multibyte", payload: "héllo ❤ 🫀 \u2028 \u2029 \ufffd"},
		{name: "lone backslash and quote", payload: `\"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := messages.NewInvalidEvent([]byte(tc.payload), schemaError(), testSource, testNow)
			require.Equal(t, tc.payload, e.Payload)
			require.Equal(t, "text", e.PayloadEncoding)
			require.Equal(t, len(tc.payload), e.PayloadBytes)
			require.False(t, e.PayloadTruncated)

			back, raw := roundTrip(t, e)
			require.Equal(t, tc.payload, back.Payload)
			got, err := back.OriginalPayload()
			require.NoError(t, err)
			require.Equal(t, []byte(tc.payload), got)

			var fields map[string]any
			require.NoError(t, json.Unmarshal(raw, &fields))
			require.Equal(t, tc.payload, fields["payload"], "a consumer reads the payload as a plain JSON string")
		})
	}
}

func TestInvalidEventBase64ForBinary(t *testing.T) {
	tests := []struct {
		name    string
		payload []byte
	}{
		{name: "bytes 0xff 0xfe", payload: []byte{0xff, 0xfe, 0x00, 0x01}},
		{name: "invalid UTF-8 inside JSON", payload: []byte("{\"customer_id\":\"\xc3\x28\"}")},
		{name: "lone continuation byte", payload: []byte("abc\x80")},
		{name: "partial rune at the end, not truncated", payload: []byte("abc\xe2\x9d")},
		{name: "surrogate encoded in UTF-8", payload: []byte("\xed\xa0\x80")},
		{name: "every byte value", payload: func() []byte {
			b := make([]byte, 256)
			for i := range b {
				b[i] = byte(i)
			}
			return b
		}()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := messages.NewInvalidEvent(tc.payload, schemaError(), testSource, testNow)
			require.Equal(t, "base64", e.PayloadEncoding)
			require.Equal(t, base64.StdEncoding.EncodeToString(tc.payload), e.Payload)
			require.Equal(t, len(tc.payload), e.PayloadBytes)
			require.False(t, e.PayloadTruncated)

			back, _ := roundTrip(t, e)
			got, err := back.OriginalPayload()
			require.NoError(t, err)
			require.Equal(t, tc.payload, got)
		})
	}
}

func TestInvalidEventTruncation(t *testing.T) {
	const limit = messages.MaxEnvelopePayload
	ascii := func(n int) []byte { return bytes.Repeat([]byte{'a'}, n) }
	tests := []struct {
		name      string
		payload   []byte
		truncated bool
		encoding  string
		wantLen   int // length of the carried payload
	}{
		{name: "exactly the limit", payload: ascii(limit), encoding: "text", wantLen: limit},
		{name: "one byte over", payload: ascii(limit + 1), truncated: true, encoding: "text", wantLen: limit},
		{name: "1 MiB", payload: ascii(1 << 20), truncated: true, encoding: "text", wantLen: limit},
		{name: "2-byte rune across the cut", payload: append(ascii(limit-1), []byte("éé")...), truncated: true, encoding: "text", wantLen: limit - 1},
		{name: "3-byte rune across the cut, 1 byte in", payload: append(ascii(limit-1), []byte("❤❤")...), truncated: true, encoding: "text", wantLen: limit - 1},
		{name: "3-byte rune across the cut, 2 bytes in", payload: append(ascii(limit-2), []byte("❤❤")...), truncated: true, encoding: "text", wantLen: limit - 2},
		{name: "4-byte rune across the cut, 3 bytes in", payload: append(ascii(limit-3), []byte("🫀🫀")...), truncated: true, encoding: "text", wantLen: limit - 3},
		{name: "rune ending exactly at the cut", payload: append(ascii(limit-4), []byte("🫀🫀")...), truncated: true, encoding: "text", wantLen: limit},
		{name: "all multibyte", payload: []byte(strings.Repeat("🫀", limit)), truncated: true, encoding: "text", wantLen: limit},
		{name: "binary over the limit", payload: bytes.Repeat([]byte{0xff}, limit+10), truncated: true, encoding: "base64", wantLen: limit},
		{name: "binary early, cut later", payload: append([]byte{0xff}, ascii(limit)...), truncated: true, encoding: "base64", wantLen: limit},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := messages.NewInvalidEvent(tc.payload, schemaError(), testSource, testNow)
			require.Equal(t, tc.truncated, e.PayloadTruncated)
			require.Equal(t, tc.encoding, e.PayloadEncoding)
			require.Equal(t, len(tc.payload), e.PayloadBytes, "the size is the original's")

			back, raw := roundTrip(t, e)
			got, err := back.OriginalPayload()
			require.NoError(t, err)
			require.Len(t, got, tc.wantLen)
			require.True(t, bytes.HasPrefix(tc.payload, got), "the envelope carries a prefix of the original")
			if tc.encoding == "text" {
				require.True(t, utf8.Valid(got), "the cut never splits a character")
			}
			require.Less(t, len(raw), 2*limit, "the envelope stays bounded")
		})
	}
}

func TestInvalidEventJSONFields(t *testing.T) {
	rejectedAt := time.Date(2026, 11, 25, 12, 0, 1, 500e6, time.FixedZone("CEST", 2*3600))
	verr := &messages.ValidationError{Class: messages.ClassDomain, Field: "heart_rate", Reason: "221 is outside [30, 220] bpm"}
	payload := event(kv{"heart_rate", "221"})

	raw, err := messages.NewInvalidEvent(payload, verr, testSource, rejectedAt).Marshal()
	require.NoError(t, err)
	var fields map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(raw, &fields))
	require.ElementsMatch(t, []string{
		"payload", "payload_encoding", "payload_bytes", "payload_truncated", "class", "field", "reason",
		"source_topic", "source_partition", "source_offset", "rejected_at",
	}, slices.Collect(maps.Keys(fields)))

	want := map[string]string{
		"payload":           string(mustJSON(t, string(payload))),
		"payload_encoding":  `"text"`,
		"payload_bytes":     string(mustJSON(t, len(payload))),
		"payload_truncated": `false`,
		"class":             `"domain"`,
		"field":             `"heart_rate"`,
		"reason":            `"221 is outside [30, 220] bpm"`,
		"source_topic":      `"events.raw.v1"`,
		"source_partition":  `17`,
		"source_offset":     `1234567890123`,
		"rejected_at":       `"2026-11-25T10:00:01.5Z"`,
	}
	for k, v := range want {
		require.JSONEq(t, v, string(fields[k]), k)
	}
}

func TestInvalidEventCarriesEveryClass(t *testing.T) {
	for _, tc := range validateCases() {
		if tc.class == "" {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.validate()
			verr, ok := messages.AsValidationError(err)
			require.True(t, ok)
			back, _ := roundTrip(t, messages.NewInvalidEvent(tc.payload, verr, testSource, testNow))
			require.Equal(t, tc.class, back.Class)
			require.Equal(t, tc.field, back.Field)
			require.Equal(t, verr.Reason, back.Reason)
			require.Equal(t, testSource, messages.Source{Topic: back.SourceTopic, Partition: back.SourcePartition, Offset: back.SourceOffset})
			require.True(t, back.RejectedAt.Equal(testNow))
			got, err := back.OriginalPayload()
			require.NoError(t, err)
			if !back.PayloadTruncated {
				require.True(t, bytes.Equal(tc.payload, got), "the original payload, byte for byte")
			}
		})
	}
}

func TestInvalidEventOriginalPayloadRefusesBadBase64(t *testing.T) {
	_, err := messages.InvalidEvent{Payload: "not base64!", PayloadEncoding: "base64"}.OriginalPayload()
	require.Error(t, err)
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

func TestAnomalyID(t *testing.T) {
	const other = "5b0e1d2c-3f4a-4b5c-9d6e-7f8091a2b3c4"
	rules := []string{"LOW_HEART_RATE", "HIGH_HEART_RATE", "SPIKE"}

	seen := map[string]string{}
	for _, eventID := range []string{validEventID, other} {
		for _, rule := range rules {
			id := messages.AnomalyID(eventID, rule)
			require.Equal(t, id, messages.AnomalyID(eventID, rule), "deterministic")
			u, err := uuid.Parse(id)
			require.NoError(t, err)
			require.Equal(t, uuid.Version(5), u.Version())
			require.Equal(t, u.String(), id, "canonical form")
			prev, dup := seen[id]
			require.False(t, dup, "%s/%s collides with %s", eventID, rule, prev)
			seen[id] = eventID + "/" + rule
		}
	}
	// A fixed value: a change here changes every stored anomaly id, and
	// redelivered events would raise their anomalies a second time.
	require.Equal(t, "0a1ae7b5-0893-5606-adaf-88c7e7ad17f6", messages.AnomalyID(validEventID, "SPIKE"))
	require.NotEqual(t, messages.AnomalyID(validEventID, "SPIKE"), messages.AnomalyID(validEventID, "spike"))
}

package messages_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/messages"
)

// requireSameAsReference checks that Decode returns exactly what the
// reference decoder returns for payload: the same Heartbeat (deeply equal,
// time zone included) and the same *ValidationError, or no error.
func requireSameAsReference(t *testing.T, payload []byte) {
	t.Helper()
	wantH, wantErr := messages.DecodeReference(payload)
	gotH, gotErr := messages.Decode(payload)
	require.Equal(t, wantErr, gotErr, "payload %q", payload)
	if wantErr != nil {
		require.Equal(t, wantErr.Error(), gotErr.Error(), "payload %q", payload)
	}
	require.Equal(t, wantH, gotH, "payload %q", payload)
}

// referenceEdgeCases are payloads at the edges of what the fast decoder
// decides itself, beyond the validation table.
func referenceEdgeCases() [][]byte {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	deepObj := func(n int) string { return strings.Repeat(`{"a":`, n) + "1" + strings.Repeat("}", n) }
	payloads := []string{
		// Escapes and non-ASCII in keys and values.
		`{"event\u005fid":"` + validEventID + `","customer_id":"cust_00042","timestamp":"2026-11-25T09:59:00.123Z","heart_rate":72}`,
		`{"event_id":"` + validEventID + `","customer_id":"cust\/42","timestamp":"2026-11-25T09:59:00.123Z","heart_rate":72}`,
		`{"event_id":"` + validEventID + `","customer_id":"cust\ud83e\udec0","timestamp":"2026-11-25T09:59:00.123Z","heart_rate":72}`,
		`{"event_id":"` + validEventID + `","customer_id":"cust\udec0\ud83e","timestamp":"2026-11-25T09:59:00.123Z","heart_rate":72}`,
		`{"event_id":"` + validEventID + `","customer_id":"Zoë","timestamp":"2026-11-25T09:59:00.123Z","heart_rate":72}`,
		"{\"event_id\":\"" + validEventID + "\",\"customer_id\":\"a\xed\xa0\x80\",\"timestamp\":\"2026-11-25T09:59:00.123Z\",\"heart_rate\":72}",
		"{\"event_\xffid\":1,\"event_id\":\"" + validEventID + "\",\"customer_id\":\"c\",\"timestamp\":\"2026-11-25T09:59:00.123Z\",\"heart_rate\":72}",
		`{"event_id":"\u0030192f7c4-1a2b-4c3d-8e4f-0123456789ab","customer_id":"c","timestamp":"2026-11-25T09:59:00.123\u005a","heart_rate":72}`,
		`{"event_id":"` + validEventID + `","customer_id":"   ","timestamp":"2026-11-25T09:59:00.123Z","heart_rate":72}`,
		`{"event_id":"` + validEventID + `","customer_id":"\u00a0","timestamp":"2026-11-25T09:59:00.123Z","heart_rate":72}`,
		// Timestamps the fast path leaves to time.Parse, or must refuse.
		`{"event_id":"` + validEventID + `","customer_id":"c","timestamp":"2026-11-25t09:59:00.123z","heart_rate":72}`,
		`{"event_id":"` + validEventID + `","customer_id":"c","timestamp":"2026-11-25T09:59:00.1234567891Z","heart_rate":72}`,
		`{"event_id":"` + validEventID + `","customer_id":"c","timestamp":"2026-11-25T09:59:00.Z","heart_rate":72}`,
		`{"event_id":"` + validEventID + `","customer_id":"c","timestamp":"2024-02-29T09:59:00Z","heart_rate":72}`,
		`{"event_id":"` + validEventID + `","customer_id":"c","timestamp":"2026-02-29T09:59:00Z","heart_rate":72}`,
		`{"event_id":"` + validEventID + `","customer_id":"c","timestamp":"2026-11-25T09:59:60Z","heart_rate":72}`,
		`{"event_id":"` + validEventID + `","customer_id":"c","timestamp":"2026-11-25T09:59:00+05:45","heart_rate":72}`,
		`{"event_id":"` + validEventID + `","customer_id":"c","timestamp":"2026-11-25T09:59:00-00:00","heart_rate":72}`,
		`{"event_id":"` + validEventID + `","customer_id":"c","timestamp":"+026-11-25T09:59:00Z","heart_rate":72}`,
		// Numbers.
		`{"event_id":"` + validEventID + `","customer_id":"c","timestamp":"2026-11-25T09:59:00Z","heart_rate":-0}`,
		`{"event_id":"` + validEventID + `","customer_id":"c","timestamp":"2026-11-25T09:59:00Z","heart_rate":999999999}`,
		`{"event_id":"` + validEventID + `","customer_id":"c","timestamp":"2026-11-25T09:59:00Z","heart_rate":-2147483648}`,
		`{"event_id":"` + validEventID + `","customer_id":"c","timestamp":"2026-11-25T09:59:00Z","heart_rate":1.5e3,"x":-0.0E+1}`,
		// Nesting around the scanner's own depth limit, and a partial
		// Heartbeat returned with a later field's error.
		string(event(kv{"deep", deep(63)})),
		string(event(kv{"deep", deep(64)})),
		string(event(kv{"deep", deepObj(63)})),
		string(event(kv{"deep", deepObj(64)})),
		string(event(kv{"deep", deep(9999)})),
		string(event(kv{"deep", deep(10000)})),
		string(event(kv{"deep", `[1,"a",{},[],{"b":[true,false,null]}]`})),
		`{"event_id":"` + validEventID + `","heart_rate":"x"}`,
		`{"event_id":"` + validEventID + `","event_id":"` + validEventID + `","customer_id":1}`,
		// Whitespace that bytes.TrimSpace knows and JSON does not.
		"\v", "\u0085", "\u00a0{}", " \f{}",
		"{} ", "{ }", "{\"a\":1,}", "{,}", `{"a" 1}`, `{"a":1 "b":2}`, "{\"a\":\"\t\"}",
		// Syntax errors the fast path answers itself, and top-level values
		// that are JSON but not objects, which it leaves to the reference.
		`"abc"`, `"abc" x`, `[1,2`, `[1,2]`, deep(70), "[" + deep(70), ` -1.5e+3 `, `-`, `tru`, `nul`, `1.`, `1e`, `01`,
		`{"a":01}`, `{"a":"\u12"}`, `{"a":"\x"}`, `{"a":"\`, `{"a":[1,]}`, `{"a":{"b"}}`, `{"a":-}`, `{"a":tRue}`,
	}
	out := make([][]byte, len(payloads))
	for i, p := range payloads {
		out[i] = []byte(p)
	}
	return out
}

func TestDecodeMatchesReference(t *testing.T) {
	for _, tc := range validateCases() {
		t.Run(tc.name, func(t *testing.T) { requireSameAsReference(t, tc.payload) })
	}
	for _, p := range referenceEdgeCases() {
		requireSameAsReference(t, p)
	}
}

// FuzzDecodeMatchesReference holds Decode to the reference decoder on any
// input: the fast path must decide exactly as encoding/json would.
func FuzzDecodeMatchesReference(f *testing.F) {
	for _, tc := range validateCases() {
		if len(tc.payload) <= maxSeed {
			f.Add(tc.payload)
		}
	}
	for _, p := range referenceEdgeCases() {
		if len(p) <= maxSeed {
			f.Add(p)
		}
	}
	f.Fuzz(requireSameAsReference)
}

// BenchmarkDecode compares Decode with the reference decoder in one run:
// an everyday event, which the fast path decodes itself; one whose
// customer_id has an escape, which it hands to the reference's setField;
// and a payload that is not JSON, which it hands to the reference whole.
func BenchmarkDecode(b *testing.B) {
	payloads := []struct {
		name    string
		payload []byte
	}{
		{name: "typical", payload: event()},
		{name: "escaped customer_id", payload: event(kv{"customer_id", `"cust\u005f00042"`})},
		{name: "not JSON", payload: []byte("heart_rate=72;customer=cust_00042")},
	}
	decoders := []struct {
		name   string
		decode func([]byte) (messages.Heartbeat, error)
	}{
		{name: "Decode", decode: messages.Decode},
		{name: "reference", decode: messages.DecodeReference},
	}
	for _, p := range payloads {
		for _, d := range decoders {
			b.Run(p.name+"/"+d.name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(p.payload)))
				for b.Loop() {
					_, _ = d.decode(p.payload)
				}
			})
		}
	}
}

package messages_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/messages"
)

// testNow is the fixed "now" every validation test runs at; it sits on a
// millisecond so that boundaries a millisecond apart are exact.
var testNow = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

const validEventID = "0192f7c4-1a2b-4c3d-8e4f-0123456789ab"

// kv is one top-level member of a test payload, its value as raw JSON.
type kv struct{ key, raw string }

var baseFields = []kv{
	{"event_id", `"` + validEventID + `"`},
	{"customer_id", `"cust_00042"`},
	{"timestamp", `"2026-11-25T09:59:00.123Z"`},
	{"heart_rate", `72`},
}

// event builds a payload from the valid base event: a member of changes
// replaces the base member of that key (an empty raw deletes it); members
// with new keys are appended, so a repeated key is appended twice.
func event(changes ...kv) []byte {
	members := append([]kv(nil), baseFields...)
	for _, c := range changes {
		i := slices.IndexFunc(baseFields, func(m kv) bool { return m.key == c.key })
		if i < 0 {
			members = append(members, c)
			continue
		}
		members[i].raw = c.raw
	}
	var b strings.Builder
	b.WriteByte('{')
	for _, m := range members {
		if m.raw == "" {
			continue
		}
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		b.WriteString(`"` + m.key + `":` + m.raw)
	}
	b.WriteByte('}')
	return []byte(b.String())
}

// duplicate returns the base event with key given a second time.
func duplicate(key, raw string) []byte {
	p := event()
	return append(p[:len(p)-1], []byte(`,"`+key+`":`+raw+`}`)...)
}

func jsonTime(t time.Time) string { return `"` + t.Format(time.RFC3339Nano) + `"` }

func quote(s string) string { return `"` + s + `"` }

type validateCase struct {
	name    string
	payload []byte
	limits  *messages.Limits // nil: DefaultLimits
	// class is empty when the payload is accepted.
	class  messages.Class
	field  string
	reason string // a fragment the reason must hold
	want   *messages.Heartbeat
}

func (c validateCase) validate() (messages.Heartbeat, error) {
	l := messages.DefaultLimits()
	if c.limits != nil {
		l = *c.limits
	}
	return l.Validate(c.payload, testNow)
}

func validateCases() []validateCase {
	custom := messages.Limits{MinHeartRate: 45, MaxHeartRate: 185, MaxClockSkew: 5 * time.Minute, MaxEventAge: 24 * time.Hour}
	schema, domain := messages.ClassSchema, messages.ClassDomain
	base := messages.Heartbeat{EventID: validEventID, CustomerID: "cust_00042",
		Timestamp: time.Date(2026, 11, 25, 9, 59, 0, 123e6, time.UTC), HeartRate: 72}
	with := func(f func(*messages.Heartbeat)) *messages.Heartbeat {
		h := base
		f(&h)
		return &h
	}
	rate := func(n int) *messages.Heartbeat { return with(func(h *messages.Heartbeat) { h.HeartRate = n }) }
	at := func(t time.Time) *messages.Heartbeat { return with(func(h *messages.Heartbeat) { h.Timestamp = t }) }

	cases := []validateCase{
		// Not an object at all.
		{name: "empty payload", payload: []byte{}, class: schema, field: "payload", reason: "empty"},
		{name: "nil payload", payload: nil, class: schema, field: "payload", reason: "empty"},
		{name: "whitespace only", payload: []byte(" \t\r\n "), class: schema, field: "payload", reason: "empty"},
		{name: "not JSON", payload: []byte("heart_rate=72;customer=cust_00042"), class: schema, field: "payload", reason: "not valid JSON"},
		{name: "truncated JSON", payload: event()[:60], class: schema, field: "payload", reason: "not valid JSON"},
		{name: "truncated after colon", payload: []byte(`{"event_id":"` + validEventID + `","heart_rate":`), class: schema, field: "payload", reason: "not valid JSON"},
		{name: "binary bytes", payload: []byte{0x00, 0x01, 0xff, 0xfe, 0x7b, 0x80}, class: schema, field: "payload", reason: "not valid JSON"},
		{name: "byte order mark", payload: append([]byte("\xef\xbb\xbf"), event()...), class: schema, field: "payload", reason: "not valid JSON"},
		{name: "top-level array", payload: []byte(`[` + string(event()) + `]`), class: schema, field: "payload", reason: "array"},
		{name: "top-level string", payload: []byte(`"hello"`), class: schema, field: "payload", reason: "string"},
		{name: "top-level number", payload: []byte(`72`), class: schema, field: "payload", reason: "number"},
		{name: "top-level null", payload: []byte(`null`), class: schema, field: "payload", reason: "null"},
		{name: "top-level bool", payload: []byte(`true`), class: schema, field: "payload", reason: "boolean"},
		{name: "empty object", payload: []byte(`{}`), class: schema, field: "event_id", reason: "missing"},

		// Missing, null and mistyped fields.
		{name: "missing event_id", payload: event(kv{"event_id", ""}), class: schema, field: "event_id", reason: "missing"},
		{name: "missing customer_id", payload: event(kv{"customer_id", ""}), class: schema, field: "customer_id", reason: "missing"},
		{name: "missing timestamp", payload: event(kv{"timestamp", ""}), class: schema, field: "timestamp", reason: "missing"},
		{name: "missing heart_rate", payload: event(kv{"heart_rate", ""}), class: schema, field: "heart_rate", reason: "missing"},
		{name: "null event_id", payload: event(kv{"event_id", "null"}), class: schema, field: "event_id", reason: "null"},
		{name: "null customer_id", payload: event(kv{"customer_id", "null"}), class: schema, field: "customer_id", reason: "null"},
		{name: "null timestamp", payload: event(kv{"timestamp", "null"}), class: schema, field: "timestamp", reason: "null"},
		{name: "null heart_rate", payload: event(kv{"heart_rate", "null"}), class: schema, field: "heart_rate", reason: "null"},
		{name: "event_id a number", payload: event(kv{"event_id", "123"}), class: schema, field: "event_id", reason: "must be a string, got a number"},
		{name: "event_id a bool", payload: event(kv{"event_id", "true"}), class: schema, field: "event_id", reason: "must be a string, got a boolean"},
		{name: "customer_id an object", payload: event(kv{"customer_id", `{"id":"cust_00042"}`}), class: schema, field: "customer_id", reason: "must be a string, got an object"},
		{name: "customer_id an array", payload: event(kv{"customer_id", `["cust_00042"]`}), class: schema, field: "customer_id", reason: "must be a string, got an array"},
		{name: "customer_id a bool", payload: event(kv{"customer_id", "false"}), class: schema, field: "customer_id", reason: "must be a string, got a boolean"},
		{name: "timestamp a number", payload: event(kv{"timestamp", "1795601940"}), class: schema, field: "timestamp", reason: "must be a string, got a number"},
		{name: "timestamp a bool", payload: event(kv{"timestamp", "true"}), class: schema, field: "timestamp", reason: "must be a string, got a boolean"},
		{name: "heart_rate a string", payload: event(kv{"heart_rate", `"72"`}), class: schema, field: "heart_rate", reason: "must be an integer, got a string"},
		{name: "heart_rate a bool", payload: event(kv{"heart_rate", "true"}), class: schema, field: "heart_rate", reason: "must be an integer, got a boolean"},
		{name: "heart_rate an object", payload: event(kv{"heart_rate", `{"bpm":72}`}), class: schema, field: "heart_rate", reason: "must be an integer, got an object"},
		{name: "heart_rate an array", payload: event(kv{"heart_rate", `[72]`}), class: schema, field: "heart_rate", reason: "must be an integer, got an array"},

		// event_id.
		{name: "event_id not a UUID", payload: event(kv{"event_id", `"not-a-uuid"`}), class: schema, field: "event_id", reason: "not a UUID"},
		{name: "event_id empty", payload: event(kv{"event_id", `""`}), class: schema, field: "event_id", reason: "not a UUID"},
		{name: "event_id without hyphens", payload: event(kv{"event_id", quote(strings.ReplaceAll(validEventID, "-", ""))}), class: schema, field: "event_id", reason: "not a UUID"},
		{name: "event_id urn:uuid form", payload: event(kv{"event_id", quote("urn:uuid:" + validEventID)}), class: schema, field: "event_id", reason: "not a UUID"},
		{name: "event_id in braces", payload: event(kv{"event_id", quote("{" + validEventID + "}")}), class: schema, field: "event_id", reason: "not a UUID"},
		{name: "event_id non-hex digit", payload: event(kv{"event_id", `"0192f7c4-1a2b-4c3d-8e4f-0123456789ag"`}), class: schema, field: "event_id", reason: "not a UUID"},
		{name: "event_id hyphens misplaced", payload: event(kv{"event_id", `"0192f7c41-a2b-4c3d-8e4f-0123456789ab"`}), class: schema, field: "event_id", reason: "not a UUID"},
		{name: "event_id upper case is normalised", payload: event(kv{"event_id", quote(strings.ToUpper(validEventID))}), want: &base},

		// customer_id.
		{name: "customer_id empty", payload: event(kv{"customer_id", `""`}), class: schema, field: "customer_id", reason: "blank"},
		{name: "customer_id whitespace only", payload: event(kv{"customer_id", `" \t \n "`}), class: schema, field: "customer_id", reason: "blank"},
		{name: "customer_id 64 characters", payload: event(kv{"customer_id", quote(strings.Repeat("c", 64))}),
			want: with(func(h *messages.Heartbeat) { h.CustomerID = strings.Repeat("c", 64) })},
		{name: "customer_id 65 characters", payload: event(kv{"customer_id", quote(strings.Repeat("c", 65))}), class: schema, field: "customer_id", reason: "65 characters long, the limit is 64"},
		{name: "customer_id 64 multibyte runes", payload: event(kv{"customer_id", quote(strings.Repeat("é", 32) + strings.Repeat("🫀", 32))}),
			want: with(func(h *messages.Heartbeat) { h.CustomerID = strings.Repeat("é", 32) + strings.Repeat("🫀", 32) })},
		{name: "customer_id 65 multibyte runes", payload: event(kv{"customer_id", quote(strings.Repeat("é", 65))}), class: schema, field: "customer_id", reason: "65 characters long"},
		{name: "customer_id 64 escaped runes", payload: event(kv{"customer_id", quote(strings.Repeat(`\u00e9`, 64))}),
			want: with(func(h *messages.Heartbeat) { h.CustomerID = strings.Repeat("é", 64) })},
		{name: "customer_id NUL byte", payload: event(kv{"customer_id", `"cust\u0000042"`}), class: schema, field: "customer_id", reason: "U+0000"},
		{name: "customer_id bell", payload: event(kv{"customer_id", `"cust\u0007"`}), class: schema, field: "customer_id", reason: "control"},
		{name: "customer_id newline inside", payload: event(kv{"customer_id", `"cust\n042"`}), class: schema, field: "customer_id", reason: "control"},
		{name: "customer_id DEL", payload: event(kv{"customer_id", "\"cust\x7f\""}), class: schema, field: "customer_id", reason: "U+007F"},
		{name: "customer_id C1 control", payload: event(kv{"customer_id", `"cust\u0085"`}), class: schema, field: "customer_id", reason: "control"},
		{name: "customer_id invalid UTF-8", payload: event(kv{"customer_id", "\"cust\xff\""}), class: schema, field: "customer_id", reason: "U+FFFD"},
		{name: "customer_id lone surrogate", payload: event(kv{"customer_id", `"cust\ud800"`}), class: schema, field: "customer_id", reason: "U+FFFD"},
		{name: "customer_id 10 kB", payload: event(kv{"customer_id", quote(strings.Repeat("x", 10_000))}), class: schema, field: "customer_id", reason: "10000 characters long"},
		{name: "customer_id with inner spaces kept", payload: event(kv{"customer_id", `" cust 42 "`}),
			want: with(func(h *messages.Heartbeat) { h.CustomerID = " cust 42 " })},

		// timestamp.
		{name: "timestamp without zone", payload: event(kv{"timestamp", `"2026-11-25T09:59:00"`}), class: schema, field: "timestamp", reason: "RFC 3339"},
		{name: "timestamp with space separator", payload: event(kv{"timestamp", `"2026-11-25 09:59:00Z"`}), class: schema, field: "timestamp", reason: "RFC 3339"},
		{name: "timestamp one-digit hour", payload: event(kv{"timestamp", `"2026-11-25T1:00:00Z"`}), class: schema, field: "timestamp", reason: "RFC 3339"},
		{name: "timestamp comma fraction", payload: event(kv{"timestamp", `"2026-11-25T10:00:00,123Z"`}), class: schema, field: "timestamp", reason: "RFC 3339"},
		{name: "timestamp offset hour 24", payload: event(kv{"timestamp", `"2026-11-25T10:00:00+24:00"`}), class: schema, field: "timestamp", reason: "RFC 3339"},
		{name: "customer_id zero-width space", payload: event(kv{"customer_id", `"\u200b"`}), class: schema, field: "customer_id", reason: "unprintable"},
		{name: "customer_id byte order mark", payload: event(kv{"customer_id", `"cust\ufeff"`}), class: schema, field: "customer_id", reason: "unprintable"},
		{name: "timestamp date only", payload: event(kv{"timestamp", `"2026-11-25"`}), class: schema, field: "timestamp", reason: "RFC 3339"},
		{name: "timestamp garbage", payload: event(kv{"timestamp", `"yesterday at noon"`}), class: schema, field: "timestamp", reason: "RFC 3339"},
		{name: "timestamp empty", payload: event(kv{"timestamp", `""`}), class: schema, field: "timestamp", reason: "RFC 3339"},
		{name: "timestamp hour 24", payload: event(kv{"timestamp", `"2026-11-25T24:00:00Z"`}), class: schema, field: "timestamp", reason: "RFC 3339"},
		{name: "timestamp month 13", payload: event(kv{"timestamp", `"2026-13-25T09:59:00Z"`}), class: schema, field: "timestamp", reason: "RFC 3339"},
		{name: "timestamp reason quotes a long value short", payload: event(kv{"timestamp", quote(strings.Repeat("9", 500))}), class: schema, field: "timestamp", reason: "(500 bytes)"},
		{name: "timestamp with +02:00 offset", payload: event(kv{"timestamp", `"2026-11-25T11:59:00.123+02:00"`}), want: &base},
		{name: "timestamp with -05:30 offset", payload: event(kv{"timestamp", `"2026-11-25T04:29:00.123-05:30"`}), want: &base},
		{name: "timestamp without fraction", payload: event(kv{"timestamp", `"2026-11-25T09:59:00Z"`}),
			want: at(time.Date(2026, 11, 25, 9, 59, 0, 0, time.UTC))},
		{name: "timestamp with nanoseconds", payload: event(kv{"timestamp", `"2026-11-25T09:59:00.123456789Z"`}),
			want: at(time.Date(2026, 11, 25, 9, 59, 0, 123456789, time.UTC))},

		// heart_rate.
		{name: "heart_rate 72.5", payload: event(kv{"heart_rate", "72.5"}), class: schema, field: "heart_rate", reason: "must be an integer"},
		{name: "heart_rate 72.0", payload: event(kv{"heart_rate", "72.0"}), class: schema, field: "heart_rate", reason: "must be an integer"},
		{name: "heart_rate 7e1", payload: event(kv{"heart_rate", "7e1"}), class: schema, field: "heart_rate", reason: "must be an integer"},
		{name: "heart_rate 7E1", payload: event(kv{"heart_rate", "7E1"}), class: schema, field: "heart_rate", reason: "must be an integer"},
		{name: "heart_rate -5", payload: event(kv{"heart_rate", "-5"}), class: domain, field: "heart_rate", reason: "-5 is outside [30, 220]"},
		{name: "heart_rate 0", payload: event(kv{"heart_rate", "0"}), class: domain, field: "heart_rate", reason: "0 is outside [30, 220]"},
		{name: "heart_rate -0", payload: event(kv{"heart_rate", "-0"}), class: domain, field: "heart_rate", reason: "outside"},
		{name: "heart_rate 1000", payload: event(kv{"heart_rate", "1000"}), class: domain, field: "heart_rate", reason: "1000 is outside [30, 220]"},
		{name: "heart_rate beyond int32", payload: event(kv{"heart_rate", "2147483648"}), class: domain, field: "heart_rate", reason: "far outside"},
		{name: "heart_rate 20 digits", payload: event(kv{"heart_rate", "99999999999999999999"}), class: domain, field: "heart_rate", reason: "far outside"},
		{name: "heart_rate 20 negative digits", payload: event(kv{"heart_rate", "-99999999999999999999"}), class: domain, field: "heart_rate", reason: "far outside"},
		{name: "heart_rate NaN", payload: event(kv{"heart_rate", "NaN"}), class: schema, field: "payload", reason: "not valid JSON"},
		{name: "heart_rate Infinity", payload: event(kv{"heart_rate", "Infinity"}), class: schema, field: "payload", reason: "not valid JSON"},
		{name: "heart_rate -Infinity", payload: event(kv{"heart_rate", "-Infinity"}), class: schema, field: "payload", reason: "not valid JSON"},
		{name: "heart_rate leading zero", payload: event(kv{"heart_rate", "072"}), class: schema, field: "payload", reason: "not valid JSON"},
		{name: "heart_rate hex", payload: event(kv{"heart_rate", "0x48"}), class: schema, field: "payload", reason: "not valid JSON"},

		// Object structure.
		{name: "duplicate event_id", payload: duplicate("event_id", `"`+validEventID+`"`), class: schema, field: "event_id", reason: "more than once"},
		{name: "duplicate customer_id", payload: duplicate("customer_id", `"cust_00043"`), class: schema, field: "customer_id", reason: "more than once"},
		{name: "duplicate timestamp", payload: duplicate("timestamp", `"2026-11-25T09:59:00.123Z"`), class: schema, field: "timestamp", reason: "more than once"},
		{name: "duplicate heart_rate", payload: duplicate("heart_rate", "180"), class: schema, field: "heart_rate", reason: "more than once"},
		{name: "duplicate through an escaped key", payload: duplicate(`heart\u005frate`, "180"), class: schema, field: "heart_rate", reason: "more than once"},
		{name: "duplicate unknown field ignored", payload: event(kv{"note", `"a"`}, kv{"x", "1"}, kv{"x", "2"}), want: &base},
		{name: "unknown top-level fields ignored", payload: event(kv{"source", `"watch"`}, kv{"meta", `{"fw":[1,2,{"a":null}]}`}, kv{"heart_rate_v2", `"n/a"`}), want: &base},
		{name: "members in another order", payload: []byte(`{"heart_rate":72,"timestamp":"2026-11-25T09:59:00.123Z","customer_id":"cust_00042","event_id":"` + validEventID + `"}`), want: &base},
		{name: "whitespace around members", payload: []byte("\n {\t\"event_id\" : \"" + validEventID + "\" ,\r\n\"customer_id\":\"cust_00042\", \"timestamp\":\"2026-11-25T09:59:00.123Z\",\"heart_rate\" :72 } \n"), want: &base},
		{name: "escaped key names", payload: []byte(`{"event\u005fid":"` + validEventID + `","customer_id":"cust_00042","timestamp":"2026-11-25T09:59:00.123Z","heart_rate":72}`), want: &base},
		{name: "nesting 5000 deep in unknown field ignored", payload: event(kv{"deep", strings.Repeat("[", 5000) + strings.Repeat("]", 5000)}), want: &base},
		{name: "nesting 100k deep in unknown field", payload: event(kv{"deep", strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000)}), class: schema, field: "payload", reason: "not valid JSON"},
		{name: "unclosed nesting 100k deep", payload: []byte(`{"deep":` + strings.Repeat("[", 100_000)), class: schema, field: "payload", reason: "not valid JSON"},
		{name: "trailing object", payload: append(event(), []byte(` {}`)...), class: schema, field: "payload", reason: "not valid JSON"},
		{name: "trailing garbage", payload: append(event(), 'x'), class: schema, field: "payload", reason: "not valid JSON"},
		{name: "two events concatenated", payload: append(event(), event()...), class: schema, field: "payload", reason: "not valid JSON"},
		{name: "1 MiB unknown field ignored", payload: event(kv{"padding", quote(strings.Repeat("p", 1<<20))}), want: &base},
		{name: "1 MiB not JSON", payload: []byte(strings.Repeat("x", 1<<20)), class: schema, field: "payload", reason: "not valid JSON"},
		{name: "1 MiB customer_id", payload: event(kv{"customer_id", quote(strings.Repeat("c", 1<<20))}), class: schema, field: "customer_id", reason: "the limit is 64"},

		// Domain bounds, default 30..220.
		{name: "default 29 refused", payload: event(kv{"heart_rate", "29"}), class: domain, field: "heart_rate", reason: "29 is outside [30, 220] bpm"},
		{name: "default 30 accepted", payload: event(kv{"heart_rate", "30"}), want: rate(30)},
		{name: "default 40 accepted (bradycardia is a finding, not a fault)", payload: event(kv{"heart_rate", "40"}), want: rate(40)},
		{name: "default 220 accepted", payload: event(kv{"heart_rate", "220"}), want: rate(220)},
		{name: "default 221 refused", payload: event(kv{"heart_rate", "221"}), class: domain, field: "heart_rate", reason: "221 is outside [30, 220] bpm"},
		{name: "custom 44 refused", limits: &custom, payload: event(kv{"heart_rate", "44"}), class: domain, field: "heart_rate", reason: "44 is outside [45, 185] bpm"},
		{name: "custom 45 accepted", limits: &custom, payload: event(kv{"heart_rate", "45"}), want: rate(45)},
		{name: "custom 185 accepted", limits: &custom, payload: event(kv{"heart_rate", "185"}), want: rate(185)},
		{name: "custom 186 refused", limits: &custom, payload: event(kv{"heart_rate", "186"}), class: domain, field: "heart_rate", reason: "186 is outside [45, 185] bpm"},

		// Domain bounds on time: skew 5m, age 24h.
		{name: "timestamp now", payload: event(kv{"timestamp", jsonTime(testNow)}), want: at(testNow)},
		{name: "timestamp now+5m accepted", payload: event(kv{"timestamp", jsonTime(testNow.Add(5 * time.Minute))}), want: at(testNow.Add(5 * time.Minute))},
		{name: "timestamp now+5m+1ms refused", payload: event(kv{"timestamp", jsonTime(testNow.Add(5*time.Minute + time.Millisecond))}), class: domain, field: "timestamp", reason: "in the future"},
		{name: "timestamp now+5m+1ns refused", payload: event(kv{"timestamp", jsonTime(testNow.Add(5*time.Minute + time.Nanosecond))}), class: domain, field: "timestamp", reason: "more than 5m0s in the future"},
		{name: "timestamp now+5m in another zone accepted", payload: event(kv{"timestamp", `"2026-11-25T12:05:00+02:00"`}), want: at(testNow.Add(5 * time.Minute))},
		{name: "timestamp now-24h accepted", payload: event(kv{"timestamp", jsonTime(testNow.Add(-24 * time.Hour))}), want: at(testNow.Add(-24 * time.Hour))},
		{name: "timestamp now-24h-1ms refused", payload: event(kv{"timestamp", jsonTime(testNow.Add(-24*time.Hour - time.Millisecond))}), class: domain, field: "timestamp", reason: "older than 24h0m0s"},
		{name: "timestamp year 0001 refused", payload: event(kv{"timestamp", `"0001-01-01T00:00:00Z"`}), class: domain, field: "timestamp", reason: "older than"},
		{name: "timestamp epoch refused", payload: event(kv{"timestamp", `"1970-01-01T00:00:00Z"`}), class: domain, field: "timestamp", reason: "older than"},
		{name: "timestamp year 9999 refused", payload: event(kv{"timestamp", `"9999-12-31T23:59:59.999Z"`}), class: domain, field: "timestamp", reason: "in the future"},
		{name: "out-of-range rate reported before the time", payload: event(kv{"heart_rate", "300"}, kv{"timestamp", `"0001-01-01T00:00:00Z"`}), class: domain, field: "heart_rate", reason: "300"},
		{name: "schema failure reported before domain failure", payload: event(kv{"heart_rate", "300"}, kv{"event_id", `"x"`}), class: schema, field: "event_id", reason: "not a UUID"},
	}
	return cases
}

func TestValidate(t *testing.T) {
	for _, tc := range validateCases() {
		t.Run(tc.name, func(t *testing.T) {
			h, err := tc.validate()
			if tc.class == "" {
				require.NoError(t, err)
				require.NotNil(t, tc.want, "an accepted case names the heartbeat it decodes to")
				require.Equal(t, tc.want.EventID, h.EventID)
				require.Equal(t, tc.want.CustomerID, h.CustomerID)
				require.Equal(t, tc.want.HeartRate, h.HeartRate)
				require.True(t, tc.want.Timestamp.Equal(h.Timestamp), "timestamp: want %s, got %s", tc.want.Timestamp, h.Timestamp)
				return
			}
			require.Error(t, err)
			var verr *messages.ValidationError
			require.ErrorAs(t, err, &verr)
			require.Equal(t, tc.class, verr.Class)
			require.Equal(t, tc.field, verr.Field)
			require.Contains(t, verr.Reason, tc.reason)
			require.LessOrEqual(t, len(verr.Reason), 200, "a reason stays readable however large the payload")
			require.Equal(t, string(tc.class)+": "+tc.field+" "+verr.Reason, err.Error())
		})
	}
}

func TestDecodeIsValidateWithoutLimits(t *testing.T) {
	for _, tc := range validateCases() {
		t.Run(tc.name, func(t *testing.T) {
			_, verr := tc.validate()
			h, err := messages.Decode(tc.payload)
			if v, ok := messages.AsValidationError(verr); ok && v.Class == messages.ClassSchema {
				require.Equal(t, verr, err, "schema failures come from Decode")
				return
			}
			if v, ok := messages.AsValidationError(err); ok {
				// Only a number too large to hold is refused by Decode as domain.
				require.Equal(t, messages.ClassDomain, v.Class)
				require.Contains(t, v.Reason, "far outside")
				return
			}
			require.NoError(t, err)
			require.Equal(t, verr, tc.limitsOrDefault().Check(h, testNow))
		})
	}
}

func (c validateCase) limitsOrDefault() messages.Limits {
	if c.limits != nil {
		return *c.limits
	}
	return messages.DefaultLimits()
}

func TestCheck(t *testing.T) {
	l := messages.DefaultLimits()
	ok := messages.Heartbeat{EventID: validEventID, CustomerID: "c", Timestamp: testNow, HeartRate: 72}
	tests := []struct {
		name  string
		edit  func(*messages.Heartbeat)
		field string
	}{
		{name: "valid", edit: func(*messages.Heartbeat) {}},
		{name: "rate below min", edit: func(h *messages.Heartbeat) { h.HeartRate = l.MinHeartRate - 1 }, field: "heart_rate"},
		{name: "rate above max", edit: func(h *messages.Heartbeat) { h.HeartRate = l.MaxHeartRate + 1 }, field: "heart_rate"},
		{name: "zero time", edit: func(h *messages.Heartbeat) { h.Timestamp = time.Time{} }, field: "timestamp"},
		{name: "skew limit in a far zone", edit: func(h *messages.Heartbeat) {
			h.Timestamp = testNow.Add(l.MaxClockSkew).In(time.FixedZone("", -11*3600))
		}},
		{name: "past skew limit in a far zone", edit: func(h *messages.Heartbeat) {
			h.Timestamp = testNow.Add(l.MaxClockSkew + 1).In(time.FixedZone("", 14*3600))
		}, field: "timestamp"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := ok
			tc.edit(&h)
			err := l.Check(h, testNow)
			if tc.field == "" {
				require.NoError(t, err)
				return
			}
			v, isV := messages.AsValidationError(err)
			require.True(t, isV, "got %v", err)
			require.Equal(t, messages.ClassDomain, v.Class)
			require.Equal(t, tc.field, v.Field)
		})
	}
}

func TestDefaultLimits(t *testing.T) {
	require.Equal(t, messages.Limits{MinHeartRate: 30, MaxHeartRate: 220, MaxClockSkew: 5 * time.Minute, MaxEventAge: 24 * time.Hour},
		messages.DefaultLimits())
}

func TestHeartbeatMarshal(t *testing.T) {
	h := messages.Heartbeat{EventID: validEventID, CustomerID: `cust "42" <é>`,
		Timestamp: time.Date(2026, 11, 25, 11, 59, 0, 123_999_999, time.FixedZone("", 2*3600)), HeartRate: 72}
	b, err := h.Marshal()
	require.NoError(t, err)
	require.JSONEq(t, `{"event_id":"`+validEventID+`","customer_id":"cust \"42\" <é>","timestamp":"2026-11-25T09:59:00.123Z","heart_rate":72}`, string(b))

	back, err := messages.DefaultLimits().Validate(b, testNow)
	require.NoError(t, err)
	require.Equal(t, h.CustomerID, back.CustomerID)
	require.True(t, back.Timestamp.Equal(h.Timestamp.Truncate(time.Millisecond)), "the wire keeps milliseconds: %s", back.Timestamp)
}

package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heartbeat/heartbeat/messages"
)

// hostile is a corpus of payloads real producers and attackers send, each
// with the class and field its envelope must name.
func hostile(now time.Time) []*record {
	ts := now.UTC().Format(time.RFC3339)
	id := uuid.NewString()
	obj := func(eventID, customer, timestamp, rate string) string {
		return fmt.Sprintf(`{"event_id":%s,"customer_id":%s,"timestamp":%s,"heart_rate":%s}`, eventID, customer, timestamp, rate)
	}
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	good := func(field, raw string) string {
		v := map[string]string{"event_id": q(id), "customer_id": q("cust_h"), "timestamp": q(ts), "heart_rate": "72"}
		v[field] = raw
		return obj(v["event_id"], v["customer_id"], v["timestamp"], v["heart_rate"])
	}
	S, D := messages.ClassSchema, messages.ClassDomain
	deep := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	cases := []struct {
		payload string
		class   messages.Class
		field   string
	}{
		{"not json at all", S, "payload"},
		{good("heart_rate", "72")[:40], S, "payload"}, // truncated
		{"\x00\x01\x02\xff\xfe\xfd", S, "payload"},    // binary
		{"", S, "payload"},
		{"   ", S, "payload"},
		{"{" + strings.Repeat(`"pad":"`+strings.Repeat("x", 1000)+`",`, 990) + `"x":1}`, S, "event_id"}, // ~1 MB, no fields
		{`{"deep":` + deep + `}`, S, "payload"},
		{`[` + good("heart_rate", "72") + `]`, S, "payload"},
		{`"just a string"`, S, "payload"},
		{`72`, S, "payload"},
		{`null`, S, "payload"},
		{good("event_id", "null"), S, "event_id"},
		{good("customer_id", "null"), S, "customer_id"},
		{good("timestamp", "null"), S, "timestamp"},
		{good("heart_rate", "null"), S, "heart_rate"},
		{good("event_id", "12345"), S, "event_id"},
		{good("customer_id", `{"id":1}`), S, "customer_id"},
		{good("timestamp", "1732528800"), S, "timestamp"},
		{good("heart_rate", `"72"`), S, "heart_rate"},
		{good("heart_rate", "true"), S, "heart_rate"},
		{good("heart_rate", "72.5"), S, "heart_rate"},
		{good("heart_rate", "7.2e1"), S, "heart_rate"},
		{good("heart_rate", "NaN"), S, "payload"},
		{good("heart_rate", "Infinity"), S, "payload"},
		{good("heart_rate", "-Infinity"), S, "payload"},
		{good("heart_rate", "99999999999999999999999999"), D, "heart_rate"},
		{good("heart_rate", "-5"), D, "heart_rate"},
		{good("heart_rate", "0"), D, "heart_rate"},
		{good("heart_rate", "1000"), D, "heart_rate"},
		{good("customer_id", q("cust\x00nul")), S, "customer_id"},
		{good("customer_id", q("cust\x1b[31mred")), S, "customer_id"},
		{good("customer_id", q("line\nbreak")), S, "customer_id"},
		{good("customer_id", q(strings.Repeat("A", 10240))), S, "customer_id"},
		{good("customer_id", q("'; DROP TABLE heartbeat_events; --"+strings.Repeat("-", 40))), S, "customer_id"},
		{good("event_id", q("'; DROP TABLE anomalies; --")), S, "event_id"},
		{good("timestamp", q("2026-11-25T10:00:00")), S, "timestamp"},
		{good("timestamp", q("9999-12-31T23:59:59Z")), D, "timestamp"},
		{good("timestamp", q("0001-01-01T00:00:00Z")), D, "timestamp"},
		{good("timestamp", q("yesterday")), S, "timestamp"},
		{good("event_id", q("6f1c5a2e-9a43-4c1e-b0a4-3c1f2d8e7b1")), S, "event_id"},
		{good("event_id", q("zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz")), S, "event_id"},
		{good("event_id", q("{6f1c5a2e-9a43-4c1e-b0a4-3c1f2d8e7b10}")), S, "event_id"},
		{fmt.Sprintf(`{"event_id":%q,"customer_id":"c","timestamp":%q,"heart_rate":70,"heart_rate":250}`, id, ts), S, "heart_rate"},
		{fmt.Sprintf(`{"event_id":%q,"event_id":%q,"customer_id":"c","timestamp":%q,"heart_rate":70}`, id, uuid.NewString(), ts), S, "event_id"},
		{fmt.Sprintf(`{"customer_id":"c","timestamp":%q,"heart_rate":70}`, ts), S, "event_id"},
		{good("heart_rate", "72") + "trailing", S, "payload"},
		{good("heart_rate", "72") + `{"second":"object"}`, S, "payload"},
	}
	out := make([]*record, len(cases))
	for i, c := range cases {
		out[i] = invalidRecord(c.payload, c.class, c.field)
	}
	return out
}

// TestHostileInputLandsOnTheInvalidTopic sends the corpus with a real Kafka
// client, interleaved with valid readings, some with extra fields (which are
// ignored): every hostile payload gets an envelope with its class and field,
// every valid reading is stored, and the services keep running.
func TestHostileInputLandsOnTheInvalidTopic(t *testing.T) {
	dbURL, pool := testDatabase(t)
	broker := testBroker(t)
	p := startPipeline(t, pipelineEnv(broker, dbURL, nil))

	now := time.Now()
	bad := hostile(now)
	var recs []*record
	for i, b := range bad {
		r := validRecord(fmt.Sprintf("cust_h%d", i%7), 60+i%20, now.Add(-time.Duration(len(bad)-i)*time.Second))
		if i%5 == 0 { // unknown fields are ignored
			r.payload = strings.TrimSuffix(r.payload, "}") + `,"battery":0.93,"firmware":{"v":"1.2"}}`
		}
		recs = append(recs, r, b)
	}
	produce(t, broker, "events.raw.v1", recs)
	verify(t, broker, pool, expect(recs, map[string]string{}))
	if len(bad) < 40 {
		t.Fatalf("corpus has %d payloads, want at least 40", len(bad))
	}
	p.stop(t)
}

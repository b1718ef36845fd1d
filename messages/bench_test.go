package messages_test

import (
	"testing"

	"github.com/heartbeat/heartbeat/messages"
)

func BenchmarkValidate(b *testing.B) {
	limits := messages.DefaultLimits()
	benchmarks := []struct {
		name    string
		payload []byte
	}{
		{name: "typical", payload: []byte(`{"event_id":"0192f7c4-1a2b-4c3d-8e4f-0123456789ab","customer_id":"cust_00042","timestamp":"2026-11-25T09:59:00.123Z","heart_rate":72}`)},
		{name: "not JSON", payload: []byte("heart_rate=72;customer=cust_00042")},
		{name: "out of range", payload: event(kv{"heart_rate", "221"})},
	}
	for _, bm := range benchmarks {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bm.payload)))
			for b.Loop() {
				_, _ = limits.Validate(bm.payload, testNow)
			}
		})
	}
}

func BenchmarkNewInvalidEvent(b *testing.B) {
	payload := event(kv{"heart_rate", "221"})
	verr := &messages.ValidationError{Class: messages.ClassDomain, Field: "heart_rate", Reason: "221 is outside [30, 220] bpm"}
	b.ReportAllocs()
	for b.Loop() {
		_, _ = messages.NewInvalidEvent(payload, verr, testSource, testNow).Marshal()
	}
}

package rules_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/messages/rules"
)

// BenchmarkEpisodeEvaluate is BenchmarkEvaluate's workload on the episode
// engine, through Evaluate and apply as the detector calls them.
func BenchmarkEpisodeEvaluate(b *testing.B) {
	const customers = 100_000
	e, err := rules.NewEpisodeEngine(rules.DefaultEpisodeParams())
	if err != nil {
		b.Fatal(err)
	}
	hs := make([]messages.Heartbeat, customers)
	for i := range hs {
		hs[i] = messages.Heartbeat{EventID: uuid.NewString(), CustomerID: fmt.Sprintf("cust_%06d", i), Timestamp: t0, HeartRate: 70}
		_, apply := e.Evaluate(rules.Lane{Partition: int32(i % 24)}, hs[i], time.Time{})
		apply()
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		h := &hs[i%customers]
		h.Timestamp = h.Timestamp.Add(time.Second)
		h.HeartRate = 70 + (i/customers)%2*35
		_, apply := e.Evaluate(rules.Lane{Partition: int32(i % customers % 24)}, *h, time.Time{})
		apply()
		i++
	}
}

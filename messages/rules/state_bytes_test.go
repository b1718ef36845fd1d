package rules_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/messages/rules"
)

// stateCustomers is how many customers the state benchmarks load: enough
// that the maps' and heaps' per-customer share dominates their fixed cost.
const stateCustomers = 100_000

// heapAfterGC is the live heap once the collector has run.
func heapAfterGC() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// stateReadings is a customer's readings as the detector receives them: a
// fresh UUID string per reading (decoded from its own payload), a customer
// id decoded from the payload too, one reading a second at a resting rate.
func stateReadings(i, n int) []messages.Heartbeat {
	hs := make([]messages.Heartbeat, n)
	customer := fmt.Sprintf("cust_%06d", i)
	for k := range hs {
		hs[k] = messages.Heartbeat{EventID: uuid.NewString(), CustomerID: string([]byte(customer)),
			Timestamp: t0.Add(time.Duration(k) * time.Second), HeartRate: 60 + (i+k)%7}
	}
	return hs
}

// BenchmarkEpisodeStateBytes measures the episode engine's memory per
// customer: the live heap after loading stateCustomers customers, each
// with ten readings (its recent readings full, no episode open), over the
// heap before, divided by the customers — built reading by reading as the
// detector evaluates them ("live"), and rebuilt from stored readings as
// after a restart ("restored"). Run with -benchtime=1x: each iteration
// builds a whole engine.
func BenchmarkEpisodeStateBytes(b *testing.B) {
	for _, restored := range []bool{false, true} {
		name := "live"
		if restored {
			name = "restored"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				before := heapAfterGC()
				e, err := rules.NewEpisodeEngine(rules.DefaultEpisodeParams())
				if err != nil {
					b.Fatal(err)
				}
				for i := range stateCustomers {
					hs := stateReadings(i, 10)
					if restored {
						rs := make([]messages.Reading, len(hs))
						for k, h := range hs {
							rs[k] = rules.ReadingOf(h)
						}
						e.Restore(rules.Lane{Partition: int32(i % 24)}, hs[0].CustomerID, nil, rs, t0, nil)
						continue
					}
					for _, h := range hs {
						_, apply := e.Evaluate(rules.Lane{Partition: int32(i % 24)}, h, time.Time{})
						apply()
					}
				}
				after := heapAfterGC()
				b.ReportMetric(float64(int64(after)-int64(before))/stateCustomers, "B/customer")
				runtime.KeepAlive(e)
			}
		})
	}
}

// BenchmarkPerEventStateBytes is BenchmarkEpisodeStateBytes for the
// per-event engine (DETECTION_MODE=per_event).
func BenchmarkPerEventStateBytes(b *testing.B) {
	for b.Loop() {
		before := heapAfterGC()
		e := rules.NewEngine(rules.DefaultThresholds())
		for i := range stateCustomers {
			for _, h := range stateReadings(i, 10) {
				_, _, apply := e.Evaluate(rules.Lane{}, h)
				apply()
			}
		}
		after := heapAfterGC()
		b.ReportMetric(float64(int64(after)-int64(before))/stateCustomers, "B/customer")
		runtime.KeepAlive(e)
	}
}

package rules_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/messages/rules"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func ptr(n int) *int { return &n }

func TestClassify(t *testing.T) {
	def := rules.DefaultThresholds()
	tests := []struct {
		name       string
		thresholds rules.Thresholds
		rate       int
		previous   *int
		rule       string // empty: nothing found
	}{
		{name: "50 is LOW", rate: 50, rule: messages.LowHeartRate},
		{name: "51 is not LOW", rate: 51},
		{name: "30 is LOW", rate: 30, rule: messages.LowHeartRate},
		{name: "139 is not HIGH", rate: 139},
		{name: "140 is HIGH", rate: 140, rule: messages.HighHeartRate},
		{name: "220 is HIGH", rate: 220, rule: messages.HighHeartRate},
		{name: "no previous, no SPIKE", rate: 100},
		{name: "up 29 is not a SPIKE", rate: 109, previous: ptr(80)},
		{name: "up 30 is a SPIKE", rate: 110, previous: ptr(80), rule: messages.Spike},
		{name: "down 29 is not a SPIKE", rate: 81, previous: ptr(110)},
		{name: "down 30 is a SPIKE", rate: 80, previous: ptr(110), rule: messages.Spike},
		{name: "unchanged", rate: 80, previous: ptr(80)},
		{name: "LOW wins over SPIKE", rate: 45, previous: ptr(80), rule: messages.LowHeartRate},
		{name: "HIGH wins over SPIKE", rate: 150, previous: ptr(80), rule: messages.HighHeartRate},
		{name: "LOW at the threshold wins over SPIKE", rate: 50, previous: ptr(139), rule: messages.LowHeartRate},
		{name: "large drop just above LOW is a SPIKE", rate: 51, previous: ptr(139), rule: messages.Spike},
		{name: "custom LOW 40", thresholds: rules.Thresholds{Low: 40, High: 180, SpikeDelta: 20}, rate: 41},
		{name: "custom HIGH 180", thresholds: rules.Thresholds{Low: 40, High: 180, SpikeDelta: 20}, rate: 180, rule: messages.HighHeartRate},
		{name: "custom delta 20", thresholds: rules.Thresholds{Low: 40, High: 180, SpikeDelta: 20}, rate: 100, previous: ptr(80), rule: messages.Spike},
		{name: "custom delta 19 short", thresholds: rules.Thresholds{Low: 40, High: 180, SpikeDelta: 20}, rate: 99, previous: ptr(80)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			th := tc.thresholds
			if th == (rules.Thresholds{}) {
				th = def
			}
			f, found := rules.Classify(th, tc.rate, tc.previous)
			if tc.rule == "" {
				require.False(t, found, "got %+v", f)
				require.Equal(t, rules.Finding{}, f)
				return
			}
			require.True(t, found)
			require.Equal(t, tc.rule, f.Rule)
			require.Equal(t, tc.rate, f.HeartRate)
			switch tc.rule {
			case messages.LowHeartRate:
				require.Equal(t, messages.SeverityHigh, f.Severity)
				require.Equal(t, th.Low, f.Threshold)
				require.Nil(t, f.Previous)
				require.Zero(t, f.Delta())
			case messages.HighHeartRate:
				require.Equal(t, messages.SeverityHigh, f.Severity)
				require.Equal(t, th.High, f.Threshold)
				require.Nil(t, f.Previous)
			case messages.Spike:
				require.Equal(t, messages.SeverityMedium, f.Severity)
				require.Equal(t, th.SpikeDelta, f.Threshold)
				require.NotNil(t, f.Previous)
				require.Equal(t, *tc.previous, *f.Previous)
				require.Equal(t, tc.rate-*tc.previous, f.Delta())
			}
		})
	}
}

func TestClassifyCopiesPrevious(t *testing.T) {
	prev := 80
	f, found := rules.Classify(rules.DefaultThresholds(), 120, &prev)
	require.True(t, found)
	prev = 0
	require.Equal(t, 80, *f.Previous, "the finding does not alias the caller's variable")
}

func TestDefaultThresholds(t *testing.T) {
	require.Equal(t, rules.Thresholds{Low: 50, High: 140, SpikeDelta: 30}, rules.DefaultThresholds())
}

// reading is one step of an engine scenario: a heartbeat at t0+at, and
// the rule it must raise (empty: none) against previous.
type reading struct {
	customer string
	at       time.Duration
	rate     int
	rule     string
	previous int // for SPIKE
}

func heartbeat(customer string, at time.Duration, rate int) messages.Heartbeat {
	return messages.Heartbeat{EventID: fmt.Sprintf("%s-%d-%d", customer, at, rate), CustomerID: customer, Timestamp: t0.Add(at), HeartRate: rate}
}

func TestEngineScenarios(t *testing.T) {
	const s = time.Second
	tests := []struct {
		name     string
		readings []reading
	}{
		{name: "first reading has no previous", readings: []reading{
			{customer: "a", at: 0, rate: 120},
		}},
		{name: "SPIKE up then down against the latest reading", readings: []reading{
			{customer: "a", at: 0, rate: 70},
			{customer: "a", at: 10 * s, rate: 100, rule: messages.Spike, previous: 70},
			{customer: "a", at: 20 * s, rate: 70, rule: messages.Spike, previous: 100},
			{customer: "a", at: 30 * s, rate: 90},
		}},
		{name: "gradual change never spikes", readings: []reading{
			{customer: "a", at: 0, rate: 70},
			{customer: "a", at: 1 * s, rate: 95},
			{customer: "a", at: 2 * s, rate: 120},
			{customer: "a", at: 3 * s, rate: 139},
		}},
		{name: "late reading is checked for LOW and HIGH only", readings: []reading{
			{customer: "a", at: 10 * s, rate: 70},
			{customer: "a", at: 5 * s, rate: 110},
			{customer: "a", at: 5 * s, rate: 45, rule: messages.LowHeartRate},
			{customer: "a", at: 9*s + 999*time.Millisecond, rate: 150, rule: messages.HighHeartRate},
			{customer: "a", at: 11 * s, rate: 100, rule: messages.Spike, previous: 70},
		}},
		{name: "late reading does not move the state", readings: []reading{
			{customer: "a", at: 10 * s, rate: 70},
			{customer: "a", at: 1 * s, rate: 130},
			{customer: "a", at: 11 * s, rate: 72},
		}},
		{name: "equal timestamps are not late", readings: []reading{
			{customer: "a", at: 10 * s, rate: 70},
			{customer: "a", at: 10 * s, rate: 100, rule: messages.Spike, previous: 70},
			{customer: "a", at: 10 * s, rate: 100},
		}},
		{name: "readings that raise LOW or HIGH still move the state", readings: []reading{
			{customer: "a", at: 0, rate: 70},
			{customer: "a", at: 1 * s, rate: 45, rule: messages.LowHeartRate},
			{customer: "a", at: 2 * s, rate: 80, rule: messages.Spike, previous: 45},
			{customer: "a", at: 3 * s, rate: 150, rule: messages.HighHeartRate},
			{customer: "a", at: 4 * s, rate: 110, rule: messages.Spike, previous: 150},
		}},
		{name: "customers are independent", readings: []reading{
			{customer: "a", at: 0, rate: 70},
			{customer: "b", at: 1 * s, rate: 110},
			{customer: "a", at: 2 * s, rate: 105, rule: messages.Spike, previous: 70},
			{customer: "b", at: 3 * s, rate: 111},
			{customer: "c", at: 0, rate: 70},
			{customer: "b", at: 1 * s, rate: 80, rule: ""}, // late for b
		}},
		{name: "customer ids are exact", readings: []reading{
			{customer: "cust_1", at: 0, rate: 70},
			{customer: "cust_1 ", at: 1 * s, rate: 110},
			{customer: "CUST_1", at: 1 * s, rate: 110},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := rules.NewEngine(rules.DefaultThresholds())
			for i, r := range tc.readings {
				f, found, apply := e.Evaluate(rules.Lane{}, heartbeat(r.customer, r.at, r.rate))
				require.NotNil(t, apply)
				if r.rule == "" {
					require.False(t, found, "reading %d: got %+v", i, f)
				} else {
					require.True(t, found, "reading %d", i)
					require.Equal(t, r.rule, f.Rule, "reading %d", i)
					if r.rule == messages.Spike {
						require.Equal(t, r.previous, *f.Previous, "reading %d", i)
					}
				}
				apply()
			}
		})
	}
}

func TestEngineRedeliveryWithoutApply(t *testing.T) {
	e := rules.NewEngine(rules.DefaultThresholds())
	_, _, apply := e.Evaluate(rules.Lane{}, heartbeat("a", 0, 70))
	apply()

	spike := heartbeat("a", time.Second, 110)
	first, found, _ := e.Evaluate(rules.Lane{}, spike) // the anomaly failed to commit: no apply
	require.True(t, found)
	again, found, apply := e.Evaluate(rules.Lane{}, spike)
	require.True(t, found)
	require.Equal(t, first, again, "a redelivered reading raises the same finding")
	require.Equal(t, 70, *again.Previous)

	_, found, _ = e.Evaluate(rules.Lane{}, heartbeat("a", 2*time.Second, 72))
	require.False(t, found, "the unapplied reading did not become the previous one")

	apply()
	f, found, _ := e.Evaluate(rules.Lane{}, heartbeat("a", 2*time.Second, 72))
	require.True(t, found, "once applied, it is")
	require.Equal(t, 110, *f.Previous)
}

func TestEngineApplyIsIdempotentAndNeverMovesBack(t *testing.T) {
	e := rules.NewEngine(rules.DefaultThresholds())
	_, _, applyOld := e.Evaluate(rules.Lane{}, heartbeat("a", 5*time.Second, 70))
	_, _, applyNew := e.Evaluate(rules.Lane{}, heartbeat("a", 10*time.Second, 100))
	applyNew()
	applyNew()
	applyOld() // evaluated before the newer reading was applied, applied after it

	f, found, _ := e.Evaluate(rules.Lane{}, heartbeat("a", 11*time.Second, 65))
	require.True(t, found)
	require.Equal(t, messages.Spike, f.Rule)
	require.Equal(t, 100, *f.Previous, "state stays at the latest event time")
	require.Equal(t, 1, e.Customers())
}

func TestEngineLateApplyIsNoop(t *testing.T) {
	e := rules.NewEngine(rules.DefaultThresholds())
	_, _, apply := e.Evaluate(rules.Lane{}, heartbeat("a", 10*time.Second, 70))
	apply()
	_, _, apply = e.Evaluate(rules.Lane{}, heartbeat("a", 5*time.Second, 120))
	apply()
	_, found, _ := e.Evaluate(rules.Lane{}, heartbeat("a", 12*time.Second, 72))
	require.False(t, found)
}

func TestEngineCustomers(t *testing.T) {
	e := rules.NewEngine(rules.DefaultThresholds())
	require.Zero(t, e.Customers())
	_, _, _ = e.Evaluate(rules.Lane{}, heartbeat("a", 0, 70))
	require.Zero(t, e.Customers(), "evaluating alone keeps no state")
	for _, c := range []string{"a", "b", "c", "a"} {
		_, _, apply := e.Evaluate(rules.Lane{}, heartbeat(c, 0, 70))
		apply()
	}
	require.Equal(t, 3, e.Customers())
	require.Zero(t, e.Evict(time.Hour), "nobody is idle yet")
}

func TestEngineConcurrentCustomers(t *testing.T) {
	const workers, perWorker = 8, 500
	e := rules.NewEngine(rules.DefaultThresholds())
	spikes := make([]int, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				c := fmt.Sprintf("w%d-c%d", w, i)
				for step, rate := range []int{70, 105, 72} {
					f, found, apply := e.Evaluate(rules.Lane{}, heartbeat(c, time.Duration(step)*time.Second, rate))
					if found && f.Rule == messages.Spike {
						spikes[w]++
					}
					apply()
				}
			}
		})
	}
	wg.Wait()
	require.Equal(t, workers*perWorker, e.Customers())
	for w := range workers {
		require.Equal(t, 2*perWorker, spikes[w], "worker %d", w)
	}
}

func BenchmarkEvaluate(b *testing.B) {
	const customers = 100_000
	e := rules.NewEngine(rules.DefaultThresholds())
	hs := make([]messages.Heartbeat, customers)
	for i := range hs {
		hs[i] = messages.Heartbeat{EventID: fmt.Sprintf("e%d", i), CustomerID: fmt.Sprintf("cust_%06d", i), Timestamp: t0, HeartRate: 70}
		_, _, apply := e.Evaluate(rules.Lane{}, hs[i])
		apply()
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		h := &hs[i%customers]
		h.Timestamp = h.Timestamp.Add(time.Second)
		h.HeartRate = 70 + (i/customers)%2*35 // every other pass is a SPIKE
		_, _, apply := e.Evaluate(rules.Lane{}, *h)
		apply()
		i++
	}
}

// State built in one lane is not used in another (the partition went to
// another detector and came back in a new assignment): no previous rate
// there until it is seeded in that lane. A record of the superseded lane
// still in flight then raises nothing and changes nothing.
func TestEngineStateIsTheLanes(t *testing.T) {
	const s = time.Second
	e := rules.NewEngine(rules.DefaultThresholds())
	first, second := rules.Lane{Partition: 3, Assignment: 1}, rules.Lane{Partition: 3, Assignment: 2}
	_, _, apply := e.Evaluate(first, heartbeat("a", 0, 70))
	apply()
	require.True(t, e.Known(first, "a"))
	require.False(t, e.Known(second, "a"))
	_, found, _ := e.Evaluate(second, heartbeat("a", s, 110))
	require.False(t, found, "no previous rate from another lane")

	e.Seed(second, "a", t0.Add(2*s), 112)
	require.True(t, e.Known(second, "a"))
	require.True(t, e.Known(first, "a"), "superseded: nothing to rebuild")
	e.Seed(first, "a", t0.Add(3*s), 70) // a superseded lane's rebuild
	f, found, _ := e.Evaluate(second, heartbeat("a", 4*s, 80))
	require.True(t, found)
	require.Equal(t, 112, *f.Previous, "a superseded lane's seed changes nothing")

	_, found, applyOld := e.Evaluate(first, heartbeat("a", 5*s, 20))
	require.False(t, found, "a superseded lane's reading raises nothing, not even a LOW: the new assignment delivers it again")
	applyOld()
	f, found, _ = e.Evaluate(second, heartbeat("a", 6*s, 80))
	require.True(t, found)
	require.Equal(t, 112, *f.Previous, "a superseded lane's apply changes nothing")

	// Another partition (the customer's key moved) is another lane, whatever
	// the numbers.
	other := rules.Lane{Partition: 4, Assignment: 1}
	require.False(t, e.Known(other, "a"))
	_, _, apply = e.Evaluate(other, heartbeat("a", 7*s, 75))
	apply()
	require.True(t, e.Known(other, "a"))
}

func TestEngineSeed(t *testing.T) {
	const s = time.Second
	e := rules.NewEngine(rules.DefaultThresholds())
	require.False(t, e.Known(rules.Lane{}, "a"))
	e.Seed(rules.Lane{}, "a", t0.Add(10*s), 70)
	require.True(t, e.Known(rules.Lane{}, "a"))
	require.False(t, e.Known(rules.Lane{}, "b"))

	e.Seed(rules.Lane{}, "a", t0.Add(5*s), 120)  // older than what the engine holds
	e.Seed(rules.Lane{}, "a", t0.Add(10*s), 120) // as old
	f, found, _ := e.Evaluate(rules.Lane{}, heartbeat("a", 11*s, 100))
	require.True(t, found)
	require.Equal(t, 70, *f.Previous, "a seed never moves the state back")

	_, found, _ = e.Evaluate(rules.Lane{}, heartbeat("a", 9*s, 110))
	require.False(t, found, "a reading older than the seed is late")

	e.Seed(rules.Lane{}, "a", t0.Add(20*s), 100)
	f, found, _ = e.Evaluate(rules.Lane{}, heartbeat("a", 21*s, 60))
	require.True(t, found)
	require.Equal(t, 100, *f.Previous)

	_, _, apply := e.Evaluate(rules.Lane{}, heartbeat("a", 30*s, 90))
	apply()
	e.Seed(rules.Lane{}, "a", t0.Add(25*s), 40)
	_, found, _ = e.Evaluate(rules.Lane{}, heartbeat("a", 31*s, 91))
	require.False(t, found, "an applied reading later than the seed wins")
}

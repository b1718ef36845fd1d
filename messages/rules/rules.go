// Package rules is the anomaly rule engine: pure functions over readings and
// the per-customer state they need, with no I/O, so that the detector, the
// tests and any replay evaluate exactly the same definition.
package rules

import (
	"hash/maphash"
	"sync"
	"time"

	"github.com/heartbeat/heartbeat/messages"
)

// Thresholds of the per-reading rules.
type Thresholds struct {
	Low        int // rate <= Low is LOW_HEART_RATE
	High       int // rate >= High is HIGH_HEART_RATE
	SpikeDelta int // |rate - previous| >= SpikeDelta is SPIKE
}

// DefaultThresholds are LOW ≤ 50, HIGH ≥ 140, SPIKE |Δ| ≥ 30.
func DefaultThresholds() Thresholds { return Thresholds{Low: 50, High: 140, SpikeDelta: 30} }

// Finding is one anomaly raised by a reading.
type Finding struct {
	Rule      string
	Severity  string
	HeartRate int
	Threshold int
	// Previous is the customer's previous rate, for SPIKE.
	Previous *int
}

// Delta is the change from the previous rate, for SPIKE.
func (f Finding) Delta() int {
	if f.Previous == nil {
		return 0
	}
	return f.HeartRate - *f.Previous
}

// Classify applies the rules, first match wins: LOW, then HIGH, then SPIKE
// against previous (nil when there is none, or the reading is late).
func Classify(t Thresholds, rate int, previous *int) (Finding, bool) {
	switch {
	case rate <= t.Low:
		return Finding{Rule: messages.LowHeartRate, Severity: messages.SeverityHigh, HeartRate: rate, Threshold: t.Low}, true
	case rate >= t.High:
		return Finding{Rule: messages.HighHeartRate, Severity: messages.SeverityHigh, HeartRate: rate, Threshold: t.High}, true
	case previous != nil && abs(rate-*previous) >= t.SpikeDelta:
		p := *previous
		return Finding{Rule: messages.Spike, Severity: messages.SeverityMedium, HeartRate: rate, Threshold: t.SpikeDelta, Previous: &p}, true
	}
	return Finding{}, false
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// Lane names the readings an engine's state is built from: those of one
// partition, as one assignment of the partition to this process delivered
// them, in order, none skipped. State built in one lane is never used in
// another: between two assignments of a partition, another consumer may
// have had it and evaluated readings this one never saw (a partition that
// went to another detector and came back), so the customer's state is
// rebuilt from storage, as after a restart. Messages of no assignment (a
// GoChannel, an evaluation) share the lane of Assignment 0.
//
// A lane is superseded by a later assignment of its partition (the
// subscriber numbers them in order): a record of the old one still being
// handled — a batch in flight when the partition was lost or its revoke
// stopped waiting — evaluates to nothing and changes nothing once the new
// one has begun (in the per-event Engine, once it has met the record's
// customer; before that, or if its evaluation had begun, the record is
// evaluated against its own lane's state, which is right for it). Its
// acknowledgement is ignored, so the new assignment delivers it again.
//
// A lane is one topic's partition: an engine evaluates the records of one
// topic.
type Lane struct {
	Partition  int32
	Assignment uint64
}

// supersededBy reports whether cur is a later assignment of ln's partition.
func (ln Lane) supersededBy(cur Lane) bool {
	return ln.Partition == cur.Partition && ln.Assignment < cur.Assignment
}

// LaneOf is the lane of a record from src.
func LaneOf(src messages.Source) Lane {
	return Lane{Partition: src.Partition, Assignment: src.Assignment}
}

// customerState is what SPIKE needs of a customer: the latest reading in
// event-time order, and the lane it was read in.
type customerState struct {
	lane     Lane
	time     time.Time
	rate     int
	lastSeen time.Time // wall clock, for eviction
}

const shardCount = 64

type shard struct {
	mu sync.Mutex
	m  map[string]*customerState
}

// Engine evaluates readings against the rules, keeping each customer's
// latest reading. It is safe for concurrent use; readings of one customer
// must be evaluated one at a time, in their partition's order, which Kafka's
// keying by customer gives.
type Engine struct {
	t      Thresholds
	seed   maphash.Seed
	shards [shardCount]shard
	now    func() time.Time
}

// NewEngine returns an engine with thresholds t.
func NewEngine(t Thresholds) *Engine {
	e := &Engine{t: t, seed: maphash.MakeSeed(), now: time.Now}
	for i := range e.shards {
		e.shards[i].m = make(map[string]*customerState)
	}
	return e
}

func (e *Engine) shard(customer string) *shard {
	return &e.shards[maphash.String(e.seed, customer)%shardCount]
}

// Evaluate returns the finding h, read in lane ln, raises, if any, and
// apply, which moves the customer's state past h. Call apply only once the
// finding is durably recorded: a reading whose anomaly failed to commit is
// evaluated again, on redelivery, against the same previous rate. A late
// reading (older than the customer's latest) is checked against LOW and
// HIGH only and does not move the state. State of another lane is not
// used: h has no previous rate then, and apply replaces it — unless ln is
// superseded by the state's lane: then h raises nothing.
func (e *Engine) Evaluate(ln Lane, h messages.Heartbeat) (f Finding, found bool, apply func()) {
	sh := e.shard(h.CustomerID)
	sh.mu.Lock()
	st := sh.m[h.CustomerID]
	if st != nil && ln.supersededBy(st.lane) {
		sh.mu.Unlock()
		return Finding{}, false, func() {}
	}
	var prev *int
	late := false
	if st != nil && st.lane == ln {
		if h.Timestamp.Before(st.time) {
			late = true
		} else {
			p := st.rate
			prev = &p
		}
	}
	sh.mu.Unlock()

	f, found = Classify(e.t, h.HeartRate, prev)
	if late {
		return f, found, func() {}
	}
	return f, found, func() {
		sh.mu.Lock()
		defer sh.mu.Unlock()
		cur := sh.m[h.CustomerID]
		if cur != nil && ln.supersededBy(cur.lane) {
			return
		}
		if cur == nil || cur.lane != ln {
			cur = &customerState{lane: ln}
			sh.m[h.CustomerID] = cur
		} else if h.Timestamp.Before(cur.time) {
			return
		}
		cur.time, cur.rate, cur.lastSeen = h.Timestamp, h.HeartRate, e.now()
	}
}

// Known reports whether the engine holds state for customer in lane ln,
// or in a lane that supersedes it (there is nothing to rebuild then).
func (e *Engine) Known(ln Lane, customer string) bool {
	sh := e.shard(customer)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st := sh.m[customer]
	return st != nil && (st.lane == ln || ln.supersededBy(st.lane))
}

// Seed sets customer's latest reading in lane ln to (at, rate) unless the
// engine already holds a later one in that lane: how state is rebuilt
// after a restart or a new assignment.
func (e *Engine) Seed(ln Lane, customer string, at time.Time, rate int) {
	sh := e.shard(customer)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if cur := sh.m[customer]; cur != nil && (cur.lane == ln && !at.After(cur.time) || ln.supersededBy(cur.lane)) {
		return
	}
	sh.m[customer] = &customerState{lane: ln, time: at, rate: rate, lastSeen: e.now()}
}

// Evict drops customers not seen for idle, bounding memory, and returns how
// many it dropped. An evicted customer's next reading has no previous rate.
func (e *Engine) Evict(idle time.Duration) int {
	cutoff := e.now().Add(-idle)
	n := 0
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		for k, st := range sh.m {
			if st.lastSeen.Before(cutoff) {
				delete(sh.m, k)
				n++
			}
		}
		sh.mu.Unlock()
	}
	return n
}

// Customers returns how many customers have state.
func (e *Engine) Customers() int {
	n := 0
	for i := range e.shards {
		e.shards[i].mu.Lock()
		n += len(e.shards[i].m)
		e.shards[i].mu.Unlock()
	}
	return n
}

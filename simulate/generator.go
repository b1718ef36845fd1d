// Package simulate produces a synthetic heart-rate stream: customers with
// Gaussian baselines and slow random walks, bursts of traffic, injected
// anomalies (each held for the customer's next few readings), late
// (backdated) readings and invalid events, deterministic for a given seed.
// The Simulator publishes it through a Watermill publisher.
package simulate

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"

	"github.com/heartbeat/heartbeat/messages"
)

// Kind says what a generated event is meant to exercise.
type Kind string

// Kinds of generated events.
const (
	KindNormal  Kind = "normal"
	KindLow     Kind = "low"
	KindHigh    Kind = "high"
	KindSpike   Kind = "spike"
	KindInvalid Kind = "invalid"
)

// GeneratorConfig shapes the stream.
type GeneratorConfig struct {
	Customers    int
	Seed         uint64
	InvalidRatio float64 // share of events that are invalid
	LateRatio    float64 // share of valid events backdated by 1–8 s
	// AnomalyRatio is the share of valid events that start an injected
	// anomaly (low, high or a spike); each is held for the customer's next
	// HeldReadings readings.
	AnomalyRatio float64
}

// HeldReadings is how many of a customer's readings after an injected
// anomaly continue it: a low or high rate, or a sudden jump, that lasts a
// few readings rather than one. The per-event rules fire on each low or high
// reading and on the jump (and on the return); the episode rules see a
// jump confirmed by the readings after it, one SPIKE, where a single
// reading would be an artefact.
const HeldReadings = 5

// Event is one generated message.
type Event struct {
	ID            string // message id; the event_id of a valid event
	CorrelationID string
	Key           string // customer id
	Payload       []byte
	Kind          Kind
	Late          bool
	// Held: the reading continues the anomaly injected at one of the
	// customer's previous readings (Kind is that anomaly's).
	Held    bool
	Reading messages.Heartbeat // the intended reading (zero for malformed payloads)
}

type customer struct {
	id       string
	baseline float64
	current  float64
	// held readings still continue an injected anomaly of kind heldKind:
	// offset bpm from the walk, kept within its kind's range.
	held     int
	heldKind Kind
	offset   int
}

// Ranges of the injected anomalies. A spike stays between the LOW and HIGH
// thresholds of both modes (and their hysteresis), so it is a SPIKE and
// nothing else.
const (
	lowMin, lowMax     = 38, 50
	highMin, highMax   = 140, 185
	spikeMin, spikeMax = 51, 114
)

func kindRange(k Kind) (lo, hi int) {
	switch k {
	case KindLow:
		return lowMin, lowMax
	case KindHigh:
		return highMin, highMax
	}
	return spikeMin, spikeMax
}

// Generator makes the stream. It is not safe for concurrent use.
type Generator struct {
	cfg       GeneratorConfig
	rng       *rand.Rand
	customers []customer
}

// NewGenerator returns a generator; the same config gives the same stream.
func NewGenerator(cfg GeneratorConfig) *Generator {
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	cs := make([]customer, cfg.Customers)
	for i := range cs {
		b := clamp(rng.NormFloat64()*8+72, 55, 95)
		cs[i] = customer{id: fmt.Sprintf("cust_%05d", i+1), baseline: b, current: b}
	}
	return &Generator{cfg: cfg, rng: rng, customers: cs}
}

func clamp(x, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, x)) }

func (g *Generator) uuid() string {
	var b [16]byte
	hi, lo := g.rng.Uint64(), g.rng.Uint64()
	for i := range 8 {
		b[i], b[8+i] = byte(hi>>(8*i)), byte(lo>>(8*i))
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	return uuid.UUID(b).String()
}

// Next returns the next event, stamped at (virtual) time at.
func (g *Generator) Next(at time.Time) Event {
	c := &g.customers[g.rng.IntN(len(g.customers))]
	// Mean-reverting random walk around the customer's baseline.
	c.current += 0.1*(c.baseline-c.current) + g.rng.NormFloat64()*0.8
	ev := Event{ID: g.uuid(), CorrelationID: g.uuid(), Key: c.id, Kind: KindNormal}
	rate := int(math.Round(c.current + g.rng.NormFloat64()*1.2))
	cur := int(math.Round(c.current))
	if g.rng.Float64() < g.cfg.AnomalyRatio {
		switch g.rng.IntN(3) {
		case 0:
			ev.Kind, rate = KindLow, lowMin+g.rng.IntN(lowMax-lowMin+1)
		case 1:
			ev.Kind, rate = KindHigh, highMin+g.rng.IntN(highMax-highMin+1)
		default:
			// A jump of 30–45 bpm, towards the side with room for it.
			d := 30 + g.rng.IntN(16)
			down := g.rng.IntN(2) == 0
			if down && cur-spikeMin < 30 {
				down = false
			} else if !down && spikeMax-cur < 30 {
				down = true
			}
			if down {
				d = -min(d, cur-spikeMin)
			} else {
				d = min(d, spikeMax-cur)
			}
			ev.Kind, rate = KindSpike, cur+d
		}
		c.held, c.heldKind, c.offset = HeldReadings, ev.Kind, rate-cur
	} else if c.held > 0 {
		c.held--
		lo, hi := kindRange(c.heldKind)
		ev.Kind, ev.Held, rate = c.heldKind, true, min(max(rate+c.offset, lo), hi)
	}
	ts := at
	if g.rng.Float64() < g.cfg.LateRatio {
		ev.Late = true
		ts = at.Add(-time.Duration(1000+g.rng.IntN(7001)) * time.Millisecond)
	}
	ev.Reading = messages.Heartbeat{EventID: ev.ID, CustomerID: c.id, Timestamp: ts.UTC().Truncate(time.Millisecond), HeartRate: rate}
	if g.rng.Float64() < g.cfg.InvalidRatio {
		ev.Kind, ev.Held = KindInvalid, false
		ev.Payload = g.invalidPayload(ev.Reading)
		ev.Reading = messages.Heartbeat{}
		return ev
	}
	ev.Payload, _ = ev.Reading.Marshal()
	return ev
}

// invalidPayload corrupts a reading the ways real sensors and producers do.
func (g *Generator) invalidPayload(h messages.Heartbeat) []byte {
	ts := h.Timestamp.Format(messages.TimestampLayout)
	switch g.rng.IntN(8) {
	case 0: // out of range, low
		h.HeartRate = g.rng.IntN(25)
	case 1: // out of range, high
		h.HeartRate = 221 + g.rng.IntN(200)
	case 2:
		return []byte(`{"event_id":"` + h.EventID + `","customer_id":"` + h.CustomerID + `","timestamp":"` + ts + `","heart_rate":`)
	case 3:
		return []byte(`{"event_id":"` + h.EventID + `","customer_id":"` + h.CustomerID + `","timestamp":"` + ts + `"}`)
	case 4:
		return []byte(`{"event_id":"not-a-uuid","customer_id":"` + h.CustomerID + `","timestamp":"` + ts + `","heart_rate":72}`)
	case 5:
		return []byte(`{"event_id":"` + h.EventID + `","customer_id":"` + h.CustomerID + `","timestamp":"` + h.Timestamp.Format("2006-01-02 15:04:05") + `","heart_rate":72}`)
	case 6:
		return []byte(`{"event_id":"` + h.EventID + `","customer_id":"` + h.CustomerID + `","timestamp":"` + ts + `","heart_rate":"72"}`)
	default:
		return []byte("heart_rate=72;customer=" + h.CustomerID)
	}
	b, _ := h.Marshal()
	return b
}

// BurstSchedule decides, second by second, whether traffic bursts: a burst
// starts with probability 5 % a second and lasts 2–5 s.
type BurstSchedule struct {
	rng       *rand.Rand
	remaining int
}

// NewBurstSchedule returns a schedule for seed.
func NewBurstSchedule(seed uint64) *BurstSchedule {
	return &BurstSchedule{rng: rand.New(rand.NewPCG(seed^0xb5ad4eceda1ce2a9, seed))}
}

// Bursting reports whether the next second is part of a burst.
func (b *BurstSchedule) Bursting() bool {
	if b.remaining > 0 {
		b.remaining--
		return true
	}
	if b.rng.Float64() < 0.05 {
		b.remaining = 1 + b.rng.IntN(4)
		return true
	}
	return false
}

package simulate

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"
)

// Label types: the ground truth a [Physiology] scenario writes beside its
// readings.
const (
	// Clinical episodes, injected into awake hours.
	LabelRestingTachycardia = "RESTING_TACHYCARDIA" // gradual rise to 130–165 bpm at rest, 20–45 min
	LabelBradycardia        = "BRADYCARDIA"         // gradual fall to 32–37 bpm, 20–45 min
	LabelSuddenJump         = "SUDDEN_JUMP"         // instant rise of 36–55 bpm, 2–8 min
	// Episodes where one rule could mask another, injected only when
	// [PhysiologyConfig.Episodes] names them.
	LabelJumpTachycardia = "JUMP_TACHYCARDIA" // instant rise into 130–160 bpm, 12–25 min
	LabelDropBradycardia = "DROP_BRADYCARDIA" // instant fall of 30–40 bpm, then to 32–37 bpm within 1–3 min; 12–20 min
	// LabelRestDrop is an instant fall of 30 bpm or more (36 where the
	// resting rate allows) to a new resting level of 55–65 bpm, held 15–25
	// min; a BRADYCARDIA (a gradual fall to 32–37 bpm for 12–20 min)
	// follows from that level, labelled on its own.
	LabelRestDrop = "REST_DROP"
	// The wearable sends nothing for 10–30 minutes.
	LabelDeviceOff = "DEVICE_OFF"
	// Sensor artefacts: isolated, nothing clinical.
	LabelArtefactSpike   = "ARTEFACT_SPIKE"   // one reading 20–40 bpm off
	LabelArtefactDropout = "ARTEFACT_DROPOUT" // 5–90 s without readings
	LabelArtefactFlat    = "ARTEFACT_FLAT"    // the sensor repeats one value for 10–60 s
	// LabelArtefactBoundary is one reading 24 bpm off the four before it
	// (which repeat one value), the readings after it 6 bpm the other way —
	// 30 from the artefact — for a minute: the boundary of SPIKE's settled
	// base.
	LabelArtefactBoundary = "ARTEFACT_BOUNDARY"
)

// Label classes.
const (
	ClassClinical = "clinical"
	ClassSignal   = "signal"
	ClassArtefact = "artefact"
)

// LabelClass is the class of label type typ.
func LabelClass(typ string) string {
	switch typ {
	case LabelRestingTachycardia, LabelBradycardia, LabelSuddenJump, LabelJumpTachycardia, LabelDropBradycardia, LabelRestDrop:
		return ClassClinical
	case LabelDeviceOff:
		return ClassSignal
	}
	return ClassArtefact
}

// Label is one injected episode or artefact of one customer: the readings
// from Start to End (inclusive) show it.
type Label struct {
	CustomerID string
	Type       string
	Start, End time.Time
}

// PhysiologyConfig shapes a physiological scenario. Zero fields take the
// defaults of [DefaultPhysiologyConfig].
type PhysiologyConfig struct {
	Customers int
	Seed      uint64
	// Start is when the simulated day begins: the customers wake up.
	Start time.Time
	Span  time.Duration
	// DayLength compresses the simulated day (awake two thirds, asleep one
	// third); 24h is real time. Episodes, exercise and artefacts keep their
	// real durations.
	DayLength time.Duration
	// EpisodesPerCustomer clinical episodes are placed in each customer's
	// awake hours, their types taken in turn.
	EpisodesPerCustomer int
	// Episodes are the clinical label types injected, in turn; empty:
	// RESTING_TACHYCARDIA, BRADYCARDIA, SUDDEN_JUMP.
	Episodes []string
	// RestingRate and RestingSD (zero: 65 and 10 bpm) shape the resting
	// rates: ~ N(RestingRate, RestingSD) clipped to 40–100.
	RestingRate, RestingSD float64
	// DeviceOffRatio is the share of customers whose wearable goes silent
	// once.
	DeviceOffRatio float64
	// Exercise bouts a simulated day, awake.
	ExercisePerDay float64
	// Artefacts an hour, each kind.
	SpikesPerHour, DropoutsPerHour, FlatRunsPerHour, BoundaryArtefactsPerHour float64
	// LateRatio is the share of readings delivered after the customer's
	// next one (backdated).
	LateRatio float64
}

// DefaultPhysiologyConfig is a scenario of one 24-hour day.
func DefaultPhysiologyConfig() PhysiologyConfig {
	return PhysiologyConfig{
		Customers: 100, Seed: 1, Start: time.Date(2026, 11, 25, 7, 0, 0, 0, time.UTC),
		Span: 24 * time.Hour, DayLength: 24 * time.Hour,
		EpisodesPerCustomer: 2, DeviceOffRatio: 0.3, ExercisePerDay: 3,
		SpikesPerHour: 3, DropoutsPerHour: 1, FlatRunsPerHour: 1, LateRatio: 0.002,
	}
}

func (c PhysiologyConfig) withDefaults() PhysiologyConfig {
	d := DefaultPhysiologyConfig()
	if c.Customers <= 0 {
		c.Customers = d.Customers
	}
	if c.Start.IsZero() {
		c.Start = d.Start
	}
	if c.Span <= 0 {
		c.Span = d.Span
	}
	if c.DayLength <= 0 {
		c.DayLength = d.DayLength
	}
	if c.RestingRate <= 0 {
		c.RestingRate = 65
	}
	if c.RestingSD <= 0 {
		c.RestingSD = 10
	}
	return c
}

// PhysReading is one generated reading of customer Customer (an index
// into [Physiology.CustomerIDs]).
type PhysReading struct {
	Customer int
	Time     time.Time
	Rate     int
}

// Physiology generates a scenario: for each customer a resting rate ~
// N(65, 10) bpm clipped to 40–100, a sleep dip of 10–20 % at night, exercise
// bouts (first-order rise and exponential recovery, time constants 30–60 s),
// 1 Hz variation (median |Δ| about 1 bpm: a slow ±2 % drift and an AR(1)
// term), injected clinical episodes and sensor artefacts, with the labels
// of what was injected. The same config gives the same scenario. It is not
// safe for concurrent use.
type Physiology struct {
	cfg       PhysiologyConfig
	customers []*physCustomer
	labels    []Label
	sec       int
	secs      int
	cur       int // next customer to step this second
	queue     []PhysReading
}

type segKind int

const (
	segTachy segKind = iota
	segBrady
	segJump
	segDeviceOff
	segExercise
	segSpike
	segDropout
	segFlat
	segJumpTachy
	segDropBrady // also REST_DROP: a drop held until fall, then bradycardia
	segBoundary
)

type segment struct {
	kind       segKind
	start, end int // seconds from the scenario start, end exclusive
	target     float64
	tauOn      float64
	tauOff     float64
	// segDropBrady: the drop (bpm, positive) until fall, then target.
	drop float64
	fall int
}

type physCustomer struct {
	id    string
	rng   *rand.Rand
	phase time.Duration // offset of its readings within each second
	rest  float64
	dip   float64

	segs []segment // by start
	next int       // first segment not yet over

	base, episode, exercise float64
	drift, noise            float64
	flat                    int // the repeated value during a flat run, 0 when none
	last                    int
	late                    *PhysReading
	boundary                int // the level a boundary artefact holds, 0 when none
}

// NewPhysiology plans the scenario of cfg.
func NewPhysiology(cfg PhysiologyConfig) *Physiology {
	cfg = cfg.withDefaults()
	p := &Physiology{cfg: cfg, secs: int(cfg.Span / time.Second)}
	for i := range cfg.Customers {
		c := &physCustomer{
			id:  fmt.Sprintf("phys_%05d", i+1),
			rng: rand.New(rand.NewPCG(cfg.Seed, uint64(i)+0x51ed27)),
		}
		c.phase = time.Duration(c.rng.IntN(1000)) * time.Millisecond
		c.rest = math.Max(40, math.Min(100, cfg.RestingRate+cfg.RestingSD*c.rng.NormFloat64()))
		c.dip = 0.10 + 0.10*c.rng.Float64()
		c.base = c.rest * p.sleepFactor(c, 0)
		p.plan(c, i)
		p.customers = append(p.customers, c)
	}
	slices.SortStableFunc(p.labels, func(a, b Label) int { return a.Start.Compare(b.Start) })
	return p
}

// CustomerIDs returns the customers' ids, by index.
func (p *Physiology) CustomerIDs() []string {
	ids := make([]string, len(p.customers))
	for i, c := range p.customers {
		ids[i] = c.id
	}
	return ids
}

// Labels returns the ground truth, by start.
func (p *Physiology) Labels() []Label { return p.labels }

// Config returns the scenario's configuration, defaults filled in.
func (p *Physiology) Config() PhysiologyConfig { return p.cfg }

// asleep reports whether second t of the scenario is in a simulated night:
// the last third of each day.
func (p *Physiology) asleep(t int) bool {
	day := p.cfg.DayLength.Seconds()
	phase := math.Mod(float64(t), day) / day
	return phase >= 2.0/3
}

func (p *Physiology) sleepFactor(c *physCustomer, t int) float64 {
	if p.asleep(t) {
		return 1 - c.dip
	}
	return 1
}

// awake returns the awake stretches [from, to) of the scenario, in seconds.
func (p *Physiology) awake() [][2]int {
	var out [][2]int
	day := int(p.cfg.DayLength / time.Second)
	for d := 0; d < p.secs; d += day {
		out = append(out, [2]int{d, min(d+day*2/3, p.secs)})
	}
	return out
}

func uniform(rng *rand.Rand, lo, hi float64) float64 { return lo + (hi-lo)*rng.Float64() }

// plan places the customer's episodes, exercise and artefacts, none
// overlapping another (with room to settle after each).
func (p *Physiology) plan(c *physCustomer, index int) {
	rng := c.rng
	type busy struct{ from, to int }
	var taken []busy
	free := func(from, to int) bool {
		for _, b := range taken {
			if from < b.to && b.from < to {
				return false
			}
		}
		return true
	}
	awake := p.awake()
	place := func(length, before, after int, inAwake bool) (int, bool) {
		for range 200 {
			var lo, hi int
			if inAwake {
				w := awake[rng.IntN(len(awake))]
				lo, hi = w[0]+before, w[1]-length-after
			} else {
				lo, hi = before, p.secs-length-after
			}
			if hi <= lo {
				continue
			}
			s := lo + rng.IntN(hi-lo)
			if free(s-before, s+length+after) {
				taken = append(taken, busy{s - before, s + length + after})
				return s, true
			}
		}
		return 0, false
	}
	minute := 60
	add := func(seg segment, label string) {
		c.segs = append(c.segs, seg)
		if label != "" {
			end := seg.end - 1
			p.labels = append(p.labels, Label{CustomerID: c.id, Type: label,
				Start: p.at(c, seg.start), End: p.at(c, end)})
		}
	}
	kinds := []string{LabelRestingTachycardia, LabelBradycardia, LabelSuddenJump}
	if len(p.cfg.Episodes) > 0 {
		kinds = p.cfg.Episodes
	}
	for k := range p.cfg.EpisodesPerCustomer {
		var seg segment
		label := kinds[(index+k)%len(kinds)]
		switch label {
		case LabelJumpTachycardia:
			seg = segment{kind: segJumpTachy, target: uniform(rng, 130, 160)}
			seg.end = int(uniform(rng, 12, 25) * 60)
		case LabelDropBradycardia, LabelRestDrop:
			seg = segment{kind: segDropBrady, drop: uniform(rng, 30, 40), target: uniform(rng, 32, 37),
				tauOn: uniform(rng, 20, 40), tauOff: uniform(rng, 60, 120)}
			if label == LabelDropBradycardia {
				seg.fall = int(uniform(rng, 1, 3) * 60)
			} else {
				// A new resting level, not itself a bradycardia.
				seg.drop = c.rest - uniform(rng, 55, max(55, min(65, c.rest-36)))
				seg.fall = int(uniform(rng, 15, 25) * 60)
			}
			seg.end = seg.fall + int(uniform(rng, 12, 20)*60)
		}
		if seg.kind != 0 {
			s, ok := place(seg.end, 3*minute, 15*minute, true)
			if !ok {
				continue
			}
			seg.start, seg.end, seg.fall = s, s+seg.end, s+seg.fall
			if label == LabelRestDrop {
				c.segs = append(c.segs, seg)
				p.labels = append(p.labels, Label{CustomerID: c.id, Type: LabelRestDrop, Start: p.at(c, seg.start), End: p.at(c, seg.fall-1)},
					Label{CustomerID: c.id, Type: LabelBradycardia, Start: p.at(c, seg.fall), End: p.at(c, seg.end-1)})
				continue
			}
			add(seg, label)
			continue
		}
		kind := map[string]segKind{LabelRestingTachycardia: segTachy, LabelBradycardia: segBrady}[label]
		if label == LabelSuddenJump {
			kind = segJump
		}
		switch kind {
		case segTachy:
			seg = segment{kind: kind, target: uniform(rng, 130, 165), tauOn: uniform(rng, 60, 120), tauOff: uniform(rng, 60, 120)}
			seg.end = int(uniform(rng, 20, 45) * 60)
			label = LabelRestingTachycardia
		case segBrady:
			seg = segment{kind: kind, target: uniform(rng, 32, 37), tauOn: uniform(rng, 30, 90), tauOff: uniform(rng, 30, 90)}
			seg.end = int(uniform(rng, 20, 45) * 60)
			label = LabelBradycardia
		default:
			seg = segment{kind: kind, target: uniform(rng, 36, 55)}
			seg.end = int(uniform(rng, 2, 8) * 60)
			label = LabelSuddenJump
		}
		s, ok := place(seg.end, 3*minute, 15*minute, true)
		if !ok {
			continue
		}
		seg.start, seg.end = s, s+seg.end
		add(seg, label)
	}
	if rng.Float64() < p.cfg.DeviceOffRatio {
		length := int(uniform(rng, 10, 30) * 60)
		if s, ok := place(length, 3*minute, 10*minute, true); ok {
			add(segment{kind: segDeviceOff, start: s, end: s + length}, LabelDeviceOff)
		}
	}
	days := p.cfg.Span.Hours() / p.cfg.DayLength.Hours()
	for range poisson(rng, p.cfg.ExercisePerDay*days) {
		effort := int(uniform(rng, 2, 8) * 60)
		if s, ok := place(effort, 3*minute, 10*minute, true); ok {
			add(segment{kind: segExercise, start: s, end: s + effort, target: uniform(rng, 25, 70),
				tauOn: uniform(rng, 30, 60), tauOff: uniform(rng, 30, 60)}, "")
		}
	}
	hours := p.cfg.Span.Hours()
	for _, a := range []struct {
		kind   segKind
		rate   float64
		lo, hi float64
		label  string
	}{
		{segSpike, p.cfg.SpikesPerHour, 1, 1, LabelArtefactSpike},
		{segDropout, p.cfg.DropoutsPerHour, 5, 90, LabelArtefactDropout},
		{segFlat, p.cfg.FlatRunsPerHour, 10, 60, LabelArtefactFlat},
		{segBoundary, p.cfg.BoundaryArtefactsPerHour, 65, 65, LabelArtefactBoundary},
	} {
		if a.rate <= 0 {
			continue
		}
		for range poisson(rng, a.rate*hours) {
			length := int(uniform(rng, a.lo, a.hi+1))
			s, ok := place(length, minute, minute, false)
			if !ok {
				continue
			}
			seg := segment{kind: a.kind, start: s, end: s + length}
			switch a.kind {
			case segSpike:
				seg.target = uniform(rng, 20, 40)
				if rng.IntN(5) == 0 {
					seg.target = -seg.target
				}
			case segBoundary:
				seg.target = 24
				if rng.IntN(2) == 0 {
					seg.target = -24
				}
				// Labelled at the artefact: after the four repeated readings.
				c.segs = append(c.segs, seg)
				p.labels = append(p.labels, Label{CustomerID: c.id, Type: a.label, Start: p.at(c, s+4), End: p.at(c, s+4)})
				continue
			}
			add(seg, a.label)
		}
	}
	slices.SortFunc(c.segs, func(a, b segment) int { return a.start - b.start })
}

// poisson draws from a Poisson distribution of mean lambda.
func poisson(rng *rand.Rand, lambda float64) int {
	l, k, q := math.Exp(-lambda), 0, 1.0
	for {
		q *= rng.Float64()
		if q <= l {
			return k
		}
		k++
	}
}

func (p *Physiology) at(c *physCustomer, sec int) time.Time {
	return p.cfg.Start.Add(time.Duration(sec)*time.Second + c.phase)
}

// Next returns the next reading in delivery order: second by second, each
// customer in turn; a backdated reading comes right after the customer's
// next one. ok is false at the end of the scenario.
func (p *Physiology) Next() (r PhysReading, ok bool) {
	for {
		if len(p.queue) > 0 {
			r, p.queue = p.queue[0], p.queue[1:]
			return r, true
		}
		if p.sec >= p.secs {
			for _, c := range p.customers {
				if c.late != nil {
					p.queue = append(p.queue, *c.late)
					c.late = nil
				}
			}
			if len(p.queue) > 0 {
				continue
			}
			return PhysReading{}, false
		}
		i, sec := p.cur, p.sec
		if p.cur++; p.cur == len(p.customers) {
			p.cur, p.sec = 0, p.sec+1
		}
		c := p.customers[i]
		rate, sends := p.step(c, sec)
		if !sends {
			continue
		}
		r = PhysReading{Customer: i, Time: p.at(c, sec), Rate: rate}
		if c.late != nil {
			p.queue = append(p.queue, *c.late)
			c.late = nil
		}
		if p.cfg.LateRatio > 0 && c.rng.Float64() < p.cfg.LateRatio {
			late := r
			c.late = &late
			continue
		}
		return r, true
	}
}

// step advances customer c to second t and returns its reading, if the
// sensor sends one.
func (p *Physiology) step(c *physCustomer, t int) (rate int, sends bool) {
	for c.next < len(c.segs) && c.segs[c.next].end <= t && !relaxing(c.segs[c.next], t) {
		c.next++
	}
	// The components relax towards their targets: sleep slowly, exercise
	// and episodes with their own time constants.
	tauSleep := math.Max(60, 15*60*p.cfg.DayLength.Hours()/24)
	c.base += (c.rest*p.sleepFactor(c, t) - c.base) * (1 - math.Exp(-1/tauSleep))
	episodeTarget, exerciseTarget := 0.0, 0.0
	episodeTau, exerciseTau := 60.0, 45.0
	var active *segment
	for k := c.next; k < len(c.segs) && c.segs[k].start <= t; k++ {
		s := &c.segs[k]
		in := t < s.end
		switch s.kind {
		case segTachy, segBrady:
			episodeTau = s.tauOff
			if in {
				episodeTarget, episodeTau = s.target-c.base, s.tauOn
			}
		case segJump:
			if in {
				episodeTarget, episodeTau = s.target, 0
			} else if t == s.end {
				episodeTau = 0
			}
		case segJumpTachy:
			if in {
				episodeTarget, episodeTau = s.target-c.base, 0
			} else if t == s.end {
				episodeTau = 0
			}
		case segDropBrady:
			episodeTau = s.tauOff
			switch {
			case t < s.fall:
				episodeTarget, episodeTau = -s.drop, 0
			case in:
				episodeTarget, episodeTau = s.target-c.base, s.tauOn
			}
		case segExercise:
			exerciseTau = s.tauOff
			if in {
				exerciseTarget, exerciseTau = s.target, s.tauOn
			}
		default:
			if in {
				active = s
			}
		}
	}
	c.episode = relax(c.episode, episodeTarget, episodeTau)
	c.exercise = relax(c.exercise, exerciseTarget, exerciseTau)
	const driftTau, driftSD, noisePhi, noiseSD = 300.0, 0.02, 0.7, 0.95
	a := math.Exp(-1 / driftTau)
	c.drift = a*c.drift + math.Sqrt(1-a*a)*driftSD*c.rng.NormFloat64()
	c.noise = noisePhi*c.noise + noiseSD*c.rng.NormFloat64()
	rate = int(math.Round((c.base+c.episode+c.exercise)*(1+c.drift) + c.noise))

	if active != nil {
		switch active.kind {
		case segDeviceOff, segDropout:
			return 0, false
		case segFlat:
			if c.flat == 0 {
				c.flat = c.last
			}
			return c.flat, true
		case segSpike:
			c.last = rate
			return rate + int(math.Round(active.target)), true
		case segBoundary:
			// Four readings repeat the last one, the artefact is 24 off
			// them, and the readings after it 6 the other way.
			k := t - active.start
			if k == 0 {
				c.boundary = c.last
			}
			switch {
			case k < 4:
				return c.boundary, true
			case k == 4:
				return c.boundary + int(active.target), true
			}
			c.last = c.boundary - int(active.target)/4
			return c.last, true
		}
	}
	c.flat = 0
	c.last = rate
	return rate, true
}

// relaxing reports whether segment s still shapes second t after its end:
// physiology settles over a few time constants.
func relaxing(s segment, t int) bool {
	return t < s.end+int(6*s.tauOff)+1
}

func relax(x, target, tau float64) float64 {
	if tau <= 0 {
		return target
	}
	return x + (target-x)*(1-math.Exp(-1/tau))
}

// WriteLabels writes labels as CSV: customer_id,type,class,start,end, with a
// header line.
func WriteLabels(w io.Writer, labels []Label) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"customer_id", "type", "class", "start", "end"})
	for _, l := range labels {
		_ = cw.Write([]string{l.CustomerID, l.Type, LabelClass(l.Type),
			l.Start.UTC().Format(time.RFC3339Nano), l.End.UTC().Format(time.RFC3339Nano)})
	}
	cw.Flush()
	return cw.Error()
}

// WriteCSV writes readings as a recording `go run . replay` takes:
// customer_id,timestamp,heart_rate with a header line.
func WriteCSV(w io.Writer, ids []string, readings []PhysReading) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"customer_id", "timestamp", "heart_rate"})
	for _, r := range readings {
		_ = cw.Write([]string{ids[r.Customer], r.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00"), strconv.Itoa(r.Rate)})
	}
	cw.Flush()
	return cw.Error()
}

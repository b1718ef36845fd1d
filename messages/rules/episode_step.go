package rules

import (
	"time"

	"github.com/google/uuid"
	"github.com/heartbeat/heartbeat/messages"
)

// reading is a Reading as the state keeps it: 32 bytes and no pointer, so
// that a customer's state is a few hundred bytes the collector need not
// scan (a Reading, with its event id as a string, is 48 bytes and a 48-byte
// string).
type reading struct {
	id   uuid.UUID
	at   int64 // Unix nanoseconds
	rate int16
}

func compact(r messages.Reading) reading {
	if r == (messages.Reading{}) {
		return reading{}
	}
	id, err := uuid.Parse(r.EventID)
	if err != nil {
		id = uuid.Nil
	}
	return reading{id: id, at: r.Time.UnixNano(), rate: int16(r.Rate)}
}

func (r reading) public() messages.Reading {
	if r == (reading{}) {
		return messages.Reading{}
	}
	return messages.Reading{EventID: r.id.String(), Time: unixTime(r.at), Rate: int(r.rate)}
}

func unixTime(ns int64) time.Time { return time.Unix(0, ns).UTC() }

// customerEpisodes is what the episode rules keep of one customer. step is
// a pure function of it and a reading, so the live detector, a restarted
// one replaying history, and the evaluation all compute the same episodes.
type customerEpisodes struct {
	// rates are those of the latest in-order readings since the last gap of
	// SignalLossAfter, oldest first, at most 2*SpikeConfirm+3, the newest
	// last: the SPIKE rule is a predicate over them, so a customer's SPIKE
	// state depends on a bounded stretch of its readings and nothing else.
	// tail holds the latest SpikeConfirm+1 of those readings in full — a
	// jump and the readings that confirm it — and so at least the latest
	// reading once there is one.
	rates []int16
	tail  []reading
	// live: the latest reading arrived within SignalLossAfter of its time,
	// so the partition's watermark may declare the customer silent.
	live bool
	// lost: a SIGNAL_LOSS is open. It starts at the latest reading (a
	// reading closes it), so that is all it needs.
	lost bool

	// timer is the running sustain timer: at most one runs, as the low and
	// high bands are apart.
	timer run

	// open is the open clinical episode: at most one at a time, so one
	// physiological event is one alert. A pointer, so that a customer
	// without one (nearly all) pays 8 bytes for it.
	open *openEpisode
}

// run is a sustain timer: readings in the band of SUSTAINED rule kind
// without a break since start, a reading at its threshold. kind is zero
// when no timer runs.
type run struct {
	start   reading
	peak    int16
	trough  int16
	samples int32
	kind    ruleKind
}

func (s *run) add(r reading) {
	if s.samples == 0 || r.rate > s.peak {
		s.peak = r.rate
	}
	if s.samples == 0 || r.rate < s.trough {
		s.trough = r.rate
	}
	s.samples++
}

// Episode kinds, as the state keeps them.
type ruleKind uint8

const (
	kindSpike ruleKind = iota + 1
	kindHigh
	kindLow
)

func (k ruleKind) name() string {
	switch k {
	case kindSpike:
		return messages.Spike
	case kindHigh:
		return messages.SustainedHigh
	case kindLow:
		return messages.SustainedLow
	}
	return ""
}

func kindOf(rule string) ruleKind {
	switch rule {
	case messages.Spike:
		return kindSpike
	case messages.SustainedHigh:
		return kindHigh
	case messages.SustainedLow:
		return kindLow
	}
	return 0
}

// openEpisode is an open clinical episode.
type openEpisode struct {
	start, opened, last reading
	reclassified        reading // zero unless a SPIKE became SUSTAINED
	openedAt            int64
	clearStart          int64
	samples             int32
	peak, trough, base  int16
	rule, openedAs      ruleKind
	clearing            bool
}

// up reports whether a SPIKE jumped up (or a SUSTAINED episode is high).
func (o *openEpisode) up() bool {
	if o.rule == kindSpike {
		return o.start.rate > o.base
	}
	return o.rule == kindHigh
}

// side is the SUSTAINED rule of o's side: HIGH for a jump up.
func (o *openEpisode) side() ruleKind {
	if o.up() {
		return kindHigh
	}
	return kindLow
}

func (o *openEpisode) hold(r reading) {
	o.clearing = false
	o.last = r
	o.samples++
	o.peak, o.trough = max(o.peak, r.rate), min(o.trough, r.rate)
}

// episode is o as an Episode of customer.
func (p *EpisodeParams) episode(customer string, o *openEpisode) messages.Episode {
	ep := messages.Episode{
		CustomerID: customer, Rule: o.rule.name(), Start: o.start.public(), OpenedAt: unixTime(o.openedAt),
		Opened: o.opened.public(), Last: o.last.public(), Peak: int(o.peak), Trough: int(o.trough), Samples: int(o.samples),
		Base: int(o.base), Reclassified: o.reclassified.public(),
	}
	if o.openedAs != o.rule {
		ep.OpenedAs = o.openedAs.name()
	}
	switch o.rule {
	case kindSpike:
		ep.Severity, ep.Threshold = messages.SeverityMedium, p.SpikeDelta
	case kindHigh:
		ep.Severity, ep.Threshold = messages.SeverityHigh, p.SustainedHigh
	case kindLow:
		ep.Severity, ep.Threshold = messages.SeverityHigh, p.SustainedLow
	}
	return ep
}

// openOf is the open episode of recorded episode ep, as recorded (when
// there are no readings to rebuild it from).
func openOf(ep messages.Episode) *openEpisode {
	o := &openEpisode{
		start: compact(ep.Start), opened: compact(ep.Opened), last: compact(ep.Last), reclassified: compact(ep.Reclassified),
		openedAt: ep.OpenedAt.UnixNano(), samples: int32(ep.Samples), peak: int16(ep.Peak), trough: int16(ep.Trough),
		base: int16(ep.Base), rule: kindOf(ep.Rule), openedAs: kindOf(ep.Identity()),
	}
	return o
}

// has reports whether c has seen a reading.
func (c *customerEpisodes) has() bool { return len(c.tail) > 0 }

// latest is c's latest in-order reading; c.has() must hold.
func (c *customerEpisodes) latest() reading { return c.tail[len(c.tail)-1] }

// clone returns a copy that shares nothing mutable with c.
func (c customerEpisodes) clone() customerEpisodes {
	c.rates = append([]int16(nil), c.rates...)
	c.tail = append([]reading(nil), c.tail...)
	return c.cloneOpen()
}

// cloneOpen copies the open episode, leaving rates and tail to the caller.
func (c customerEpisodes) cloneOpen() customerEpisodes {
	if c.open != nil {
		o := *c.open
		c.open = &o
	}
	return c
}

func (p *EpisodeParams) ringSize() int { return 2*p.SpikeConfirm + 3 }

func (p *EpisodeParams) tailSize() int { return p.SpikeConfirm + 1 }

// observe records in-order reading r in c's recent readings; a gap of
// SignalLossAfter empties them first.
func (p *EpisodeParams) observe(c *customerEpisodes, r reading) {
	if c.has() && r.at-c.latest().at >= int64(p.SignalLossAfter) {
		c.rates, c.tail = c.rates[:0], c.tail[:0]
	}
	if c.rates == nil {
		c.rates, c.tail = make([]int16, 0, p.ringSize()), make([]reading, 0, p.tailSize())
	}
	c.rates = push(c.rates, r.rate, p.ringSize())
	c.tail = push(c.tail, r, p.tailSize())
}

// push appends x to s, dropping its oldest element once s holds n.
func push[T any](s []T, x T, n int) []T {
	if len(s) < n {
		return append(s, x)
	}
	copy(s, s[1:])
	s[n-1] = x
	return s[:n]
}

// step moves c past reading r of customer and appends the episodes it
// opens, reclassifies and closes to out, in that order of the rules below.
// A reading not later than the customer's latest is late (or a duplicate)
// and changes nothing.
func (p *EpisodeParams) step(customer string, c *customerEpisodes, r reading, out []Change) []Change {
	if c.has() && r.at <= c.latest().at {
		return out
	}
	if c.has() {
		if !c.lost && r.at-c.latest().at >= int64(p.SignalLossAfter) {
			out = p.loseSignal(customer, c, out)
		}
		if c.lost {
			ep := p.lossEpisode(customer, c)
			ep.Closed, ep.End, ep.CloseReason = true, unixTime(r.at), messages.ClosedSignalRestored
			out = append(out, Change{Kind: Closed, Episode: ep})
			c.lost = false
		}
	}
	p.observe(c, r)

	// Sustain timers run on every reading, whatever episode is open — but
	// not the timer of the open episode's own rule, which is alerting
	// already — so no episode ever delays a SUSTAINED condition.
	p.track(c, r)
	if t := c.timer; t.kind != 0 && r.at-t.start.at >= int64(p.SustainFor) {
		out = p.sustained(customer, c, t.kind, t, r, out)
		c.timer = run{}
		return out
	}

	// The open clinical episode holds, clears, or — a SPIKE — settles.
	if o := c.open; o != nil {
		if p.holds(o, int(r.rate)) {
			o.hold(r)
		} else if !o.clearing {
			o.clearing, o.clearStart = true, r.at
		}
		reason := ""
		switch {
		case o.rule == kindSpike && c.timer.kind == o.side():
			// A timer of its side runs: whether this is a sustained
			// condition that began with a jump is not decided yet.
		case o.clearing && r.at-o.clearStart >= int64(p.ClearFor):
			reason = messages.ClosedCleared
		case o.rule == kindSpike && r.at-o.start.at >= int64(p.SustainFor):
			reason = messages.ClosedSettled
		}
		if reason != "" {
			out = append(out, p.closeOpen(customer, c, reason))
		}
	}
	if c.open != nil {
		// One clinical episode at a time: a jump during one is part of it.
		return out
	}

	// SPIKE: the jump SpikeConfirm readings ago, from a settled rate, and
	// every reading since far enough from the rates before it.
	if j, base, ok := p.confirmedJump(c.rates); ok {
		// The jump is the oldest of the tail: N readings before the newest.
		o := &openEpisode{start: c.tail[0], opened: r, last: r, openedAt: r.at, base: int16(base), rule: kindSpike, openedAs: kindSpike}
		o.peak, o.trough = o.start.rate, o.start.rate
		for _, x := range c.rates[j:] {
			o.peak, o.trough = max(o.peak, x), min(o.trough, x)
			o.samples++
		}
		c.open = o
		out = append(out, Change{Kind: Opened, Episode: p.episode(customer, o)})
	}
	return out
}

// sustained handles the SUSTAINED condition of kind that timer s met at
// reading r: with no clinical episode open, its episode opens; an open
// SPIKE of its side (up for HIGH, down for LOW) becomes it — one alert for
// a sustained condition that began with a jump; any other open episode
// (the other side's) closes first, superseded.
func (p *EpisodeParams) sustained(customer string, c *customerEpisodes, kind ruleKind, s run, r reading, out []Change) []Change {
	if o := c.open; o != nil {
		if o.rule == kindSpike && o.side() == kind {
			o.rule, o.reclassified = kind, r
			o.hold(r)
			return append(out, Change{Kind: Reclassified, Episode: p.episode(customer, o)})
		}
		out = append(out, p.closeOpen(customer, c, messages.ClosedSuperseded))
	}
	o := &openEpisode{start: s.start, opened: r, last: r, openedAt: r.at, samples: s.samples, peak: s.peak, trough: s.trough,
		rule: kind, openedAs: kind}
	c.open = o
	return append(out, Change{Kind: Opened, Episode: p.episode(customer, o)})
}

// closeOpen closes c's open clinical episode at its last holding reading.
func (p *EpisodeParams) closeOpen(customer string, c *customerEpisodes, reason string) Change {
	ep := p.episode(customer, c.open)
	ep.Closed, ep.End, ep.CloseReason = true, ep.Last.Time, reason
	c.open = nil
	return Change{Kind: Closed, Episode: ep}
}

// confirmedJump reports whether the rates of the latest readings rs
// (oldest first, the newest last) complete a SPIKE, with N = SpikeConfirm
// and far = SpikeDelta-Hysteresis: rs[j], the reading N before the newest,
// jumped at least SpikeDelta from base = rs[j-1]; the N+2 readings before
// the jump are all there (no gap since the first of them) and settled —
// each of the N+1 before base less than far from it, so the return of an
// artefact is no jump; and every reading from the jump on is at least far
// from every one of those N+2, on the jump's side, so that no single
// reading — an artefact — can make a jump of the readings around it.
func (p *EpisodeParams) confirmedJump(rs []int16) (j, base int, ok bool) {
	n := p.SpikeConfirm
	j = len(rs) - 1 - n
	if j-n-2 < 0 {
		return 0, 0, false
	}
	base = int(rs[j-1])
	if abs(int(rs[j])-base) < p.SpikeDelta {
		return 0, 0, false
	}
	far := p.SpikeDelta - p.Hysteresis
	dir := 1
	if int(rs[j]) < base {
		dir = -1
	}
	// edge is the settled reading nearest the jump's side.
	edge := base
	for _, x := range rs[j-n-2 : j-1] {
		if abs(int(x)-base) >= far {
			return 0, 0, false
		}
		if dir*(int(x)-edge) > 0 {
			edge = int(x)
		}
	}
	for _, x := range rs[j:] {
		if dir*(int(x)-edge) < far {
			return 0, 0, false
		}
	}
	return j, base, true
}

// track moves the sustain timer past r. A Schmitt trigger, so that 1 Hz
// noise around the threshold does not restart it: a reading at a
// threshold starts that side's timer, a reading in its band (the threshold
// widened by the hysteresis) keeps it, any other stops it. The bands are
// apart, so one timer at most runs; the timer of the open episode's own
// rule does not start. SUSTAINED_LOW first, as LOW came first in the
// original rules.
func (p *EpisodeParams) track(c *customerEpisodes, r reading) {
	rate := int(r.rate)
	t := &c.timer
	switch {
	case t.kind == kindLow && rate <= p.SustainedLow+p.Hysteresis,
		t.kind == kindHigh && rate >= p.SustainedHigh-p.Hysteresis:
		t.add(r)
		return
	}
	*t = run{}
	var kind ruleKind
	switch {
	case rate <= p.SustainedLow:
		kind = kindLow
	case rate >= p.SustainedHigh:
		kind = kindHigh
	default:
		return
	}
	if c.open != nil && c.open.rule == kind {
		return
	}
	*t = run{kind: kind, start: r}
	t.add(r)
}

// holds reports whether rate keeps the open episode o open: its condition
// widened by the hysteresis.
func (p *EpisodeParams) holds(o *openEpisode, rate int) bool {
	switch o.rule {
	case kindHigh:
		return rate >= p.SustainedHigh-p.Hysteresis
	case kindLow:
		return rate <= p.SustainedLow+p.Hysteresis
	case kindSpike:
		dir := 1
		if !o.up() {
			dir = -1
		}
		return dir*(rate-int(o.base)) >= p.SpikeDelta-p.Hysteresis
	}
	return false
}

// lossEpisode is c's open SIGNAL_LOSS: from its latest reading.
func (p *EpisodeParams) lossEpisode(customer string, c *customerEpisodes) messages.Episode {
	last := c.latest().public()
	return messages.Episode{
		CustomerID: customer, Rule: messages.SignalLoss, Severity: messages.SeverityLow, Threshold: int(p.SignalLossAfter / time.Second),
		Start: last, OpenedAt: last.Time.Add(p.SignalLossAfter), Last: last, Peak: last.Rate, Trough: last.Rate,
	}
}

// loseSignal opens SIGNAL_LOSS from the customer's latest reading: its open
// clinical episode closes there and every timer starts again afresh.
func (p *EpisodeParams) loseSignal(customer string, c *customerEpisodes, out []Change) []Change {
	if c.open != nil {
		out = append(out, p.closeOpen(customer, c, messages.ClosedSignalLoss))
	}
	c.timer = run{}
	c.lost = true
	return append(out, Change{Kind: Opened, Episode: p.lossEpisode(customer, c)})
}

// lost reports whether the live customer's silence has reached
// SignalLossAfter by event time watermark (Unix nanoseconds).
func (p *EpisodeParams) lost(c *customerEpisodes, watermark int64) bool {
	return c.has() && c.live && !c.lost && watermark >= c.latest().at+int64(p.SignalLossAfter)
}

// arrived records whether in-order reading r, which arrived at arrival (zero:
// at its own time), was live.
func (p *EpisodeParams) arrived(c *customerEpisodes, r reading, arrival time.Time) {
	if c.has() && c.latest() == r {
		c.live = arrival.IsZero() || arrival.UnixNano()-r.at <= int64(p.SignalLossAfter)
	}
}

// openEpisodes lists c's open episodes.
func (p *EpisodeParams) openEpisodes(customer string, c *customerEpisodes) []messages.Episode {
	var out []messages.Episode
	if c.open != nil {
		out = append(out, p.episode(customer, c.open))
	}
	if c.lost {
		out = append(out, p.lossEpisode(customer, c))
	}
	return out
}

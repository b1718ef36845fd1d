package rules

import "time"

// customerEpisodes is what the episode rules keep of one customer. step is
// a pure function of it and a reading, so the live detector, a restarted
// one replaying history, and the evaluation all compute the same episodes.
type customerEpisodes struct {
	has  bool
	last Reading // latest in-order reading
	// live: the latest reading arrived within SignalLossAfter of its time,
	// so the partition's watermark may declare the customer silent.
	live bool

	// recent holds the latest in-order readings since the last gap of
	// SignalLossAfter, oldest first, at most 2*SpikeConfirm+3: the SPIKE
	// rule is a predicate over them, so a customer's SPIKE state depends on
	// a bounded stretch of its readings and nothing else.
	recent []Reading

	high, low run

	// open is the open clinical episode: at most one at a time, so one
	// physiological event is one alert.
	open *openEpisode
	loss *Episode // open SIGNAL_LOSS
}

// run is a pending sustain timer: readings meeting a SUSTAINED condition
// without a break since start.
type run struct {
	active bool
	start  Reading
	stats  stats
}

type stats struct {
	peak, trough, samples int
	last                  Reading
}

func (s *stats) add(r Reading) {
	if s.samples == 0 || r.Rate > s.peak {
		s.peak = r.Rate
	}
	if s.samples == 0 || r.Rate < s.trough {
		s.trough = r.Rate
	}
	s.samples++
	s.last = r
}

type openEpisode struct {
	Episode
	clearing   bool
	clearStart time.Time
}

// clone returns a copy that shares nothing mutable with c.
func (c customerEpisodes) clone() customerEpisodes {
	c.recent = append([]Reading(nil), c.recent...)
	return c.clonePointers()
}

// clonePointers copies the open episodes, leaving recent to the caller.
func (c customerEpisodes) clonePointers() customerEpisodes {
	if c.open != nil {
		o := *c.open
		c.open = &o
	}
	if c.loss != nil {
		l := *c.loss
		c.loss = &l
	}
	return c
}

func (p *EpisodeParams) ringSize() int { return 2*p.SpikeConfirm + 3 }

// observe records in-order reading r in c's recent readings; a gap of
// SignalLossAfter empties them first.
func (p *EpisodeParams) observe(c *customerEpisodes, r Reading) {
	if c.has && r.Time.Sub(c.last.Time) >= p.SignalLossAfter {
		c.recent = c.recent[:0]
	}
	if n := p.ringSize(); len(c.recent) == n {
		copy(c.recent, c.recent[1:])
		c.recent[n-1] = r
	} else {
		c.recent = append(c.recent, r)
	}
	c.has, c.last = true, r
}

// step moves c past reading r of customer and appends the episodes it
// opens and closes to out, closes first. A reading not later than the
// customer's latest is late (or a duplicate) and changes nothing.
func (p *EpisodeParams) step(customer string, c *customerEpisodes, r Reading, out []Change) []Change {
	if c.has && !r.Time.After(c.last.Time) {
		return out
	}
	if c.has {
		if c.loss == nil && r.Time.Sub(c.last.Time) >= p.SignalLossAfter {
			out = p.loseSignal(customer, c, out)
		}
		if c.loss != nil {
			ep := *c.loss
			ep.Closed, ep.End, ep.CloseReason = true, r.Time, ClosedSignalRestored
			out = append(out, Change{Kind: Closed, Episode: ep})
			c.loss = nil
		}
	}
	p.observe(c, r)

	// The open clinical episode holds, or clears.
	if o := c.open; o != nil {
		if p.holds(o, r.Rate) {
			o.clearing = false
			o.Last = r
			o.Samples++
			o.Peak, o.Trough = max(o.Peak, r.Rate), min(o.Trough, r.Rate)
		} else {
			if !o.clearing {
				o.clearing, o.clearStart = true, r.Time
			}
			if r.Time.Sub(o.clearStart) >= p.ClearFor {
				ep := o.Episode
				ep.Closed, ep.End, ep.CloseReason = true, ep.Last.Time, ClosedCleared
				out = append(out, Change{Kind: Closed, Episode: ep})
				c.open = nil
			}
		}
	}
	if c.open != nil {
		// One clinical episode at a time: the sustain timers wait until it
		// closes, and start afresh.
		c.high, c.low = run{}, run{}
		return out
	}

	// Sustain timers; SUSTAINED_LOW first, as LOW came first in the
	// original rules.
	lowAt, highAt := r.Rate <= p.SustainedLow, r.Rate >= p.SustainedHigh
	track(&c.low, lowAt, r.Rate <= p.SustainedLow+p.Hysteresis, r)
	track(&c.high, highAt, r.Rate >= p.SustainedHigh-p.Hysteresis, r)
	for _, s := range []struct {
		run  *run
		at   bool
		rule string
		th   int
	}{{&c.low, lowAt, SustainedLow, p.SustainedLow}, {&c.high, highAt, SustainedHigh, p.SustainedHigh}} {
		if s.run.active && s.at && r.Time.Sub(s.run.start.Time) >= p.SustainFor {
			out = c.openClinical(customer, s.rule, SeverityHigh, s.th, s.run.start, r, s.run.stats, 0, out)
			c.high, c.low = run{}, run{}
			return out
		}
	}

	// SPIKE: the jump SpikeConfirm readings ago, from a settled rate, and
	// every reading since far enough from that rate.
	if j, base, ok := p.confirmedJump(c.recent); ok {
		var s stats
		for _, x := range c.recent[j:] {
			s.add(x)
		}
		out = c.openClinical(customer, Spike, SeverityMedium, p.SpikeDelta, c.recent[j], r, s, base, out)
		c.high, c.low = run{}, run{}
	}
	return out
}

// confirmedJump reports whether the latest readings rs (oldest first, the
// newest last) complete a SPIKE: rs[j], the reading SpikeConfirm readings
// before the newest, jumped at least SpikeDelta from base = rs[j-1]; base
// was settled — less than SpikeDelta-Hysteresis from each of the
// SpikeConfirm+1 readings before it, so the return of an artefact is no
// jump — and every reading after the jump stayed at least
// SpikeDelta-Hysteresis away from base, on the jump's side.
func (p *EpisodeParams) confirmedJump(rs []Reading) (j, base int, ok bool) {
	j = len(rs) - 1 - p.SpikeConfirm
	if j < 1 {
		return 0, 0, false
	}
	base = rs[j-1].Rate
	if abs(rs[j].Rate-base) < p.SpikeDelta {
		return 0, 0, false
	}
	for m := j - 2; m >= 0 && m >= j-2-p.SpikeConfirm; m-- {
		if abs(rs[m].Rate-base) >= p.SpikeDelta-p.Hysteresis {
			return 0, 0, false
		}
	}
	dir := 1
	if rs[j].Rate < base {
		dir = -1
	}
	for _, x := range rs[j+1:] {
		if dir*(x.Rate-base) < p.SpikeDelta-p.Hysteresis {
			return 0, 0, false
		}
	}
	return j, base, true
}

// track moves a sustain timer past r: a reading at the threshold starts
// it, a reading in the band (the threshold widened by the hysteresis)
// keeps it, any other stops it — a Schmitt trigger, so that 1 Hz noise
// around the threshold does not restart the timer.
func track(s *run, at, inBand bool, r Reading) {
	switch {
	case s.active && inBand:
		s.stats.add(r)
	case at:
		*s = run{active: true, start: r}
		s.stats.add(r)
	default:
		*s = run{}
	}
}

// holds reports whether rate keeps the open episode o open: its condition
// widened by the hysteresis.
func (p *EpisodeParams) holds(o *openEpisode, rate int) bool {
	switch o.Rule {
	case SustainedHigh:
		return rate >= p.SustainedHigh-p.Hysteresis
	case SustainedLow:
		return rate <= p.SustainedLow+p.Hysteresis
	case Spike:
		dir := 1
		if o.Start.Rate < o.Base {
			dir = -1
		}
		return dir*(rate-o.Base) >= p.SpikeDelta-p.Hysteresis
	}
	return false
}

func (c *customerEpisodes) openClinical(customer, rule, severity string, threshold int, start, opened Reading, s stats, base int, out []Change) []Change {
	ep := Episode{
		CustomerID: customer, Rule: rule, Severity: severity, Threshold: threshold,
		Start: start, OpenedAt: opened.Time, Opened: opened, Last: s.last,
		Peak: s.peak, Trough: s.trough, Samples: s.samples, Base: base,
	}
	c.open = &openEpisode{Episode: ep}
	return append(out, Change{Kind: Opened, Episode: ep})
}

// loseSignal opens SIGNAL_LOSS from the customer's last reading: its open
// clinical episode closes there and every timer starts again afresh.
func (p *EpisodeParams) loseSignal(customer string, c *customerEpisodes, out []Change) []Change {
	if o := c.open; o != nil {
		ep := o.Episode
		ep.Closed, ep.End, ep.CloseReason = true, ep.Last.Time, ClosedSignalLoss
		out = append(out, Change{Kind: Closed, Episode: ep})
		c.open = nil
	}
	c.high, c.low = run{}, run{}
	ep := Episode{
		CustomerID: customer, Rule: SignalLoss, Severity: SeverityLow, Threshold: int(p.SignalLossAfter / time.Second),
		Start: c.last, OpenedAt: c.last.Time.Add(p.SignalLossAfter), Last: c.last,
		Peak: c.last.Rate, Trough: c.last.Rate,
	}
	c.loss = &ep
	return append(out, Change{Kind: Opened, Episode: ep})
}

// lost reports whether the live customer's silence has reached
// SignalLossAfter by event time watermark.
func (p *EpisodeParams) lost(c *customerEpisodes, watermark time.Time) bool {
	return c.has && c.live && c.loss == nil && !watermark.Before(c.last.Time.Add(p.SignalLossAfter))
}

// arrived records whether in-order reading r, which arrived at arrival (zero:
// at its own time), was live.
func (p *EpisodeParams) arrived(c *customerEpisodes, r Reading, arrival time.Time) {
	if c.has && c.last == r {
		c.live = arrival.IsZero() || arrival.Sub(r.Time) <= p.SignalLossAfter
	}
}

// openEpisodes lists c's open episodes.
func (c *customerEpisodes) openEpisodes() []Episode {
	var out []Episode
	if c.open != nil {
		out = append(out, c.open.Episode)
	}
	if c.loss != nil {
		out = append(out, *c.loss)
	}
	return out
}

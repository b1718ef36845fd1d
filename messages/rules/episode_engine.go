package rules

import (
	"container/heap"
	"sync"
	"time"

	"github.com/heartbeat/heartbeat/messages"
)

// EpisodeEngine evaluates readings against the episode rules: SUSTAINED_HIGH,
// SUSTAINED_LOW, SPIKE confirmed by the following readings, and
// SIGNAL_LOSS. State is kept per partition, for one assignment of it at a
// time ([Lane]). SIGNAL_LOSS is decided on event time, never by a
// wall-clock timer, so replays and evaluations are deterministic: a
// customer's next reading after a gap of
// SignalLossAfter records it; and the partition's watermark — the latest
// reading time seen on it — opens it earlier for a live customer (one
// whose latest reading arrived within SignalLossAfter of its time) that
// has gone silent while the others' readings moved on. Replayed history is
// not live: a recording replayed customer after customer does not declare
// the ones replayed later silent.
//
// Readings of one partition must be evaluated and applied one at a time, in
// the partition's order (the detector's subscriber delivers them so);
// partitions are independent and may be evaluated concurrently.
type EpisodeEngine struct {
	p   EpisodeParams
	now func() time.Time // wall clock, for eviction only

	mu    sync.Mutex
	lanes map[int32]*laneState // by partition: the current Lane's state
}

type laneState struct {
	assignment uint64 // the Lane's
	mu         sync.Mutex
	customers  map[string]*laneCustomer
	// silent orders the customers without an open SIGNAL_LOSS by their last
	// reading, so a watermark finds the ones that went silent cheaply.
	silent    silentHeap
	watermark int64 // Unix nanoseconds
}

type laneCustomer struct {
	id       string
	st       customerEpisodes
	seq      uint64 // bumped by every install, to refuse stale applies
	lastSeen int64  // wall clock, Unix nanoseconds
	idx      int32  // in lane.silent, -1 when not there
	evicted  bool
}

// NewEpisodeEngine returns an engine with parameters p, or p's validation
// error.
func NewEpisodeEngine(p EpisodeParams) (*EpisodeEngine, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &EpisodeEngine{p: p, now: time.Now, lanes: map[int32]*laneState{}}, nil
}

// Params returns the engine's parameters.
func (e *EpisodeEngine) Params() EpisodeParams { return e.p }

// lane returns the state of ln, beginning it if the partition has none or
// an earlier assignment's (which is dropped); nil if ln is superseded by
// the partition's lane (see [Lane]).
func (e *EpisodeEngine) lane(ln Lane) *laneState {
	e.mu.Lock()
	defer e.mu.Unlock()
	l := e.lanes[ln.Partition]
	switch {
	case l == nil || l.assignment < ln.Assignment:
		l = &laneState{assignment: ln.Assignment, customers: map[string]*laneCustomer{}}
		e.lanes[ln.Partition] = l
	case l.assignment > ln.Assignment:
		return nil
	}
	return l
}

// ReadingOf is the Reading of heartbeat h.
func ReadingOf(h messages.Heartbeat) messages.Reading {
	return messages.Reading{EventID: h.EventID, Time: h.Timestamp, Rate: h.HeartRate}
}

func readingOf(h messages.Heartbeat) reading { return compact(ReadingOf(h)) }

type pending struct {
	lc  *laneCustomer // nil: a customer new to the lane
	id  string
	seq uint64
	st  customerEpisodes
}

// evaluation is what Evaluate computed, for its apply: the reading's
// customer's next state (its recent readings in rates and tail, to save
// allocations), those of the customers it declared silent, the watermark.
type evaluation struct {
	e      *EpisodeEngine
	l      *laneState
	own    pending
	rates  [7]int16
	tail   [3]reading
	others []pending
	wm     int64
}

func (ev *evaluation) apply() {
	ev.l.mu.Lock()
	defer ev.l.mu.Unlock()
	ev.e.install(ev.l, ev.own, ev.wm)
	for _, p := range ev.others {
		ev.e.install(ev.l, p, ev.wm)
	}
}

// Evaluate returns the episodes that reading h, read in lane ln,
// opens and closes — its customer's, and those of customers of the
// partition whose silence the reading's time reveals — and apply, which
// moves the state past them. Call apply only once the changes are durably
// recorded: a reading whose changes failed to commit is evaluated again, on
// redelivery, to the same changes.
//
// notAfter is when h arrived: the detector passes its wall clock. The
// partition's watermark advances to h's time but never past it (so a
// sensor whose clock runs ahead cannot declare everyone else silent), and
// h's customer is live if h arrived within SignalLossAfter of its time.
// Zero treats every reading as arriving at its own time (evaluations).
// A reading of a superseded lane changes nothing.
func (e *EpisodeEngine) Evaluate(ln Lane, h messages.Heartbeat, notAfter time.Time) (changes []Change, apply func()) {
	l := e.lane(ln)
	if l == nil {
		return nil, func() {}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	ev := &evaluation{e: e, l: l}
	changes = e.evaluate(ev, h, notAfter)
	return changes, ev.apply
}

// Process evaluates h and applies the result at once: for replays and
// evaluations, where nothing is written. It changes the state in place.
func (e *EpisodeEngine) Process(ln Lane, h messages.Heartbeat, notAfter time.Time) []Change {
	l := e.lane(ln)
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lc := l.customers[h.CustomerID]
	if lc == nil {
		lc = &laneCustomer{id: h.CustomerID, idx: -1}
		l.customers[h.CustomerID] = lc
	}
	r := readingOf(h)
	changes := e.p.step(h.CustomerID, &lc.st, r, nil)
	e.p.arrived(&lc.st, r, notAfter)
	lc.seq++
	lc.lastSeen = e.now().UnixNano()
	l.place(lc)
	if wm := minTime(r.at, notAfter); wm > l.watermark {
		l.watermark = wm
		limit := wm - int64(e.p.SignalLossAfter)
		for l.silent.Len() > 0 && l.silent[0].st.latest().at <= limit {
			o := l.silent[0]
			changes = e.p.loseSignal(o.id, &o.st, changes)
			o.seq++
			l.place(o) // leaves the heap: its SIGNAL_LOSS is open
		}
	}
	return changes
}

func (e *EpisodeEngine) evaluate(ev *evaluation, h messages.Heartbeat, notAfter time.Time) []Change {
	var changes []Change
	l := ev.l
	lc := l.customers[h.CustomerID]
	ev.own = pending{lc: lc, id: h.CustomerID}
	if lc != nil {
		ev.own.seq, ev.own.st = lc.seq, lc.st
		ev.own.st.rates = append(ev.rates[:0], lc.st.rates...)
		ev.own.st.tail = append(ev.tail[:0], lc.st.tail...)
		ev.own.st = ev.own.st.cloneOpen()
	}
	r := readingOf(h)
	changes = e.p.step(h.CustomerID, &ev.own.st, r, changes)
	e.p.arrived(&ev.own.st, r, notAfter)

	ev.wm = max(l.watermark, minTime(r.at, notAfter))
	if ev.wm > l.watermark {
		// Every live customer whose last reading is SignalLossAfter or more
		// before the watermark has gone silent.
		limit := ev.wm - int64(e.p.SignalLossAfter)
		l.silent.each(limit, func(o *laneCustomer) {
			if o == lc {
				return
			}
			p := pending{lc: o, id: o.id, seq: o.seq, st: o.st.clone()}
			changes = e.p.loseSignal(o.id, &p.st, changes)
			ev.others = append(ev.others, p)
		})
		if e.p.lost(&ev.own.st, ev.wm) {
			changes = e.p.loseSignal(h.CustomerID, &ev.own.st, changes)
		}
	}
	return changes
}

func (e *EpisodeEngine) install(l *laneState, p pending, wm int64) {
	l.watermark = max(l.watermark, wm)
	lc := p.lc
	switch {
	case lc == nil:
		if l.customers[p.id] != nil {
			return // restored or evaluated since: never move back
		}
		lc = &laneCustomer{id: p.id, idx: -1}
		l.customers[p.id] = lc
	case lc.evicted:
		return // the state is rebuilt on its next reading
	case lc.seq != p.seq:
		return // moved on since this evaluation: never move back
	}
	st := p.st
	// The evaluation's buffers are not the customer's to keep; a new
	// customer's get their final size at once.
	if lc.st.rates == nil {
		lc.st.rates, lc.st.tail = make([]int16, 0, e.p.ringSize()), make([]reading, 0, e.p.tailSize())
	}
	st.rates = append(lc.st.rates[:0], st.rates...)
	st.tail = append(lc.st.tail[:0], st.tail...)
	lc.st = st
	lc.seq++
	lc.lastSeen = e.now().UnixNano()
	l.place(lc)
}

// place keeps lc in the silent heap exactly while it is live and has no
// open SIGNAL_LOSS.
func (l *laneState) place(lc *laneCustomer) {
	in := lc.st.has() && lc.st.live && !lc.st.lost
	switch {
	case in && lc.idx < 0:
		heap.Push(&l.silent, lc)
	case in:
		heap.Fix(&l.silent, int(lc.idx))
	case lc.idx >= 0:
		heap.Remove(&l.silent, int(lc.idx))
	}
}

// Known reports whether the engine holds state for customer in lane ln,
// or ln is superseded (there is nothing to rebuild then). Asked for a
// later assignment than the partition's, it begins that lane, dropping
// the earlier one's state.
func (e *EpisodeEngine) Known(ln Lane, customer string) bool {
	l := e.lane(ln)
	if l == nil {
		return true // superseded: nothing to rebuild
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.customers[customer]
	return ok
}

// Restore rebuilds customer's state in lane ln from storage, as after a
// restart, so that it is the state an uninterrupted engine holds: prime is
// its latest reading before warmFrom (nil if none), readings are its
// readings from warmFrom on in the order the partition delivered them
// (see [EpisodeParams.Recall]), and recorded its episodes recorded open
// or ended recently, as Recall found them. With no readings at all (none
// in the history, e.g. stored by another tool or past retention), the
// episodes recorded open are taken as they are.
// It returns the episodes open after the replay, and current false (and no
// episodes) when ln is superseded: nothing is installed then. State the
// engine already holds for customer is kept.
func (e *EpisodeEngine) Restore(ln Lane, customer string, prime *messages.Reading, readings []messages.Reading, fullFrom time.Time, recorded []messages.Episode) (open []messages.Episode, current bool) {
	var st customerEpisodes
	if prime != nil {
		e.p.observe(&st, compact(*prime))
	}
	from := fullFrom.UnixNano()
	for _, pr := range readings {
		r := compact(pr)
		switch {
		case st.has() && r.at <= st.latest().at:
			// late: nothing
		case r.at < from:
			e.p.observe(&st, r)
		default:
			_ = e.p.step(customer, &st, r, nil)
		}
	}
	for _, ep := range recorded {
		switch {
		case ep.Closed:
		case ep.Rule == messages.SignalLoss && st.has() && !st.lost && st.latest().id == compact(ep.Start).id:
			// The watermark declared the silence before the restart.
			_ = e.p.loseSignal(customer, &st, nil)
		case !st.has() && ep.Rule == messages.SignalLoss:
			e.p.observe(&st, compact(ep.Start))
			st.lost = true
		case !st.has() && st.open == nil && kindOf(ep.Rule) != 0:
			st.open = openOf(ep)
		}
	}
	l := e.lane(ln)
	if l == nil {
		return nil, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if lc := l.customers[customer]; lc != nil {
		return e.p.openEpisodes(customer, &lc.st), true
	}
	lc := &laneCustomer{id: customer, st: st, lastSeen: e.now().UnixNano(), idx: -1}
	l.customers[customer] = lc
	l.place(lc)
	return e.p.openEpisodes(customer, &st), true
}

// Open returns customer's open episodes in lane ln (none when ln is
// superseded).
func (e *EpisodeEngine) Open(ln Lane, customer string) []messages.Episode {
	l := e.lane(ln)
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if lc := l.customers[customer]; lc != nil {
		return e.p.openEpisodes(customer, &lc.st)
	}
	return nil
}

// Evict drops customers not seen for idle (wall clock), bounding memory,
// and returns how many it dropped. An evicted customer's state is rebuilt
// from storage on its next reading.
func (e *EpisodeEngine) Evict(idle time.Duration) int {
	cutoff := e.now().Add(-idle).UnixNano()
	n := 0
	for _, l := range e.allLanes() {
		l.mu.Lock()
		for id, lc := range l.customers {
			if lc.lastSeen < cutoff {
				if lc.idx >= 0 {
					heap.Remove(&l.silent, int(lc.idx))
				}
				lc.evicted = true
				delete(l.customers, id)
				n++
			}
		}
		l.mu.Unlock()
	}
	return n
}

// ForgetLane drops the state of lane ln, if it is the partition's: its
// customers are rebuilt from storage on their next readings, as after a
// restart. For readings applied ahead of a write that then failed. (A
// superseded lane's failure changes nothing; the partition's lane stays
// its assignment's, empty, so that an earlier one still cannot take it.)
func (e *EpisodeEngine) ForgetLane(ln Lane) {
	e.mu.Lock()
	l := e.lanes[ln.Partition]
	if l == nil || l.assignment != ln.Assignment {
		e.mu.Unlock()
		return
	}
	e.lanes[ln.Partition] = &laneState{assignment: ln.Assignment, customers: map[string]*laneCustomer{}}
	e.mu.Unlock()
	l.mu.Lock()
	for _, lc := range l.customers {
		lc.evicted = true // applies still pending refuse to install
	}
	l.mu.Unlock()
}

// Customers returns how many customers have state.
func (e *EpisodeEngine) Customers() int {
	n := 0
	for _, l := range e.allLanes() {
		l.mu.Lock()
		n += len(l.customers)
		l.mu.Unlock()
	}
	return n
}

func (e *EpisodeEngine) allLanes() []*laneState {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]*laneState, 0, len(e.lanes))
	for _, l := range e.lanes {
		out = append(out, l)
	}
	return out
}

// minTime is the earlier of a (Unix nanoseconds) and b, or a if b is zero.
func minTime(a int64, b time.Time) int64 {
	if b.IsZero() {
		return a
	}
	return min(a, b.UnixNano())
}

// silentHeap is a min-heap of customers by last reading time.
type silentHeap []*laneCustomer

func (h silentHeap) Len() int { return len(h) }
func (h silentHeap) Less(i, j int) bool {
	return h[i].st.latest().at < h[j].st.latest().at
}
func (h silentHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = int32(i), int32(j)
}
func (h *silentHeap) Push(x any) {
	lc := x.(*laneCustomer)
	lc.idx = int32(len(*h))
	*h = append(*h, lc)
}
func (h *silentHeap) Pop() any {
	old := *h
	lc := old[len(old)-1]
	old[len(old)-1] = nil
	lc.idx = -1
	*h = old[:len(old)-1]
	return lc
}

// each calls f, without removing them, for every customer whose last
// reading is at or before limit, in no particular order.
func (h silentHeap) each(limit int64, f func(*laneCustomer)) {
	if len(h) == 0 || h[0].st.latest().at > limit {
		return
	}
	var walk func(i int)
	walk = func(i int) {
		if i >= len(h) || h[i].st.latest().at > limit {
			return
		}
		f(h[i])
		walk(2*i + 1)
		walk(2*i + 2)
	}
	walk(0)
}

package simulate_test

import (
	"bytes"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/simulate"
)

// scenario is one 12-hour simulated day of a few customers, generated once.
type scenario struct {
	gen      *simulate.Physiology
	cfg      simulate.PhysiologyConfig
	ids      []string
	readings []simulate.PhysReading
	byCust   map[string][]simulate.PhysReading // in delivery order
}

var day = sync.OnceValue(func() *scenario {
	cfg := simulate.DefaultPhysiologyConfig()
	cfg.Customers, cfg.Seed, cfg.Span, cfg.DayLength = 8, 11, 12*time.Hour, 12*time.Hour
	cfg.LateRatio = 0.01
	s := &scenario{gen: simulate.NewPhysiology(cfg), byCust: map[string][]simulate.PhysReading{}}
	s.cfg, s.ids = s.gen.Config(), s.gen.CustomerIDs()
	for {
		r, ok := s.gen.Next()
		if !ok {
			break
		}
		s.readings = append(s.readings, r)
		s.byCust[s.ids[r.Customer]] = append(s.byCust[s.ids[r.Customer]], r)
	}
	return s
})

func generate(cfg simulate.PhysiologyConfig) ([]simulate.PhysReading, []simulate.Label) {
	g := simulate.NewPhysiology(cfg)
	var rs []simulate.PhysReading
	for {
		r, ok := g.Next()
		if !ok {
			return rs, g.Labels()
		}
		rs = append(rs, r)
	}
}

func TestPhysiologyIsDeterministicBySeed(t *testing.T) {
	cfg := simulate.DefaultPhysiologyConfig()
	cfg.Customers, cfg.Span, cfg.DayLength, cfg.LateRatio = 3, time.Hour, time.Hour, 0.05
	a, la := generate(cfg)
	b, lb := generate(cfg)
	require.Equal(t, a, b)
	require.Equal(t, la, lb)
	cfg.Seed++
	c, _ := generate(cfg)
	require.NotEqual(t, a, c)
}

// TestPhysiologyRestingRates: resting rates ~ N(65, 10) clipped to 40–100,
// seen in each customer's first minute (awake, before any event).
func TestPhysiologyRestingRates(t *testing.T) {
	cfg := simulate.DefaultPhysiologyConfig()
	cfg.Customers, cfg.Span, cfg.SpikesPerHour, cfg.DropoutsPerHour, cfg.FlatRunsPerHour = 2000, 20*time.Second, 0, 0, 0
	rs, _ := generate(cfg)
	sums := make([]float64, cfg.Customers)
	counts := make([]float64, cfg.Customers)
	for _, r := range rs {
		sums[r.Customer] += float64(r.Rate)
		counts[r.Customer]++
	}
	var rests []float64
	for i := range sums {
		rests = append(rests, sums[i]/counts[i])
	}
	m, sd := meanSD(rests)
	require.InDelta(t, 65, m, 1.0)
	require.InDelta(t, 10, sd, 1.0)
	require.GreaterOrEqual(t, slices.Min(rests), 36.0)
	require.LessOrEqual(t, slices.Max(rests), 104.0)
}

func meanSD(xs []float64) (float64, float64) {
	var s, ss float64
	for _, x := range xs {
		s += x
	}
	m := s / float64(len(xs))
	for _, x := range xs {
		ss += (x - m) * (x - m)
	}
	return m, math.Sqrt(ss / float64(len(xs)))
}

// TestPhysiologyVariation: readings a second apart differ by a median of
// about 1 bpm.
func TestPhysiologyVariation(t *testing.T) {
	s := day()
	var deltas []int
	for _, rs := range s.byCust {
		for i := 1; i < len(rs); i++ {
			if rs[i].Time.Sub(rs[i-1].Time) == time.Second {
				deltas = append(deltas, abs(rs[i].Rate-rs[i-1].Rate))
			}
		}
	}
	slices.Sort(deltas)
	require.Equal(t, 1, deltas[len(deltas)/2], "median |Δ|")
	require.LessOrEqual(t, deltas[len(deltas)*99/100], 5, "99th percentile |Δ|")
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// TestPhysiologySleepDip: at night (the last third of the simulated day) the
// rate dips 10–20 % below the evening's.
func TestPhysiologySleepDip(t *testing.T) {
	s := day()
	for _, id := range s.ids {
		evening := medianRate(s.byCust[id], s.cfg.Start.Add(7*time.Hour), s.cfg.Start.Add(8*time.Hour), s.gen.Labels(), id)
		night := medianRate(s.byCust[id], s.cfg.Start.Add(10*time.Hour), s.cfg.Start.Add(11*time.Hour), s.gen.Labels(), id)
		require.InDelta(t, 0.85, night/evening, 0.09, "%s: night %.0f, evening %.0f", id, night, evening)
	}
}

// medianRate is the median over [from, to) of readings outside any
// labelled window and any exercise-like excursion.
func medianRate(rs []simulate.PhysReading, from, to time.Time, all []simulate.Label, id string) float64 {
	var labels []simulate.Label
	for _, l := range all {
		if l.CustomerID == id && !l.End.Before(from.Add(-time.Hour)) && !l.Start.After(to) {
			labels = append(labels, l)
		}
	}
	var xs []float64
	for _, r := range rs {
		if r.Time.Before(from) || !r.Time.Before(to) || inLabel(labels, id, r.Time, 15*time.Minute) {
			continue
		}
		xs = append(xs, float64(r.Rate))
	}
	slices.Sort(xs)
	return xs[len(xs)/2]
}

func inLabel(labels []simulate.Label, id string, at time.Time, after time.Duration) bool {
	for _, l := range labels {
		if simulate.LabelClass(l.Type) == simulate.ClassArtefact {
			if l.CustomerID == id && !at.Before(l.Start) && !at.After(l.End) {
				return true
			}
			continue
		}
		if l.CustomerID == id && !at.Before(l.Start.Add(-time.Minute)) && !at.After(l.End.Add(after)) {
			return true
		}
	}
	return false
}

func TestPhysiologyLabels(t *testing.T) {
	s := day()
	types := map[string]int{}
	byCust := map[string][]simulate.Label{}
	for _, l := range s.gen.Labels() {
		types[l.Type]++
		byCust[l.CustomerID] = append(byCust[l.CustomerID], l)
		require.False(t, l.End.Before(l.Start), "%+v", l)
		d := l.End.Sub(l.Start) + time.Second
		switch l.Type {
		case simulate.LabelRestingTachycardia, simulate.LabelBradycardia:
			require.True(t, d >= 20*time.Minute && d <= 45*time.Minute, "%+v", l)
		case simulate.LabelSuddenJump:
			require.True(t, d >= 2*time.Minute && d <= 8*time.Minute, "%+v", l)
		case simulate.LabelDeviceOff:
			require.True(t, d >= 10*time.Minute && d <= 30*time.Minute, "%+v", l)
		case simulate.LabelArtefactSpike:
			require.Equal(t, time.Second, d)
		case simulate.LabelArtefactDropout:
			require.True(t, d >= 5*time.Second && d <= 91*time.Second, "%+v", l)
		case simulate.LabelArtefactFlat:
			require.True(t, d >= 10*time.Second && d <= 61*time.Second, "%+v", l)
		}
		if simulate.LabelClass(l.Type) != simulate.ClassArtefact {
			phase := math.Mod(l.Start.Sub(s.cfg.Start).Hours(), s.cfg.DayLength.Hours()) / s.cfg.DayLength.Hours()
			require.Less(t, phase, 2.0/3, "clinical episodes are injected while awake: %+v", l)
		}
	}
	for _, typ := range []string{simulate.LabelRestingTachycardia, simulate.LabelBradycardia, simulate.LabelSuddenJump,
		simulate.LabelArtefactSpike, simulate.LabelArtefactDropout, simulate.LabelArtefactFlat} {
		require.Positive(t, types[typ], typ)
	}
	for id, ls := range byCust {
		for i := range ls {
			for j := i + 1; j < len(ls); j++ {
				a, b := ls[i], ls[j]
				require.True(t, a.End.Before(b.Start) || b.End.Before(a.Start), "%s: %+v overlaps %+v", id, a, b)
			}
		}
	}
}

// TestPhysiologyEpisodesAndArtefactsShowInTheReadings checks each label
// against the readings it describes.
func TestPhysiologyEpisodesAndArtefactsShowInTheReadings(t *testing.T) {
	s := day()
	rate := map[string]map[time.Time]int{}
	for id, rs := range s.byCust {
		rate[id] = map[time.Time]int{}
		for _, r := range rs {
			rate[id][r.Time] = r.Rate
		}
	}
	for _, l := range s.gen.Labels() {
		at := func(t time.Time) (int, bool) {
			r, ok := rate[l.CustomerID][t]
			return r, ok
		}
		var in []int
		for t := l.Start; !t.After(l.End); t = t.Add(time.Second) {
			if r, ok := at(t); ok {
				in = append(in, r)
			}
		}
		switch l.Type {
		case simulate.LabelDeviceOff, simulate.LabelArtefactDropout:
			require.Empty(t, in, "%+v", l)
		case simulate.LabelArtefactFlat:
			require.NotEmpty(t, in)
			for _, x := range in {
				require.Equal(t, in[0], x, "a flat run repeats one value: %+v", l)
			}
		case simulate.LabelArtefactSpike:
			before, ok1 := at(l.Start.Add(-time.Second))
			after, ok2 := at(l.Start.Add(time.Second))
			if ok1 && ok2 && len(in) == 1 {
				off := float64(abs(in[0]*2-before-after)) / 2
				require.True(t, off >= 15 && off <= 45, "%+v: %d between %d and %d", l, in[0], before, after)
			}
		case simulate.LabelSuddenJump:
			before, ok := at(l.Start.Add(-time.Second))
			require.True(t, ok)
			require.GreaterOrEqual(t, in[0]-before, 30, "%+v", l)
		case simulate.LabelRestingTachycardia:
			mid := in[len(in)/4 : len(in)*3/4]
			require.GreaterOrEqual(t, slices.Min(mid), 120, "%+v", l)
		case simulate.LabelBradycardia:
			mid := in[len(in)/4 : len(in)*3/4]
			require.LessOrEqual(t, slices.Max(mid), 43, "%+v", l)
		}
	}
}

func TestPhysiologyLateReadings(t *testing.T) {
	s := day()
	late, total := 0, 0
	for _, rs := range s.byCust {
		for i := 1; i < len(rs); i++ {
			total++
			if rs[i].Time.Before(rs[i-1].Time) {
				late++
			}
		}
	}
	require.InDelta(t, 0.01, float64(late)/float64(total), 0.003)
}

func TestWriteLabelsAndCSV(t *testing.T) {
	start := time.Date(2026, 11, 25, 7, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	require.NoError(t, simulate.WriteLabels(&b, []simulate.Label{{CustomerID: "c1", Type: simulate.LabelBradycardia, Start: start, End: start.Add(time.Minute)}}))
	require.Equal(t, "customer_id,type,class,start,end\nc1,BRADYCARDIA,clinical,2026-11-25T07:00:00Z,2026-11-25T07:01:00Z\n", b.String())
	b.Reset()
	require.NoError(t, simulate.WriteCSV(&b, []string{"c1"}, []simulate.PhysReading{{Customer: 0, Time: start.Add(1500 * time.Millisecond), Rate: 61}}))
	require.Equal(t, "customer_id,timestamp,heart_rate\nc1,2026-11-25T07:00:01.500Z,61\n", b.String())
	require.True(t, strings.HasPrefix(b.String(), "customer_id,timestamp,heart_rate\n"))
}

// TestPhysiologyCaseEpisodes checks the episodes where one rule could mask
// another, and the boundary artefacts, against the readings they describe.
func TestPhysiologyCaseEpisodes(t *testing.T) {
	cfg := simulate.DefaultPhysiologyConfig()
	cfg.Customers, cfg.Seed, cfg.Span, cfg.DayLength = 12, 3, 8*time.Hour, 12*time.Hour
	cfg.EpisodesPerCustomer, cfg.RestingRate, cfg.RestingSD, cfg.BoundaryArtefactsPerHour = 3, 95, 3, 4
	cfg.Episodes = []string{simulate.LabelRestDrop, simulate.LabelDropBradycardia, simulate.LabelJumpTachycardia}
	g := simulate.NewPhysiology(cfg)
	ids := g.CustomerIDs()
	rate := map[string]map[time.Time]int{}
	for _, id := range ids {
		rate[id] = map[time.Time]int{}
	}
	for {
		r, ok := g.Next()
		if !ok {
			break
		}
		rate[ids[r.Customer]][r.Time] = r.Rate
	}
	types := map[string]int{}
	labels := g.Labels()
	for i, l := range labels {
		types[l.Type]++
		at := func(d time.Duration) int {
			r, ok := rate[l.CustomerID][l.Start.Add(d)]
			require.True(t, ok, "%+v: no reading at %s", l, d)
			return r
		}
		var in []int
		for t := l.Start; !t.After(l.End); t = t.Add(time.Second) {
			if r, ok := rate[l.CustomerID][t]; ok {
				in = append(in, r)
			}
		}
		d := l.End.Sub(l.Start) + time.Second
		switch l.Type {
		case simulate.LabelJumpTachycardia:
			require.True(t, d >= 12*time.Minute && d <= 25*time.Minute, "%+v", l)
			require.GreaterOrEqual(t, at(0)-at(-time.Second), 30, "%+v", l)
			require.GreaterOrEqual(t, slices.Min(in[len(in)/10:len(in)*9/10]), 120, "%+v", l)
		case simulate.LabelDropBradycardia:
			require.True(t, d >= 13*time.Minute && d <= 23*time.Minute, "%+v", l)
			require.GreaterOrEqual(t, at(-time.Second)-at(0), 30, "%+v", l)
			require.LessOrEqual(t, slices.Max(in[len(in)/2:]), 43, "%+v", l)
		case simulate.LabelRestDrop:
			require.True(t, d >= 15*time.Minute && d <= 25*time.Minute, "%+v", l)
			require.GreaterOrEqual(t, at(-time.Second)-at(0), 30, "%+v", l)
			require.Greater(t, slices.Min(in), 45, "a new resting level, not a bradycardia: %+v", l)
			next := labels[slices.IndexFunc(labels[i+1:], func(o simulate.Label) bool { return o.CustomerID == l.CustomerID })+i+1]
			require.Equal(t, simulate.LabelBradycardia, next.Type, "%+v then %+v", l, next)
			require.Equal(t, l.End.Add(time.Second), next.Start)
		case simulate.LabelArtefactBoundary:
			require.Equal(t, time.Duration(0), l.End.Sub(l.Start))
			base := at(-time.Second)
			for k := 2; k <= 4; k++ {
				require.Equal(t, base, at(-time.Duration(k)*time.Second), "%+v: four repeated readings", l)
			}
			off := in[0] - base
			require.Contains(t, []int{24, -24}, off, "%+v", l)
			require.Equal(t, -off/4, at(time.Second)-base, "%+v: 30 from the artefact, the other way", l)
		}
	}
	for _, typ := range []string{simulate.LabelRestDrop, simulate.LabelBradycardia, simulate.LabelDropBradycardia,
		simulate.LabelJumpTachycardia, simulate.LabelArtefactBoundary} {
		require.Positive(t, types[typ], typ)
	}
	require.Zero(t, types[simulate.LabelRestingTachycardia]+types[simulate.LabelSuddenJump])
}

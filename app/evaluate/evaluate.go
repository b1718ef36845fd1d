// Package evaluate scores the detector on labelled scenarios of the
// physiology simulator ([simulate.Physiology]): the readings go through the
// same validation range and the same rule engines as in the pipeline, in
// process, and the alerts are matched against the injected episodes. It
// reports, for the episode mode and for the original per-event mode side by
// side, precision, recall, F1, alerts per true episode, detection delay, the
// share of isolated artefacts that raise an alert and a NAB-style score; and,
// for the episode mode, the same on [Cases]: scenarios where one rule could
// mask another.
package evaluate

import (
	"math"
	"slices"
	"time"

	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/messages/rules"
	"github.com/heartbeat/heartbeat/simulate"
)

// Scenario is what is evaluated.
type Scenario struct {
	Physiology simulate.PhysiologyConfig
	// Episode and PerEvent are the two modes' rules.
	Episode  rules.EpisodeParams
	PerEvent rules.Thresholds
	// MinRate and MaxRate are the validation range: readings outside are
	// refused before detection, as in the pipeline.
	MinRate, MaxRate int
	// CaseCustomers is the customers of each of [Cases]; 0 scores none.
	CaseCustomers int
}

// DefaultScenario is the scenario `go run . evaluate` scores by default:
// 100 customers over a 12-hour simulated day (8 hours awake, 4 asleep),
// about 4.3 million readings, with the default rules.
func DefaultScenario() Scenario {
	p := simulate.DefaultPhysiologyConfig()
	p.Customers, p.Seed = 100, 1
	p.Span, p.DayLength = 12*time.Hour, 12*time.Hour
	p.ExercisePerDay = 2
	return Scenario{Physiology: p, Episode: rules.DefaultEpisodeParams(), PerEvent: rules.DefaultThresholds(),
		MinRate: messages.DefaultLimits().MinHeartRate, MaxRate: messages.DefaultLimits().MaxHeartRate, CaseCustomers: 40}
}

// Matching windows: an alert belongs to a labelled episode of its customer
// when it opens from Before the label's start to After its end.
const (
	Before = time.Minute
	After  = 3 * time.Minute
	// ArtefactAfter is how long after an artefact an alert counts as raised
	// by it — unless the customer already had an alert in as long before
	// the artefact: then the alerts were firing anyway.
	ArtefactAfter = time.Minute
)

// NAB-style weights (the Numenta Anomaly Benchmark's standard profile).
const (
	nabTP = 1.0
	nabFN = -1.0
	nabFP = -0.11
)

// Alert is one notification: an episode opening, or a per-event anomaly.
// Rule is its rule in the end — a SPIKE reclassified SUSTAINED is the same
// alert — and RuleAt when it got it.
type Alert struct {
	Customer string
	Rule     string
	At       time.Time
	RuleAt   time.Time
}

// Modes.
const (
	ModeDefault  = "default"
	ModePerEvent = "per_event"
)

// ExpectedRule is the rule that should catch a label type in a mode.
func ExpectedRule(mode, labelType string) string {
	if mode == ModeDefault {
		return map[string]string{
			simulate.LabelRestingTachycardia: messages.SustainedHigh, simulate.LabelBradycardia: messages.SustainedLow,
			simulate.LabelSuddenJump: messages.Spike, simulate.LabelDeviceOff: messages.SignalLoss,
			simulate.LabelJumpTachycardia: messages.SustainedHigh, simulate.LabelDropBradycardia: messages.SustainedLow,
			simulate.LabelRestDrop: messages.Spike,
		}[labelType]
	}
	return map[string]string{
		simulate.LabelRestingTachycardia: messages.HighHeartRate, simulate.LabelBradycardia: messages.LowHeartRate,
		simulate.LabelSuddenJump: messages.Spike, simulate.LabelJumpTachycardia: messages.HighHeartRate,
		simulate.LabelDropBradycardia: messages.LowHeartRate, simulate.LabelRestDrop: messages.Spike,
	}[labelType]
}

// Metrics are one mode's scores.
type Metrics struct {
	Precision         float64 `json:"precision"`
	Recall            float64 `json:"recall"`
	F1                float64 `json:"f1"`
	AlertsPerEpisode  float64 `json:"alerts_per_episode"`
	ArtefactAlertRate float64 `json:"artefact_alert_rate"`
	NABScore          float64 `json:"nab_score"`
	// Delays are from a label's start to its first alert, over detected
	// labels.
	DelayMedianS float64 `json:"detection_delay_median_s"`
	DelayMeanS   float64 `json:"detection_delay_mean_s"`
	Alerts       int     `json:"alerts"`
	TrueAlerts   int     `json:"true_alerts"`
	Episodes     int     `json:"episodes"`
	Detected     int     `json:"detected"`
	Artefacts    int     `json:"artefacts"`
	// ArtefactAlerts are the artefacts followed by an alert.
	ArtefactAlerts int            `json:"artefact_alerts"`
	AlertsByRule   map[string]int `json:"alerts_by_rule"`
}

// TypeMetrics are one label type's scores in one mode: recall and the rest
// over its labels; for artefacts, the share that raised an alert.
type TypeMetrics struct {
	ExpectedRule string `json:"expected_rule,omitempty"`
	// RulePrecision is the share of the expected rule's alerts that fall on
	// a labelled episode (of any type).
	RulePrecision *float64 `json:"rule_precision,omitempty"`
	Recall        *float64 `json:"recall,omitempty"`
	// RuleRecall is the share of labels with an alert of the expected rule
	// (an alert masked by another rule's counts for Recall, not here), and
	// RuleDelayMedianS the delay from a label's start until then.
	RuleRecall       *float64 `json:"rule_recall,omitempty"`
	RuleDelayMedianS *float64 `json:"rule_delay_median_s,omitempty"`
	AlertsPerEpisode *float64 `json:"alerts_per_episode,omitempty"`
	DelayMedianS     *float64 `json:"detection_delay_median_s,omitempty"`
	NABScore         *float64 `json:"nab_score,omitempty"`
	AlertRate        *float64 `json:"alert_rate,omitempty"`
	Labels           int      `json:"labels"`
}

// Report is an evaluation's result.
type Report struct {
	Scenario ScenarioSummary                   `json:"scenario"`
	Default  Metrics                           `json:"default"`
	PerEvent Metrics                           `json:"per_event"`
	ByType   map[string]map[string]TypeMetrics `json:"by_type"`
	// Cases are the episode mode's scores on the [Cases] scenarios.
	Cases []CaseReport `json:"cases,omitempty"`
}

// CaseReport is the episode mode's scores on one case scenario.
type CaseReport struct {
	Name     string                 `json:"name"`
	Scenario ScenarioSummary        `json:"scenario"`
	Default  Metrics                `json:"default"`
	ByType   map[string]TypeMetrics `json:"by_type"`
}

// Case is a scenario built where one rule could mask another.
type Case struct {
	Name     string
	Scenario Scenario
}

// Cases are the scenarios where one rule could mask another, with sc's
// rules, validation range and seed: sc.CaseCustomers customers, 8 awake
// hours each, two episodes a customer, the simulator's artefacts —
//
//   - a drop of 30 bpm or more to a new resting level of 55–65 bpm held
//     15–25 minutes (a SPIKE that settles), then a bradycardia from there
//     (its own SUSTAINED_LOW);
//   - a drop of 30–40 bpm straight into a bradycardia (a SPIKE that
//     becomes SUSTAINED_LOW);
//   - a jump into a tachycardia of 130–160 bpm for 12–25 minutes (a SPIKE
//     that becomes SUSTAINED_HIGH);
//   - artefacts at the boundary of SPIKE's settled base: one reading 24 off
//     four repeated ones, the readings after it 30 from it (nothing).
func Cases(sc Scenario) []Case {
	mk := func(name string, f func(*simulate.PhysiologyConfig)) Case {
		c := Case{Name: name, Scenario: sc}
		p := &c.Scenario.Physiology
		p.Customers, p.Span, p.DayLength, p.EpisodesPerCustomer = sc.CaseCustomers, 8*time.Hour, 12*time.Hour, 2
		p.DeviceOffRatio = 0
		f(p)
		return c
	}
	return []Case{
		// Resting rates of 86–100 bpm leave room for a drop of 30 or more to
		// a rate that is not itself low.
		mk("a drop to a new resting level, then bradycardia", func(p *simulate.PhysiologyConfig) {
			p.Episodes, p.RestingRate, p.RestingSD = []string{simulate.LabelRestDrop}, 95, 3
		}),
		mk("a drop straight into bradycardia", func(p *simulate.PhysiologyConfig) {
			p.Episodes, p.RestingRate, p.RestingSD = []string{simulate.LabelDropBradycardia}, 95, 3
		}),
		mk("a jump into tachycardia", func(p *simulate.PhysiologyConfig) {
			p.Episodes = []string{simulate.LabelJumpTachycardia}
		}),
		mk("an artefact at the settled-base boundary", func(p *simulate.PhysiologyConfig) {
			p.EpisodesPerCustomer, p.BoundaryArtefactsPerHour = 0, 6
		}),
	}
}

// ScenarioSummary describes the scored scenario.
type ScenarioSummary struct {
	Seed      uint64         `json:"seed"`
	Customers int            `json:"customers"`
	Hours     float64        `json:"hours"`
	DayHours  float64        `json:"day_hours"`
	Readings  int            `json:"readings"`
	Refused   int            `json:"refused"`
	Labels    map[string]int `json:"labels"`
}

// Run generates the scenario, runs both modes over it and scores them, then
// the episode mode over [Cases] of sc. With readings non-nil, every reading
// of sc's scenario is also passed to it (to export the scenario).
func Run(sc Scenario, readings func(simulate.PhysReading)) (Report, error) {
	sum, labels, alerts, err := simulateRun(sc, readings, true)
	if err != nil {
		return Report{}, err
	}
	rep := Report{Scenario: sum, ByType: map[string]map[string]TypeMetrics{}}
	for _, mode := range []string{ModeDefault, ModePerEvent} {
		m, byType := score(mode, labels, alerts[mode])
		if mode == ModeDefault {
			rep.Default = m
		} else {
			rep.PerEvent = m
		}
		for typ, tm := range byType {
			if rep.ByType[typ] == nil {
				rep.ByType[typ] = map[string]TypeMetrics{}
			}
			rep.ByType[typ][mode] = tm
		}
	}
	if sc.CaseCustomers <= 0 {
		return rep, nil
	}
	for _, c := range Cases(sc) {
		sum, labels, alerts, err := simulateRun(c.Scenario, nil, false)
		if err != nil {
			return Report{}, err
		}
		m, byType := score(ModeDefault, labels, alerts[ModeDefault])
		rep.Cases = append(rep.Cases, CaseReport{Name: c.Name, Scenario: sum, Default: m, ByType: byType})
	}
	return rep, nil
}

// simulateRun generates sc's scenario and runs the episode engine (and,
// with perEvent, the per-event one) over it, returning the alerts by mode.
func simulateRun(sc Scenario, readings func(simulate.PhysReading), perEvent bool) (ScenarioSummary, []simulate.Label, map[string][]Alert, error) {
	episodes, err := rules.NewEpisodeEngine(sc.Episode)
	if err != nil {
		return ScenarioSummary{}, nil, nil, err
	}
	perEventEngine := rules.NewEngine(sc.PerEvent)
	gen := simulate.NewPhysiology(sc.Physiology)
	ids := gen.CustomerIDs()
	alerts := map[string][]Alert{}
	// open finds the alert of an open episode (by customer and start: the
	// readings have no event ids here) when it is reclassified.
	type key struct {
		customer string
		start    time.Time
	}
	open := map[key]int{}
	sum := ScenarioSummary{Seed: gen.Config().Seed, Customers: len(ids), Hours: gen.Config().Span.Hours(),
		DayHours: gen.Config().DayLength.Hours(), Labels: map[string]int{}}
	for {
		r, ok := gen.Next()
		if !ok {
			break
		}
		if readings != nil {
			readings(r)
		}
		sum.Readings++
		if r.Rate < sc.MinRate || r.Rate > sc.MaxRate {
			sum.Refused++ // a sensor fault: routed to the invalid topic, never evaluated
			continue
		}
		h := messages.Heartbeat{CustomerID: ids[r.Customer], Timestamp: r.Time, HeartRate: r.Rate}
		for _, c := range episodes.Process(rules.Lane{}, h, time.Time{}) {
			k := key{c.Episode.CustomerID, c.Episode.Start.Time}
			switch c.Kind {
			case rules.Opened:
				open[k] = len(alerts[ModeDefault])
				alerts[ModeDefault] = append(alerts[ModeDefault], Alert{Customer: c.Episode.CustomerID, Rule: c.Episode.Rule,
					At: c.Episode.OpenedAt, RuleAt: c.Episode.OpenedAt})
			case rules.Reclassified:
				if i, ok := open[k]; ok {
					alerts[ModeDefault][i].Rule, alerts[ModeDefault][i].RuleAt = c.Episode.Rule, c.Episode.Reclassified.Time
				}
			case rules.Closed:
				delete(open, k)
			}
		}
		if !perEvent {
			continue
		}
		f, found, apply := perEventEngine.Evaluate(rules.Lane{}, h)
		apply()
		if found {
			alerts[ModePerEvent] = append(alerts[ModePerEvent], Alert{Customer: h.CustomerID, Rule: f.Rule, At: h.Timestamp, RuleAt: h.Timestamp})
		}
	}
	labels := gen.Labels()
	for _, l := range labels {
		sum.Labels[l.Type]++
	}
	return sum, labels, alerts, nil
}

type window struct {
	label    simulate.Label
	from, to time.Time
	first    *time.Time
	ruleAt   *time.Time // the first alert of the expected rule
	alerts   int
	nab      float64
	artefact bool
}

// score matches alerts to labels: an alert is true when it opens in the
// window of a labelled episode (clinical or device-off) of its customer,
// and false otherwise; a false alert in the minute after an artefact is
// that artefact's.
func score(mode string, labels []simulate.Label, alerts []Alert) (Metrics, map[string]TypeMetrics) {
	byCustomer := map[string][]*window{}
	var episodes, artefacts []*window
	for _, l := range labels {
		w := &window{label: l, from: l.Start.Add(-Before), to: l.End.Add(After)}
		if simulate.LabelClass(l.Type) == simulate.ClassArtefact {
			w.artefact, w.from, w.to = true, l.Start, l.End.Add(ArtefactAfter)
			artefacts = append(artefacts, w)
		} else {
			episodes = append(episodes, w)
		}
		byCustomer[l.CustomerID] = append(byCustomer[l.CustomerID], w)
	}
	m := Metrics{AlertsByRule: map[string]int{}}
	m.Alerts, m.Episodes, m.Artefacts = len(alerts), len(episodes), len(artefacts)
	ruleAlerts, ruleTrue := map[string]int{}, map[string]int{}
	falseAlerts := 0
	alertTimes := map[string][]time.Time{}
	for _, a := range alerts {
		alertTimes[a.Customer] = append(alertTimes[a.Customer], a.At)
	}
	for _, ts := range alertTimes {
		slices.SortFunc(ts, time.Time.Compare)
	}
	firing := func(customer string, from, to time.Time) bool {
		ts := alertTimes[customer]
		i, _ := slices.BinarySearchFunc(ts, from, time.Time.Compare)
		return i < len(ts) && ts[i].Before(to)
	}
	for _, a := range alerts {
		ruleAlerts[a.Rule]++
		m.AlertsByRule[a.Rule]++
		var hit, art *window
		for _, w := range byCustomer[a.Customer] {
			if a.At.Before(w.from) || a.At.After(w.to) {
				continue
			}
			if !w.artefact && hit == nil {
				hit = w
			}
			if w.artefact && art == nil && !firing(a.Customer, w.from.Add(-ArtefactAfter), w.from) {
				art = w
			}
		}
		switch {
		case hit != nil:
			m.TrueAlerts++
			ruleTrue[a.Rule]++
			hit.alerts++
			if hit.first == nil {
				at := a.At
				hit.first = &at
			}
			if a.Rule == ExpectedRule(mode, hit.label.Type) && (hit.ruleAt == nil || a.RuleAt.Before(*hit.ruleAt)) {
				at := a.RuleAt
				hit.ruleAt = &at
			}
		default:
			falseAlerts++
			if art != nil {
				art.alerts++
			}
		}
	}
	// NAB-style: the first detection in a window scores by how early it
	// came (scaled sigmoid of its relative position), a window without one
	// scores nabFN, every false alert nabFP; normalised so that detecting
	// nothing is 0 and detecting everything at once is 100.
	var delays []float64
	raw := 0.0
	for _, w := range episodes {
		if w.first == nil {
			w.nab = nabFN
			raw += w.nab
			continue
		}
		m.Detected++
		delays = append(delays, w.first.Sub(w.label.Start).Seconds())
		y := w.first.Sub(w.to).Seconds() / w.to.Sub(w.from).Seconds()
		w.nab = nabTP * (2/(1+math.Exp(5*y)) - 1)
		raw += w.nab
	}
	raw += nabFP * float64(falseAlerts)
	for _, w := range artefacts {
		if w.alerts > 0 {
			m.ArtefactAlerts++
		}
	}
	n := float64(len(episodes))
	m.Precision = ratio(float64(m.TrueAlerts), float64(m.Alerts))
	m.Recall = ratio(float64(m.Detected), n)
	if m.Precision+m.Recall > 0 {
		m.F1 = 2 * m.Precision * m.Recall / (m.Precision + m.Recall)
	}
	m.AlertsPerEpisode = ratio(float64(m.TrueAlerts), float64(m.Detected))
	m.ArtefactAlertRate = ratio(float64(m.ArtefactAlerts), float64(len(artefacts)))
	if n > 0 {
		m.NABScore = 100 * (raw - n*nabFN) / (n*nabTP - n*nabFN)
	}
	m.DelayMedianS, m.DelayMeanS = median(delays), mean(delays)

	byType := map[string]TypeMetrics{}
	groups := map[string][]*window{}
	for _, w := range append(episodes, artefacts...) {
		groups[w.label.Type] = append(groups[w.label.Type], w)
	}
	for typ, ws := range groups {
		tm := TypeMetrics{Labels: len(ws)}
		if ws[0].artefact {
			hit := 0
			for _, w := range ws {
				if w.alerts > 0 {
					hit++
				}
			}
			tm.AlertRate = ptr(ratio(float64(hit), float64(len(ws))))
			byType[typ] = tm
			continue
		}
		tm.ExpectedRule = ExpectedRule(mode, typ)
		if tm.ExpectedRule != "" {
			tm.RulePrecision = ptr(ratio(float64(ruleTrue[tm.ExpectedRule]), float64(ruleAlerts[tm.ExpectedRule])))
		}
		detected, byRule, trueAlerts, nab := 0, 0, 0, 0.0
		var ds, rds []float64
		for _, w := range ws {
			trueAlerts += w.alerts
			nab += w.nab
			if w.first != nil {
				detected++
				ds = append(ds, w.first.Sub(w.label.Start).Seconds())
			}
			if w.ruleAt != nil {
				byRule++
				rds = append(rds, w.ruleAt.Sub(w.label.Start).Seconds())
			}
		}
		k := float64(len(ws))
		tm.Recall = ptr(ratio(float64(detected), k))
		if tm.ExpectedRule != "" {
			tm.RuleRecall = ptr(ratio(float64(byRule), k))
			tm.RuleDelayMedianS = ptr(median(rds))
		}
		tm.AlertsPerEpisode = ptr(ratio(float64(trueAlerts), float64(detected)))
		tm.DelayMedianS = ptr(median(ds))
		// Per type, false alerts are left out: they belong to no type.
		tm.NABScore = ptr(round(100 * (nab - k*nabFN) / (k*nabTP - k*nabFN)))
		byType[typ] = tm
	}
	return roundMetrics(m), byType
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return round(a / b)
}

func round(x float64) float64 { return math.Round(x*1e4) / 1e4 }

func ptr(x float64) *float64 { return &x }

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return round(s[len(s)/2])
	}
	return round((s[len(s)/2-1] + s[len(s)/2]) / 2)
}

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	t := 0.0
	for _, x := range xs {
		t += x
	}
	return round(t / float64(len(xs)))
}

func roundMetrics(m Metrics) Metrics {
	m.F1, m.NABScore = round(m.F1), round(m.NABScore)
	return m
}

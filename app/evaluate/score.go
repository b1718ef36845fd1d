package evaluate

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/simulate"
)

// Options are what `heartbeat evaluate` may change of the scenario, and
// what it writes.
type Options struct {
	// JSON prints the report as one JSON object on the last line instead of
	// tables.
	JSON bool
	// Seed chooses the scenario; 0: SIM_SEED, or the default scenario's
	// when that is 0 too.
	Seed          uint64
	Customers     int
	Span          time.Duration
	DayLength     time.Duration
	CaseCustomers int
	// LabelsFile, when set, receives the ground truth as CSV.
	LabelsFile string
	// ExportFile, when set, receives the scenario's readings as CSV, in the
	// format of `heartbeat replay`.
	ExportFile string
}

// DefaultOptions are those of [DefaultScenario].
func DefaultOptions() Options {
	sc := DefaultScenario()
	return Options{Customers: sc.Physiology.Customers, Span: sc.Physiology.Span, DayLength: sc.Physiology.DayLength,
		CaseCustomers: sc.CaseCustomers}
}

// Score scores the rules of cfg (ANOMALY_*, the episode parameters,
// HEART_RATE_MIN/MAX) on the scenario o describes, writes the files o asks
// for, and prints the report to stdout. The scenario is deterministic: the
// seed chooses it. This is `heartbeat evaluate` once app/cli has read its
// command line.
func Score(cfg config.Config, o Options, stdout io.Writer) error {
	if o.Customers <= 0 || o.Span <= 0 || o.DayLength <= 0 || o.CaseCustomers < 0 {
		return errors.New("evaluate: -customers, -span and -day must be positive, -case-customers 0 or more")
	}
	// Both modes are scored, whichever DETECTION_MODE chooses: the
	// episode parameters must hold in any case.
	if err := cfg.Detection.ValidateEpisode(cfg.Anomaly); err != nil {
		return err
	}
	sc := DefaultScenario()
	sc.Episode = cfg.Detection.EpisodeParams(cfg.Anomaly)
	sc.PerEvent.Low, sc.PerEvent.High, sc.PerEvent.SpikeDelta = cfg.Anomaly.LowThreshold, cfg.Anomaly.HighThreshold, cfg.Anomaly.SpikeDelta
	sc.MinRate, sc.MaxRate = cfg.Validation.HeartRateMin, cfg.Validation.HeartRateMax
	switch {
	case o.Seed != 0:
		sc.Physiology.Seed = o.Seed
	case cfg.Sim.Seed != 0:
		sc.Physiology.Seed = cfg.Sim.Seed
	}
	sc.Physiology.Customers, sc.Physiology.Span, sc.Physiology.DayLength = o.Customers, o.Span, o.DayLength
	sc.CaseCustomers = o.CaseCustomers

	var export func(simulate.PhysReading)
	var exported []simulate.PhysReading
	if o.ExportFile != "" {
		export = func(r simulate.PhysReading) { exported = append(exported, r) }
	}
	started := time.Now()
	rep, err := Run(sc, export)
	if err != nil {
		return err
	}
	took := time.Since(started)
	if o.LabelsFile != "" || o.ExportFile != "" {
		gen := simulate.NewPhysiology(sc.Physiology)
		if o.LabelsFile != "" {
			if err := writeFile(o.LabelsFile, func(w io.Writer) error { return simulate.WriteLabels(w, gen.Labels()) }); err != nil {
				return err
			}
		}
		if o.ExportFile != "" {
			if err := writeFile(o.ExportFile, func(w io.Writer) error { return simulate.WriteCSV(w, gen.CustomerIDs(), exported) }); err != nil {
				return err
			}
		}
	}
	if o.JSON {
		b, err := json.Marshal(rep)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", b)
		return err
	}
	return PrintTable(stdout, rep, took)
}

func writeFile(name string, write func(io.Writer) error) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	if err := write(w); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := w.Flush(); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	return f.Close()
}

// PrintTable writes rep for people.
func PrintTable(w io.Writer, rep Report, took time.Duration) error {
	s := rep.Scenario
	var labels []string
	for _, t := range slices.Sorted(func(yield func(string) bool) {
		for k := range s.Labels {
			if !yield(k) {
				return
			}
		}
	}) {
		labels = append(labels, fmt.Sprintf("%s %d", t, s.Labels[t]))
	}
	fmt.Fprintf(w, "scenario: seed %d, %d customers, %.0f h simulated (a day of %.0f h), %d readings (%d refused as out of range), evaluated in %s\n",
		s.Seed, s.Customers, s.Hours, s.DayHours, s.Readings, s.Refused, took.Round(10*time.Millisecond))
	fmt.Fprintf(w, "labels: %s\n\n", strings.Join(labels, ", "))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\tdefault (episode)\tper_event (seed)\t")
	d, p := rep.Default, rep.PerEvent
	rows := []struct {
		name string
		a, b string
	}{
		{"precision", f3(d.Precision), f3(p.Precision)},
		{"recall", f3(d.Recall), f3(p.Recall)},
		{"F1", f3(d.F1), f3(p.F1)},
		{"alerts per true episode", f3(d.AlertsPerEpisode), f3(p.AlertsPerEpisode)},
		{"detection delay, median", dur(d.DelayMedianS), dur(p.DelayMedianS)},
		{"detection delay, mean", dur(d.DelayMeanS), dur(p.DelayMeanS)},
		{"artefacts raising an alert", f3(d.ArtefactAlertRate), f3(p.ArtefactAlertRate)},
		{"NAB-style score (0 none, 100 perfect)", fmt.Sprintf("%.1f", d.NABScore), fmt.Sprintf("%.1f", p.NABScore)},
		{"alerts (true / all)", fmt.Sprintf("%d / %d", d.TrueAlerts, d.Alerts), fmt.Sprintf("%d / %d", p.TrueAlerts, p.Alerts)},
		{"episodes detected", fmt.Sprintf("%d / %d", d.Detected, d.Episodes), fmt.Sprintf("%d / %d", p.Detected, p.Episodes)},
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t\n", r.name, r.a, r.b)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "by type\tmode\trule\trule precision\trecall\trule recall\talerts/episode\tmedian delay\tNAB\talert rate\t")
	for _, typ := range labelOrder {
		for _, mode := range []string{ModeDefault, ModePerEvent} {
			tm, ok := rep.ByType[typ][mode]
			if !ok {
				continue
			}
			typeRow(tw, fmt.Sprintf("%s (%d)\t%s", typ, tm.Labels, mode), tm)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rep.Cases) == 0 {
		return nil
	}
	fmt.Fprintf(w, "\ncases where one rule could mask another (episode mode; %d customers, %.0f h each):\n\n",
		rep.Cases[0].Scenario.Customers, rep.Cases[0].Scenario.Hours)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "case\tlabel\trule\trule precision\trecall\trule recall\talerts/episode\tmedian delay (to the rule)\tNAB\talert rate\t")
	for _, c := range rep.Cases {
		name := c.Name
		for _, typ := range labelOrder {
			tm, ok := c.ByType[typ]
			if !ok || (tm.AlertRate != nil && typ != simulate.LabelArtefactBoundary) {
				continue
			}
			typeRow(tw, fmt.Sprintf("%s\t%s (%d)", name, typ, tm.Labels), tm)
			name = ""
		}
		fmt.Fprintf(tw, "%s\tall alerts: %d, true %d; artefacts alerting %s\t\t\t\t\t\t\t\t\t\n", name, c.Default.Alerts, c.Default.TrueAlerts,
			f3(c.Default.ArtefactAlertRate))
	}
	return tw.Flush()
}

// labelOrder is the order label types are printed in.
var labelOrder = []string{simulate.LabelRestingTachycardia, simulate.LabelBradycardia, simulate.LabelSuddenJump,
	simulate.LabelRestDrop, simulate.LabelDropBradycardia, simulate.LabelJumpTachycardia, simulate.LabelDeviceOff,
	simulate.LabelArtefactSpike, simulate.LabelArtefactDropout, simulate.LabelArtefactFlat, simulate.LabelArtefactBoundary}

// typeRow prints tm after the tab-separated head.
func typeRow(tw io.Writer, head string, tm TypeMetrics) {
	rule := tm.ExpectedRule
	if rule == "" && tm.AlertRate == nil {
		rule = "(none)"
	}
	delay := opt(tm.DelayMedianS, dur)
	switch {
	case tm.Recall != nil && *tm.Recall == 0:
		delay = "-"
	case tm.RuleRecall != nil && *tm.RuleRecall == 0:
		delay += " (never)"
	case tm.RuleDelayMedianS != nil && tm.DelayMedianS != nil && *tm.RuleDelayMedianS != *tm.DelayMedianS:
		delay += " (" + dur(*tm.RuleDelayMedianS) + ")"
	}
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", head, rule,
		opt(tm.RulePrecision, f3), opt(tm.Recall, f3), opt(tm.RuleRecall, f3), opt(tm.AlertsPerEpisode, f3), delay,
		opt(tm.NABScore, func(x float64) string { return fmt.Sprintf("%.1f", x) }), opt(tm.AlertRate, f3))
}

func f3(x float64) string { return fmt.Sprintf("%.3f", x) }

func dur(s float64) string { return (time.Duration(s) * time.Second).String() }

func opt(x *float64, f func(float64) string) string {
	if x == nil {
		return "-"
	}
	return f(*x)
}

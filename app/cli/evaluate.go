package cli

import (
	"context"
	"flag"

	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/app/evaluate"
)

var evaluateUsage = usage{
	synopsis: `heartbeat evaluate [flags]`,
	about: `
Scores the detection rules of the environment on a labelled scenario of the
physiology simulator: the readings go through the pipeline's validation
range and rule engines, in this process (no Kafka, no database), and the
alerts are matched against the episodes injected. It prints precision,
recall, F1, alerts per true episode, detection delay, the share of
artefacts raising an alert and a NAB-style score, for the episode mode and
the per-event mode (the per-reading rules) side by side, by anomaly type,
and on cases where one rule could mask another. The scenario is
deterministic: the seed chooses it.`,
	environment: `
		ANOMALY_*	the rules' thresholds and durations (both modes are scored, whatever DETECTION_MODE says)
		HEART_RATE_MIN, HEART_RATE_MAX	the validation range
		SIM_SEED	the scenario's seed when -seed is not given`,
	examples: `
		heartbeat evaluate
		ANOMALY_SUSTAINED_FOR=5m heartbeat evaluate -json
		heartbeat evaluate -customers 5 -export readings.csv -labels labels.csv`,
}

// runEvaluate is `heartbeat evaluate`.
func runEvaluate(ctx context.Context, e *env, args []string) error {
	o := evaluate.DefaultOptions()
	fs := flag.NewFlagSet("evaluate", flag.ContinueOnError)
	fs.BoolVar(&o.JSON, "json", false, "print the report as one JSON object on the last line")
	fs.Uint64Var(&o.Seed, "seed", 0, "scenario seed `N` (default: SIM_SEED, or 1 when that is 0)")
	fs.IntVar(&o.Customers, "customers", o.Customers, "`N` simulated customers")
	fs.DurationVar(&o.Span, "span", o.Span, "simulated time `D`")
	fs.DurationVar(&o.DayLength, "day", o.DayLength, "length `D` of a simulated day (compresses the sleep cycle; 24h is real time)")
	fs.IntVar(&o.CaseCustomers, "case-customers", o.CaseCustomers, "`N` customers in each case where one rule could mask another (0: no cases)")
	fs.StringVar(&o.LabelsFile, "labels", "", "write the ground truth to `FILE` (CSV: customer_id,type,class,start,end)")
	fs.StringVar(&o.ExportFile, "export", "", "write the scenario's readings to `FILE`, a CSV that heartbeat replay publishes")
	ops, err := e.parse("evaluate", fs, evaluateUsage, args)
	if err != nil {
		return err
	}
	if err := noOperands("evaluate", ops); err != nil {
		return err
	}
	cfg, err := config.LoadConfig(ctx, nil)
	if err != nil {
		return err
	}
	return evaluate.Score(cfg, o, e.stdout)
}

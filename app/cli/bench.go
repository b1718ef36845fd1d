package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/heartbeat/heartbeat/app/bench"
	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/app/dashbench"
)

// benchEnvironment is what both benches read.
const benchEnvironment = `
		DATABASE_URL	the PostgreSQL server, when -database-url is not given
		POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, POSTGRES_PASSWORD	the server when DATABASE_URL is empty too (default 127.0.0.1:5432, postgres)`

var benchUsage = usage{
	synopsis: `
		heartbeat bench [flags]
		heartbeat bench -dashboards [flags]     (heartbeat bench -dashboards -h: its flags)`,
	about: `
Measures the pipeline against its performance targets, in one run: the COPY
ceiling, the naive one-INSERT-per-event path, sustained ingest, the drain
of a backlog, detect alone, anomaly latency and peak memory, with every
stored reading checked (lost and duplicated must be 0). The bench hosts an
in-process Kafka broker and creates a database of its own on the PostgreSQL
server, dropped at the end; the pipeline under test runs as child processes
of this same executable. Results go to stdout as a table (with -json, one
JSON object on the last line), progress to stderr. It fails when a phase
fails or a reading is lost or duplicated; a missed target is reported.
Phases: ` + "copy, per-row, ingest, drain, detect (needs drain), latency, memory.",
	environment: benchEnvironment + `
		PPROF_ADDR	set for each child by -profile (a binary built with -tags pprof serves it)`,
	examples: `
		heartbeat bench
		heartbeat bench -json -duration 5s -phases ingest,latency
		go run -tags pprof . bench -profile /tmp/prof -phases memory`,
}

var dashbenchUsage = usage{
	synopsis: `heartbeat bench -dashboards [flags]`,
	about: `
Loads a large synthetic history into a database of its own — readings with
the pipeline's per-minute rollups, and anomalies — and times every
PostgreSQL query of the provisioned Grafana dashboard, expanded as Grafana
expands it, against the same panel computed from the raw readings. Prints
a table of medians, with -json one JSON object on the last line.`,
	environment: benchEnvironment,
	examples: `
		heartbeat bench -dashboards
		heartbeat bench -dashboards -rows 50000000 -days 7`,
}

// runBench is `heartbeat bench`, and `heartbeat bench -dashboards`.
func runBench(ctx context.Context, e *env, args []string) error {
	isDashboards := func(a string) bool { return a == "-dashboards" || a == "--dashboards" || a == "-dashboards=true" }
	if slices.ContainsFunc(args, isDashboards) {
		return runDashbench(ctx, e, slices.DeleteFunc(slices.Clone(args), isDashboards))
	}
	o := bench.DefaultOptions()
	var rate, phases string
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.Bool("dashboards", false, "time the dashboards' queries instead (its own flags: heartbeat bench -dashboards -h)")
	fs.DurationVar(&o.Duration, "duration", o.Duration, "measured window `D` of each timed phase")
	fs.DurationVar(&o.Warmup, "warmup", 0, "warm-up `D` before each measured window (0: duration/4, within 1s..5s)")
	fs.IntVar(&o.Customers, "customers", o.Customers, "`N` simulated customers (ingest, drain, detect, latency)")
	fs.StringVar(&rate, "rate", "max", "the simulator's events/s `R` in the ingest and memory phases, or max")
	fs.IntVar(&o.DrainEvents, "drain-events", o.DrainEvents, "`N` readings produced before persist starts (drain, detect)")
	var drainBrokers string
	fs.StringVar(&drainBrokers, "drain-brokers", "", "drain (and detect) on the Kafka brokers `LIST` (comma-separated) instead of an in-process one")
	fs.StringVar(&o.DrainTopic, "drain-topic", "", "`TOPIC` the drain phase drains (default KAFKA_TOPIC_RAW): loaded with -drain-events readings if empty, else drained as it is")
	fs.IntVar(&o.CopyRows, "copy-rows", o.CopyRows, "`N` rows of the COPY ceiling")
	fs.DurationVar(&o.PerRowTime, "per-row-time", 0, "length `D` of the per-row INSERT phase (0: min(duration, 5s))")
	fs.Float64Var(&o.LatencyRate, "latency-rate", o.LatencyRate, "`R` events/s published in the latency phase")
	fs.IntVar(&o.AnomalyEvery, "anomaly-every", o.AnomalyEvery, "every `N`th reading of the latency phase is 150 bpm")
	fs.Int64Var(&o.MaxLag, "max-lag", o.MaxLag, "SIM_MAX_LAG `N` of the simulator in the ingest phase (0: none)")
	fs.Int64Var(&o.RSSMaxLag, "rss-max-lag", o.RSSMaxLag, "SIM_MAX_LAG `N` of the simulator in the memory phase (0: none)")
	fs.IntVar(&o.RSSCustomers, "rss-customers", o.RSSCustomers, "`N` simulated customers in the memory phase")
	fs.DurationVar(&o.MeetTimeout, "meet-timeout", o.MeetTimeout, "memory phase: longest wait `D` for the detector to meet every customer")
	fs.IntVar(&o.SimPublishers, "sim-publishers", o.SimPublishers, "SIM_PUBLISHERS `N` of the simulator children")
	fs.StringVar(&phases, "phases", strings.Join(o.Phases, ","), "`LIST` of phases to run, comma-separated")
	fs.StringVar(&o.DatabaseURL, "database-url", "", "PostgreSQL server `URL` to create the bench database on (default: DATABASE_URL or POSTGRES_*)")
	fs.BoolVar(&o.JSON, "json", false, "print the results as one JSON object on the last line")
	fs.BoolVar(&o.Keep, "keep", false, "keep the bench database and the children's logs")
	fs.StringVar(&o.ProfileDir, "profile", "", "`DIR` for CPU and heap profiles of the children (needs a binary built with -tags pprof)")
	fs.StringVar(&o.Binary, "binary", "", "heartbeat executable `FILE` the children run (default: this one)")
	ops, err := e.parse("bench", fs, benchUsage, args)
	if err != nil {
		return err
	}
	if err := noOperands("bench", ops); err != nil {
		return err
	}
	if rate != "max" {
		r, err := strconv.ParseFloat(rate, 64)
		if err != nil || !(r > 0) {
			return usageError{"bench", fmt.Errorf("-rate: %q is neither a positive number of events/s nor max", rate)}
		}
		o.Rate = r
	}
	for _, b := range strings.Split(drainBrokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			o.DrainBrokers = append(o.DrainBrokers, b)
		}
	}
	o.Phases = nil
	for _, p := range strings.Split(phases, ",") {
		if p = strings.TrimSpace(p); p != "" {
			o.Phases = append(o.Phases, p)
		}
	}
	if o.DatabaseURL, err = serverURL(ctx, o.DatabaseURL); err != nil {
		return err
	}
	if o.Binary == "" {
		if o.Binary, err = os.Executable(); err != nil {
			return fmt.Errorf("bench: find the heartbeat executable: %w", err)
		}
	}
	res, err := bench.Run(ctx, o, e.stderr)
	if res != nil {
		res.Print(e.stdout, o.JSON)
	}
	return err
}

// runDashbench is `heartbeat bench -dashboards`.
func runDashbench(ctx context.Context, e *env, args []string) error {
	o := dashbench.DefaultOptions()
	fs := flag.NewFlagSet("bench -dashboards", flag.ContinueOnError)
	fs.Int64Var(&o.Rows, "rows", o.Rows, "`N` readings to load (10⁹ needs about 150 GB of disk)")
	fs.IntVar(&o.Days, "days", o.Days, "`N` days the readings span, ending now")
	fs.IntVar(&o.Customers, "customers", o.Customers, "`N` distinct customers")
	fs.DurationVar(&o.Range, "range", o.Range, "the dashboard's time range `D`")
	fs.IntVar(&o.Runs, "runs", o.Runs, "`N` timed runs per query; the median is reported")
	fs.BoolVar(&o.Keep, "keep", false, "keep the bench database")
	fs.BoolVar(&o.JSON, "json", false, "print one JSON object on the last line")
	fs.StringVar(&o.DatabaseURL, "database-url", "", "PostgreSQL server `URL` to create the bench database on (default: DATABASE_URL or POSTGRES_*)")
	ops, err := e.parse("bench -dashboards", fs, dashbenchUsage, args)
	if err != nil {
		return err
	}
	if err := noOperands("bench -dashboards", ops); err != nil {
		return err
	}
	if o.DatabaseURL, err = serverURL(ctx, o.DatabaseURL); err != nil {
		return err
	}
	_, err = dashbench.Run(ctx, o, e.stdout)
	return err
}

// serverURL is flagURL, or else the PostgreSQL server of the configuration:
// DATABASE_URL, or the POSTGRES_* variables.
func serverURL(ctx context.Context, flagURL string) (string, error) {
	if flagURL != "" {
		return flagURL, nil
	}
	cfg, err := config.LoadConfig(ctx, nil)
	if err != nil {
		return "", err
	}
	return cfg.Postgres.ConnString(), nil
}

package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/heartbeat/heartbeat/app/config"
)

// Options configure a bench run.
type Options struct {
	// Binary is the heartbeat executable the pipeline children run.
	Binary string
	// DatabaseURL locates the PostgreSQL server; the bench creates its own
	// database there. Empty: DATABASE_URL, or the POSTGRES_* variables.
	DatabaseURL string
	// Duration is the measured window of each timed phase.
	Duration time.Duration
	// Warmup precedes the measured window of ingest, latency and memory.
	// Zero: a quarter of Duration, between 1s and 5s.
	Warmup time.Duration
	// Customers simulated in the ingest, drain, detect and latency phases.
	Customers int
	// Rate is the simulator's SIM_EVENTS_PER_SECOND in the ingest and memory
	// phases; 0 means as fast as it goes.
	Rate float64
	// DrainEvents are produced before persist starts in the drain phase.
	DrainEvents int
	// CopyRows are written by the copy-ceiling phase.
	CopyRows int
	// PerRowTime bounds the per-row INSERT phase. Zero: min(Duration, 5s).
	PerRowTime time.Duration
	// LatencyRate is the fixed publish rate of the latency phase.
	LatencyRate float64
	// AnomalyEvery makes every n-th reading of the latency phase 150 bpm.
	AnomalyEvery int
	// MaxLag is the simulator children's SIM_MAX_LAG in the ingest and
	// memory phases: the backlog persist may have before the simulator
	// waits, so those phases measure a load the pipeline keeps up with
	// rather than a simulator flooding the machine. 0: no bound.
	MaxLag int64
	// RSSCustomers are simulated in the memory phase.
	RSSCustomers int
	// MeetTimeout bounds how long the memory phase waits for the detector
	// to have met every one of RSSCustomers before its measured window.
	MeetTimeout time.Duration
	// SimPublishers is the simulator children's SIM_PUBLISHERS.
	SimPublishers int
	// Phases run, in the fixed order of AllPhases; empty: all.
	Phases []string
	// JSON adds the results as one JSON object on the last line of stdout.
	JSON bool
	// Keep keeps the database and the children's logs.
	Keep bool
	// ProfileDir, when set, receives CPU and heap profiles of the children
	// (their binary must serve net/http/pprof on PPROF_ADDR).
	ProfileDir string
}

// Phase names, in the order they run.
const (
	PhaseCopy    = "copy"
	PhasePerRow  = "per-row"
	PhaseIngest  = "ingest"
	PhaseDrain   = "drain"
	PhaseDetect  = "detect"
	PhaseLatency = "latency"
	PhaseMemory  = "memory"
)

// AllPhases lists every phase in the order they run.
var AllPhases = []string{PhaseCopy, PhasePerRow, PhaseIngest, PhaseDrain, PhaseDetect, PhaseLatency, PhaseMemory}

// maxRate stands for "-rate max": the simulator paces to a rate no
// pipeline on one machine reaches, so it publishes as fast as it can.
const maxRate = 1e6

func (o Options) withDefaults() (Options, error) {
	if o.Binary == "" {
		return o, errors.New("no heartbeat binary to run the pipeline with")
	}
	if o.Duration <= 0 {
		return o, fmt.Errorf("-duration must be positive, got %s", o.Duration)
	}
	if o.Warmup <= 0 {
		o.Warmup = min(max(o.Duration/4, time.Second), 5*time.Second)
	}
	if o.PerRowTime <= 0 {
		o.PerRowTime = min(o.Duration, 5*time.Second)
	}
	if o.Customers <= 0 || o.RSSCustomers <= 0 || o.DrainEvents <= 0 || o.CopyRows <= 0 {
		return o, errors.New("-customers, -rss-customers, -drain-events and -copy-rows must be positive")
	}
	if o.Rate <= 0 {
		o.Rate = maxRate
	}
	if o.MeetTimeout <= 0 {
		o.MeetTimeout = 5 * time.Minute
	}
	if o.LatencyRate <= 0 || o.AnomalyEvery <= 0 || o.SimPublishers <= 0 {
		return o, errors.New("-latency-rate, -anomaly-every and -sim-publishers must be positive")
	}
	if len(o.Phases) == 0 {
		o.Phases = AllPhases
	}
	for _, p := range o.Phases {
		if !contains(AllPhases, p) {
			return o, fmt.Errorf("-phases: unknown phase %q; phases are %s", p, strings.Join(AllPhases, ","))
		}
	}
	if contains(o.Phases, PhaseDetect) && !contains(o.Phases, PhaseDrain) {
		return o, errors.New("-phases: detect runs over the topic the drain phase fills; add drain")
	}
	return o, nil
}

func (o Options) runs(phase string) bool { return contains(o.Phases, phase) }

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// Main runs `heartbeat bench [flags]`: it parses args, runs every phase with
// this executable as the pipeline, and prints the results to stdout
// (progress goes to stderr). It fails when a phase fails or when a reading
// was lost or duplicated; a missed target is reported, not an error.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("heartbeat bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o Options
	var rate, phases string
	fs.DurationVar(&o.Duration, "duration", 20*time.Second, "measured window of each timed phase")
	fs.DurationVar(&o.Warmup, "warmup", 0, "warm-up before each measured window (0: duration/4, 1s..5s)")
	fs.IntVar(&o.Customers, "customers", 1000, "simulated customers (ingest, drain, detect, latency)")
	fs.StringVar(&rate, "rate", "max", "simulator events/s in the ingest and memory phases, or max")
	fs.IntVar(&o.DrainEvents, "drain-events", 1_000_000, "readings produced before persist starts (drain, detect)")
	fs.IntVar(&o.CopyRows, "copy-rows", 1_000_000, "rows of the COPY ceiling")
	fs.DurationVar(&o.PerRowTime, "per-row-time", 0, "length of the per-row INSERT phase (0: min(duration, 5s))")
	fs.Float64Var(&o.LatencyRate, "latency-rate", 10_000, "events/s published in the latency phase")
	fs.IntVar(&o.AnomalyEvery, "anomaly-every", 100, "every n-th reading of the latency phase is 150 bpm")
	fs.Int64Var(&o.MaxLag, "max-lag", 100_000, "SIM_MAX_LAG of the simulator in the ingest and memory phases (0: none)")
	fs.IntVar(&o.RSSCustomers, "rss-customers", 100_000, "simulated customers in the memory phase")
	fs.DurationVar(&o.MeetTimeout, "meet-timeout", 5*time.Minute, "memory phase: longest wait for the detector to meet every customer before the measured window")
	fs.IntVar(&o.SimPublishers, "sim-publishers", 64, "SIM_PUBLISHERS of the simulator children")
	fs.StringVar(&phases, "phases", strings.Join(AllPhases, ","), "phases to run (comma list)")
	fs.StringVar(&o.DatabaseURL, "database-url", "", "PostgreSQL server to create the bench database on (default: DATABASE_URL or POSTGRES_*)")
	fs.BoolVar(&o.JSON, "json", false, "print the results as one JSON object on the last line")
	fs.BoolVar(&o.Keep, "keep", false, "keep the bench database and the children's logs")
	fs.StringVar(&o.ProfileDir, "profile", "", "directory for CPU and heap profiles of the children (served on PPROF_ADDR)")
	fs.StringVar(&o.Binary, "binary", "", "heartbeat executable the pipeline children run (default: this one)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench: unexpected arguments %q", fs.Args())
	}
	if rate != "max" {
		r, err := strconv.ParseFloat(rate, 64)
		if err != nil || r <= 0 {
			return fmt.Errorf("-rate: %q is neither a positive number of events/s nor max", rate)
		}
		o.Rate = r
	}
	for _, p := range strings.Split(phases, ",") {
		if p = strings.TrimSpace(p); p != "" {
			o.Phases = append(o.Phases, p)
		}
	}
	if o.DatabaseURL == "" {
		u, err := serverURLFromEnv(ctx)
		if err != nil {
			return err
		}
		o.DatabaseURL = u
	}
	if o.Binary == "" {
		bin, err := os.Executable()
		if err != nil {
			return fmt.Errorf("bench: find the heartbeat executable: %w", err)
		}
		o.Binary = bin
	}
	res, err := Run(ctx, o, stderr)
	if res != nil {
		res.Print(stdout, o.JSON)
	}
	return err
}

// serverURLFromEnv is DATABASE_URL, or the URL of the POSTGRES_* variables
// (127.0.0.1:5432, user postgres, by default).
func serverURLFromEnv(ctx context.Context) (string, error) {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		return u, nil
	}
	cfg, err := config.LoadConfig(ctx, nil)
	if err != nil {
		return "", err
	}
	return cfg.Postgres.ConnString(), nil
}

package bench

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Options configure a bench run.
type Options struct {
	// Binary is the heartbeat executable the pipeline children run.
	Binary string
	// DatabaseURL locates the PostgreSQL server; the bench creates its own
	// database there.
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
	// DrainBrokers, when set, are the Kafka brokers the drain and detect
	// phases run on instead of an in-process broker: records another tool
	// loaded, or that an earlier run loaded for another sink to drain.
	DrainBrokers []string
	// DrainTopic is the topic the drain phase drains (empty: the raw
	// topic, KAFKA_TOPIC_RAW). If it holds no records, DrainEvents
	// readings are loaded into it first; otherwise its records are drained
	// as they are.
	DrainTopic string
	// CopyRows are written by the copy-ceiling phase.
	CopyRows int
	// PerRowTime bounds the per-row INSERT phase. Zero: min(Duration, 5s).
	PerRowTime time.Duration
	// LatencyRate is the fixed publish rate of the latency phase.
	LatencyRate float64
	// AnomalyEvery makes every n-th reading of the latency phase 150 bpm.
	AnomalyEvery int
	// MaxLag is the simulator child's SIM_MAX_LAG in the ingest phase: the
	// backlog persist's group may have before the simulator waits, so the
	// phase measures a load the pipeline keeps up with rather than a
	// simulator flooding the machine. persist commits every
	// PERSIST_COMMIT_INTERVAL, so its lag never falls below what arrives in
	// one: the bound must stand well above the rate times the interval, or
	// it, not the pipeline, bounds the figure. 0: no bound.
	MaxLag int64
	// RSSMaxLag is the same bound in the memory phase, where it holds the
	// records in flight, and with them the peak RSS measured, to a backlog
	// a deployment keeps up with.
	RSSMaxLag int64
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
	if o.DatabaseURL == "" {
		return o, errors.New("no PostgreSQL server to create the bench database on")
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
	if o.MaxLag < 0 || o.RSSMaxLag < 0 {
		return o, errors.New("-max-lag and -rss-max-lag must be 0 (no bound) or a positive number of records")
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

// DefaultOptions are the measurements of the README's Performance section:
// 20 s windows, 1,000 customers (100,000 in the memory phase), the
// simulator as fast as it goes, every phase. Binary and DatabaseURL are
// left to the caller.
func DefaultOptions() Options {
	return Options{
		Duration:      20 * time.Second,
		Customers:     1000,
		DrainEvents:   1_000_000,
		CopyRows:      1_000_000,
		LatencyRate:   10_000,
		AnomalyEvery:  100,
		MaxLag:        300_000,
		RSSMaxLag:     100_000,
		RSSCustomers:  100_000,
		MeetTimeout:   5 * time.Minute,
		SimPublishers: 64,
		Phases:        AllPhases,
	}
}

//go:build chaos

// Chaos scenarios for "nothing lost, nothing duplicated". The real binary
// runs as separate processes, exactly as README's "Running the services
// apart" shows (a `heartbeat broker` with its data on disk, a simulator, and
// persist and detect each in their own process), and is crashed, rebalanced,
// cut off from PostgreSQL, cut off from its broker and shut down under load.
// Each scenario then waits until the pipeline is idle and checks its end state
// against an expectation computed independently of the pipeline: the
// simulator's stream is deterministic for a seed, so the expected rows are the
// ids of its valid events and the expected anomalies are what the rule engine
// raises over them in generation order.
//
//	make chaos                                    # CHAOS_EVENTS=200000, 5 kill schedules
//	make chaos CHAOS_EVENTS=20000 CHAOS_SEEDS=2   # what CI runs
//
// Knobs (environment): CHAOS_EVENTS (events per scenario), CHAOS_SEED (the
// simulator's seed), CHAOS_RAND_SEED (kill moments and names; kill schedule
// i uses CHAOS_RAND_SEED+i), CHAOS_SEEDS (how many kill schedules, default
// 1), CHAOS_RATE (events/s instead of the per-scenario default),
// CHAOS_SCENARIOS (comma list to run only some), CHAOS_LOG_LEVEL (the
// processes' LOG_LEVEL, default warn), CHAOS_LOG_DIR (keep the processes'
// logs there instead of in a temporary directory).
//
// This file holds the run and what every scenario shares (its world, its
// processes, the oracle, the end-state check); each scenario has its file:
// chaos_crash_test.go, chaos_rebalance_test.go, chaos_outage_test.go,
// chaos_broker_restart_test.go, chaos_shutdown_test.go and
// chaos_schedule_test.go (the kill schedules). Processes, the broker's
// topics and groups, databases and waiting are the harness's
// (system_test.go).
package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/sethvargo/go-envconfig"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/app/kafka"
	"github.com/heartbeat/heartbeat/app/telemetry/telemetrytest"
	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/messages/rules"
	"github.com/heartbeat/heartbeat/simulate"
	hbsql "github.com/heartbeat/heartbeat/sql"
	"github.com/heartbeat/heartbeat/sql/pgtest"
)

const (
	chaosDefaultEvents = 200000
	chaosDefaultSeed   = 20261125
	// chaosOutage is how long PostgreSQL is down in the outage scenario.
	chaosOutage = 20 * time.Second
	// chaosResumeBound is how soon after PostgreSQL accepts connections again
	// new rows must be committed.
	chaosResumeBound = 5 * time.Second
	// chaosShutdownBound is how long persist may take to exit on SIGTERM.
	chaosShutdownBound = 10 * time.Second
)

// chaosScenarios in the order they run. window is how long the simulator
// should produce (CHAOS_EVENTS / window events per second): long enough for
// the chaos to happen while it produces.
var chaosScenarios = []struct {
	name   string
	window time.Duration
	run    func(*chaosScenario)
}{
	{"crash", 60 * time.Second, (*chaosScenario).crash},
	{"rebalance", 20 * time.Second, (*chaosScenario).rebalance},
	{"outage", 12 * time.Second, (*chaosScenario).outage},
	{"broker-restart", 15 * time.Second, (*chaosScenario).brokerRestart},
	{"shutdown", 8 * time.Second, (*chaosScenario).shutdown},
	{"kill-schedule", 60 * time.Second, (*chaosScenario).killSchedule},
}

func TestChaos(t *testing.T) {
	c := newChaosRun(t)
	only := map[string]bool{}
	for _, n := range strings.Split(os.Getenv("CHAOS_SCENARIOS"), ",") {
		if n = strings.TrimSpace(n); n != "" {
			only[n] = true
		}
	}
	var rows []*chaosRow
	for _, sc := range chaosScenarios {
		if len(only) > 0 && !only[sc.name] {
			continue
		}
		runs := 1
		if sc.name == "kill-schedule" {
			runs = c.seeds
		}
		for i := range runs {
			name, seed := sc.name, c.randSeed+uint64(i)
			if runs > 1 {
				name = fmt.Sprintf("%s-%d", sc.name, i+1)
			}
			row := &chaosRow{scenario: name}
			rows = append(rows, row)
			started := time.Now()
			ok := t.Run(name, func(t *testing.T) {
				s := c.newScenario(t, name, sc.window, row)
				s.seed = seed
				sc.run(s)
				s.verify()
			})
			row.took = time.Since(started)
			row.failed = !ok
		}
	}
	fmt.Print(chaosTable(c, rows))
	var hung []string
	for _, r := range rows {
		if r.simHung {
			hung = append(hung, r.scenario)
		}
	}
	if len(hung) > 0 {
		t.Errorf("`heartbeat` with ROUTER_HANDLERS=simulate and SIM_TOTAL_EVENTS=%d did not exit after producing every event (scenarios %s): "+
			"it keeps running until it gets a signal", c.events, strings.Join(hung, ", "))
	}
}

// chaosRun is what all scenarios share: the binary and the settings.
type chaosRun struct {
	t        *testing.T
	bin      string
	events   int
	seed     uint64
	randSeed uint64
	seeds    int     // CHAOS_SEEDS: kill schedules to run
	rate     float64 // CHAOS_RATE, 0: per scenario

	mu        sync.Mutex
	expByRate map[float64]*chaosExpected
}

func newChaosRun(t *testing.T) *chaosRun {
	c := &chaosRun{t: t, events: chaosDefaultEvents, seed: chaosDefaultSeed, randSeed: uint64(time.Now().UnixNano()),
		seeds: 1, expByRate: map[float64]*chaosExpected{}}
	for name, dst := range map[string]*uint64{"CHAOS_SEED": &c.seed, "CHAOS_RAND_SEED": &c.randSeed} {
		if v := os.Getenv(name); v != "" {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil || n == 0 {
				t.Fatalf("%s=%q: want a positive whole number", name, v)
			}
			*dst = n
		}
	}
	if v := os.Getenv("CHAOS_EVENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("CHAOS_EVENTS=%q: want a positive whole number", v)
		}
		c.events = n
	}
	if v := os.Getenv("CHAOS_SEEDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("CHAOS_SEEDS=%q: want a positive whole number", v)
		}
		c.seeds = n
	}
	if v := os.Getenv("CHAOS_RATE"); v != "" {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r <= 0 {
			t.Fatalf("CHAOS_RATE=%q: want events per second", v)
		}
		c.rate = r
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, pgtest.ServerURL())
	need(t, "PostgreSQL at "+hbsql.Redact(pgtest.ServerURL()), err)
	_ = admin.Close(ctx)

	c.bin = heartbeatBinary(t)
	t.Logf("CHAOS_EVENTS=%d CHAOS_SEED=%d CHAOS_RAND_SEED=%d CHAOS_SEEDS=%d", c.events, c.seed, c.randSeed, c.seeds)
	return c
}

// rateFor is the simulator's rate for a scenario that should produce for window.
func (c *chaosRun) rateFor(window time.Duration) float64 {
	if c.rate > 0 {
		return c.rate
	}
	r := float64(c.events) / window.Seconds()
	return float64(int(min(max(r, 200), 20000)))
}

// chaosExpected is the end state the pipeline must reach, computed without it.
type chaosExpected struct {
	rate      float64
	valid     map[string]time.Time // event id -> timestamp on the oracle's clock
	invalid   map[string]bool
	anomalies map[string]chaosAnomaly // anomaly id -> what
	// duration is the virtual time the simulator takes to produce everything;
	// it paces itself to the wall clock, so it is also roughly the wall time.
	duration time.Duration
	// disagreements counts events whose Kind disagrees with the validation.
	disagreements int
}

type chaosAnomaly struct{ typ, customer string }

// expected computes the stream the simulator process produces with cfg and
// its expected end state. The loop mirrors simulate.Simulator.Run's virtual
// clock (10 ms ticks, rate with bursts, the same Next(at) sequence) without
// its pacing; verify cross-checks it against the stored timestamps.
func (c *chaosRun) expected(cfg config.Config) *chaosExpected {
	c.mu.Lock()
	defer c.mu.Unlock()
	sc := cfg.Sim
	if e := c.expByRate[sc.EventsPerSecond]; e != nil {
		return e
	}
	const tick = 10 * time.Millisecond
	gen := simulate.NewGenerator(simulate.GeneratorConfig{Customers: sc.CustomerCount, Seed: sc.Seed,
		InvalidRatio: sc.InvalidRatio, LateRatio: sc.LateRatio, AnomalyRatio: sc.AnomalyRatio})
	bursts := simulate.NewBurstSchedule(sc.Seed)
	engine := rules.NewEngine(rules.Thresholds{Low: cfg.Anomaly.LowThreshold, High: cfg.Anomaly.HighThreshold, SpikeDelta: cfg.Anomaly.SpikeDelta})
	limits := cfg.Validation.Limits()
	e := &chaosExpected{rate: sc.EventsPerSecond, valid: map[string]time.Time{}, invalid: map[string]bool{}, anomalies: map[string]chaosAnomaly{}}
	start := time.Now().UTC().Truncate(time.Second)
	var sent int64
	var carry float64
	bursting := false
	for k := int64(0); ; k++ {
		if k%int64(time.Second/tick) == 0 {
			bursting = bursts.Bursting()
		}
		rate := sc.EventsPerSecond
		if bursting {
			rate *= sc.BurstMultiplier
		}
		carry += rate * tick.Seconds()
		n := int64(carry)
		carry -= float64(n)
		n = min(n, sc.TotalEvents-sent)
		at := start.Add(time.Duration(k) * tick)
		for range n {
			ev := gen.Next(at)
			h, err := limits.Validate(ev.Payload, at)
			if (err != nil) != (ev.Kind == simulate.KindInvalid) {
				e.disagreements++
			}
			if ev.Kind == simulate.KindInvalid {
				e.invalid[ev.ID] = true
				continue
			}
			if err != nil {
				h = ev.Reading
			}
			e.valid[ev.ID] = h.Timestamp
			f, found, apply := engine.Evaluate(rules.Lane{}, h)
			if found {
				e.anomalies[messages.AnomalyID(h.EventID, f.Rule)] = chaosAnomaly{typ: f.Rule, customer: h.CustomerID}
			}
			apply()
		}
		sent += n
		if sent >= sc.TotalEvents {
			e.duration = time.Duration(k+1) * tick
			break
		}
	}
	c.expByRate[sc.EventsPerSecond] = e
	return e
}

// chaosRow is one line of the summary table.
type chaosRow struct {
	scenario   string
	produced   int // distinct event ids on the raw topic
	expected   int // expected rows
	stored     int
	duplicates int
	missing    int
	dlq        int
	anomalies  string
	recovery   string
	notes      []string
	took       time.Duration
	failed     bool
	simHung    bool
}

func chaosTable(c *chaosRun, rows []*chaosRow) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nchaos summary: CHAOS_EVENTS=%d CHAOS_SEED=%d CHAOS_RAND_SEED=%d CHAOS_SEEDS=%d\n\n", c.events, c.seed, c.randSeed, c.seeds)
	head := []string{"scenario", "produced", "stored", "duplicates", "missing", "DLQ", "anomalies", "recovery time", "result", "took"}
	table := [][]string{head}
	for _, r := range rows {
		result := "ok"
		if r.failed {
			result = "FAIL"
		}
		table = append(table, []string{r.scenario, strconv.Itoa(r.produced), fmt.Sprintf("%d/%d", r.stored, r.expected),
			strconv.Itoa(r.duplicates), strconv.Itoa(r.missing), strconv.Itoa(r.dlq), r.anomalies, r.recovery, result,
			r.took.Round(time.Second).String()})
	}
	width := make([]int, len(head))
	for _, line := range table {
		for i, cell := range line {
			width[i] = max(width[i], len([]rune(cell)))
		}
	}
	for n, line := range table {
		for i, cell := range line {
			fmt.Fprintf(&b, "| %-*s ", width[i], cell)
		}
		b.WriteString("|\n")
		if n == 0 {
			for i := range head {
				b.WriteString("|" + strings.Repeat("-", width[i]+2))
			}
			b.WriteString("|\n")
		}
	}
	b.WriteString("\n")
	for _, r := range rows {
		for _, n := range r.notes {
			fmt.Fprintf(&b, "  %s: %s\n", r.scenario, n)
		}
	}
	return b.String()
}

// chaosScenario is one scenario's world: its database, broker and processes.
type chaosScenario struct {
	t      *testing.T
	c      *chaosRun
	name   string
	dir    string
	row    *chaosRow
	cfg    config.Config
	exp    *chaosExpected
	env    map[string]string
	dbName string
	dbURL  string
	pool   *pgxpool.Pool
	broker string // host:port
	k      *kafkaAdmin
	// seed is the kill schedule's (CHAOS_RAND_SEED plus its index).
	seed uint64

	mu      sync.Mutex
	procs   []*chaosProc
	current map[string]*chaosProc // role -> running instance
	counter map[string]int
	sim     *chaosProc
	// simFinished closes once the simulator has produced every event (or
	// exited); simHung is set when it then did not exit by itself.
	simFinished chan struct{}
	simOnce     sync.Once
	simHung     bool
	// afterIdle are checks that need the pipeline idle.
	afterIdle []func()
	// detectKilled is set once a detect was SIGKILLed: its restart may
	// publish anomaly messages again.
	detectKilled bool
}

func (c *chaosRun) newScenario(t *testing.T, name string, window time.Duration, row *chaosRow) *chaosScenario {
	dir := t.TempDir()
	if keep := os.Getenv("CHAOS_LOG_DIR"); keep != "" {
		// Keep the logs (and the broker's data) for a look afterwards.
		var err error
		if dir, err = os.MkdirTemp(keep, name+"-"); err != nil {
			t.Fatal(err)
		}
	}
	s := &chaosScenario{t: t, c: c, name: name, dir: dir, row: row,
		current: map[string]*chaosProc{}, counter: map[string]int{}, simFinished: make(chan struct{})}
	ctx := context.Background()

	// A pool of its own, small and quick to give up: the outage scenario
	// stops the server under it.
	s.dbURL, _ = pgtest.Database(t, "heartbeat_chaos_"+strings.ReplaceAll(name, "-", "_")+"_")
	pcfg, err := pgxpool.ParseConfig(s.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	s.dbName = pcfg.ConnConfig.Database
	pcfg.MaxConns = 2
	pcfg.ConnConfig.ConnectTimeout = 2 * time.Second
	if s.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.pool.Close)

	s.broker = telemetrytest.FreeAddr(t)
	rate := c.rateFor(window)
	s.env = map[string]string{
		"KAFKA_BOOTSTRAP_SERVERS": s.broker,
		"DATABASE_URL":            s.dbURL,
		"LOG_LEVEL":               cmp.Or(os.Getenv("CHAOS_LOG_LEVEL"), "warn"),
		"SIM_SEED":                strconv.FormatUint(c.seed, 10),
		"SIM_TOTAL_EVENTS":        strconv.Itoa(c.events),
		"SIM_EVENTS_PER_SECOND":   strconv.FormatFloat(rate, 'f', -1, 64),
		// expected computes the anomalies with the per-event rules.
		"DETECTION_MODE": "per_event",
	}
	s.cfg, err = config.LoadConfig(ctx, envconfig.MapLookuper(s.env))
	if err != nil {
		t.Fatalf("configuration: %v", err)
	}
	s.exp = c.expected(s.cfg)
	if s.exp.disagreements > 0 {
		t.Errorf("oracle: %d generated events are invalid by Kind but valid by messages.Limits.Validate, or the reverse", s.exp.disagreements)
	}
	row.expected = len(s.exp.valid)
	s.logf("database %s, broker %s, %d events at %v/s (about %s), expecting %d rows, %d invalid, %d anomalies",
		s.dbName, s.broker, c.events, rate, s.exp.duration.Round(100*time.Millisecond), len(s.exp.valid), len(s.exp.invalid), len(s.exp.anomalies))

	s.k = newKafkaAdmin(t, s.broker)
	t.Cleanup(s.stopAll)
	s.startBroker()
	return s
}

func (s *chaosScenario) logf(format string, args ...any) {
	s.t.Helper()
	s.t.Logf("%s %s: %s", time.Now().Format("15:04:05.000"), s.name, fmt.Sprintf(format, args...))
}

func (s *chaosScenario) note(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.row.notes = append(s.row.notes, fmt.Sprintf(format, args...))
}

// chaosProc is one process of the binary, in a role: broker, simulate,
// persist or detect.
type chaosProc struct {
	*process
	role    string
	metrics string // its METRICS_ADDR
}

// clientID is the process's Kafka client id: its name, "persist-3".
func (p *chaosProc) clientID() string { return strings.ReplaceAll(p.name, "#", "-") }

// start runs the binary in role (broker, simulate, persist, detect).
func (s *chaosScenario) start(role string) *chaosProc {
	s.t.Helper()
	return s.startWith(role, nil)
}

// startWith runs the binary in role with extra environment variables. Each
// process has its own Kafka client id (its name), so a consumer-group
// member names the process it belongs to.
func (s *chaosScenario) startWith(role string, extra map[string]string) *chaosProc {
	s.t.Helper()
	s.mu.Lock()
	s.counter[role]++
	name := fmt.Sprintf("%s#%d", role, s.counter[role])
	s.mu.Unlock()
	p := &chaosProc{role: role}
	vars := maps.Clone(s.env)
	var args []string
	if role == "broker" {
		args = []string{"broker"}
		vars["BROKER_ADDR"], vars["BROKER_DATA_DIR"] = s.broker, filepath.Join(s.dir, "broker-data")
	} else {
		p.metrics = telemetrytest.FreeAddr(s.t)
		vars["ROUTER_HANDLERS"], vars["METRICS_ADDR"], vars["KAFKA_CLIENT_ID"] = role, p.metrics, strings.ReplaceAll(name, "#", "-")
	}
	maps.Copy(vars, extra)
	cmd := exec.Command(s.c.bin, args...)
	cmd.Env = processEnv(vars)
	// Nothing outlives the test binary, killed at a timeout or not.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.process = startProcess(s.t, name, filepath.Join(s.dir, strings.ReplaceAll(name, "#", "-")+".log"), cmd)
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.current[role] = p
	s.mu.Unlock()
	return p
}

func (s *chaosScenario) proc(role string) *chaosProc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current[role]
}

// kill SIGKILLs p and waits for it.
func (s *chaosScenario) kill(p *chaosProc) {
	if p.role == "detect" {
		s.mu.Lock()
		s.detectKilled = true
		s.mu.Unlock()
	}
	p.kill()
}

// stopAll kills what still runs and, when the scenario failed, prints the
// processes' logs.
func (s *chaosScenario) stopAll() {
	s.mu.Lock()
	procs := slices.Clone(s.procs)
	s.mu.Unlock()
	for _, p := range procs {
		if !p.exited() {
			s.kill(p)
		}
	}
	if !s.t.Failed() {
		return
	}
	for _, p := range procs {
		s.t.Logf("---- %s (exit %v) log %s, last lines:\n%s", p.name, p.exitErr, p.logPath, p.tail(60))
	}
}

// unexpectedExits fails for processes that exited on their own with an error.
func (s *chaosScenario) unexpectedExits() {
	s.mu.Lock()
	procs := slices.Clone(s.procs)
	s.mu.Unlock()
	for _, p := range procs {
		if p.exited() && !p.stopping && p.exitCode() != 0 {
			s.t.Errorf("%s exited by itself: %v", p.name, p.exitErr)
		}
	}
}

// sleepUntil waits for a chosen chaos moment.
func sleepUntil(at time.Time) {
	if d := time.Until(at); d > 0 {
		time.Sleep(d)
	}
}

// startBroker starts `heartbeat broker` and waits until it serves the topics.
func (s *chaosScenario) startBroker() *chaosProc {
	s.t.Helper()
	p := s.start("broker")
	topics := kafka.Topics(s.cfg.Kafka)
	err := poll(30*time.Second, 50*time.Millisecond, func() (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("%s exited: %v", p.name, p.exitErr)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		td, err := s.k.adm.ListTopics(ctx)
		if err != nil {
			return false, err
		}
		for _, tp := range topics {
			d, ok := td[tp.Name]
			if !ok || d.Err != nil || len(d.Partitions) != int(tp.Partitions) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		s.t.Fatalf("broker %s not serving its topics: %v\n%s", s.broker, err, p.tail(30))
	}
	return p
}

// startService starts persist, detect or simulate and, except for the
// simulator (which may finish first), waits for its /healthz.
func (s *chaosScenario) startService(role string) *chaosProc {
	s.t.Helper()
	p := s.start(role)
	if role == "simulate" {
		s.sim = p
		go s.watchSimulator(p)
		return p
	}
	if err := s.waitHealthy(p); err != nil {
		s.t.Fatalf("%v\n%s", err, p.tail(30))
	}
	return p
}

// watchSimulator closes simFinished once the simulator has produced every
// event. With SIM_TOTAL_EVENTS it should then exit by itself; if it has not
// within 5 s it is stopped with SIGTERM and the scenario remembers it.
func (s *chaosScenario) watchSimulator(p *chaosProc) {
	finish := func() { s.simOnce.Do(func() { close(s.simFinished) }) }
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for produced := false; !produced; {
		select {
		case <-p.done:
			finish()
			return
		case <-tick.C:
		}
		n, err := scrapeMetric(p.metrics, "heartbeat_messages_produced_total")
		produced = err == nil && n >= float64(s.c.events)
	}
	finish()
	select {
	case <-p.done:
		return
	case <-time.After(5 * time.Second):
	}
	s.mu.Lock()
	s.simHung = true
	s.mu.Unlock()
	took, inTime := p.terminate(10 * time.Second)
	if !inTime || p.exitCode() != 0 {
		s.t.Errorf("%s on SIGTERM: exit %v after %s", p.name, p.exitErr, took)
	}
}

func (s *chaosScenario) simDone() bool { return closed(s.simFinished) }

func (s *chaosScenario) waitHealthy(p *chaosProc) error {
	client := http.Client{Timeout: time.Second}
	err := poll(60*time.Second, 50*time.Millisecond, func() (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("exited: %v", p.exitErr)
		}
		resp, err := client.Get("http://" + p.metrics + "/healthz")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("%s not healthy: %w", p.name, err)
	}
	return nil
}

// startPipeline starts persist and detect, then the simulator.
func (s *chaosScenario) startPipeline() time.Time {
	s.startService("persist")
	s.startService("detect")
	s.startService("simulate")
	return s.sim.started
}

func (s *chaosScenario) groups() []string {
	return []string{s.cfg.Kafka.GroupDB, s.cfg.Kafka.GroupAnomaly}
}

// waitAdvance waits until group's committed offsets move past snap (a
// snapshot taken at the chaos moment), or the group has nothing left to do
// once the simulator finished. It returns the time from since.
//
// With members > 0, "nothing left" also needs the group stable with that
// many members, none of them in gone (members of a process that was killed
// or stopped), so that a restarted process is known to have joined.
func (s *chaosScenario) waitAdvance(group string, snap map[int32]int64, since time.Time, timeout time.Duration, members int, gone map[string]bool) (time.Duration, string, error) {
	var how string
	var trace []string
	lastState := ""
	joined := false
	err := poll(timeout, 25*time.Millisecond, func() (bool, error) {
		st, ids := s.describeGroup(group)
		if st != lastState {
			lastState = st
			trace = append(trace, fmt.Sprintf("%s +%.1fs", st, time.Since(since).Seconds()))
		}
		joined = st == fmt.Sprintf("Stable/%d", members)
		for _, id := range ids {
			joined = joined && !gone[id]
		}
		com, err := s.k.committed(group, s.cfg.Kafka.TopicRaw)
		if err != nil {
			return false, err
		}
		for p, at := range com {
			if prev, ok := snap[p]; !ok || at > prev {
				how = "committed offsets advanced"
				return true, nil
			}
		}
		if s.simDone() && (members == 0 || joined) {
			if lag, err := s.k.lag(group, s.cfg.Kafka.TopicRaw); err == nil && lag == 0 {
				how = "nothing left to consume"
				return true, nil
			}
		}
		return false, nil
	})
	how += "; group " + strings.Join(trace, ", ")
	if err != nil {
		err = fmt.Errorf("%w; group %s", err, strings.Join(trace, ", "))
	}
	return time.Since(since), how, err
}

// groupState describes group as "State/members".
func (s *chaosScenario) groupState(group string) string {
	st, _ := s.describeGroup(group)
	return st
}

// describeGroup returns group's "State/members" and its member ids.
func (s *chaosScenario) describeGroup(group string) (string, []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	dg, err := s.k.adm.DescribeGroups(ctx, group)
	if err != nil {
		return "unknown", nil
	}
	g := dg[group]
	if g.Err != nil {
		return "unknown", nil
	}
	ids := make([]string, 0, len(g.Members))
	for _, m := range g.Members {
		ids = append(ids, m.MemberID)
	}
	return fmt.Sprintf("%s/%d", g.State, len(g.Members)), ids
}

// members returns the ids of group's members, as a set.
func (s *chaosScenario) members(group string) map[string]bool {
	_, ids := s.describeGroup(group)
	out := map[string]bool{}
	for _, id := range ids {
		out[id] = true
	}
	return out
}

// snapshot is committed(group), retried while the broker is not reachable.
func (s *chaosScenario) snapshot(group string) map[int32]int64 {
	var snap map[int32]int64
	err := poll(30*time.Second, 25*time.Millisecond, func() (bool, error) {
		var err error
		snap, err = s.k.committed(group, s.cfg.Kafka.TopicRaw)
		return err == nil, err
	})
	if err != nil {
		s.t.Errorf("committed offsets of %s: %v", group, err)
	}
	return snap
}

// waitGroup waits until group is Stable with members members, and returns
// the states it went through.
func (s *chaosScenario) waitGroup(group string, members int, timeout time.Duration) (string, error) {
	since := time.Now()
	var trace []string
	last := ""
	want := fmt.Sprintf("Stable/%d", members)
	err := poll(timeout, 25*time.Millisecond, func() (bool, error) {
		st := s.groupState(group)
		if st != last {
			last = st
			trace = append(trace, fmt.Sprintf("%s +%.1fs", st, time.Since(since).Seconds()))
		}
		return st == want, nil
	})
	return strings.Join(trace, ", "), err
}

func (s *chaosScenario) groupFor(role string) string {
	if role == "persist" {
		return s.cfg.Kafka.GroupDB
	}
	return s.cfg.Kafka.GroupAnomaly
}

func (s *chaosScenario) storedRows(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var n int64
	err := s.pool.QueryRow(ctx, "SELECT count(*) FROM heartbeat_events").Scan(&n)
	return n, err
}

// waitIdle waits until the simulator finished, both groups have committed
// everything and the stored counts stop changing.
func (s *chaosScenario) waitIdle() error {
	timeout := time.Minute + 2*time.Duration(s.c.events)*time.Millisecond
	if s.t.Failed() {
		// Something is already stuck: do not spend CI's time waiting for it.
		timeout = 30 * time.Second
	}
	if err := poll(timeout, 100*time.Millisecond, func() (bool, error) { return s.simDone() && s.sim.exited(), nil }); err != nil {
		return fmt.Errorf("simulator still running: %w", err)
	}
	if s.sim.exitCode() != 0 {
		return fmt.Errorf("%s exited with %v", s.sim.name, s.sim.exitErr)
	}
	var last string
	var since time.Time
	err := poll(timeout, 250*time.Millisecond, func() (bool, error) {
		var parts []string
		for _, g := range s.groups() {
			lag, err := s.k.lag(g, s.cfg.Kafka.TopicRaw)
			if err != nil {
				return false, err
			}
			if lag != 0 {
				return false, fmt.Errorf("group %s (%s) lags by %d", g, s.groupState(g), lag)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		var rows, anomalies int64
		if err := s.pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM heartbeat_events), (SELECT count(*) FROM anomalies)").Scan(&rows, &anomalies); err != nil {
			return false, err
		}
		parts = append(parts, strconv.FormatInt(rows, 10), strconv.FormatInt(anomalies, 10))
		for _, topic := range []string{s.cfg.Kafka.TopicAnomaly, s.cfg.Kafka.TopicInvalid, s.cfg.Kafka.TopicDLQ} {
			ends, err := s.k.offsets(topic, true)
			if err != nil {
				return false, err
			}
			var n int64
			for _, e := range ends {
				n += e
			}
			parts = append(parts, strconv.FormatInt(n, 10))
		}
		cur := strings.Join(parts, "/")
		if cur != last {
			last, since = cur, time.Now()
			return false, nil
		}
		return time.Since(since) >= 2*time.Second, nil
	})
	if err != nil {
		return fmt.Errorf("pipeline not idle: %w (rows/anomalies/anomaly msgs/invalid msgs/dlq msgs: %s)", err, last)
	}
	return nil
}

// verify checks the end state once the pipeline is idle.
func (s *chaosScenario) verify() {
	t := s.t
	s.unexpectedExits()
	if err := s.waitIdle(); err != nil {
		t.Errorf("%v", err)
	}
	s.unexpectedExits()
	for _, check := range s.afterIdle {
		check()
	}
	s.mu.Lock()
	s.row.simHung = s.simHung
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	raw := s.cfg.Kafka.TopicRaw
	exp := s.exp

	// The raw topic: every generated event, and where it landed.
	rawRecs, err := s.k.readTopic(raw)
	if err != nil {
		t.Errorf("%v", err)
	}
	seen := map[string]int{}
	type coord struct {
		p int32
		o int64
	}
	invalidCoords := map[coord]bool{}
	for _, r := range rawRecs {
		id := header(r, messages.UUIDHeader)
		seen[id]++
		if exp.invalid[id] {
			invalidCoords[coord{r.Partition, r.Offset}] = true
		}
	}
	rawDup, rawLost := 0, 0
	for id, n := range seen {
		if _, ok := exp.valid[id]; ok || exp.invalid[id] {
			s.row.produced++
		}
		rawDup += n - 1
	}
	for id := range exp.valid {
		if seen[id] == 0 {
			rawLost++
		}
	}
	for id := range exp.invalid {
		if seen[id] == 0 {
			rawLost++
		}
	}
	if rawDup > 0 || rawLost > 0 || len(seen) != s.c.events {
		s.note("raw topic: %d records, %d distinct ids (%d generated), %d duplicate records (producer retries), %d generated events never produced",
			len(rawRecs), len(seen), s.c.events, rawDup, rawLost)
	}

	// heartbeat_events: exactly the valid ids, and the oracle's clock agrees.
	rows, err := s.pool.Query(ctx, "SELECT event_id::text, event_time FROM heartbeat_events")
	if err != nil {
		t.Fatalf("read heartbeat_events: %v", err)
	}
	stored := map[string]int{}
	var extra []string
	var minSkew, maxSkew time.Duration
	first := true
	var id string
	var at time.Time
	_, err = pgx.ForEachRow(rows, []any{&id, &at}, func() error {
		stored[id]++
		want, ok := exp.valid[id]
		if !ok {
			extra = append(extra, id)
			return nil
		}
		d := at.Sub(want)
		if first {
			minSkew, maxSkew, first = d, d, false
		}
		minSkew, maxSkew = min(minSkew, d), max(maxSkew, d)
		return nil
	})
	if err != nil {
		t.Fatalf("read heartbeat_events: %v", err)
	}
	for _, n := range stored {
		s.row.stored += n
		s.row.duplicates += n - 1
	}
	var missing []string
	for id := range exp.valid {
		if stored[id] == 0 {
			missing = append(missing, id)
		}
	}
	s.row.missing = len(missing)
	if len(missing) > 0 || len(extra) > 0 || s.row.duplicates > 0 {
		t.Errorf("heartbeat_events: %d rows, want %d: %d missing (e.g. %v), %d not valid events (e.g. %v), %d duplicate event ids",
			s.row.stored, len(exp.valid), len(missing), chaosFirst(missing, 5), len(extra), chaosFirst(extra, 5), s.row.duplicates)
	}
	if maxSkew-minSkew > 2*time.Millisecond {
		t.Errorf("oracle: stored event times are not the expected ones shifted by one start time (offsets range %s..%s): the test's copy of the simulator's clock is out of date", minSkew, maxSkew)
	}

	// ingest_checkpoint: the end of every partition that has records.
	ends, err := s.k.offsets(raw, true)
	if err != nil {
		t.Errorf("end offsets of %s: %v", raw, err)
	}
	cps := map[int32]int64{}
	crows, err := s.pool.Query(ctx, "SELECT partition, last_offset FROM ingest_checkpoint WHERE consumer_group = $1 AND topic = $2", s.cfg.Kafka.GroupDB, raw)
	if err != nil {
		t.Fatalf("read ingest_checkpoint: %v", err)
	}
	var part int32
	var off int64
	if _, err := pgx.ForEachRow(crows, []any{&part, &off}, func() error { cps[part] = off; return nil }); err != nil {
		t.Fatalf("read ingest_checkpoint: %v", err)
	}
	var wrongCP []string
	for p, end := range ends {
		if end == 0 {
			continue
		}
		if got, ok := cps[p]; !ok || got != end-1 {
			wrongCP = append(wrongCP, fmt.Sprintf("p%d: %d (want %d)", p, got, end-1))
		}
	}
	sort.Strings(wrongCP)
	if len(wrongCP) > 0 {
		t.Errorf("ingest_checkpoint of %s does not end at the topic's end: %s", s.cfg.Kafka.GroupDB, strings.Join(wrongCP, ", "))
	}

	// anomalies: exactly the expected set.
	arows, err := s.pool.Query(ctx, "SELECT anomaly_id::text, anomaly_type, customer_id FROM anomalies")
	if err != nil {
		t.Fatalf("read anomalies: %v", err)
	}
	got := map[string]chaosAnomaly{}
	var aid, typ, cust string
	if _, err := pgx.ForEachRow(arows, []any{&aid, &typ, &cust}, func() error { got[aid] = chaosAnomaly{typ, cust}; return nil }); err != nil {
		t.Fatalf("read anomalies: %v", err)
	}
	aMissing, aExtra := chaosDiff(exp.anomalies, got)
	anomaliesOK := len(aMissing) == 0 && len(aExtra) == 0
	if !anomaliesOK {
		t.Errorf("anomalies table: %d rows, want %d: missing %s; unexpected %s", len(got), len(exp.anomalies),
			chaosDescribe(aMissing, exp.anomalies, 8), chaosDescribe(aExtra, got, 8))
	}

	// events.anomaly.v1: each expected anomaly exactly once, keyed by
	// customer. The outbox forwarder is at-least-once: a detect killed
	// between publishing a batch and recording it publishes the batch again
	// on its restart, the same messages; other copies are duplicates.
	recs, err := s.k.readTopic(s.cfg.Kafka.TopicAnomaly)
	if err != nil {
		t.Errorf("%v", err)
	}
	msgs := map[string]int{}
	var badMsgs []string
	msgAnoms := map[string]chaosAnomaly{}
	firstCopy := map[string]*kgo.Record{}
	s.mu.Lock()
	resends := s.detectKilled
	s.mu.Unlock()
	copies := 0
	for _, r := range recs {
		id := header(r, messages.UUIDHeader)
		if f, seen := firstCopy[id]; seen && resends && bytes.Equal(f.Key, r.Key) && bytes.Equal(f.Value, r.Value) {
			copies++
			continue
		} else if !seen {
			firstCopy[id] = r
		}
		msgs[id]++
		var body messages.Anomaly
		_ = json.Unmarshal(r.Value, &body)
		msgAnoms[id] = chaosAnomaly{body.Type, string(r.Key)}
		if want, ok := exp.anomalies[id]; ok && (string(r.Key) != want.customer || body.AnomalyID != id || body.Type != want.typ) {
			badMsgs = append(badMsgs, fmt.Sprintf("%s key=%q body id=%s type=%s", id, r.Key, body.AnomalyID, body.Type))
		}
	}
	msgDup := 0
	var dupIDs []string
	for id, n := range msgs {
		if n > 1 {
			msgDup += n - 1
			dupIDs = append(dupIDs, id)
		}
	}
	mMissing, mExtra := chaosDiff(exp.anomalies, msgAnoms)
	s.row.duplicates += msgDup
	if msgDup > 0 || len(mMissing) > 0 || len(mExtra) > 0 || len(badMsgs) > 0 {
		anomaliesOK = false
		t.Errorf("%s: %d messages for %d expected anomalies: %d duplicate messages (e.g. %v), missing %s; unexpected %s; wrong key/body %v",
			s.cfg.Kafka.TopicAnomaly, len(recs), len(exp.anomalies), msgDup, chaosFirst(dupIDs, 5),
			chaosDescribe(mMissing, exp.anomalies, 8), chaosDescribe(mExtra, msgAnoms, 8), chaosFirst(badMsgs, 5))
		if msgDup > 0 {
			s.note("%d duplicate messages on %s", msgDup, s.cfg.Kafka.TopicAnomaly)
		}
	}
	if copies > 0 {
		s.note("%s: %d messages published again, unchanged, by a detect restarted after SIGKILL (the outbox forwarder is at-least-once)", s.cfg.Kafka.TopicAnomaly, copies)
	}
	verdict := "ok"
	if !anomaliesOK {
		verdict = "WRONG"
	}
	s.row.anomalies = fmt.Sprintf("%d/%d %s", len(got), len(exp.anomalies), verdict)

	// events.dlq.v1 stays empty.
	dlq, err := s.k.readTopic(s.cfg.Kafka.TopicDLQ)
	if err != nil {
		t.Errorf("%v", err)
	}
	s.row.dlq = len(dlq)
	if len(dlq) > 0 {
		var reasons []string
		for _, r := range chaosFirst(dlq, 5) {
			reasons = append(reasons, header(r, "reason_poisoned"))
		}
		t.Errorf("%s holds %d messages; reasons: %q", s.cfg.Kafka.TopicDLQ, len(dlq), reasons)
	}

	// events.invalid.v1 covers every invalid record (duplicates are allowed:
	// the envelope is published before the record is settled).
	inv, err := s.k.readTopic(s.cfg.Kafka.TopicInvalid)
	if err != nil {
		t.Errorf("%v", err)
	}
	envelopes := map[coord]int{}
	for _, r := range inv {
		var e struct {
			SourceTopic     string `json:"source_topic"`
			SourcePartition int32  `json:"source_partition"`
			SourceOffset    int64  `json:"source_offset"`
		}
		if err := json.Unmarshal(r.Value, &e); err == nil && e.SourceTopic == raw {
			envelopes[coord{e.SourcePartition, e.SourceOffset}]++
		}
	}
	invMissing, invDup := 0, 0
	for c := range invalidCoords {
		if envelopes[c] == 0 {
			invMissing++
		}
		invDup += max(envelopes[c]-1, 0)
	}
	if invMissing > 0 {
		t.Errorf("%s: %d of %d invalid records have no envelope", s.cfg.Kafka.TopicInvalid, invMissing, len(invalidCoords))
	}
	if invDup > 0 {
		s.note("%s: %d duplicate envelopes (at-least-once, allowed)", s.cfg.Kafka.TopicInvalid, invDup)
	}
}

func chaosFirst[T any](xs []T, n int) []T {
	return xs[:min(len(xs), n)]
}

// chaosDiff returns the ids of want missing from got (or of another type)
// and the ids of got not in want.
func chaosDiff(want, got map[string]chaosAnomaly) (missing, extra []string) {
	for id, w := range want {
		if g, ok := got[id]; !ok || g.typ != w.typ || g.customer != w.customer {
			missing = append(missing, id)
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			extra = append(extra, id)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	return missing, extra
}

func chaosDescribe(ids []string, m map[string]chaosAnomaly, n int) string {
	if len(ids) == 0 {
		return "none"
	}
	byType := map[string]int{}
	for _, id := range ids {
		byType[m[id].typ]++
	}
	var parts []string
	for _, id := range chaosFirst(ids, n) {
		parts = append(parts, fmt.Sprintf("%s(%s %s)", id, m[id].typ, m[id].customer))
	}
	return fmt.Sprintf("%d %v: %s", len(ids), byType, strings.Join(parts, " "))
}

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
package main_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
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
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/app/kafka"
	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/messages/rules"
	"github.com/heartbeat/heartbeat/simulate"
	hbsql "github.com/heartbeat/heartbeat/sql"
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
	// watermillUUIDHeader carries the message id on Kafka (watermill-kafka).
	watermillUUIDHeader = "_watermill_message_uuid"
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
	adminURL string
	env      []string // the test's environment without the pipeline's variables

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
	c.adminURL = os.Getenv("HEARTBEAT_TEST_DATABASE_URL")
	if c.adminURL == "" {
		c.adminURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, c.adminURL)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL at %s is required under CI=true: %v", hbsql.Redact(c.adminURL), err)
		}
		t.Skipf("PostgreSQL at %s not available (with CI=true this fails): %v", hbsql.Redact(c.adminURL), err)
	}
	_ = admin.Close(ctx)

	// The pipeline reads its configuration from the environment; the
	// processes get exactly the variables a scenario sets.
	appVars := map[string]bool{}
	chaosEnvNames(reflect.TypeOf(config.Config{}), appVars)
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !appVars[k] {
			c.env = append(c.env, kv)
		}
	}

	c.bin = filepath.Join(t.TempDir(), "heartbeat")
	build := exec.Command("go", "build", "-o", c.bin, ".")
	started := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -o %s .: %v\n%s", c.bin, err, out)
	}
	t.Logf("built %s in %s; CHAOS_EVENTS=%d CHAOS_SEED=%d CHAOS_RAND_SEED=%d CHAOS_SEEDS=%d", c.bin,
		time.Since(started).Round(time.Millisecond), c.events, c.seed, c.randSeed, c.seeds)
	return c
}

// chaosEnvNames collects the environment variable names of a config struct.
func chaosEnvNames(t reflect.Type, into map[string]bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("env"), ","); name != "" {
			into[strings.TrimSpace(name)] = true
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Duration(0)) {
			chaosEnvNames(f.Type, into)
		}
	}
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
			f, found, apply := engine.Evaluate(h)
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
	kcl    *kgo.Client
	adm    *kadm.Client
	rng    *rand.Rand
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
		current: map[string]*chaosProc{}, counter: map[string]int{}, simFinished: make(chan struct{}),
		rng: rand.New(rand.NewPCG(c.randSeed, uint64(len(name))*0x9e3779b97f4a7c15+uint64(name[0])))}
	ctx := context.Background()

	s.dbName = fmt.Sprintf("heartbeat_chaos_%s_%08x", strings.ReplaceAll(name, "-", "_"), s.rng.Uint32())
	admin, err := pgx.Connect(ctx, c.adminURL)
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	_, err = admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{s.dbName}.Sanitize())
	_ = admin.Close(ctx)
	if err != nil {
		t.Fatalf("create database %s: %v", s.dbName, err)
	}
	t.Cleanup(func() {
		// A fresh connection: the outage scenario restarts the server.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := pgx.Connect(ctx, c.adminURL)
		if err != nil {
			t.Errorf("drop database %s: %v", s.dbName, err)
			return
		}
		defer admin.Close(ctx)
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{s.dbName}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", s.dbName, err)
		}
	})
	u, err := url.Parse(c.adminURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + s.dbName
	s.dbURL = u.String()
	pcfg, err := pgxpool.ParseConfig(s.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	pcfg.MaxConns = 2
	pcfg.ConnConfig.ConnectTimeout = 2 * time.Second
	if s.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.pool.Close)

	s.broker = net.JoinHostPort("127.0.0.1", strconv.Itoa(chaosFreePort(t)))
	rate := c.rateFor(window)
	s.env = map[string]string{
		"KAFKA_BOOTSTRAP_SERVERS": s.broker,
		"DATABASE_URL":            s.dbURL,
		"LOG_LEVEL":               chaosEnvOr("CHAOS_LOG_LEVEL", "warn"),
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

	s.kcl, err = kgo.NewClient(kgo.SeedBrokers(s.broker), kgo.RetryTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.kcl.Close)
	s.adm = kadm.NewClient(s.kcl)
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

// chaosProc is one process of the binary.
type chaosProc struct {
	role, name string
	cmd        *exec.Cmd
	logPath    string
	metrics    string
	started    time.Time
	done       chan struct{}
	exitErr    error
	exitedAt   time.Time
	stopping   bool // we signalled it: its exit is expected
}

// clientID is the process's Kafka client id: its name, "persist-3".
func (p *chaosProc) clientID() string { return strings.ReplaceAll(p.name, "#", "-") }

func (p *chaosProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *chaosProc) exitCode() int {
	var ee *exec.ExitError
	if errors.As(p.exitErr, &ee) {
		return ee.ExitCode()
	}
	if p.exitErr != nil {
		return -1
	}
	return 0
}

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
	p := &chaosProc{role: role, name: fmt.Sprintf("%s#%d", role, s.counter[role]), done: make(chan struct{})}
	s.mu.Unlock()
	env := slices.Clone(s.c.env)
	for k, v := range s.env {
		env = append(env, k+"="+v)
	}
	var args []string
	if role == "broker" {
		args = []string{"broker"}
		env = append(env, "BROKER_ADDR="+s.broker, "BROKER_DATA_DIR="+filepath.Join(s.dir, "broker-data"))
	} else {
		p.metrics = net.JoinHostPort("127.0.0.1", strconv.Itoa(chaosFreePort(s.t)))
		env = append(env, "ROUTER_HANDLERS="+role, "METRICS_ADDR="+p.metrics, "KAFKA_CLIENT_ID="+p.clientID())
	}
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	p.logPath = filepath.Join(s.dir, strings.ReplaceAll(p.name, "#", "-")+".log")
	logFile, err := os.Create(p.logPath)
	if err != nil {
		s.t.Fatal(err)
	}
	p.cmd = exec.Command(s.c.bin, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		s.t.Fatalf("start %s: %v", p.name, err)
	}
	p.started = time.Now()
	go func() {
		p.exitErr = p.cmd.Wait()
		p.exitedAt = time.Now()
		logFile.Close()
		close(p.done)
	}()
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
	if !p.exited() {
		p.stopping = true
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// terminate SIGTERMs p and returns how long it took to exit (SIGKILL after bound).
func (s *chaosScenario) terminate(p *chaosProc, bound time.Duration) (took time.Duration, inTime bool) {
	if !p.exited() {
		p.stopping = true
	}
	sent := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.exitedAt.Sub(sent), true
	case <-time.After(bound):
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		return p.exitedAt.Sub(sent), false
	}
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
		s.t.Logf("---- %s (exit %v) log %s, last lines:\n%s", p.name, p.exitErr, p.logPath, chaosTail(p.logPath, 60))
	}
}

func chaosTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
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

func chaosEnvOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func chaosFreePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// chaosPoll calls cond every interval until it reports true or timeout passes.
func chaosPoll(timeout, interval time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			if last != nil {
				return fmt.Errorf("not within %s (last error: %v)", timeout, last)
			}
			return fmt.Errorf("not within %s", timeout)
		}
		<-tick.C
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
	err := chaosPoll(30*time.Second, 50*time.Millisecond, func() (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("%s exited: %v", p.name, p.exitErr)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		td, err := s.adm.ListTopics(ctx)
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
		s.t.Fatalf("broker %s not serving its topics: %v\n%s", s.broker, err, chaosTail(p.logPath, 30))
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
		s.t.Fatalf("%v\n%s", err, chaosTail(p.logPath, 30))
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
		n, err := chaosMetric(p.metrics, "heartbeat_messages_produced_total")
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
	took, inTime := s.terminate(p, 10*time.Second)
	if !inTime || p.exitCode() != 0 {
		s.t.Errorf("%s on SIGTERM: exit %v after %s", p.name, p.exitErr, took)
	}
}

func (s *chaosScenario) simDone() bool {
	select {
	case <-s.simFinished:
		return true
	default:
		return false
	}
}

func (s *chaosScenario) waitHealthy(p *chaosProc) error {
	client := http.Client{Timeout: time.Second}
	err := chaosPoll(60*time.Second, 50*time.Millisecond, func() (bool, error) {
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

// offsets returns the end (or start) offsets of topic by partition.
func (s *chaosScenario) offsets(topic string, end bool) (map[int32]int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var lo kadm.ListedOffsets
	var err error
	if end {
		lo, err = s.adm.ListEndOffsets(ctx, topic)
	} else {
		lo, err = s.adm.ListStartOffsets(ctx, topic)
	}
	if err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	var errs []error
	lo.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			errs = append(errs, o.Err)
			return
		}
		out[o.Partition] = o.Offset
	})
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no partitions listed for %s", topic)
	}
	return out, nil
}

// committed returns group's committed offsets on the raw topic.
func (s *chaosScenario) committed(group string) (map[int32]int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := s.adm.FetchOffsets(ctx, group)
	if err != nil {
		return nil, err
	}
	if err := resp.Error(); err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	for p, r := range resp[s.cfg.Kafka.TopicRaw] {
		out[p] = r.At
	}
	return out, nil
}

// lag is how many records of the raw topic group has not committed.
func (s *chaosScenario) lag(group string) (int64, error) {
	ends, err := s.offsets(s.cfg.Kafka.TopicRaw, true)
	if err != nil {
		return 0, err
	}
	starts, err := s.offsets(s.cfg.Kafka.TopicRaw, false)
	if err != nil {
		return 0, err
	}
	com, err := s.committed(group)
	if err != nil {
		return 0, err
	}
	var lag int64
	for p, end := range ends {
		at, ok := com[p]
		if !ok || at < starts[p] {
			at = starts[p]
		}
		lag += max(end-at, 0)
	}
	return lag, nil
}

func (s *chaosScenario) rawRecords() (int64, error) {
	ends, err := s.offsets(s.cfg.Kafka.TopicRaw, true)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, e := range ends {
		n += e
	}
	return n, nil
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
	err := chaosPoll(timeout, 25*time.Millisecond, func() (bool, error) {
		st, ids := s.describeGroup(group)
		if st != lastState {
			lastState = st
			trace = append(trace, fmt.Sprintf("%s +%.1fs", st, time.Since(since).Seconds()))
		}
		joined = st == fmt.Sprintf("Stable/%d", members)
		for _, id := range ids {
			joined = joined && !gone[id]
		}
		com, err := s.committed(group)
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
			if lag, err := s.lag(group); err == nil && lag == 0 {
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
	dg, err := s.adm.DescribeGroups(ctx, group)
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
	err := chaosPoll(30*time.Second, 25*time.Millisecond, func() (bool, error) {
		var err error
		snap, err = s.committed(group)
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
	err := chaosPoll(timeout, 25*time.Millisecond, func() (bool, error) {
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

// crash: persist and detect are each SIGKILLed at three random moments, one
// in each third of the production, and restarted right away. A kill waits
// until the previous restart has recovered (its group stable with one member
// and its committed offsets advancing), so that every kill hits a consumer
// that is consuming; a kill that comes after the simulator finished is noted.
// The recovery of a kill is the time from the restart until the group's
// committed offsets advance again.
func (s *chaosScenario) crash() {
	simStart := s.startPipeline()
	window := s.exp.duration
	type result struct {
		role   string
		worst  time.Duration
		detail []string
	}
	results := make(chan result, 2)
	for i, role := range []string{"persist", "detect"} {
		rng := rand.New(rand.NewPCG(s.c.randSeed, uint64(i+1)))
		go func() {
			r := result{role: role}
			defer func() { results <- r }()
			seg := window / 3
			for k := range 3 {
				at := simStart.Add(time.Duration(k)*seg + time.Duration((0.1+0.8*rng.Float64())*float64(seg)))
				if late := time.Now().Add(time.Duration((0.2 + 1.8*rng.Float64()) * float64(time.Second))); k > 0 && late.After(at) {
					at = late
				}
				sleepUntil(at)
				old := s.proc(role)
				producing := !s.simDone()
				s.kill(old)
				group := s.groupFor(role)
				snap, gone := s.snapshot(group), s.members(group)
				p := s.start(role)
				when := old.exitedAt.Sub(simStart)
				d, how, err := s.waitAdvance(group, snap, p.started, 90*time.Second, 1, gone)
				after := ""
				if !producing {
					after = ", after the simulator finished"
				}
				if err != nil {
					s.t.Errorf("%s made no progress after kill %d at +%s%s: %v", role, k+1, when.Round(time.Millisecond), after, err)
					r.detail = append(r.detail, fmt.Sprintf("kill %d at +%.1fs%s: no progress", k+1, when.Seconds(), after))
					return
				}
				r.worst = max(r.worst, d)
				r.detail = append(r.detail, fmt.Sprintf("kill %d at +%.1fs%s: %.1fs", k+1, when.Seconds(), after, d.Seconds()))
				s.logf("kill -9 %s at +%s%s; %s recovered in %s (%s)", old.name, when.Round(time.Millisecond), after, p.name, d.Round(time.Millisecond), how)
			}
		}()
	}
	var worst time.Duration
	for range 2 {
		r := <-results
		worst = max(worst, r.worst)
		s.note("%s SIGKILL → recovery: %s", r.role, strings.Join(r.detail, "; "))
	}
	s.row.recovery = "max " + worst.Round(100*time.Millisecond).String()
}

// rebalance: a second persist joins the group mid-stream and later leaves
// with SIGTERM.
func (s *chaosScenario) rebalance() {
	simStart := s.startPipeline()
	group := s.cfg.Kafka.GroupDB
	window := s.exp.duration

	sleepUntil(simStart.Add(window / 4))
	second := s.startService("persist")
	if trace, err := s.waitGroup(group, 2, time.Minute); err != nil {
		s.t.Errorf("group %s never stable with 2 members: %v (%s)", group, err, trace)
	} else {
		s.logf("after %s joined, group %s: %s", second.name, group, trace)
	}
	join, how, err := s.waitAdvance(group, s.snapshot(group), second.started, time.Minute, 2, nil)
	if err != nil {
		s.t.Errorf("no progress after %s joined: %v", second.name, err)
	}
	s.logf("%s joined at +%s; group stable and committing after %s (%s)", second.name, second.started.Sub(simStart).Round(time.Millisecond), join.Round(time.Millisecond), how)

	sleepUntil(simStart.Add(window * 2 / 3))
	leaving := time.Now()
	took, inTime := s.terminate(second, chaosShutdownBound)
	if !inTime || second.exitCode() != 0 {
		s.t.Errorf("%s on SIGTERM: exit %v after %s (want 0 within %s)", second.name, second.exitErr, took, chaosShutdownBound)
	}
	if trace, err := s.waitGroup(group, 1, 2*time.Minute); err != nil {
		s.t.Errorf("group %s never stable with 1 member: %v (%s)", group, err, trace)
	} else {
		s.logf("after %s left, group %s: %s", second.name, group, trace)
	}
	leave, how2, err := s.waitAdvance(group, s.snapshot(group), leaving, time.Minute, 1, nil)
	if err != nil {
		s.t.Errorf("no progress after %s left: %v", second.name, err)
	}
	s.logf("%s left at +%s (SIGTERM, exit %d in %s); group committing again after %s (%s)", second.name,
		leaving.Sub(simStart).Round(time.Millisecond), second.exitCode(), took.Round(time.Millisecond), leave.Round(time.Millisecond), how2)
	s.note("join: stable and committing %.1fs after start; leave: SIGTERM exit %d in %.1fs, committing again %.1fs later",
		join.Seconds(), second.exitCode(), took.Seconds(), leave.Seconds())
	s.row.recovery = fmt.Sprintf("join %.1fs, leave %.1fs", join.Seconds(), leave.Seconds())
}

// outage: PostgreSQL stops for 20 s while the simulator produces.
func (s *chaosScenario) outage() {
	version, err := chaosPostgresVersion()
	if err != nil {
		if os.Getenv("CI") == "true" {
			s.t.Fatalf("the outage scenario needs a local PostgreSQL cluster controlled by pg_ctlcluster: %v", err)
		}
		s.t.Skipf("the outage scenario needs a local PostgreSQL cluster controlled by pg_ctlcluster: %v", err)
	}
	simStart := s.startPipeline()
	persist := s.proc("persist")

	// Mid-run: a third of the way through production, once rows flow.
	sleepUntil(simStart.Add(s.exp.duration / 3))
	if err := chaosPoll(time.Minute, 50*time.Millisecond, func() (bool, error) {
		n, err := s.storedRows(context.Background())
		return n > 0, err
	}); err != nil {
		s.t.Fatalf("no rows before the outage: %v", err)
	}
	raw, _ := s.rawRecords()
	stopped := true
	s.t.Cleanup(func() {
		if stopped {
			_ = chaosPgCtl(version, "start")
		}
	})
	if err := chaosPgCtl(version, "stop"); err != nil {
		s.t.Fatalf("stop PostgreSQL: %v", err)
	}
	down := time.Now()
	s.logf("PostgreSQL %s stopped at +%s (%d of %d events produced); down for %s", version, down.Sub(simStart).Round(time.Millisecond), raw, s.c.events, chaosOutage)
	time.Sleep(chaosOutage) // the outage itself
	if err := chaosPgCtl(version, "start"); err != nil {
		s.t.Fatalf("start PostgreSQL: %v", err)
	}
	stopped = false
	var up time.Time
	if err := chaosPoll(time.Minute, 20*time.Millisecond, func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, s.dbURL)
		if err != nil {
			return false, err
		}
		up = time.Now()
		_ = conn.Close(ctx)
		return true, nil
	}); err != nil {
		s.t.Fatalf("PostgreSQL not accepting connections after start: %v", err)
	}
	// Rows whose transaction began after the server started again.
	var resumed time.Duration
	err = chaosPoll(time.Minute, 20*time.Millisecond, func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var n int64
		err := s.pool.QueryRow(ctx, "SELECT count(*) FROM heartbeat_events WHERE ingest_time >= pg_postmaster_start_time()").Scan(&n)
		if err != nil || n == 0 {
			return false, err
		}
		resumed = time.Since(up)
		return true, nil
	})
	if err != nil {
		s.t.Errorf("no rows committed after PostgreSQL came back: %v", err)
	} else if resumed > chaosResumeBound {
		s.t.Errorf("consumption resumed %s after PostgreSQL accepted connections again (want within %s)", resumed.Round(time.Millisecond), chaosResumeBound)
	}
	s.row.recovery = resumed.Round(10 * time.Millisecond).String()
	s.logf("PostgreSQL accepting connections %s after the stop; first new rows committed %s later",
		up.Sub(down).Round(time.Millisecond), resumed.Round(time.Millisecond))

	// Logs and metrics once idle: "consumption resumed" is logged when the
	// last waiting message goes through, which may be after the first rows.
	s.afterIdle = append(s.afterIdle, func() { s.outageVisible(persist) })
}

func (s *chaosScenario) outageVisible(persist *chaosProc) {
	transient, err := chaosMetric(persist.metrics, "heartbeat_transient_failures_total")
	if err != nil || transient == 0 {
		s.t.Errorf("outage not visible in %s's metrics: heartbeat_transient_failures_total = %v (%v)", persist.name, transient, err)
	}
	paused, _ := chaosMetric(persist.metrics, "heartbeat_backpressure_paused_seconds_total")
	logText, _ := os.ReadFile(persist.logPath)
	pausing := strings.Index(string(logText), "pausing consumption")
	resumedAt := strings.LastIndex(string(logText), "consumption resumed")
	if pausing < 0 || resumedAt < pausing {
		s.t.Errorf("outage not visible in %s's log at LOG_LEVEL=%s: %q logged: %v, %q logged after it: %v",
			persist.name, s.env["LOG_LEVEL"], "pausing consumption", pausing >= 0, "consumption resumed", resumedAt > pausing)
	}
	s.note("persist metrics: heartbeat_transient_failures_total=%v heartbeat_backpressure_paused_seconds_total=%.1f; log: pausing=%v resumed=%v",
		transient, paused, pausing >= 0, resumedAt > pausing)
}

func chaosPostgresVersion() (string, error) {
	if _, err := exec.LookPath("pg_ctlcluster"); err != nil {
		return "", err
	}
	entries, err := os.ReadDir("/etc/postgresql")
	if err != nil {
		return "", err
	}
	best, bestN := "", -1.0
	for _, e := range entries {
		if n, err := strconv.ParseFloat(e.Name(), 64); err == nil && e.IsDir() && n > bestN {
			best, bestN = e.Name(), n
		}
	}
	if best == "" {
		return "", errors.New("no cluster version under /etc/postgresql")
	}
	return best, nil
}

func chaosPgCtl(version, action string) error {
	out, err := exec.Command("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctlcluster %s main %s: %v: %s", version, action, err, out)
	}
	return nil
}

// chaosMetric sums the samples of a counter family on a /metrics endpoint.
func chaosMetric(addr, name string) (float64, error) {
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum, nil
}

// brokerRestart: the broker process is SIGTERMed mid-run and started again
// on the same port and data directory.
func (s *chaosScenario) brokerRestart() {
	simStart := s.startPipeline()
	sleepUntil(simStart.Add(s.exp.duration * 2 / 5))
	raw, _ := s.rawRecords()
	old := s.proc("broker")
	took, inTime := s.terminate(old, 15*time.Second)
	if !inTime || old.exitCode() != 0 {
		s.t.Errorf("%s on SIGTERM: exit %v after %s", old.name, old.exitErr, took)
	}
	s.logf("%s stopped at +%s (%d of %d events produced), exit %d in %s", old.name, old.exitedAt.Sub(simStart).Round(time.Millisecond),
		raw, s.c.events, old.exitCode(), took.Round(time.Millisecond))
	s.startBroker()
	back := time.Now()
	var worst time.Duration
	var detail []string
	for _, group := range s.groups() {
		d, how, err := s.waitAdvance(group, s.snapshot(group), back, 2*time.Minute, 1, nil)
		if err != nil {
			s.t.Errorf("group %s made no progress after the broker came back: %v", group, err)
			continue
		}
		worst = max(worst, d)
		detail = append(detail, fmt.Sprintf("%s %.1fs (%s)", group, d.Seconds(), how))
	}
	s.row.recovery = worst.Round(100 * time.Millisecond).String()
	s.note("broker SIGTERM exit %d in %.1fs at %d/%d produced; after restart: %s", old.exitCode(), took.Seconds(), raw, s.c.events, strings.Join(detail, ", "))
	s.logf("broker back; %s", strings.Join(detail, ", "))
}

// shutdown: persist is SIGTERMed while the raw topic holds a large backlog.
func (s *chaosScenario) shutdown() {
	s.startService("simulate")
	half := int64(s.c.events / 2)
	if err := chaosPoll(2*time.Minute, 50*time.Millisecond, func() (bool, error) {
		n, err := s.rawRecords()
		return n >= half, err
	}); err != nil {
		s.t.Fatalf("the simulator did not produce half the events: %v", err)
	}
	persist := s.startService("persist")
	s.startService("detect")
	// Let persist get going on the backlog, then stop it.
	first := int64(max(len(s.exp.valid)/20, 1))
	if err := chaosPoll(2*time.Minute, 20*time.Millisecond, func() (bool, error) {
		n, err := s.storedRows(context.Background())
		return n >= first, err
	}); err != nil {
		s.t.Fatalf("persist stored nothing: %v", err)
	}
	backlog, _ := s.lag(s.cfg.Kafka.GroupDB)
	took, inTime := s.terminate(persist, chaosShutdownBound)
	stored, _ := s.storedRows(context.Background())
	if !inTime || persist.exitCode() != 0 {
		s.t.Errorf("%s on SIGTERM with a backlog of %d: exit %v after %s (want exit 0 within %s)\n%s",
			persist.name, backlog, persist.exitErr, took.Round(time.Millisecond), chaosShutdownBound, chaosTail(persist.logPath, 20))
	}
	s.logf("%s SIGTERMed with a backlog of %d records: exit %d in %s (%d rows stored)", persist.name, backlog, persist.exitCode(), took.Round(time.Millisecond), stored)
	snap, gone := s.snapshot(s.cfg.Kafka.GroupDB), s.members(s.cfg.Kafka.GroupDB)
	p := s.start("persist")
	d, how, err := s.waitAdvance(s.cfg.Kafka.GroupDB, snap, p.started, 2*time.Minute, 1, gone)
	if err != nil {
		s.t.Errorf("%s made no progress: %v", p.name, err)
	}
	s.row.recovery = d.Round(100 * time.Millisecond).String()
	s.note("persist SIGTERMed with a backlog of %d records: exit %d in %.1fs; restarted, %s after %.1fs", backlog, persist.exitCode(), took.Seconds(), how, d.Seconds())
}

// waitIdle waits until the simulator finished, both groups have committed
// everything and the stored counts stop changing.
func (s *chaosScenario) waitIdle() error {
	timeout := time.Minute + 2*time.Duration(s.c.events)*time.Millisecond
	if s.t.Failed() {
		// Something is already stuck: do not spend CI's time waiting for it.
		timeout = 30 * time.Second
	}
	if err := chaosPoll(timeout, 100*time.Millisecond, func() (bool, error) { return s.simDone() && s.sim.exited(), nil }); err != nil {
		return fmt.Errorf("simulator still running: %w", err)
	}
	if s.sim.exitCode() != 0 {
		return fmt.Errorf("%s exited with %v", s.sim.name, s.sim.exitErr)
	}
	var last string
	var since time.Time
	err := chaosPoll(timeout, 250*time.Millisecond, func() (bool, error) {
		var parts []string
		for _, g := range s.groups() {
			lag, err := s.lag(g)
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
			ends, err := s.offsets(topic, true)
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

// readTopic reads every record of topic, up to its end offsets.
func (s *chaosScenario) readTopic(topic string) ([]*kgo.Record, error) {
	ends, err := s.offsets(topic, true)
	if err != nil {
		return nil, err
	}
	starts, err := s.offsets(topic, false)
	if err != nil {
		return nil, err
	}
	from := map[int32]kgo.Offset{}
	left := 0
	for p, e := range ends {
		if e > starts[p] {
			from[p] = kgo.NewOffset().At(starts[p])
			left++
		}
	}
	if left == 0 {
		return nil, nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.broker), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}),
		kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out []*kgo.Record
	for left > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return out, fmt.Errorf("read %s: %d records, partitions not finished: %d", topic, len(out), left)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset >= ends[r.Partition] {
				return
			}
			out = append(out, r)
			if r.Offset+1 == ends[r.Partition] {
				left--
			}
		})
	}
	return out, nil
}

func chaosHeader(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
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
	rawRecs, err := s.readTopic(raw)
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
		id := chaosHeader(r, watermillUUIDHeader)
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
	ends, err := s.offsets(raw, true)
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
	recs, err := s.readTopic(s.cfg.Kafka.TopicAnomaly)
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
		id := chaosHeader(r, watermillUUIDHeader)
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
	dlq, err := s.readTopic(s.cfg.Kafka.TopicDLQ)
	if err != nil {
		t.Errorf("%v", err)
	}
	s.row.dlq = len(dlq)
	if len(dlq) > 0 {
		var reasons []string
		for _, r := range chaosFirst(dlq, 5) {
			reasons = append(reasons, chaosHeader(r, "reason_poisoned"))
		}
		t.Errorf("%s holds %d messages; reasons: %q", s.cfg.Kafka.TopicDLQ, len(dlq), reasons)
	}

	// events.invalid.v1 covers every invalid record (duplicates are allowed:
	// the envelope is published before the record is settled).
	inv, err := s.readTopic(s.cfg.Kafka.TopicInvalid)
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

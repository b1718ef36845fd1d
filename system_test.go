package main

// The system tests' harness. The scenario files of this package run the
// pipeline as a user does — in this process as `go run .` does, or as the
// built binary in separate processes — against the in-process broker or
// `heartbeat broker` and scratch PostgreSQL databases, and check what a user
// relies on: rows, messages on topics, metric values, exit codes and error
// lines. This file is what they share: starting and stopping the pipeline,
// the broker, databases and processes; producing and reading records;
// reading rows and metrics; and waiting, always on a condition, with a
// deadline.
//
//	pipeline_test.go           a known stream end to end, and across a restart
//	hostile_test.go            hostile payloads among valid readings
//	dlq_test.go                a poisoned reading replayed once fixed
//	detection_default_test.go  the default (episode) rules end to end
//	replay_test.go             real recordings replayed, against an independent oracle
//	backfill_test.go           the same recordings as recorded, years old
//	config_extremes_test.go    every variable at its extremes
//	startup_test.go            start-up failures of the built binary
//	dashboards_test.go         panel queries and alert rules against a running pipeline
//	compose_test.go            docker-compose.yml, .env.example, the Dockerfile
//	docs_test.go               every relative link of the Markdown files
//	chaos_test.go              (-tags chaos) the chaos run and its end-state check
//	chaos_*_test.go            (-tags chaos) one file per scenario
//
// router_test.go is not one of them: it runs router.go's router on
// Watermill's GoChannel with in-memory storage.

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/sethvargo/go-envconfig"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heartbeat/heartbeat/app"
	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/app/kafka"
	"github.com/heartbeat/heartbeat/app/telemetry"
	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/sql/pgtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// --- prerequisites ---------------------------------------------------------

func inCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v != "" && v != "false" && v != "0"
}

// need stops t when a prerequisite is missing: a failure when CI is set
// (the check must run there), a skip otherwise.
func need(t testing.TB, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if inCI() {
		t.Fatalf("%s is required (CI=true): %v", what, err)
	}
	t.Skipf("skipping: %s is not available: %v (with CI=true this fails)", what, err)
}

// lookTool returns the path of the program name, which hint says how to
// install.
func lookTool(t testing.TB, name, hint string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	need(t, name+" ("+hint+")", err)
	return path
}

// --- waiting ------------------------------------------------------------------

// poll calls cond every interval until it reports true; after timeout it
// returns an error with cond's last error.
func poll(timeout, interval time.Duration, cond func() (bool, error)) error {
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

// waitFor polls cond until it holds, failing t with what it waited for after
// timeout.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() (bool, error)) {
	t.Helper()
	if err := poll(timeout, 20*time.Millisecond, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// --- databases ----------------------------------------------------------------

// testDatabase creates a fresh database for t and returns its URL and a pool.
func testDatabase(t testing.TB) (string, *pgxpool.Pool) {
	t.Helper()
	return pgtest.Database(t, "hb_test_")
}

// waitForRows waits until query's count reaches want.
func waitForRows(t testing.TB, pool *pgxpool.Pool, query string, want int) {
	t.Helper()
	var got int
	waitFor(t, fmt.Sprintf("%s to reach %d", query, want), time.Minute, func() (bool, error) {
		err := pool.QueryRow(context.Background(), query).Scan(&got)
		return err == nil && got >= want, fmt.Errorf("%d rows, %v", got, err)
	})
}

// anomalyRows returns the anomalies table: anomaly id -> anomaly type.
func anomalyRows(t testing.TB, pool *pgxpool.Pool) map[string]string {
	t.Helper()
	rows, err := pool.Query(context.Background(), "SELECT anomaly_id::text, anomaly_type FROM anomalies")
	require.NoError(t, err)
	got := map[string]string{}
	var id, typ string
	_, err = pgx.ForEachRow(rows, []any{&id, &typ}, func() error { got[id] = typ; return nil })
	require.NoError(t, err)
	return got
}

// --- the broker -------------------------------------------------------------

// testBroker starts an in-process Kafka-protocol broker for t, with the
// pipeline's topics.
func testBroker(t testing.TB) string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	cfg, err := config.LoadConfig(context.Background(), envconfig.MapLookuper(nil))
	require.NoError(t, err)
	require.NoError(t, kafka.EnsureTopics(context.Background(), c.ListenAddrs(), nil, -1, kafka.Topics(cfg.Kafka), telemetry.NewLogger("warn")))
	return c.ListenAddrs()[0]
}

// kafkaAdmin reads a broker's topics and consumer groups.
type kafkaAdmin struct {
	addr string
	cl   *kgo.Client
	adm  *kadm.Client
}

// newKafkaAdmin is a client of the broker at addr, closed after t; its
// requests give up after 2 s, so that a broker being restarted is
// reported, not waited for.
func newKafkaAdmin(t testing.TB, addr string) *kafkaAdmin {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RetryTimeout(2*time.Second))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return &kafkaAdmin{addr: addr, cl: cl, adm: kadm.NewClient(cl)}
}

// offsets returns the end (or start) offsets of topic by partition.
func (k *kafkaAdmin) offsets(topic string, end bool) (map[int32]int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	list := k.adm.ListStartOffsets
	if end {
		list = k.adm.ListEndOffsets
	}
	lo, err := list(ctx, topic)
	if err != nil {
		return nil, err
	}
	if err := lo.Error(); err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	lo.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	if len(out) == 0 {
		return nil, fmt.Errorf("no partitions listed for %s", topic)
	}
	return out, nil
}

// records is how many records topic holds (the sum of its end offsets).
func (k *kafkaAdmin) records(topic string) (int64, error) {
	ends, err := k.offsets(topic, true)
	var n int64
	for _, e := range ends {
		n += e
	}
	return n, err
}

// committed returns group's committed offsets on topic, by partition.
func (k *kafkaAdmin) committed(group, topic string) (map[int32]int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := k.adm.FetchOffsets(ctx, group)
	if err != nil {
		return nil, err
	}
	if err := resp.Error(); err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	for p, r := range resp[topic] {
		out[p] = r.At
	}
	return out, nil
}

// lag is how many records of topic group has not committed.
func (k *kafkaAdmin) lag(group, topic string) (int64, error) {
	ends, err := k.offsets(topic, true)
	if err != nil {
		return 0, err
	}
	starts, err := k.offsets(topic, false)
	if err != nil {
		return 0, err
	}
	com, err := k.committed(group, topic)
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

// readTopic reads every record of topic, up to its end offsets now.
func (k *kafkaAdmin) readTopic(topic string) ([]*kgo.Record, error) {
	ends, err := k.offsets(topic, true)
	if err != nil {
		return nil, err
	}
	starts, err := k.offsets(topic, false)
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
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.addr), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from}),
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

// consume waits until topic holds at least n records and has stopped
// growing for half a second — a duplicate would arrive with the rest — and
// returns all its records.
func consume(t testing.TB, broker, topic string, n int) []*kgo.Record {
	t.Helper()
	k := newKafkaAdmin(t, broker)
	var last int64 = -1
	var since time.Time
	waitFor(t, fmt.Sprintf("%d records on %s, and no more", n, topic), 30*time.Second, func() (bool, error) {
		got, err := k.records(topic)
		if err != nil || got < int64(n) {
			return false, fmt.Errorf("%d records: %v", got, err)
		}
		if got != last {
			last, since = got, time.Now()
		}
		return time.Since(since) >= 500*time.Millisecond, nil
	})
	recs, err := k.readTopic(topic)
	require.NoError(t, err)
	return recs
}

// waitForGroup waits until group has committed offsets past n records of
// the raw topic.
func waitForGroup(t testing.TB, broker, group string, n int64) {
	t.Helper()
	k := newKafkaAdmin(t, broker)
	waitFor(t, fmt.Sprintf("%s to get through %d records", group, n), 30*time.Second, func() (bool, error) {
		com, err := k.committed(group, "events.raw.v1")
		var sum int64
		for _, at := range com {
			sum += at
		}
		return err == nil && sum >= n, fmt.Errorf("%d committed: %v", sum, err)
	})
}

// header returns the value of r's header key, or "".
func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// record is one produced Kafka record and what the pipeline must make of it.
type record struct {
	key, payload string
	valid        bool
	class        messages.Class
	field        string
	eventID      string
	partition    int32
	offset       int64
}

// validRecord is a reading of customer, keyed by it.
func validRecord(customer string, rate int, at time.Time) *record {
	h := messages.Heartbeat{EventID: uuid.NewString(), CustomerID: customer, Timestamp: at.UTC().Truncate(time.Millisecond), HeartRate: rate}
	b, err := h.Marshal()
	if err != nil {
		panic(err)
	}
	return &record{key: customer, payload: string(b), valid: true, eventID: h.EventID}
}

// invalidRecord is a payload whose envelope must name class and field.
func invalidRecord(payload string, class messages.Class, field string) *record {
	return &record{key: "cust_bad", payload: payload, class: class, field: field}
}

// produce publishes recs to topic with a real Kafka client, each with a
// correlation id, and records where each landed.
func produce(t testing.TB, broker, topic string, recs []*record) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.DefaultProduceTopic(topic))
	require.NoError(t, err)
	defer cl.Close()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for _, r := range recs {
		wg.Add(1)
		kr := &kgo.Record{Key: []byte(r.key), Value: []byte(r.payload),
			Headers: []kgo.RecordHeader{{Key: "correlation_id", Value: []byte("corr-" + uuid.NewString())}}}
		cl.Produce(context.Background(), kr, func(kr *kgo.Record, err error) {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			r.partition, r.offset = kr.Partition, kr.Offset
		})
	}
	wg.Wait()
	require.NoError(t, firstErr)
}

// --- the pipeline in this process ---------------------------------------------

type runningPipeline struct {
	cancel context.CancelFunc
	done   chan error
	app    *app.App
}

// runPipeline assembles the pipeline of cfg and runs it in this process, as
// `go run .` does; its error is start-up's.
func runPipeline(cfg config.Config, log *slog.Logger) (*runningPipeline, error) {
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(ctx, cfg, log)
	if err != nil {
		cancel()
		return nil, err
	}
	p, err := newPipeline(ctx, a)
	if err != nil {
		a.Close()
		cancel()
		return nil, err
	}
	rp := &runningPipeline{cancel: cancel, done: make(chan error, 1), app: a}
	go func() {
		err := a.Run(ctx, p)
		a.Close()
		rp.done <- err
	}()
	return rp, nil
}

// startPipeline runs the pipeline with env as its environment (metrics on
// a free port, warnings logged, the outbox polled every 5 ms unless env
// says otherwise), stopped after t.
func startPipeline(t *testing.T, env map[string]string) *runningPipeline {
	t.Helper()
	full := map[string]string{"METRICS_ADDR": "127.0.0.1:0", "LOG_LEVEL": "warn", "OUTBOX_POLL_INTERVAL": "5ms"}
	maps.Copy(full, env)
	cfg, err := config.LoadConfig(context.Background(), envconfig.MapLookuper(full))
	require.NoError(t, err)
	rp, err := runPipeline(cfg, telemetry.NewLogger(cfg.LogLevel))
	require.NoError(t, err)
	t.Cleanup(func() { rp.stop(t) })
	return rp
}

// stop stops the pipeline, which must exit cleanly within 15 s.
func (rp *runningPipeline) stop(t *testing.T) {
	t.Helper()
	rp.stopWithin(t, 15*time.Second)
}

func (rp *runningPipeline) stopWithin(t *testing.T, bound time.Duration) {
	t.Helper()
	if rp.cancel == nil {
		return
	}
	rp.cancel()
	rp.cancel = nil
	select {
	case err := <-rp.done:
		require.NoError(t, err)
	case <-time.After(bound):
		t.Fatalf("pipeline did not stop within %s", bound)
	}
}

// pipelineEnv runs persist and detect on broker and the database of dbURL,
// with extra.
func pipelineEnv(broker, dbURL string, extra map[string]string) map[string]string {
	env := map[string]string{"KAFKA_BOOTSTRAP_SERVERS": broker, "DATABASE_URL": dbURL, "ROUTER_HANDLERS": "persist,detect"}
	maps.Copy(env, extra)
	return env
}

// --- the built binary -----------------------------------------------------------

// built is the binary this test process built, once.
var built struct {
	once sync.Once
	dir  string
	bin  string
	err  error
	out  []byte
}

// heartbeatBinary returns the binary of this module, built once per test
// process with the settings of the test binary itself (-race, tags, cgo),
// so that the build reuses the packages `go test` has just compiled.
func heartbeatBinary(t testing.TB) string {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "heartbeat-test-bin-"); built.err != nil {
			return
		}
		built.bin = filepath.Join(built.dir, "heartbeat")
		args, env := buildFlags()
		cmd := exec.Command("go", append(append([]string{"build"}, args...), "-o", built.bin, ".")...)
		cmd.Env = append(os.Environ(), env...)
		started := time.Now()
		built.out, built.err = cmd.CombinedOutput()
		t.Logf("%v took %s", cmd.Args, time.Since(started).Round(time.Millisecond))
	})
	require.NoError(t, built.err, "go build (main package):\n%s", built.out)
	return built.bin
}

// buildFlags returns go build flags and environment matching the settings
// this test binary was built with.
func buildFlags() (args, env []string) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return nil, nil
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "-race", "-msan", "-asan", "-trimpath":
			if s.Value == "true" {
				args = append(args, s.Key)
			}
		case "-tags":
			args = append(args, "-tags="+s.Value)
		case "CGO_ENABLED":
			env = append(env, "CGO_ENABLED="+s.Value)
		}
	}
	return args, env
}

// configVariable is one variable of config.Config, found by its env tag.
type configVariable struct {
	name, def string
	typ       reflect.Type
}

// configVariables lists every variable config.Config reads, by reflection
// over its env tags: a variable added to it is known to the tests without
// anyone listing it.
func configVariables() []configVariable {
	var out []configVariable
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			if env, opts, _ := strings.Cut(f.Tag.Get("env"), ","); env != "" {
				_, def, _ := strings.Cut(opts, "default=")
				out = append(out, configVariable{env, def, f.Type})
			} else if f.Type.Kind() == reflect.Struct {
				walk(f.Type)
			}
		}
	}
	walk(reflect.TypeOf(config.Config{}))
	return out
}

// processEnv is the environment of a heartbeat process under test: the
// test's own without any variable of the pipeline the test run may have
// set, and vars.
func processEnv(vars map[string]string) []string {
	pipeline := map[string]bool{}
	for _, v := range configVariables() {
		pipeline[v.name] = true
	}
	var out []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if _, set := vars[name]; !pipeline[name] && !set {
			out = append(out, kv)
		}
	}
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	return out
}

// process is a program the test started, its output in a log file.
type process struct {
	name     string
	cmd      *exec.Cmd
	logPath  string
	started  time.Time
	done     chan struct{} // closed once it exited
	exitErr  error
	exitedAt time.Time
	// stopping is set when the test signals it: its exit is expected.
	stopping bool
}

// startProcess starts cmd as name, its stdout and stderr to logPath.
func startProcess(t testing.TB, name, logPath string, cmd *exec.Cmd) *process {
	t.Helper()
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p.started = time.Now()
	go func() {
		p.exitErr = cmd.Wait()
		p.exitedAt = time.Now()
		logFile.Close()
		close(p.done)
	}()
	return p
}

func (p *process) exited() bool { return closed(p.done) }

// closed reports whether ch is closed, without waiting.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// exitCode is its exit status, -1 for a signal.
func (p *process) exitCode() int {
	if ee, ok := p.exitErr.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if p.exitErr != nil {
		return -1
	}
	return 0
}

// kill SIGKILLs p and waits for it.
func (p *process) kill() {
	if !p.exited() {
		p.stopping = true
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// terminate SIGTERMs p and returns how long it took to exit; past bound it
// is SIGKILLed.
func (p *process) terminate(bound time.Duration) (took time.Duration, inTime bool) {
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

// tail returns the last n lines of p's log.
func (p *process) tail(n int) string { return tailFile(p.logPath, n) }

// tailFile returns the last n lines of the file at path.
func tailFile(path string, n int) string {
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

// scrapeMetric sums the samples of the metric family name on the /metrics
// endpoint at addr (0 when it has none).
func scrapeMetric(addr, name string) (float64, error) {
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("parse %s/metrics: %w", addr, err)
	}
	var sum float64
	for _, m := range families[name].GetMetric() {
		switch families[name].GetType() {
		case dto.MetricType_COUNTER:
			sum += m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			sum += m.GetGauge().GetValue()
		default:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum, nil
}

package main

// dashboards_test.go proves the Grafana dashboard and the Prometheus rules
// work without running Grafana: every SQL query is taken from the dashboard
// (package grafana), its macros expanded as Grafana's PostgreSQL datasource
// expands them, and executed as Grafana's read-only role against PostgreSQL
// after a real pipeline run; every PromQL expression of the dashboard and of
// the rules is evaluated by a real Prometheus scraping that run. The
// dashboard's checks that need no run are package grafana's own.
//
// Needs PostgreSQL (HEARTBEAT_TEST_DATABASE_URL, default the local trust URL), psql,
// prometheus and promtool (Debian: apt-get install -y prometheus
// postgresql-client). Without them the tests skip, or fail when CI=true.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/app/dashbench"
	"github.com/heartbeat/heartbeat/app/telemetry/telemetrytest"
	"github.com/heartbeat/heartbeat/grafana"
	"github.com/heartbeat/heartbeat/sql/pgtest"
)

const rulesFile = "prometheus/heartbeat.rules.yml"

// --- static checks ------------------------------------------------------------
//
// The dashboard's own checks (panels, datasources, the macro engine) are in
// package grafana; these are the Prometheus rules'.

func TestPromtool(t *testing.T) {
	t.Parallel()
	promtool := lookTool(t, "promtool", "Debian package prometheus")
	rules, err := filepath.Glob("prometheus/*.rules.yml")
	require.NoError(t, err)
	require.NotEmpty(t, rules)
	for _, args := range [][]string{
		{"check", "config", "prometheus/prometheus.yml"},
		append([]string{"check", "rules"}, rules...),
		{"test", "rules", "prometheus/heartbeat.rules.test.yml"},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		require.NoError(t, err, "promtool %s:\n%s", strings.Join(args, " "), out)
		t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
	}
}

// TestAlertRunbooks: every alert says how bad it is, what it means, and links
// its runbook — a section of docs/operations.md, at the URL the repository is
// published under (its module path), that says what to check and what to do.
func TestAlertRunbooks(t *testing.T) {
	t.Parallel()
	var rf struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, rulesFile, &rf)
	goMod, err := os.ReadFile("go.mod")
	require.NoError(t, err)
	module := regexp.MustCompile(`(?m)^module (\S+)`).FindSubmatch(goMod)
	require.NotNil(t, module)
	prefix := "https://" + string(module[1]) + "/blob/main/docs/operations.md#"

	doc, err := os.ReadFile("docs/operations.md")
	require.NoError(t, err)
	sections := map[string]string{} // GitHub anchor -> section text
	var anchor string
	for _, line := range strings.Split(string(doc), "\n") {
		if h, ok := strings.CutPrefix(line, "#"); ok {
			anchor = githubAnchor(strings.TrimLeft(h, "# "))
			require.NotContains(t, sections, anchor, "heading %q appears twice in docs/operations.md", line)
			sections[anchor] = ""
			continue
		}
		if anchor != "" {
			sections[anchor] += line + "\n"
		}
	}

	var alerts int
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts++
			t.Run(r.Alert, func(t *testing.T) {
				require.Contains(t, []string{"critical", "warning"}, r.Labels["severity"])
				require.NotEmpty(t, r.Annotations["summary"])
				require.NotEmpty(t, r.Annotations["description"])
				url := r.Annotations["runbook_url"]
				a, ok := strings.CutPrefix(url, prefix)
				require.True(t, ok, "runbook_url %q starts with %s", url, prefix)
				require.Equal(t, githubAnchor(r.Alert), a, "the runbook of %s is its own section", r.Alert)
				section, ok := sections[a]
				require.True(t, ok, "docs/operations.md has no heading for #%s", a)
				for _, part := range []string{"**Means.**", "**Check.**", "**Do.**"} {
					require.Contains(t, section, part, "the runbook of %s says what it means, what to check, what to do", r.Alert)
				}
			})
		}
	}
	require.NotZero(t, alerts)
}

// githubAnchor is the id GitHub gives a Markdown heading: lower case, spaces
// to hyphens, punctuation other than hyphens and underscores dropped.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// --- the real thing ----------------------------------------------------------

// dashRunEvents is how many readings the dashboard run simulates.
const dashRunEvents = 4000

// pipelineRun is one short run of the built binary (simulate, persist and
// detect in one process, in-process Kafka) into a fresh database, scraped by
// a real Prometheus that also evaluates the alert rules.
type pipelineRun struct {
	start     time.Time
	readerURL string // Grafana's read-only role on the run's database
	promURL   string
	scrape    time.Duration
	pipeline  *process
	prom      *process
}

func TestDashboardAndRulesAgainstRealPipeline(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the pipeline, PostgreSQL queries and Prometheus: not in -short")
	}
	run := startPipelineRun(t)
	d, err := grafana.Load()
	require.NoError(t, err)
	panels := d.Flat()
	now := time.Now()
	from, err := grafana.ParseTime(d.Time.From, now)
	require.NoError(t, err)
	to, err := grafana.ParseTime(d.Time.To, now)
	require.NoError(t, err)
	tr := grafana.TimeRange{From: from, To: to}

	// reader connects as Grafana's read-only role, for the test's time.
	reader := func(t *testing.T) (context.Context, *pgx.Conn) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t.Cleanup(cancel)
		conn, err := pgx.Connect(ctx, run.readerURL)
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close(context.Background()) })
		return ctx, conn
	}

	t.Run("sql", func(t *testing.T) {
		ctx, conn := reader(t)
		eachTarget(t, panels, func(tg grafana.Target) bool { return tg.RawSQL != "" }, func(t *testing.T, p grafana.Panel, tg grafana.Target) {
			checkSQLTarget(t, ctx, conn, p, tg, tr)
		})
	})

	// The rollups answer as the readings would: every reading of the run is
	// younger than the panels' five minutes, where whole-minute windows and
	// exact ones hold the same readings.
	t.Run("rollups equal the readings", func(t *testing.T) {
		ctx, conn := reader(t)
		values := func(t *testing.T, sql string) [][]float64 {
			sql, err := grafana.ExpandSQL(sql, tr, grafana.Interval(tr, time.Minute))
			require.NoError(t, err)
			rows, err := conn.Query(ctx, sql, pgx.QueryExecModeSimpleProtocol)
			require.NoError(t, err, "\n%s", sql)
			var out [][]float64
			for rows.Next() {
				vals, err := rows.Values()
				require.NoError(t, err)
				row := make([]float64, len(vals))
				for i, v := range vals {
					row[i] = asEpoch(t, v)
				}
				out = append(out, row)
			}
			require.NoError(t, rows.Err())
			return out
		}
		var compared int
		for _, p := range panels {
			raw, ok := dashbench.RawPanels[p.Title]
			if !ok {
				continue
			}
			compared++
			t.Run(p.Title, func(t *testing.T) {
				require.Len(t, p.Targets, 1)
				got, want := values(t, p.Targets[0].RawSQL), values(t, raw)
				require.NotEmpty(t, want)
				require.Len(t, got, len(want))
				for i := range want {
					require.InDeltaSlice(t, want[i], got[i], 1e-9, "row %d", i)
				}
			})
		}
		require.Len(t, dashbench.RawPanels, compared, "every raw panel names a dashboard panel")
	})

	t.Run("promql", func(t *testing.T) {
		eachTarget(t, panels, func(tg grafana.Target) bool { return tg.Expr != "" }, func(t *testing.T, _ grafana.Panel, tg grafana.Target) {
			expr, err := grafana.ExpandPromQL(tg.Expr, tr, run.scrape)
			require.NoError(t, err)
			var res promResult
			if tg.Instant {
				res = run.query(t, expr, tr.To)
			} else {
				step := grafana.Interval(tr, run.scrape)
				res = run.queryRange(t, expr, tr.From, tr.To, step)
			}
			require.NotEmpty(t, res.Result, "%s returned no series after a pipeline run", expr)
			require.True(t, res.hasFiniteValue(), "%s has no finite value after a pipeline run: %s", expr, res.raw)
		})
	})

	// "Messages/s per handler" plots heartbeat_messages_consumed_total: it
	// must count readings, as the simulator's line does, not Watermill's
	// batch messages of up to 500 readings.
	t.Run("handlers count readings", func(t *testing.T) {
		want := strconv.Itoa(dashRunEvents)
		run.waitFor(t, "every reading counted by the simulator and both handlers", 30*time.Second, func() (bool, error) {
			res := run.query(t, `heartbeat_messages_produced_total == `+want+
				` and on() sum(heartbeat_messages_consumed_total{handler="persist"}) == `+want+
				` and on() sum(heartbeat_messages_consumed_total{handler="detect"}) == `+want, time.Now())
			return len(res.Result) == 1, errors.New(res.raw)
		})
		batches := run.query(t, `sum(heartbeat_handler_execution_time_seconds_count{handler_name="persist"})`, time.Now())
		require.Len(t, batches.Result, 1)
		t.Logf("%d readings were %s persist handler executions (batch messages)", dashRunEvents, batches.Result[0].Value[1])
	})

	t.Run("rules", func(t *testing.T) {
		var rf struct {
			Groups []struct {
				Rules []struct {
					Alert  string `yaml:"alert"`
					Record string `yaml:"record"`
					Expr   string `yaml:"expr"`
				} `yaml:"rules"`
			} `yaml:"groups"`
		}
		readYAML(t, rulesFile, &rf)
		// Alerts that must stay quiet on a healthy run (the lag alert is left
		// out: a burst may raise lag for a moment, and it needs 5 minutes).
		quiet := []string{"HeartbeatNoIngest", "HeartbeatDLQMessages", "HeartbeatInvalidRatioHigh",
			"HeartbeatTransientFailures", "HeartbeatServiceDown", "HeartbeatConsumerStalled",
			"HeartbeatOutboxNotForwarding", "HeartbeatHandlerFailures", "HeartbeatPublishErrors"}
		// Counters that exist only once something went wrong.
		mayBeAbsent := []string{"heartbeat_dlq_total", "heartbeat_transient_failures_total"}
		var names []string
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				name := r.Alert + r.Record
				names = append(names, name)
				t.Run(name, func(t *testing.T) {
					res := run.query(t, r.Expr, time.Now())
					if slices.Contains(quiet, r.Alert) {
						require.Empty(t, res.Result, "%s fires on a healthy run: %s", r.Alert, res.raw)
					}
					for _, m := range metricNames(r.Expr) {
						if slices.Contains(mayBeAbsent, m) {
							continue
						}
						series := run.query(t, "count("+m+")", time.Now())
						require.NotEmpty(t, series.Result, "%s uses %s, which the pipeline does not export", name, m)
					}
				})
			}
		}
		for _, q := range quiet {
			require.Contains(t, names, q, "alert %s exists in %s", q, rulesFile)
		}

		// Prometheus itself evaluated every rule without error.
		run.waitFor(t, "Prometheus to evaluate every rule cleanly", 20*time.Second, func() (bool, error) {
			health := run.ruleHealth(t)
			bad := ""
			for _, n := range names {
				if h := health[n]; h != "ok" {
					bad += fmt.Sprintf(" %s=%q", n, h)
				}
			}
			return bad == "", fmt.Errorf("rules not evaluated cleanly:%s", bad)
		})
	})
}

// eachTarget runs check as a subtest of t for each target of panels that
// has, and fails t when none has.
func eachTarget(t *testing.T, panels []grafana.Panel, has func(grafana.Target) bool, check func(*testing.T, grafana.Panel, grafana.Target)) {
	t.Helper()
	var n int
	for _, p := range panels {
		for _, tg := range p.Targets {
			if has(tg) {
				n++
				t.Run(p.Title+"/"+tg.RefID, func(t *testing.T) { check(t, p, tg) })
			}
		}
	}
	require.NotZero(t, n, "the dashboard has such queries")
}

// checkSQLTarget runs one panel query as Grafana would and checks its shape.
func checkSQLTarget(t *testing.T, ctx context.Context, conn *pgx.Conn, p grafana.Panel, tg grafana.Target, tr grafana.TimeRange) {
	sql, err := grafana.ExpandSQL(tg.RawSQL, tr, grafana.Interval(tr, time.Minute))
	require.NoError(t, err)
	require.NotContains(t, sql, "$", "an unexpanded variable is left in\n%s", sql)
	t.Logf("expanded:\n%s", sql)

	rows, err := conn.Query(ctx, sql, pgx.QueryExecModeSimpleProtocol)
	require.NoError(t, err, "\n%s", sql)
	var cols []string
	var numeric []bool
	for _, fd := range rows.FieldDescriptions() {
		cols = append(cols, fd.Name)
		switch fd.DataTypeOID {
		case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.Float4OID, pgtype.Float8OID, pgtype.NumericOID:
			numeric = append(numeric, true)
		default:
			numeric = append(numeric, false)
		}
	}
	var data [][]any
	for rows.Next() {
		vals, err := rows.Values()
		require.NoError(t, err)
		data = append(data, vals)
	}
	require.NoError(t, rows.Err())
	require.NotEmpty(t, data, "no rows after a pipeline run:\n%s", sql)

	switch tg.Format {
	case "time_series":
		ti := slices.Index(cols, "time")
		require.GreaterOrEqual(t, ti, 0, "a time series query returns a column named time, got %v", cols)
		var values int
		for i, isNum := range numeric {
			if i != ti && isNum {
				values++
			}
		}
		require.NotZero(t, values, "a time series query returns numeric value columns, got %v", cols)
		times := make([]float64, len(data))
		for i, r := range data {
			times[i] = asEpoch(t, r[ti])
		}
		require.True(t, sort.Float64sAreSorted(times), "Grafana needs time series rows ordered by time")
	case "table":
		if p.Type == "stat" {
			require.Len(t, data, 1, "a stat query returns one row")
			require.True(t, slices.Contains(numeric, true), "a stat query returns a number, got %v", cols)
			for i, isNum := range numeric {
				if isNum {
					require.NotNil(t, data[0][i], "stat value %s is NULL after a pipeline run", cols[i])
				}
			}
		}
	}
	// Fields the panel refers to by name must be there: columns, or for a
	// time series in long format the series named by its metric column.
	fields := slices.Clone(cols)
	if mi := slices.Index(cols, "metric"); mi >= 0 && tg.Format == "time_series" {
		for _, r := range data {
			fields = append(fields, fmt.Sprint(r[mi]))
		}
	}
	if p.Options.XField != "" {
		require.Contains(t, fields, p.Options.XField, "bar chart x field")
	}
	for _, o := range p.FieldConfig.Overrides {
		if o.Matcher.ID == "byName" {
			require.Contains(t, fields, o.Matcher.Options, "field override for %v", o.Matcher.Options)
		}
	}
}

func asEpoch(t *testing.T, v any) float64 {
	switch v := v.(type) {
	case time.Time:
		return float64(v.UnixNano()) / 1e9
	case float64:
		return v
	case int64:
		return float64(v)
	case int32:
		return float64(v)
	case int16:
		return float64(v)
	case pgtype.Numeric:
		f, err := v.Float64Value()
		require.NoError(t, err)
		return f.Float64
	}
	t.Fatalf("a time or number column has type %T", v)
	return 0
}

var metricName = regexp.MustCompile(`\b((?:heartbeat|go|process)_[a-zA-Z0-9_]+|up)\b\s*(?:\{|\[|\)|$|\s)`)

// metricNames returns the metric names an expression selects.
func metricNames(expr string) []string {
	var out []string
	for _, m := range metricName.FindAllStringSubmatch(expr, -1) {
		if !slices.Contains(out, m[1]) {
			out = append(out, m[1])
		}
	}
	return out
}

// --- Prometheus HTTP API -------------------------------------------------------

type promResult struct {
	ResultType string `json:"resultType"`
	Result     []struct {
		Metric map[string]string `json:"metric"`
		Value  []any             `json:"value"`
		Values [][]any           `json:"values"`
	} `json:"result"`
	raw string
}

func (r promResult) hasFiniteValue() bool {
	finite := func(p []any) bool {
		if len(p) != 2 {
			return false
		}
		s, _ := p[1].(string)
		f, err := strconv.ParseFloat(s, 64)
		return err == nil && !math.IsNaN(f) && !math.IsInf(f, 0)
	}
	for _, s := range r.Result {
		if finite(s.Value) {
			return true
		}
		for _, p := range s.Values {
			if finite(p) {
				return true
			}
		}
	}
	return false
}

func (r *pipelineRun) api(t testing.TB, path string, params url.Values) json.RawMessage {
	t.Helper()
	resp, err := http.PostForm(r.promURL+path, params)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var env struct {
		Status    string          `json:"status"`
		Data      json.RawMessage `json:"data"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
	}
	require.NoError(t, json.Unmarshal(body, &env), "%s", body)
	require.Equal(t, "success", env.Status, "%s %v: %s: %s", path, params, env.ErrorType, env.Error)
	return env.Data
}

func (r *pipelineRun) query(t testing.TB, expr string, at time.Time) promResult {
	t.Helper()
	return r.result(t, "/api/v1/query", url.Values{"query": {expr}, "time": {promTime(at)}})
}

func (r *pipelineRun) queryRange(t testing.TB, expr string, from, to time.Time, step time.Duration) promResult {
	t.Helper()
	// Grafana aligns the range to the step.
	s := step.Seconds()
	start := math.Floor(float64(from.Unix())/s) * s
	end := math.Ceil(float64(to.Unix())/s) * s
	return r.result(t, "/api/v1/query_range", url.Values{"query": {expr},
		"start": {strconv.FormatFloat(start, 'f', -1, 64)}, "end": {strconv.FormatFloat(end, 'f', -1, 64)},
		"step": {strconv.FormatFloat(s, 'f', -1, 64)}})
}

// result is the answer of the query API at path to params.
func (r *pipelineRun) result(t testing.TB, path string, params url.Values) promResult {
	t.Helper()
	data := r.api(t, path, params)
	var res promResult
	require.NoError(t, json.Unmarshal(data, &res))
	res.raw = string(data)
	return res
}

// ruleHealth maps each rule name to its health ("" until first evaluated).
func (r *pipelineRun) ruleHealth(t testing.TB) map[string]string {
	t.Helper()
	resp, err := http.Get(r.promURL + "/api/v1/rules")
	require.NoError(t, err)
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name           string    `json:"name"`
					Health         string    `json:"health"`
					LastError      string    `json:"lastError"`
					LastEvaluation time.Time `json:"lastEvaluation"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	out := map[string]string{}
	for _, g := range body.Data.Groups {
		for _, r := range g.Rules {
			switch {
			case r.LastEvaluation.IsZero() || r.LastEvaluation.Year() < 2000:
				out[r.Name] = ""
			case r.LastError != "":
				out[r.Name] = r.Health + ": " + r.LastError
			default:
				out[r.Name] = r.Health
			}
		}
	}
	return out
}

func promTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixNano())/1e9, 'f', 3, 64)
}

// --- starting everything ------------------------------------------------------

// waitFor is the harness's waitFor, failing fast when the pipeline has
// exited and showing the logs when the deadline passes.
func (r *pipelineRun) waitFor(t testing.TB, what string, timeout time.Duration, cond func() (bool, error)) {
	t.Helper()
	err := poll(timeout, 100*time.Millisecond, func() (bool, error) {
		if r.pipeline != nil && r.pipeline.exited() {
			t.Fatalf("pipeline exited while waiting for %s: %v\n%s", what, r.pipeline.exitErr, r.pipeline.tail(60))
		}
		return cond()
	})
	if err != nil {
		var pipeLog string
		if r.pipeline != nil {
			pipeLog = r.pipeline.tail(60)
		}
		t.Fatalf("waiting for %s: %v\npipeline log:\n%s\nprometheus log:\n%s", what, err, pipeLog, r.prom.tail(60))
	}
}

func startPipelineRun(t *testing.T) *pipelineRun {
	t.Helper()
	promBin := lookTool(t, "prometheus", "Debian package prometheus")
	psql := lookTool(t, "psql", "Debian package postgresql-client")
	bin := heartbeatBinary(t)
	dir := t.TempDir()
	run := &pipelineRun{scrape: time.Second}

	// A fresh database and Grafana's read-only role, made by the same script
	// the postgres container runs; the role is dropped after the database.
	server, err := pgx.ParseConfig(pgtest.ServerURL())
	require.NoError(t, err)
	suffix := strconv.FormatInt(time.Now().UnixNano()%1e9, 36) + strconv.Itoa(os.Getpid()%1000)
	reader := "heartbeat_dash_reader_" + suffix
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		admin, err := pgx.ConnectConfig(ctx, server)
		require.NoError(t, err)
		defer admin.Close(ctx)
		_, err = admin.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{reader}.Sanitize())
		require.NoError(t, err)
	})
	dbURL, _ := pgtest.Database(t, "heartbeat_dash_")
	db, err := pgx.ParseConfig(dbURL)
	require.NoError(t, err)
	script := exec.Command("sh", "grafana/postgres-init/grafana-reader.sh")
	script.Env = append(os.Environ(), "PATH="+filepath.Dir(psql)+":"+os.Getenv("PATH"),
		"PGHOST="+server.Host, "PGPORT="+strconv.Itoa(int(server.Port)), "PGPASSWORD="+server.Password,
		"POSTGRES_USER="+server.User, "POSTGRES_DB="+db.Database,
		"GRAFANA_DB_USER="+reader, "GRAFANA_DB_PASSWORD=reader-"+suffix)
	out, err := script.CombinedOutput()
	require.NoError(t, err, "grafana/postgres-init/grafana-reader.sh:\n%s", out)
	readerURL, err := url.Parse(dbURL)
	require.NoError(t, err)
	readerURL.User = url.UserPassword(reader, "reader-"+suffix)
	run.readerURL = readerURL.String()

	// Prometheus, scraping the pipeline every second and evaluating the rules.
	metricsAddr := telemetrytest.FreeAddr(t)
	promAddr := telemetrytest.FreeAddr(t)
	absRules, err := filepath.Abs(rulesFile)
	require.NoError(t, err)
	promCfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: heartbeat
    static_configs:
      - targets: [%q]
        labels: {service: all-in-one}
`, absRules, metricsAddr)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(promCfg), 0o600))
	run.prom = startProcess(t, "prometheus", filepath.Join(dir, "prometheus.log"), exec.Command(promBin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address="+promAddr, "--log.level=warn"))
	t.Cleanup(func() { run.prom.terminate(10 * time.Second) })
	run.promURL = "http://" + promAddr

	run.waitFor(t, "Prometheus ready", 20*time.Second, func() (bool, error) {
		resp, err := http.Get(run.promURL + "/-/ready")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, fmt.Errorf("status %s", resp.Status)
	})

	// Prometheus hands new targets to its scrapers up to 5 s after start:
	// wait for a first (failed) scrape, so the whole run is observed.
	run.waitFor(t, "Prometheus to start scraping "+metricsAddr, 20*time.Second, func() (bool, error) {
		var body struct {
			Data struct {
				ActiveTargets []struct {
					ScrapeURL  string    `json:"scrapeUrl"`
					LastScrape time.Time `json:"lastScrape"`
				} `json:"activeTargets"`
			} `json:"data"`
		}
		resp, err := http.Get(run.promURL + "/api/v1/targets?state=active")
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return false, err
		}
		for _, tg := range body.Data.ActiveTargets {
			if strings.Contains(tg.ScrapeURL, metricsAddr) && tg.LastScrape.Year() > 2000 {
				return true, nil
			}
		}
		return false, fmt.Errorf("targets: %+v", body.Data.ActiveTargets)
	})

	// The pipeline: simulator, persist and detect in one process.
	p := exec.Command(bin)
	p.Env = processEnv(map[string]string{"HOME": dir, "TMPDIR": dir,
		"DATABASE_URL": dbURL, "METRICS_ADDR": metricsAddr, "BROKER_ADDR": telemetrytest.FreeAddr(t),
		"SIM_EVENTS_PER_SECOND": "1000", "SIM_TOTAL_EVENTS": strconv.Itoa(dashRunEvents), "SIM_BURST_MULTIPLIER": "1", "SIM_SEED": "7", "LOG_LEVEL": "info",
		// The default detector (episode mode), its durations shrunk to fit
		// four seconds of readings (200 customers, 20 readings each): held
		// lows and highs open SUSTAINED_* (high) at once, held jumps SPIKE
		// (medium), a customer silent for a second SIGNAL_LOSS (low), and
		// episodes close a second after the rate is back — so every severity,
		// open and closed episodes with their end, peak and trough fill the
		// anomaly panels.
		"SIM_CUSTOMER_COUNT": "200", "SIM_ANOMALY_RATIO": "0.05",
		"ANOMALY_SUSTAINED_FOR": "1ms", "ANOMALY_SUSTAINED_LOW_THRESHOLD": "50", "ANOMALY_SUSTAINED_HIGH_THRESHOLD": "140",
		"ANOMALY_CLEAR_FOR": "1s", "ANOMALY_SIGNAL_LOSS_AFTER": "1s"})
	run.pipeline = startProcess(t, "pipeline", filepath.Join(dir, "pipeline.log"), p)
	run.start = run.pipeline.started
	t.Cleanup(func() {
		if _, inTime := run.pipeline.terminate(15 * time.Second); !inTime {
			t.Errorf("pipeline did not stop within 15s of SIGTERM\n%s", run.pipeline.tail(60))
		}
	})

	// Rows in all three tables: most of the simulated events stored.
	ctx := t.Context()
	owner, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	t.Cleanup(func() { owner.Close(context.Background()) })
	var events, anomalies, checkpoints int
	var severities, statuses []string
	run.waitFor(t, "heartbeat_events, anomalies of every severity and status, and ingest_checkpoint filled", 60*time.Second, func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err := owner.QueryRow(ctx, `SELECT (SELECT count(*) FROM heartbeat_events),
			(SELECT count(*) FROM anomalies), (SELECT count(*) FROM ingest_checkpoint),
			(SELECT array_agg(DISTINCT severity ORDER BY severity) FROM anomalies),
			(SELECT array_agg(DISTINCT status ORDER BY status) FROM anomalies)`).Scan(&events, &anomalies, &checkpoints, &severities, &statuses)
		return err == nil && events >= 3000 && checkpoints > 0 &&
			slices.Equal(severities, []string{"high", "low", "medium"}) && slices.Equal(statuses, []string{"closed", "open"}), err
	})
	t.Logf("pipeline stored %d events, %d anomalies (%v, %v), %d checkpoints in %s", events, anomalies, severities, statuses,
		checkpoints, time.Since(run.start).Round(time.Millisecond))

	// Prometheus has scraped the run's counters, often enough for rate()
	// over $__rate_interval to see the burst.
	run.waitFor(t, "Prometheus to scrape the stored rows and anomalies", 30*time.Second, func() (bool, error) {
		res := run.query(t, `sum(heartbeat_db_inserts_total) >= `+strconv.Itoa(events)+
			` and on() sum(increase(heartbeat_db_inserts_total[1m])) > 0`+
			` and on() sum(increase(heartbeat_handler_execution_time_seconds_count[1m])) > 0`+
			` and on() sum(heartbeat_anomalies_total) > 0`+
			` and on() count_over_time(heartbeat_db_inserts_total[1m]) >= 8`, time.Now())
		return len(res.Result) > 0, errors.New(res.raw)
	})
	return run
}

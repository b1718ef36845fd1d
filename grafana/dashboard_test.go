package grafana_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/heartbeat/heartbeat/grafana"
)

// The provisioned dashboard read without Grafana: its panels, their
// datasources and queries, against the provisioning compose mounts. The
// queries themselves run against a real pipeline in the root package's
// dashboards_test.go.

const dashboardUID = "heartbeat-overview"

// load parses the dashboard and checks that every query anywhere in the
// file (a collapsed row, a variable) is the target of a panel Flat returns,
// counting them the hard way.
func load(t *testing.T) (grafana.Board, []grafana.Panel) {
	t.Helper()
	b, err := grafana.Load()
	require.NoError(t, err)
	var generic any
	require.NoError(t, json.Unmarshal(grafana.Dashboard(), &generic))
	var found int
	var count func(any)
	count = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if _, ok := v["rawSql"]; ok {
				found++
			} else if _, ok := v["expr"]; ok {
				found++
			}
			for _, x := range v {
				count(x)
			}
		case []any:
			for _, x := range v {
				count(x)
			}
		}
	}
	count(generic)
	panels := b.Flat()
	var targets int
	for _, p := range panels {
		targets += len(p.Targets)
	}
	require.Equal(t, found, targets, "every query of the dashboard belongs to a panel target")
	return b, panels
}

type datasource struct {
	Name     string         `yaml:"name"`
	UID      string         `yaml:"uid"`
	Type     string         `yaml:"type"`
	URL      string         `yaml:"url"`
	JSONData map[string]any `yaml:"jsonData"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(raw, v), path)
}

// datasources returns the provisioned datasources by uid.
func datasources(t *testing.T) map[string]datasource {
	t.Helper()
	var f struct {
		APIVersion  int          `yaml:"apiVersion"`
		Datasources []datasource `yaml:"datasources"`
	}
	readYAML(t, "provisioning/datasources/heartbeat.yml", &f)
	require.Equal(t, 1, f.APIVersion)
	out := map[string]datasource{}
	for _, ds := range f.Datasources {
		require.NotEmpty(t, ds.UID, "datasource %s has a fixed uid", ds.Name)
		out[ds.UID] = ds
	}
	return out
}

func TestDashboardPanelsUseProvisionedDatasources(t *testing.T) {
	b, panels := load(t)
	dss := datasources(t)
	require.Equal(t, dashboardUID, b.UID, "a stable uid keeps links and the home dashboard working")
	require.Empty(t, b.Templating.List, "no template variables: the tests substitute only Grafana's built-in ones")
	_, err := grafana.ParseTime(b.Time.From, time.Now())
	require.NoError(t, err, "the default range is one the tests can run")
	_, err = grafana.ParseTime(b.Time.To, time.Now())
	require.NoError(t, err)

	types := map[string]int{}
	ids := map[int]bool{}
	for _, p := range panels {
		require.NotNil(t, p.Datasource, "panel %q has a datasource", p.Title)
		ds, ok := dss[p.Datasource.UID]
		require.True(t, ok, "panel %q uses datasource uid %q, which provisioning does not create", p.Title, p.Datasource.UID)
		require.Equal(t, ds.Type, p.Datasource.Type, "panel %q", p.Title)
		require.NotEmpty(t, p.Targets, "panel %q has a query", p.Title)
		for _, tg := range p.Targets {
			if tg.Datasource != nil {
				require.Equal(t, *p.Datasource, *tg.Datasource, "panel %q target %s", p.Title, tg.RefID)
			}
			switch ds.Type {
			case "grafana-postgresql-datasource":
				require.NotEmpty(t, tg.RawSQL, "panel %q", p.Title)
				require.Contains(t, []string{"time_series", "table"}, tg.Format, "panel %q", p.Title)
			case "prometheus":
				require.NotEmpty(t, tg.Expr, "panel %q", p.Title)
			default:
				t.Fatalf("panel %q: datasource type %s", p.Title, ds.Type)
			}
		}
		require.False(t, ids[p.ID], "panel id %d is unique", p.ID)
		ids[p.ID] = true
		require.LessOrEqual(t, p.GridPos.X+p.GridPos.W, 24, "panel %q fits the 24-column grid", p.Title)
		types[p.Type]++
	}
	for _, typ := range []string{"timeseries", "stat", "barchart", "table"} {
		require.NotZero(t, types[typ], "the dashboard has a %s panel", typ)
	}

	// The seven panels of the original dashboard, plus pipeline health.
	var titles []string
	for _, p := range panels {
		titles = append(titles, p.Title)
	}
	for _, want := range []string{"Heartbeats ingested per minute", "Anomalies per minute", "Anomaly breakdown by type",
		"Average heart rate (5 min)", "p95 heart rate (5 min)", "Active customers (5 min)", "Recent anomalies",
		"Messages/s per handler", "Handler latency p99", "Invalid and DLQ rate", "Consumer lag per group",
		"Anomaly rate by type and severity", "Stalled partitions", "Oldest unforwarded anomaly", "Memory", "Goroutines", "GC"} {
		require.Contains(t, titles, want)
	}
}

// TestSQLQueriesAreThePanelQueries: what the dashboard bench runs is every
// PostgreSQL query of the dashboard.
func TestSQLQueriesAreThePanelQueries(t *testing.T) {
	_, panels := load(t)
	qs, err := grafana.SQLQueries()
	require.NoError(t, err)
	var want []grafana.SQLQuery
	for _, p := range panels {
		for _, tg := range p.Targets {
			if tg.RawSQL != "" {
				want = append(want, grafana.SQLQuery{Panel: p.Title, RefID: tg.RefID, SQL: tg.RawSQL})
			}
		}
	}
	require.NotEmpty(t, want)
	require.Equal(t, want, qs)
}

// TestPrometheusIntervalsAgree: Grafana's $__rate_interval is only right if
// the datasource's timeInterval is Prometheus' scrape interval.
func TestPrometheusIntervalsAgree(t *testing.T) {
	var prom datasource
	for _, ds := range datasources(t) {
		if ds.Type == "prometheus" {
			prom = ds
		}
	}
	require.Equal(t, "http://prometheus:9090", prom.URL, "the compose service name and port")
	var cfg struct {
		Global struct {
			ScrapeInterval string `yaml:"scrape_interval"`
		} `yaml:"global"`
	}
	readYAML(t, filepath.Join("..", "prometheus", "prometheus.yml"), &cfg)
	require.NotEmpty(t, cfg.Global.ScrapeInterval)
	require.Equal(t, cfg.Global.ScrapeInterval, prom.JSONData["timeInterval"])
}

// TestEmbeddedDashboardsAreTheProvisionedOnes: compose mounts this
// package's dashboards/ where Grafana's provider reads, so every dashboard
// there is provisioned; each must be the one embedded, which the tests and
// the dashboard bench read.
func TestEmbeddedDashboardsAreTheProvisionedOnes(t *testing.T) {
	var compose struct {
		Services map[string]struct {
			Volumes []string `yaml:"volumes"`
		} `yaml:"services"`
	}
	readYAML(t, filepath.Join("..", "docker-compose.yml"), &compose)
	var provider struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, "provisioning/dashboards/heartbeat.yml", &provider)
	require.Len(t, provider.Providers, 1)
	mountedAt := provider.Providers[0].Options.Path

	here, err := filepath.Abs("dashboards")
	require.NoError(t, err)
	var mounted string
	for _, v := range compose.Services["grafana"].Volumes {
		if src, target, ok := strings.Cut(strings.TrimSuffix(v, ":ro"), ":"); ok && target == mountedAt {
			mounted, err = filepath.Abs(filepath.Join("..", src))
			require.NoError(t, err)
		}
	}
	require.Equal(t, here, mounted, "compose mounts grafana/dashboards where the provider reads (%s)", mountedAt)

	files, err := filepath.Glob("dashboards/*")
	require.NoError(t, err)
	require.Equal(t, []string{"dashboards/heartbeat.json"}, files, "a dashboard added here is provisioned but not embedded: embed it in dashboard.go")
	raw, err := os.ReadFile("dashboards/heartbeat.json")
	require.NoError(t, err)
	require.Equal(t, string(raw), string(grafana.Dashboard()))
}

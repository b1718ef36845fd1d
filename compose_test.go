package main

// compose_test.go checks docker-compose.yml, .env.example and the Dockerfile
// without a Docker engine: the compose file is loaded by compose-go, the
// loader Docker Compose v2 itself uses, with .env.example as its .env.

import (
	"context"
	"encoding/base64"
	"fmt"
	"go/build"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/heartbeat/heartbeat/app/config"
)

// pipelineServices are the compose services built from the Dockerfile, with
// their ROUTER_HANDLERS and the original system's metrics ports.
var pipelineServices = map[string]struct {
	handlers string
	port     string
}{
	"simulate": {"simulate", "8000"},
	"persist":  {"persist", "8001"},
	"detect":   {"detect", "8002"},
}

func loadCompose(t *testing.T, envFiles ...string) (*types.Project, error) {
	t.Helper()
	wd, err := os.Getwd()
	require.NoError(t, err)
	opts, err := cli.NewProjectOptions([]string{"docker-compose.yml"},
		cli.WithWorkingDirectory(wd),
		cli.WithEnvFiles(envFiles...),
		cli.WithDotEnv,
		cli.WithResolvedPaths(true),
	)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return opts.LoadProject(ctx)
}

func TestComposeLoadsWithEnvExample(t *testing.T) {
	t.Parallel()
	p, err := loadCompose(t, ".env.example")
	require.NoError(t, err, "docker-compose.yml must load with .env.example copied to .env")

	require.ElementsMatch(t,
		[]string{"kafka", "postgres", "simulate", "persist", "detect", "prometheus", "grafana", "kafka-ui"},
		p.ServiceNames())

	t.Run("images", func(t *testing.T) {
		images := map[string]string{
			"kafka":      `^apache/kafka:4\.`,
			"postgres":   `^postgres:16(\.|-|$)`,
			"prometheus": `^prom/prometheus:v3\.`,
			"grafana":    `^grafana/grafana:11\.4\.`,
			"kafka-ui":   `^(ghcr\.io/)?kafbat/kafka-ui:v\d`,
		}
		for name, re := range images {
			require.Regexp(t, re, p.Services[name].Image, name)
		}
	})

	t.Run("every service has a health check", func(t *testing.T) {
		for name, s := range p.Services {
			require.NotNil(t, s.HealthCheck, name)
			require.False(t, s.HealthCheck.Disable, name)
			require.NotEmpty(t, s.HealthCheck.Test, name)
			require.Contains(t, []string{"CMD", "CMD-SHELL"}, s.HealthCheck.Test[0], name)
			require.NotNil(t, s.HealthCheck.Interval, name)
			require.NotNil(t, s.HealthCheck.Timeout, name)
			require.NotNil(t, s.HealthCheck.Retries, name)
		}
	})

	t.Run("start order", func(t *testing.T) {
		want := map[string][]string{
			"simulate": {"kafka"},
			"persist":  {"kafka", "postgres"},
			"detect":   {"kafka", "postgres"},
			"grafana":  {"postgres", "prometheus"},
			"kafka-ui": {"kafka"},
		}
		for name, s := range p.Services {
			var got []string
			for dep, d := range s.DependsOn {
				require.Equal(t, types.ServiceConditionHealthy, d.Condition, "%s waits for %s", name, dep)
				require.NotNil(t, p.Services[dep].HealthCheck, "%s waits for %s to be healthy, which has no health check", name, dep)
				got = append(got, dep)
			}
			require.ElementsMatch(t, want[name], got, "depends_on of %s", name)
		}
	})

	t.Run("published ports", func(t *testing.T) {
		want := map[string][2]string{ // service: published, target
			"grafana":    {"3000", "3000"},
			"prometheus": {"9090", "9090"},
			"kafka-ui":   {"8080", "8080"},
			"simulate":   {"8000", "8000"},
			"persist":    {"8001", "8001"},
			"detect":     {"8002", "8002"},
			"postgres":   {"55432", "5432"},
			"kafka":      {"19092", "19092"},
		}
		for name, pt := range want {
			ports := p.Services[name].Ports
			require.Len(t, ports, 1, name)
			require.Equal(t, pt[0], ports[0].Published, name)
			require.Equal(t, pt[1], fmt.Sprint(ports[0].Target), name)
			require.Equal(t, "127.0.0.1", ports[0].HostIP, "%s is published on the loopback address by default (HEARTBEAT_BIND_ADDRESS)", name)
		}
	})

	t.Run("pipeline services", func(t *testing.T) {
		wantImage := ""
		for name, want := range pipelineServices {
			s := p.Services[name]
			require.NotNil(t, s.Build, "%s is built from the Dockerfile", name)
			require.DirExists(t, s.Build.Context, name)
			require.FileExists(t, filepath.Join(s.Build.Context, s.Build.Dockerfile), name)
			if wantImage == "" {
				wantImage = s.Image
			}
			require.Equal(t, wantImage, s.Image, "one image for all pipeline services")

			env := envOf(s)
			require.Equal(t, want.handlers, env["ROUTER_HANDLERS"], name)
			require.Equal(t, ":"+want.port, env["METRICS_ADDR"], name)
			require.Equal(t, "kafka:9092", env["KAFKA_BOOTSTRAP_SERVERS"], name)
			require.Equal(t, "postgres", env["POSTGRES_HOST"], name)
			require.Equal(t, "5432", env["POSTGRES_PORT"], name)
			if want.handlers == "simulate" {
				require.Empty(t, env["KAFKA_GROUP_INSTANCE_ID"], "the simulator joins no consumer group")
			} else {
				require.Equal(t, name+"-1", env["KAFKA_GROUP_INSTANCE_ID"], "%s is a static member of its group: a restarted container takes its partitions back at once", name)
			}
			require.Equal(t, envExample(t)["POSTGRES_PASSWORD"], env["POSTGRES_PASSWORD"], name)
			_, err := config.LoadConfig(context.Background(), mapLookuper(env))
			require.NoError(t, err, "the environment compose gives %s must be a valid configuration", name)

			// The health check runs the binary itself (no shell or curl in
			// the distroless image) against the service's own /healthz.
			hc := []string(s.HealthCheck.Test)
			require.Equal(t, []string{"CMD", dockerfileEntrypoint(t), "healthcheck",
				"http://127.0.0.1:" + want.port + "/healthz"}, hc, name)
			require.True(t, s.ReadOnly, "%s runs with a read-only root file system", name)
			require.NotZero(t, s.StopGracePeriod, name)
		}
	})

	// Docker marks a container whose health check fails unhealthy and
	// restarts only one that exited: a stalled service exits 1 after
	// UNHEALTHY_EXIT_AFTER, and its restart policy must start it again.
	t.Run("an unhealthy pipeline service is restarted", func(t *testing.T) {
		for name := range pipelineServices {
			s := p.Services[name]
			require.Contains(t, []string{types.RestartPolicyAlways, types.RestartPolicyUnlessStopped, types.RestartPolicyOnFailure},
				s.Restart, "%s restarts after a non-zero exit", name)
			cfg, err := config.LoadConfig(context.Background(), mapLookuper(envOf(s)))
			require.NoError(t, err)
			require.Positive(t, cfg.Health.UnhealthyExitAfter, "%s exits when unhealthy (UNHEALTHY_EXIT_AFTER)", name)
			// The health check sees the stall before the exit does.
			hc := s.HealthCheck
			require.Less(t, time.Duration(*hc.Interval)*time.Duration(*hc.Retries), cfg.Health.UnhealthyExitAfter,
				"%s is marked unhealthy before it exits", name)
		}
	})

	t.Run("kafka runs KRaft without ZooKeeper", func(t *testing.T) {
		env := envOf(p.Services["kafka"])
		require.Contains(t, env["KAFKA_PROCESS_ROLES"], "controller")
		require.Contains(t, env["KAFKA_PROCESS_ROLES"], "broker")
		for k := range env {
			require.NotContains(t, strings.ToUpper(k), "ZOOKEEPER")
		}
		id, err := base64.RawURLEncoding.DecodeString(env["CLUSTER_ID"])
		require.NoError(t, err, "CLUSTER_ID is a base64url UUID (kafka-storage.sh random-uuid)")
		require.Len(t, id, 16)
		require.Contains(t, env["KAFKA_ADVERTISED_LISTENERS"], "://kafka:9092", "the services reach kafka:9092")
		require.Contains(t, env["KAFKA_ADVERTISED_LISTENERS"], "://localhost:19092", "host clients reach localhost:19092")
		require.Equal(t, "false", env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"], "topics are created by the services, with their partition counts")
		require.Equal(t, "kafka:9092", envOf(p.Services["kafka-ui"])["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"])
	})

	t.Run("grafana provisioning is mounted", func(t *testing.T) {
		g := p.Services["grafana"]
		prov := bindSource(t, g, "/etc/grafana/provisioning")
		require.FileExists(t, filepath.Join(prov, "datasources", "heartbeat.yml"))
		require.FileExists(t, filepath.Join(prov, "dashboards", "heartbeat.yml"))
		dashDir := bindSource(t, g, "/etc/grafana/dashboards")
		require.FileExists(t, filepath.Join(dashDir, "heartbeat.json"))

		var providers struct {
			Providers []struct {
				Options struct{ Path string }
			}
		}
		readYAML(t, filepath.Join(prov, "dashboards", "heartbeat.yml"), &providers)
		require.Len(t, providers.Providers, 1)
		require.Equal(t, "/etc/grafana/dashboards", providers.Providers[0].Options.Path, "the provider reads where compose mounts the dashboards")

		env := envOf(g)
		home := env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
		require.True(t, strings.HasPrefix(home, "/etc/grafana/dashboards/"))
		require.FileExists(t, filepath.Join(dashDir, strings.TrimPrefix(home, "/etc/grafana/dashboards/")))

		// Every ${VAR} the datasource file uses is in Grafana's environment.
		raw, err := os.ReadFile(filepath.Join(prov, "datasources", "heartbeat.yml"))
		require.NoError(t, err)
		for _, m := range regexp.MustCompile(`\$\{(\w+)\}`).FindAllStringSubmatch(string(raw), -1) {
			require.NotEmpty(t, env[m[1]], "grafana's environment sets %s for the datasource provisioning", m[1])
		}
		require.Equal(t, envExample(t)["GRAFANA_ADMIN_PASSWORD"], env["GF_SECURITY_ADMIN_PASSWORD"])
		require.Equal(t, "false", env["GF_AUTH_ANONYMOUS_ENABLED"])
		require.Equal(t, "false", env["GF_USERS_ALLOW_SIGN_UP"])

		pg := p.Services["postgres"]
		initDir := bindSource(t, pg, "/docker-entrypoint-initdb.d")
		require.FileExists(t, filepath.Join(initDir, "grafana-reader.sh"))
		pgEnv := envOf(pg)
		require.Equal(t, env["GRAFANA_DB_USER"], pgEnv["GRAFANA_DB_USER"], "postgres creates the role Grafana logs in as")
		require.Equal(t, env["GRAFANA_DB_PASSWORD"], pgEnv["GRAFANA_DB_PASSWORD"])
		require.Equal(t, env["POSTGRES_DB"], pgEnv["POSTGRES_DB"])
	})

	t.Run("prometheus config is mounted and scrapes every pipeline service", func(t *testing.T) {
		prom := p.Services["prometheus"]
		dir := bindSource(t, prom, "/etc/prometheus")
		var configFile string
		for _, arg := range prom.Command {
			if v, ok := strings.CutPrefix(arg, "--config.file="); ok {
				configFile = v
			}
		}
		rel, ok := strings.CutPrefix(configFile, "/etc/prometheus/")
		require.True(t, ok, "--config.file %q is inside the mounted /etc/prometheus", configFile)
		require.FileExists(t, filepath.Join(dir, rel))

		var cfg promConfig
		readYAML(t, filepath.Join(dir, rel), &cfg)
		scraped := map[string]string{} // host:port -> service label
		for _, sc := range cfg.ScrapeConfigs {
			for _, st := range sc.StaticConfigs {
				for _, target := range st.Targets {
					scraped[target] = st.Labels["service"]
				}
			}
		}
		for name, want := range pipelineServices {
			require.Equal(t, name, scraped[name+":"+want.port], "prometheus scrapes %s on its METRICS_ADDR port", name)
		}
		for _, rf := range cfg.RuleFiles {
			require.FileExists(t, filepath.Join(dir, rf), "rule file %s, relative to the config file", rf)
		}
	})
}

// TestComposeRequiresPasswords: without a .env, compose refuses to start and
// names the variable, instead of falling back to a default password.
func TestComposeRequiresPasswords(t *testing.T) {
	t.Parallel()
	empty := filepath.Join(t.TempDir(), ".env")
	require.NoError(t, os.WriteFile(empty, nil, 0o600))
	_, err := loadCompose(t, empty)
	require.Error(t, err)
	require.Regexp(t, `(POSTGRES|GRAFANA)_\w+`, err.Error())
	require.Contains(t, err.Error(), "in .env")
	t.Log(err)

	raw, err := os.ReadFile("docker-compose.yml")
	require.NoError(t, err)
	for _, m := range regexp.MustCompile(`\$\{(\w*PASSWORD\w*)([^}]*)\}`).FindAllStringSubmatch(string(raw), -1) {
		require.True(t, strings.HasPrefix(m[2], ":?"), "${%s%s} must be required (:?), never defaulted", m[1], m[2])
	}
}

// TestEnvExampleMatchesConfig: every variable of config.Config is documented in
// .env.example with its default, and every one a user may set there reaches
// the pipeline containers, with compose's fallback equal to the default.
func TestEnvExampleMatchesConfig(t *testing.T) {
	t.Parallel()
	vars := map[string]string{} // name -> default
	for _, v := range configVariables() {
		vars[v.name] = v.def
	}
	require.NotEmpty(t, vars)
	example := envExample(t)
	documented := envExampleAll(t)

	// Set by docker-compose.yml per service, or for a cluster or database
	// outside the stack (compose's Kafka is PLAINTEXT inside its network):
	// documented in .env.example, commented out.
	notPassed := []string{"ROUTER_HANDLERS", "METRICS_ADDR", "KAFKA_BOOTSTRAP_SERVERS", "POSTGRES_HOST",
		"POSTGRES_PORT", "DATABASE_URL", "BROKER_ADDR", "BROKER_DATA_DIR", "KAFKA_GROUP_INSTANCE_ID"}
	outside := regexp.MustCompile(`^KAFKA_(SECURITY_PROTOCOL|SASL_|TLS_)`)

	raw, err := os.ReadFile("docker-compose.yml")
	require.NoError(t, err)
	fallback := map[string]string{}
	for _, m := range regexp.MustCompile(`\$\{(\w+):-([^}]*)\}`).FindAllStringSubmatch(string(raw), -1) {
		fallback[m[1]] = m[2]
	}

	p, err := loadCompose(t, ".env.example")
	require.NoError(t, err)

	var problems []string
	problem := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	for _, name := range slices.Sorted(maps.Keys(vars)) {
		def := vars[name]
		if !documented[name] {
			problem("%s (app/config.go) is not documented in .env.example", name)
			continue
		}
		if slices.Contains(notPassed, name) || outside.MatchString(name) {
			if _, ok := example[name]; ok {
				problem("%s is not passed to the containers by docker-compose.yml: leave it commented out in .env.example", name)
			}
			continue
		}
		switch name {
		case "POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD":
			if example[name] == "" {
				problem("%s needs a value in .env.example", name)
			}
		default:
			if v, ok := example[name]; !ok || v != def {
				problem(".env.example should set %s=%s (the default in app/config.go), has %q", name, def, v)
			}
			if f, ok := fallback[name]; !ok || f != def {
				problem("docker-compose.yml should pass %s as ${%s:-%s} (the default in app/config.go)", name, name, def)
			}
		}
		for svc := range pipelineServices {
			if _, ok := p.Services[svc].Environment[name]; !ok {
				problem("docker-compose.yml does not pass %s to %s", name, svc)
			}
		}
	}
	require.Empty(t, problems, "keep .env.example and docker-compose.yml in step with app/config.go:\n%s", strings.Join(problems, "\n"))

	// Every variable compose interpolates is defined by .env.example.
	for _, m := range regexp.MustCompile(`\$\{(\w+)`).FindAllStringSubmatch(string(raw), -1) {
		require.Contains(t, example, m[1], "docker-compose.yml uses ${%s}; define it in .env.example", m[1])
	}
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("Dockerfile")
	require.NoError(t, err)
	var stages []string
	var final []string // instructions of the last stage
	for _, line := range dockerfileLines(string(raw)) {
		fields := strings.Fields(line)
		if strings.EqualFold(fields[0], "FROM") {
			stages = append(stages, line)
			final = nil
		}
		final = append(final, line)
	}
	require.GreaterOrEqual(t, len(stages), 2, "multi-stage build")

	goMod, err := os.ReadFile("go.mod")
	require.NoError(t, err)
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(goMod)
	require.NotNil(t, goVersion)
	require.Contains(t, stages[0], "golang:"+string(goVersion[1]), "the build stage uses the Go of go.mod")
	require.Contains(t, string(raw), "CGO_ENABLED=0", "a static binary for the distroless/static runtime")

	runtime := stages[len(stages)-1]
	require.Regexp(t, `distroless/static|alpine`, runtime, "small runtime image")
	var user string
	for _, line := range final {
		if f := strings.Fields(line); strings.EqualFold(f[0], "USER") {
			user = f[1]
		}
	}
	require.NotEmpty(t, user, "the runtime stage sets USER")
	require.NotRegexp(t, `^(root|0)(:|$)`, user, "runs as non-root")
	require.Equal(t, "/heartbeat", dockerfileEntrypoint(t))
}

// TestDockerignoreKeepsBuildInputs: the build context must hold go.mod,
// go.sum, every non-test Go file and everything they embed, and must not
// carry .env (passwords) into the image build.
func TestDockerignoreKeepsBuildInputs(t *testing.T) {
	t.Parallel()
	f, err := os.Open(".dockerignore")
	require.NoError(t, err)
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	require.NoError(t, err)
	pm, err := patternmatcher.New(patterns)
	require.NoError(t, err)
	excluded := func(path string) bool {
		ok, err := pm.MatchesOrParentMatches(filepath.ToSlash(path))
		require.NoError(t, err)
		return ok
	}

	require.True(t, excluded(".env"), ".env holds passwords: keep it out of the build context")
	require.True(t, excluded(".git"))
	needed := []string{"go.mod", "go.sum"}
	err = filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") && path != "." || d.Name() == "testdata" {
				return filepath.SkipDir
			}
			pkg, err := build.ImportDir(path, 0)
			if err != nil {
				return nil // no Go package here
			}
			for _, name := range pkg.GoFiles {
				needed = append(needed, filepath.Join(path, name))
			}
			for _, pattern := range pkg.EmbedPatterns {
				matches, err := filepath.Glob(filepath.Join(path, pattern))
				if err != nil {
					return err
				}
				needed = append(needed, matches...)
			}
		}
		return nil
	})
	require.NoError(t, err)
	for _, path := range needed {
		require.False(t, excluded(path), ".dockerignore excludes %s, which the build needs", path)
	}
}

// --- helpers --------------------------------------------------------------

type promConfig struct {
	Global struct {
		ScrapeInterval string `yaml:"scrape_interval"`
	}
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		StaticConfigs []struct {
			Targets []string          `yaml:"targets"`
			Labels  map[string]string `yaml:"labels"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

func readYAML(t testing.TB, path string, v any) {
	t.Helper()
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(raw, v), path)
}

func envOf(s types.ServiceConfig) map[string]string {
	out := map[string]string{}
	for k, v := range s.Environment {
		if v != nil {
			out[k] = *v
		}
	}
	return out
}

type mapLookuper map[string]string

func (m mapLookuper) Lookup(key string) (string, bool) { v, ok := m[key]; return v, ok }

// bindSource returns the host directory bind-mounted at target in s.
func bindSource(t *testing.T, s types.ServiceConfig, target string) string {
	t.Helper()
	for _, v := range s.Volumes {
		if v.Target == target {
			require.Equal(t, types.VolumeTypeBind, v.Type, "%s is a bind mount", target)
			require.True(t, v.ReadOnly, "%s is mounted read-only", target)
			require.DirExists(t, v.Source)
			return v.Source
		}
	}
	t.Fatalf("%s mounts nothing at %s", s.Name, target)
	return ""
}

// envExample returns the variables .env.example sets.
func envExample(t testing.TB) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(".env.example")
	require.NoError(t, err)
	out := map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		require.True(t, ok, ".env.example line %q", line)
		out[k] = v
	}
	return out
}

// envExampleAll returns every variable named in .env.example, set or in a
// "# NAME=" comment.
func envExampleAll(t testing.TB) map[string]bool {
	t.Helper()
	raw, err := os.ReadFile(".env.example")
	require.NoError(t, err)
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#?\s*([A-Z][A-Z0-9_]*)=`).FindAllStringSubmatch(string(raw), -1) {
		out[m[1]] = true
	}
	return out
}

// dockerfileLines returns the instructions, continuation lines joined and
// comments dropped.
func dockerfileLines(src string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(src, "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if s, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		out = append(out, cur.String())
		cur.Reset()
	}
	return out
}

// dockerfileEntrypoint returns the binary the runtime image starts.
func dockerfileEntrypoint(t testing.TB) string {
	t.Helper()
	raw, err := os.ReadFile("Dockerfile")
	require.NoError(t, err)
	var ep string
	for _, line := range dockerfileLines(string(raw)) {
		if rest, ok := strings.CutPrefix(line, "ENTRYPOINT "); ok {
			m := regexp.MustCompile(`^\["([^"]+)"`).FindStringSubmatch(strings.TrimSpace(rest))
			require.NotNil(t, m, "ENTRYPOINT in exec form")
			ep = m[1]
		}
	}
	require.NotEmpty(t, ep, "the Dockerfile has an ENTRYPOINT")
	return ep
}

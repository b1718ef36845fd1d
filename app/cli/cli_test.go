package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/app/cli"
)

// heartbeat runs `heartbeat args...` in process and returns its exit
// status, stdout and stderr. No pipeline is linked in: the tests never get
// as far as assembling one.
func heartbeat(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return heartbeatCtx(t.Context(), args...)
}

func heartbeatCtx(ctx context.Context, args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := cli.Main(ctx, args, &out, &errOut, nil)
	return code, out.String(), errOut.String()
}

// requireOneLine asserts that stderr is one line, "heartbeat: " and an
// error containing every one of want.
func requireOneLine(t *testing.T, stderr string, want ...string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	require.Len(t, lines, 1, "one line on stderr:\n%s", stderr)
	require.True(t, strings.HasPrefix(lines[0], "heartbeat: "), lines[0])
	for _, w := range want {
		require.Contains(t, lines[0], w)
	}
}

// closedPort returns a local address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// usages are the synopses every command and subcommand prints first.
var usages = []struct {
	cmd      []string
	synopsis string
}{
	{[]string{"run"}, "Usage:\n  heartbeat\n  heartbeat run\n"},
	{[]string{"broker"}, "Usage:\n  heartbeat broker\n"},
	{[]string{"dlq"}, "Usage:\n  heartbeat dlq list [-json]\n  heartbeat dlq replay "},
	{[]string{"dlq", "list"}, "Usage:\n  heartbeat dlq list [-json]\n\n"},
	{[]string{"dlq", "replay"}, "Usage:\n  heartbeat dlq replay [-handler NAME]"},
	{[]string{"replay"}, "Usage:\n  heartbeat replay [-shift-to-now]"},
	{[]string{"evaluate"}, "Usage:\n  heartbeat evaluate [flags]\n"},
	{[]string{"bench"}, "Usage:\n  heartbeat bench [flags]\n"},
	{[]string{"bench", "-dashboards"}, "Usage:\n  heartbeat bench -dashboards [flags]\n"},
	{[]string{"healthcheck"}, "Usage:\n  heartbeat healthcheck URL\n"},
}

// TestEveryCommandHelps: -h, --help and `help CMD` print the command's
// usage to stdout and exit 0 — before the configuration is read, so a bad
// variable does not hide it (the same variable stops the command itself:
// TestConfigurationErrorsNameTheVariable).
func TestEveryCommandHelps(t *testing.T) {
	t.Setenv("SIM_EVENTS_PER_SECOND", "abc")
	for _, u := range usages {
		t.Run(strings.Join(u.cmd, " "), func(t *testing.T) {
			var first string
			for _, args := range [][]string{
				append(u.cmd[:len(u.cmd):len(u.cmd)], "-h"),
				append(u.cmd[:len(u.cmd):len(u.cmd)], "--help"),
				append([]string{"help"}, u.cmd...),
			} {
				code, stdout, stderr := heartbeat(t, args...)
				require.Zero(t, code, "%q: stderr %s", args, stderr)
				require.Empty(t, stderr, args)
				require.True(t, strings.HasPrefix(stdout, u.synopsis), "%q prints:\n%s", args, stdout)
				require.Contains(t, stdout, "\nExamples:\n  ", args)
				if u.cmd[0] != "healthcheck" { // it reads no configuration
					require.Contains(t, stdout, "\nEnvironment:\n  ", args)
				}
				if first == "" {
					first = stdout
				}
				require.Equal(t, first, stdout, "%q prints what %s -h does", args, u.cmd)
			}
		})
	}
}

// TestUsageListsTheFlags: the usages name every flag with its argument and
// default, wrapped to 80 columns.
func TestUsageListsTheFlags(t *testing.T) {
	for _, c := range []struct {
		cmd  []string
		want []string
	}{
		{[]string{"replay"}, []string{"  -shift-to-now ", "  -speed N ", "  -topic T ", "  -workers N ", "(default 16)"}},
		{[]string{"evaluate"}, []string{"  -export FILE ", "  -labels FILE ", "  -seed N ", "  -span D ", "(default 12h0m0s)"}},
		{[]string{"dlq", "replay"}, []string{"  -handler NAME ", "  -since DURATION ", "  -partition N ", "  -offset N ", "  -dry-run "}},
		{[]string{"bench"}, []string{"  -phases LIST ", "  -dashboards ", "(default max)", "(default copy,per-row,ingest,drain,detect,latency,memory)"}},
		{[]string{"bench", "-dashboards"}, []string{"  -rows N ", "  -range D ", "(default 10000000)"}},
	} {
		t.Run(strings.Join(c.cmd, " "), func(t *testing.T) {
			code, stdout, _ := heartbeat(t, append(c.cmd, "-h")...)
			require.Zero(t, code)
			for _, w := range c.want {
				require.Contains(t, stdout, w)
			}
			for _, l := range strings.Split(stdout, "\n") {
				if !strings.HasPrefix(l, "  heartbeat") && !strings.HasPrefix(l, "  KAFKA_BOOTSTRAP_SERVERS=") {
					require.LessOrEqual(t, len([]rune(l)), 80, "wrapped: %q", l)
				}
			}
		})
	}
}

func TestHelpListsTheCommands(t *testing.T) {
	t.Setenv("SIM_EVENTS_PER_SECOND", "abc")
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}, {"help", "help"}} {
		code, stdout, stderr := heartbeat(t, args...)
		require.Zero(t, code, args)
		require.Empty(t, stderr)
		for _, name := range []string{"run", "broker", "dlq", "replay", "evaluate", "bench", "healthcheck", "help"} {
			require.Contains(t, stdout, "\n  "+name+" ", "%q lists %s", args, name)
		}
	}
}

func TestUnknownCommand(t *testing.T) {
	for _, args := range [][]string{{"brokr"}, {"-x"}, {"help", "brokr"}} {
		code, stdout, stderr := heartbeat(t, args...)
		require.Equal(t, 1, code, args)
		require.Empty(t, stdout)
		requireOneLine(t, stderr, "unknown command", `"`+args[len(args)-1]+`"`, "heartbeat help")
	}
}

// TestCommandLineMistakes: a wrong flag or argument is one line naming it
// and where the usage is, exit 1, nothing on stdout — before any
// configuration is read or anything is reached (no broker or database
// exists at the addresses given).
func TestCommandLineMistakes(t *testing.T) {
	t.Setenv("KAFKA_BOOTSTRAP_SERVERS", closedPort(t))
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"run", "extra"}, `run: unexpected argument "extra"`},
		{[]string{"broker", "-bogus"}, "broker: flag provided but not defined: -bogus (heartbeat broker -h prints its usage)"},
		{[]string{"dlq", "purge"}, `dlq: unknown subcommand "purge": want list or replay (heartbeat dlq -h prints its usage)`},
		{[]string{"dlq", "list", "--bogus"}, "dlq list: flag provided but not defined: -bogus (heartbeat dlq list -h"},
		{[]string{"dlq", "list", "extra"}, `dlq list: unexpected argument "extra"`},
		{[]string{"dlq", "list", "--handler", "persist"}, "dlq list: flag provided but not defined: -handler"},
		{[]string{"dlq", "replay", "--since", "yesterday"}, `dlq replay: invalid value "yesterday" for flag -since: want a positive duration such as 30m, 2h or 72h`},
		{[]string{"dlq", "replay", "--since", "-5m"}, "flag -since: want a positive duration"},
		{[]string{"dlq", "replay", "--partition", "x"}, `invalid value "x" for flag -partition: want a partition number`},
		{[]string{"dlq", "replay", "--partition", "-1"}, `invalid value "-1" for flag -partition`},
		{[]string{"dlq", "replay", "--partition", "1", "--offset", "-3"}, `invalid value "-3" for flag -offset`},
		{[]string{"dlq", "replay", "--offset", "3"}, "dlq replay: -offset needs -partition"},
		{[]string{"dlq", "replay", "--handler", ""}, "dlq replay: -handler is empty"},
		{[]string{"dlq", "replay", "--id", " "}, "dlq replay: -id is empty"},
		{[]string{"dlq", "replay", "--reason-contains", ""}, "dlq replay: -reason-contains is empty"},
		{[]string{"dlq", "replay", "--handler"}, "dlq replay: flag needs an argument: -handler"},
		{[]string{"dlq", "replay", "persist"}, `dlq replay: unexpected argument "persist"`},
		{[]string{"replay", "-speed", "-1", "a.csv"}, "replay: -speed must be 0 or more"},
		{[]string{"replay", "a.csv", "-workers", "0"}, "-workers at least 1"},
		{[]string{"evaluate", "stray"}, `evaluate: unexpected argument "stray"`},
		{[]string{"evaluate", "-customers", "x"}, `evaluate: invalid value "x" for flag -customers`},
		{[]string{"bench", "-rate", "fast"}, `bench: -rate: "fast" is neither a positive number of events/s nor max`},
		{[]string{"bench", "-dashboards", "-rows", "many"}, `bench -dashboards: invalid value "many" for flag -rows: parse error (heartbeat bench -dashboards -h`},
		{[]string{"healthcheck", "127.0.0.1:8001/healthz"}, `healthcheck: "127.0.0.1:8001/healthz" is not an http:// URL`},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			code, stdout, stderr := heartbeat(t, c.args...)
			require.Equal(t, 1, code, stderr)
			require.Empty(t, stdout)
			requireOneLine(t, stderr, c.want)
		})
	}
}

// TestMissingArgumentPrintsUsage: a command given without the argument it
// needs says so and prints its usage, on stderr, exit 1.
func TestMissingArgumentPrintsUsage(t *testing.T) {
	for _, c := range []struct {
		args           []string
		want, synopsis string
	}{
		{[]string{"healthcheck"}, "heartbeat: healthcheck: want one URL, got 0 arguments\n\n", "Usage:\n  heartbeat healthcheck URL\n"},
		{[]string{"replay"}, "heartbeat: replay: want one CSV file, got 0 arguments\n\n", "Usage:\n  heartbeat replay "},
		{[]string{"replay", "a.csv", "b.csv"}, "heartbeat: replay: want one CSV file, got 2 arguments\n\n", "Usage:\n  heartbeat replay "},
		{[]string{"dlq"}, "heartbeat: dlq: missing subcommand: list or replay\n\n", "Usage:\n  heartbeat dlq list"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			code, stdout, stderr := heartbeat(t, c.args...)
			require.Equal(t, 1, code)
			require.Empty(t, stdout)
			require.True(t, strings.HasPrefix(stderr, c.want+c.synopsis), stderr)
		})
	}
	// The compose stack's probe: it explains what it is for.
	_, _, stderr := heartbeat(t, "healthcheck")
	require.Contains(t, stderr, "Compose")
}

// TestConfigurationErrorsNameTheVariable: a command that reads the
// configuration stops at a bad variable with one line naming it.
func TestConfigurationErrorsNameTheVariable(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		args []string
		want []string
	}{
		{map[string]string{"ROUTER_HANDLERS": "persist,persist"}, nil, []string{"ROUTER_HANDLERS", `"persist" is named twice`}},
		{map[string]string{"ROUTER_HANDLERS": "persist,persist"}, []string{"run"}, []string{"ROUTER_HANDLERS"}},
		{map[string]string{"SIM_EVENTS_PER_SECOND": "abc"}, []string{"broker"}, []string{`SIM_EVENTS_PER_SECOND="abc"`, "expected a number"}},
		{map[string]string{"SIM_EVENTS_PER_SECOND": "abc"}, []string{"dlq", "list"}, []string{`SIM_EVENTS_PER_SECOND="abc"`}},
		{map[string]string{"ANOMALY_SUSTAINED_FOR": "soon"}, []string{"evaluate"}, []string{`ANOMALY_SUSTAINED_FOR="soon"`}},
		{map[string]string{"BROKER_ADDR": "19092"}, []string{"replay", "a.csv"}, []string{"BROKER_ADDR", "host:port"}},
		{map[string]string{"POSTGRES_PORT": "54x"}, []string{"bench", "-dashboards"}, []string{`POSTGRES_PORT="54x"`}},
	} {
		t.Run(strings.Join(append(c.args, c.want[0]), " "), func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			code, stdout, stderr := heartbeat(t, c.args...)
			require.Equal(t, 1, code)
			require.Empty(t, stdout)
			requireOneLine(t, stderr, c.want...)
		})
	}
}

func TestHealthcheck(t *testing.T) {
	healthy := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !healthy {
			http.Error(w, "consumer group cg.db-writer.v1 stalled for 2m", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	// It reads no configuration: a bad variable does not matter.
	t.Setenv("SIM_EVENTS_PER_SECOND", "abc")

	code, stdout, stderr := heartbeat(t, "healthcheck", srv.URL+"/healthz")
	require.Zero(t, code, stderr)
	require.Empty(t, stdout+stderr)

	healthy = false
	code, _, stderr = heartbeat(t, "healthcheck", srv.URL+"/healthz")
	require.Equal(t, 1, code)
	requireOneLine(t, stderr, "503 Service Unavailable", "cg.db-writer.v1 stalled for 2m")

	addr := closedPort(t)
	code, _, stderr = heartbeat(t, "healthcheck", "http://"+addr+"/healthz")
	require.Equal(t, 1, code)
	requireOneLine(t, stderr, addr, "connection refused")
}

// TestBrokerStopsOnSignal: `heartbeat broker` serves the pipeline's topics
// on BROKER_ADDR until its context ends (SIGINT/SIGTERM in main), then
// exits 0.
func TestBrokerStopsOnSignal(t *testing.T) {
	addr := closedPort(t)
	t.Setenv("BROKER_ADDR", addr)
	t.Setenv("KAFKA_BOOTSTRAP_SERVERS", addr) // for dlq list
	t.Setenv("LOG_LEVEL", "error")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan int, 1)
	var stderr string
	go func() {
		code, _, errOut := heartbeatCtx(ctx, "broker")
		stderr = errOut
		done <- code
	}()
	// Up once `dlq list` finds its poison queue there.
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, stdout, _ := heartbeat(t, "dlq", "list", "-json")
		if code == 0 {
			require.Empty(t, stdout, "an empty queue: no JSON line")
			break
		}
		require.True(t, time.Now().Before(deadline), "broker not up within 20 s")
		select {
		case code := <-done:
			t.Fatalf("broker exited with %d: %s", code, stderr)
		case <-time.After(50 * time.Millisecond):
		}
	}
	cancel()
	select {
	case code := <-done:
		require.Zero(t, code, stderr)
	case <-time.After(10 * time.Second):
		t.Fatal("broker did not stop within 10 s of its context ending")
	}
}

// TestEvaluate: the flags reach the scenario (seed, size) and -json prints
// the report as the last line.
func TestEvaluate(t *testing.T) {
	code, stdout, stderr := heartbeat(t, "evaluate", "-json", "-seed", "7", "-customers", "2", "-span", "1h", "-day", "1h", "-case-customers", "0")
	require.Zero(t, code, stderr)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	var rep struct {
		Scenario struct {
			Seed      uint64  `json:"seed"`
			Customers int     `json:"customers"`
			Hours     float64 `json:"hours"`
		} `json:"scenario"`
	}
	require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &rep))
	require.EqualValues(t, 7, rep.Scenario.Seed)
	require.Equal(t, 2, rep.Scenario.Customers)
	require.InDelta(t, 1, rep.Scenario.Hours, 1e-9)

	code, _, stderr = heartbeat(t, "evaluate", "-customers", "0")
	require.Equal(t, 1, code)
	requireOneLine(t, stderr, "-customers")
}

// TestBenchRefusesBeforeMeasuring: option errors are reported before
// anything starts (the bench would create a database and children).
func TestBenchRefusesBeforeMeasuring(t *testing.T) {
	code, _, stderr := heartbeat(t, "bench", "-phases", "detect", "-database-url", "postgres://postgres@"+closedPort(t)+"/postgres")
	require.Equal(t, 1, code)
	requireOneLine(t, stderr, "-phases: detect runs over the topic the drain phase fills; add drain")
	code, _, stderr = heartbeat(t, "bench", "-phases", "ingest,warp")
	require.Equal(t, 1, code)
	requireOneLine(t, stderr, `-phases: unknown phase "warp"`)
	code, _, stderr = heartbeat(t, "bench", "-phases", "memory", "-rss-max-lag", "-1")
	require.Equal(t, 1, code)
	requireOneLine(t, stderr, "-max-lag and -rss-max-lag must be 0 (no bound) or a positive number of records")
}

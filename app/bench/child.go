package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// child is one pipeline process: the heartbeat binary with an environment.
type child struct {
	name    string
	role    string // ROUTER_HANDLERS
	cmd     *exec.Cmd
	metrics string // host:port of its /metrics
	pprof   string // host:port of its net/http/pprof, when asked for
	logPath string
	started time.Time
	done    chan struct{}
	err     error // of Wait, once done is closed
}

// childEnv is the environment every child starts from: the bench's own,
// without the variables that would point the pipeline elsewhere or speak
// a protocol the in-process broker does not (tuning variables such as
// PERSIST_WRITERS pass through, so their effect can be benched).
func childEnv() []string {
	drop := []string{"KAFKA_", "DATABASE_URL=", "POSTGRES_HOST=", "POSTGRES_PORT=", "POSTGRES_DB=", "POSTGRES_USER=",
		"POSTGRES_PASSWORD=", "POSTGRES_SSLMODE=", "ROUTER_HANDLERS=", "METRICS_ADDR=", "SIM_", "LOG_LEVEL=", "BROKER_"}
	var env []string
next:
	for _, kv := range os.Environ() {
		for _, p := range drop {
			if strings.HasPrefix(kv, p) {
				continue next
			}
		}
		env = append(env, kv)
	}
	return env
}

// startChild runs the binary with env added to childEnv and waits until
// its /healthz answers.
func startChild(ctx context.Context, bin, logDir, name string, env map[string]string) (*child, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	c := &child{name: name, role: env["ROUTER_HANDLERS"], pprof: env["PPROF_ADDR"], metrics: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		logPath: filepath.Join(logDir, name+".log"), done: make(chan struct{})}
	logFile, err := os.Create(c.logPath)
	if err != nil {
		return nil, err
	}
	c.cmd = exec.Command(bin)
	c.cmd.Env = childEnv()
	for k, v := range env {
		c.cmd.Env = append(c.cmd.Env, k+"="+v)
	}
	c.cmd.Env = append(c.cmd.Env, "METRICS_ADDR="+c.metrics)
	c.cmd.Stdout, c.cmd.Stderr = logFile, logFile
	c.cmd.SysProcAttr = childSysProcAttr()
	c.started = time.Now()
	if err := c.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		c.err = c.cmd.Wait()
		logFile.Close()
		close(c.done)
	}()
	if err := c.waitHealthy(ctx, time.Minute); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// failure describes the child's early exit with the end of its log.
func (c *child) failure() error {
	return fmt.Errorf("%s exited: %v; last log lines (%s):\n%s", c.name, c.err, c.logPath, tail(c.logPath, 15))
}

func (c *child) waitHealthy(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if c.exited() {
			return c.failure()
		}
		if body, err := httpGet(ctx, "http://"+c.metrics+"/healthz"); err == nil && strings.TrimSpace(string(body)) == "ok" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: /healthz on %s not answering after %s; log: %s", c.name, c.metrics, timeout, c.logPath)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// stop sends SIGTERM and waits for the exit, killing the child if it takes
// longer than its shutdown bound allows. It reports a non-zero exit.
func (c *child) stop() error {
	if c.exited() {
		return c.exitErr()
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return c.exitErr()
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
		return fmt.Errorf("%s did not stop within 20s of SIGTERM; killed (log: %s)", c.name, c.logPath)
	}
}

// exitSummary is the exit status and the first panic or fatal error line
// of the log.
func (c *child) exitSummary() string {
	s := fmt.Sprint(c.err)
	b, _ := os.ReadFile(c.logPath)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "panic:") || strings.HasPrefix(line, "fatal error:") {
			return s + ": " + line
		}
	}
	return s
}

func (c *child) exitErr() error {
	if c.err != nil {
		return fmt.Errorf("%s: %v; last log lines (%s):\n%s", c.name, c.err, c.logPath, tail(c.logPath, 15))
	}
	return nil
}

// peakRSS is the child's VmHWM in bytes: the most resident memory it ever
// had. Read it before stop: the process's /proc entry goes with it.
func (c *child) peakRSS() (int64, error) {
	return procStatusBytes(c.cmd.Process.Pid, "VmHWM:")
}

// procStatusBytes reads a "kB" field of /proc/<pid>/status.
func procStatusBytes(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// metric sums the samples of metric name on the child's /metrics whose
// labels contain every one of labels (like `handler="detect"`).
func (c *child) metric(ctx context.Context, name string, labels ...string) (float64, error) {
	body, err := httpGet(ctx, "http://"+c.metrics+"/metrics")
	if err != nil {
		return 0, err
	}
	return sumMetric(body, name, labels...)
}

// sumMetric reads Prometheus's text format: `name{labels} value` lines.
func sumMetric(body []byte, name string, labels ...string) (float64, error) {
	var sum float64
	found := false
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
lines:
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		var lbl string
		if rest[0] == '{' {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			lbl, rest = rest[1:end], rest[end+1:]
		}
		for _, l := range labels {
			if !strings.Contains(lbl, l) {
				continue lines
			}
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, fmt.Errorf("metric %s: %w", name, err)
		}
		sum += v
		found = true
	}
	if !found {
		return 0, fmt.Errorf("no metric %s%v", name, labels)
	}
	return sum, sc.Err()
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

func httpGet(ctx context.Context, url string) ([]byte, error) { return get(ctx, httpClient, url) }

// httpGetNoTimeout is httpGet bounded by ctx alone.
func httpGetNoTimeout(ctx context.Context, url string) ([]byte, error) {
	return get(ctx, http.DefaultClient, url)
}

func get(ctx context.Context, client *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = errors.New(url + ": " + resp.Status)
	}
	return body, err
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

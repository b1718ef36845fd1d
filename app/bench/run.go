package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	hbsql "github.com/heartbeat/heartbeat/sql"

	"github.com/heartbeat/heartbeat/app/config"
	"github.com/sethvargo/go-envconfig"
)

// runner holds what the phases share.
type runner struct {
	o      Options
	log    io.Writer
	db     *database
	logDir string
	cfg    config.Config // the children's configuration, as they will read it
	res    *Result
	// drained is the drain phase's broker, kept for the detect phase, and
	// drainEnv the topic and persist group it drained, which detect reads.
	drained  *broker
	drainEnv map[string]string
}

// Run runs the phases o selects and returns their results; progress goes
// to log. On an error it returns what was measured before it.
func Run(ctx context.Context, o Options, log io.Writer) (*Result, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &runner{o: o, log: log, res: newResult(o)}
	if r.cfg, err = childConfig(ctx); err != nil {
		return nil, err
	}
	r.res.setPipelineSettings(r.cfg)
	if o.ProfileDir != "" {
		if err := os.MkdirAll(o.ProfileDir, 0o755); err != nil {
			return nil, err
		}
	}
	if r.logDir, err = os.MkdirTemp("", "heartbeat-bench-"); err != nil {
		return nil, err
	}
	r.progress("database on %s; children's logs in %s", redactURL(o.DatabaseURL), r.logDir)
	if r.db, err = createDatabase(ctx, o.DatabaseURL); err != nil {
		_ = os.RemoveAll(r.logDir)
		return nil, err
	}
	r.res.PostgresVersion = r.db.server
	r.progress("database %s created and migrated", r.db.Name)

	err = r.phases(ctx)
	if r.drained != nil {
		r.drained.close()
	}
	if o.Keep {
		r.progress("kept database %s (DATABASE_URL=%s) and logs in %s", r.db.Name, redactURL(r.db.URL), r.logDir)
		r.db.pool.Close()
	} else {
		if derr := r.db.drop(ctx); derr != nil {
			r.progress("could not drop database %s: %v", r.db.Name, derr)
		}
		if err == nil {
			_ = os.RemoveAll(r.logDir)
		} else {
			r.progress("children's logs kept in %s", r.logDir)
		}
	}
	r.res.finish()
	if err == nil && (r.res.Lost != 0 || r.res.Duplicated != 0) {
		err = fmt.Errorf("bench: %d readings lost and %d duplicated", r.res.Lost, r.res.Duplicated)
	}
	return r.res, err
}

func (r *runner) phases(ctx context.Context) error {
	steps := []struct {
		name string
		run  func(context.Context) error
	}{
		{PhaseCopy, r.copyPhase},
		{PhasePerRow, r.perRowPhase},
		{PhaseIngest, r.ingestPhase},
		{PhaseDrain, r.drainPhase},
		{PhaseDetect, r.detectPhase},
		{PhaseLatency, r.latencyPhase},
		{PhaseMemory, r.memoryPhase},
	}
	for _, s := range steps {
		if !r.o.runs(s.name) {
			continue
		}
		if s.name != PhaseDetect { // detect reads what drain left
			if r.drained != nil {
				r.drained.close()
				r.drained = nil
			}
			if err := r.db.reset(ctx); err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
		}
		start := time.Now()
		r.progress("phase %s", s.name)
		if err := s.run(ctx); err != nil {
			return fmt.Errorf("phase %s: %w", s.name, err)
		}
		r.progress("phase %s done in %s", s.name, time.Since(start).Round(100*time.Millisecond))
	}
	return nil
}

func (r *runner) progress(format string, args ...any) {
	fmt.Fprintf(r.log, "bench %s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

// childConfig is the configuration the children read: the bench's
// environment as childEnv passes it on.
func childConfig(ctx context.Context) (config.Config, error) {
	m := map[string]string{}
	for _, kv := range childEnv() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return config.LoadConfig(ctx, envconfig.MapLookuper(m))
}

// env returns the children's common environment on broker b, with extra.
func (r *runner) env(b *broker, extra map[string]string) map[string]string {
	e := map[string]string{
		"KAFKA_BOOTSTRAP_SERVERS": b.addr(),
		"DATABASE_URL":            r.db.URL,
		"LOG_LEVEL":               "info",
		"SIM_INVALID_RATIO":       "0",
		"SIM_BURST_MULTIPLIER":    "1",
		"SIM_PUBLISHERS":          strconv.Itoa(r.o.SimPublishers),
	}
	for k, v := range extra {
		e[k] = v
	}
	r.pprofEnv(e)
	return e
}

func (r *runner) start(ctx context.Context, name string, env map[string]string) (*child, error) {
	c, err := startChild(ctx, r.o.Binary, r.logDir, name, env)
	if err != nil {
		return nil, err
	}
	r.progress("started %s (pid %d, %s)", name, c.cmd.Process.Pid, c.role)
	return c, nil
}

// stop stops the children in order. One that does not exit cleanly on
// SIGTERM is a defect the report lists, not a reason to stop measuring.
func (r *runner) stop(cs ...*child) {
	for _, c := range cs {
		if err := c.stop(); err != nil {
			r.progress("WARNING: %v", err)
			r.res.Warnings = append(r.res.Warnings, fmt.Sprintf("%s (%s) did not exit cleanly on SIGTERM: %s",
				c.name, c.role, c.exitSummary()))
		}
	}
}

// watch sleeps d, checking every interval that the children still run.
func watch(ctx context.Context, d time.Duration, cs ...*child) error {
	end := time.Now().Add(d)
	for {
		for _, c := range cs {
			if c.exited() {
				return c.failure()
			}
		}
		left := time.Until(end)
		if left <= 0 {
			return nil
		}
		if err := sleep(ctx, min(left, 250*time.Millisecond)); err != nil {
			return err
		}
	}
}

// note records an explanation of a phase's numbers.
func (r *runner) note(phase, format string, args ...any) {
	n := phase + ": " + fmt.Sprintf(format, args...)
	r.res.Notes = append(r.res.Notes, n)
	r.progress("%s", n)
}

// cpu records where the CPU went during a phase.
func (r *runner) cpu(phase string, u cpuUse) {
	r.res.CPU = append(r.res.CPU, PhaseCPU{Phase: phase, Use: u})
	r.note(phase, "%s", u)
	if u.Other > 0.25 {
		w := fmt.Sprintf("%s: other processes used %.2f of the machine's %d cores during the measurement; its numbers understate the pipeline", phase, u.Other, r.res.Cores)
		r.res.Warnings = append(r.res.Warnings, w)
		r.progress("WARNING: %s", w)
	}
}

func randUint64() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:])
}

func redactURL(s string) string { return hbsql.Redact(s) }

func machine() (cores, procs int) { return runtime.NumCPU(), runtime.GOMAXPROCS(0) }

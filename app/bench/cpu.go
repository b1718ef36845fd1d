package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux the bench runs on.
const clockTicks = 100

// cpuUse is where CPU time went during a phase, in cores (CPU seconds per
// second): the pipeline's children, PostgreSQL's processes, and the bench
// process itself (the in-process broker and the bench's producers).
type cpuUse struct {
	Children map[string]float64
	// Postgres is the bench database's backends; PostgresShared the
	// server's own processes (WAL writer, checkpointer, …), which serve
	// every database.
	Postgres, PostgresShared float64
	Bench                    float64
	// Other is the rest of the machine's busy time: other databases'
	// backends and other processes. Above a few tenths of a core, the
	// phase did not have the machine to itself.
	Other float64
	// Seconds is the wall time the meter ran.
	Seconds float64
}

func (c cpuUse) String() string {
	var names []string
	for name := range c.Children {
		names = append(names, name)
	}
	sort.Strings(names)
	var parts []string
	for _, name := range names {
		parts = append(parts, fmt.Sprintf("%s %.2f", name, c.Children[name]))
	}
	parts = append(parts, fmt.Sprintf("postgres backends %.2f", c.Postgres), fmt.Sprintf("postgres shared %.2f", c.PostgresShared),
		fmt.Sprintf("bench+broker %.2f", c.Bench), fmt.Sprintf("other processes %.2f", c.Other))
	return "cores used: " + strings.Join(parts, ", ")
}

// cpuMeter samples CPU times of the processes that share the machine.
type cpuMeter struct {
	at       time.Time
	db       string
	children map[string]float64
	pids     map[string]int
	pg       pgCPU
	self     float64
	machine  float64
}

func (r *runner) startCPU(cs ...*child) *cpuMeter {
	m := &cpuMeter{at: time.Now(), db: r.db.Name, children: map[string]float64{}, pids: map[string]int{}}
	for _, c := range cs {
		m.pids[c.name] = c.cmd.Process.Pid
		m.children[c.name], _ = procCPU(c.cmd.Process.Pid)
	}
	m.pg = postgresCPU(m.db)
	m.self, _ = procCPU(os.Getpid())
	m.machine = machineBusy()
	return m
}

// stop returns the cores used since startCPU; call it before the children
// exit.
func (m *cpuMeter) stop() cpuUse {
	secs := time.Since(m.at).Seconds()
	u := cpuUse{Children: map[string]float64{}, Seconds: secs}
	var mine float64
	for name, pid := range m.pids {
		if v, err := procCPU(pid); err == nil {
			u.Children[name] = (v - m.children[name]) / secs
			mine += u.Children[name]
		}
	}
	pg := postgresCPU(m.db)
	u.Postgres = (pg.bench - m.pg.bench) / secs
	u.PostgresShared = (pg.shared - m.pg.shared) / secs
	self, _ := procCPU(os.Getpid())
	u.Bench = (self - m.self) / secs
	// Backends of the bench database that ended during the window took
	// their CPU with them: they count as other, which errs on the side of
	// blaming the machine.
	u.Other = max(0, (machineBusy()-m.machine)/secs-mine-u.Postgres-u.PostgresShared-u.Bench)
	return u
}

// machineBusy is the CPU seconds all processors were not idle since boot,
// from /proc/stat.
func machineBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy float64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is already in user
			continue
		}
		x, _ := strconv.ParseFloat(v, 64)
		busy += x
	}
	return busy / clockTicks
}

// procCPU is the user plus system CPU seconds of pid, its threads included.
func procCPU(pid int) (float64, error) {
	comm, fields, err := procStat(strconv.Itoa(pid))
	_ = comm
	if err != nil {
		return 0, err
	}
	return statCPU(fields)
}

// procStat returns the command name and the fields after it of
// /proc/<pid>/stat (the name is in parentheses and may hold spaces).
func procStat(pid string) (string, []string, error) {
	b, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return "", nil, err
	}
	s := string(b)
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open {
		return "", nil, fmt.Errorf("/proc/%s/stat: unexpected format", pid)
	}
	return s[open+1 : closing], strings.Fields(s[closing+1:]), nil
}

// statCPU adds utime and stime, fields 14 and 15 of stat (11 and 12 after
// the name).
func statCPU(fields []string) (float64, error) {
	if len(fields) < 13 {
		return 0, fmt.Errorf("short /proc stat")
	}
	u, err1 := strconv.ParseFloat(fields[11], 64)
	s, err2 := strconv.ParseFloat(fields[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad /proc stat times")
	}
	return (u + s) / clockTicks, nil
}

// pgCPU is PostgreSQL's CPU seconds: the backends of the bench database,
// and the server's shared processes.
type pgCPU struct{ bench, shared float64 }

// postgresCPU reads the processes named postgres visible in /proc (a local
// server only: a remote one reads as zero). A backend's title names its
// database ("postgres: 15/main: user db host(port) STATEMENT"); the
// server's own processes have none of a client's "host(port)" or [local].
func postgresCPU(db string) pgCPU {
	var c pgCPU
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return c
	}
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		comm, fields, err := procStat(e.Name())
		if err != nil || comm != "postgres" {
			continue
		}
		v, err := statCPU(fields)
		if err != nil {
			continue
		}
		title, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		t := string(title)
		switch {
		case strings.Contains(t, " "+db+" "):
			c.bench += v
		case !strings.Contains(t, "(") && !strings.Contains(t, "[local]"):
			c.shared += v
		}
	}
	return c
}

// runtimePeak is the most a child's Go runtime held at once, from its
// /metrics: goroutines, goroutine stacks and heap in use.
type runtimePeak struct {
	goroutines, stackMB, heapMB float64
}

func (p runtimePeak) String() string {
	return fmt.Sprintf("at most %.0f goroutines, %.0f MB of goroutine stacks, %.0f MB of heap in use", p.goroutines, p.stackMB, p.heapMB)
}

// sampleRuntime samples c's runtime every 250 ms until the returned
// function is called, which returns the peaks.
func sampleRuntime(ctx context.Context, c *child) func() runtimePeak {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan runtimePeak, 1)
	go func() {
		var p runtimePeak
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			if body, err := httpGet(ctx, "http://"+c.metrics+"/metrics"); err == nil {
				if v, err := sumMetric(body, "go_goroutines"); err == nil {
					p.goroutines = max(p.goroutines, v)
				}
				if v, err := sumMetric(body, "go_memstats_stack_inuse_bytes"); err == nil {
					p.stackMB = max(p.stackMB, v/(1<<20))
				}
				if v, err := sumMetric(body, "go_memstats_heap_inuse_bytes"); err == nil {
					p.heapMB = max(p.heapMB, v/(1<<20))
				}
			}
			select {
			case <-ctx.Done():
				done <- p
				return
			case <-t.C:
			}
		}
	}()
	return func() runtimePeak { cancel(); return <-done }
}

package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// profiling: with -profile DIR the children get PPROF_ADDR, and a child
// whose binary serves net/http/pprof there has its CPU profile taken over
// each measured window and its heap profile at the end of it, into DIR.

// pprofEnv adds PPROF_ADDR to env when profiles are wanted.
func (r *runner) pprofEnv(env map[string]string) {
	if r.o.ProfileDir == "" {
		return
	}
	if port, err := freePort(); err == nil {
		env["PPROF_ADDR"] = "127.0.0.1:" + strconv.Itoa(port)
	}
}

// profile starts a CPU profile of c over d, takes a goroutine profile half
// way, and returns a function that waits for the CPU profile, then takes a
// heap profile. Call that before stopping c.
func (r *runner) profile(ctx context.Context, c *child, phase string, d time.Duration) (wait func()) {
	if r.o.ProfileDir == "" || c.pprof == "" {
		return func() {}
	}
	secs := max(1, int(d.Seconds()))
	base := filepath.Join(r.o.ProfileDir, phase+"-"+c.name)
	done := make(chan error, 2)
	go func() {
		done <- fetchTo(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", c.pprof, secs), base+".cpu.pprof", time.Duration(secs+30)*time.Second)
	}()
	// Goroutines half-way through, when the phase is in full swing.
	go func() {
		if sleep(ctx, time.Duration(secs)*time.Second/2) == nil {
			_ = fetchTo(ctx, "http://"+c.pprof+"/debug/pprof/goroutine", base+".goroutine.pprof", 30*time.Second)
		}
	}()
	return func() {
		err := <-done
		if err == nil {
			err = fetchTo(ctx, "http://"+c.pprof+"/debug/pprof/heap", base+".heap.pprof", 30*time.Second)
		}
		if err != nil {
			r.progress("no profile of %s (does the binary serve net/http/pprof on PPROF_ADDR?): %v", c.name, err)
			return
		}
		r.progress("profiles of %s: %s.{cpu,heap,goroutine}.pprof (go tool pprof -top %s %s.cpu.pprof)", c.name, base, r.o.Binary, base)
	}
}

func fetchTo(ctx context.Context, url, path string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	body, err := httpGetNoTimeout(ctx, url)
	if err != nil {
		return err
	}
	return os.WriteFile(path, body, 0o644)
}

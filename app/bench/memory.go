package bench

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/heartbeat/heartbeat/app/config"
)

// mStateLookups counts the customer states the detector has built (each
// customer once, when it first meets it): the customers met.
const mStateLookups = "heartbeat_detector_state_lookups_total"

// memoryPhase reads the peak RSS (VmHWM) of a persist,detect child while a
// simulator child drives -rss-customers customers at -rate: first until the
// detector has met every customer (built its state, as after a restart, from
// storage) or -meet-timeout passed, then for the measured window.
func (r *runner) memoryPhase(ctx context.Context) error {
	b, err := startBroker(ctx, r.cfg.Kafka)
	if err != nil {
		return err
	}
	defer b.close()
	pipe, err := r.start(ctx, "memory-pipeline", r.env(b, map[string]string{"ROUTER_HANDLERS": "persist,detect"}))
	if err != nil {
		return err
	}
	defer pipe.stop()
	sim, err := r.start(ctx, "memory-simulate", r.env(b, map[string]string{
		"ROUTER_HANDLERS":       config.HandlerSimulate,
		"SIM_CUSTOMER_COUNT":    strconv.Itoa(r.o.RSSCustomers),
		"SIM_EVENTS_PER_SECOND": strconv.FormatFloat(r.o.Rate, 'f', -1, 64),
		"SIM_MAX_LAG":           strconv.FormatInt(r.o.RSSMaxLag, 10),
	}))
	if err != nil {
		return err
	}
	defer sim.stop()
	t0 := time.Now()
	peaks := sampleRuntime(ctx, pipe)
	if err := watch(ctx, r.o.Warmup, pipe, sim); err != nil {
		return err
	}
	met, err := waitMet(ctx, pipe, sim, float64(r.o.RSSCustomers), r.o.MeetTimeout)
	if err != nil {
		return err
	}
	r.res.MemoryMetSeconds = time.Since(t0).Seconds()
	if met < float64(r.o.RSSCustomers) {
		w := fmt.Sprintf("memory: %.0f of %d customers met after %s (-meet-timeout); the peak is of those", met, r.o.RSSCustomers, r.o.MeetTimeout)
		r.res.Warnings = append(r.res.Warnings, w)
		r.progress("WARNING: %s", w)
	}
	meter := r.startCPU(pipe, sim)
	waitProfile := r.profile(ctx, pipe, PhaseMemory, r.o.Duration)
	w, err := measureWindow(ctx, r.o.Duration, pipe, sim)
	if err != nil {
		return err
	}
	waitProfile()
	r.cpu(PhaseMemory, meter.stop())
	p := peaks()
	r.res.MemoryHeapMB = p.heapMB
	r.note(PhaseMemory, "persist,detect held %s", p)
	peak, err := pipe.peakRSS()
	if err != nil {
		return err
	}
	r.res.PeakRSS = mb(peak)
	r.res.MemoryInserted = w.inserted / w.seconds
	r.res.MemoryProduced = w.produced / w.seconds
	r.res.MemoryCustomersSeen, _ = pipe.metric(ctx, mStateLookups)
	if cur, err := procStatusBytes(pipe.cmd.Process.Pid, "VmRSS:"); err == nil {
		r.res.MemoryRSSEnd = mb(cur)
	}
	r.progress("memory: VmHWM %.0f MB (VmRSS at end %.0f MB) after %s with %d customers, %.0f met (all by %.0fs); %.0f events/s produced, %.0f rows/s stored",
		r.res.PeakRSS, r.res.MemoryRSSEnd, time.Since(t0).Round(time.Second), r.o.RSSCustomers, r.res.MemoryCustomersSeen,
		r.res.MemoryMetSeconds, r.res.MemoryProduced, r.res.MemoryInserted)
	r.stop(sim, pipe)
	return nil
}

// waitMet polls pipe's customer states built until they reach n or timeout
// passes, and returns the last count.
func waitMet(ctx context.Context, pipe, sim *child, n float64, timeout time.Duration) (float64, error) {
	deadline := time.Now().Add(timeout)
	for {
		for _, c := range []*child{pipe, sim} {
			if c.exited() {
				return 0, c.failure()
			}
		}
		met, err := pipe.metric(ctx, mStateLookups)
		if err != nil {
			return 0, fmt.Errorf("customers met: %w", err)
		}
		if met >= n || time.Now().After(deadline) {
			return met, nil
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

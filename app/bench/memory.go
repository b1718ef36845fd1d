package bench

import (
	"context"
	"strconv"
	"time"

	"github.com/heartbeat/heartbeat/app"
)

// memoryPhase reads the peak RSS (VmHWM) of a persist,detect child while a
// simulator child drives -rss-customers customers at -rate for warm-up plus
// duration.
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
		"ROUTER_HANDLERS":       app.HandlerSimulate,
		"SIM_CUSTOMER_COUNT":    strconv.Itoa(r.o.RSSCustomers),
		"SIM_EVENTS_PER_SECOND": strconv.FormatFloat(r.o.Rate, 'f', -1, 64),
		"SIM_MAX_LAG":           strconv.FormatInt(r.o.MaxLag, 10),
	}))
	if err != nil {
		return err
	}
	defer sim.stop()
	t0 := time.Now()
	if err := watch(ctx, r.o.Warmup, pipe, sim); err != nil {
		return err
	}
	meter := r.startCPU(pipe, sim)
	peaks := sampleRuntime(ctx, pipe)
	waitProfile := r.profile(ctx, pipe, PhaseMemory, r.o.Duration)
	w, err := measureWindow(ctx, r.o.Duration, pipe, sim)
	if err != nil {
		return err
	}
	waitProfile()
	r.cpu(PhaseMemory, meter.stop())
	r.note(PhaseMemory, "persist,detect held %s", peaks())
	peak, err := pipe.peakRSS()
	if err != nil {
		return err
	}
	r.res.PeakRSS = mb(peak)
	r.res.MemoryInserted = w.inserted / w.seconds
	r.res.MemoryProduced = w.produced / w.seconds
	r.res.MemoryCustomersSeen, _ = pipe.metric(ctx, "heartbeat_detector_state_lookups_total")
	if cur, err := procStatusBytes(pipe.cmd.Process.Pid, "VmRSS:"); err == nil {
		r.res.MemoryRSSEnd = mb(cur)
	}
	r.progress("memory: VmHWM %.0f MB (VmRSS at end %.0f MB) after %s with %d customers; %.0f events/s produced, %.0f rows/s stored, %.0f customer states rebuilt",
		r.res.PeakRSS, r.res.MemoryRSSEnd, time.Since(t0).Round(time.Second), r.o.RSSCustomers,
		r.res.MemoryProduced, r.res.MemoryInserted, r.res.MemoryCustomersSeen)
	r.stop(sim, pipe)
	return nil
}

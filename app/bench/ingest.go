package bench

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/heartbeat/heartbeat/app/config"
	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	mInserts  = "heartbeat_db_inserts_total"
	mProduced = "heartbeat_messages_produced_total"
	mConsumed = "heartbeat_messages_consumed_total"
	mAnomaly  = "heartbeat_anomalies_total"
)

// ingestPhase runs the simulator and the pipeline as two children and
// measures rows committed per second after the warm-up; then it stops the
// simulator, lets persist catch up and checks every valid reading of the
// raw topic is stored exactly once.
func (r *runner) ingestPhase(ctx context.Context) error {
	b, err := startBroker(ctx, r.cfg.Kafka)
	if err != nil {
		return err
	}
	defer b.close()
	pipe, err := r.start(ctx, "ingest-pipeline", r.env(b, map[string]string{"ROUTER_HANDLERS": "persist,detect"}))
	if err != nil {
		return err
	}
	defer pipe.stop()
	sim, err := r.start(ctx, "ingest-simulate", r.env(b, map[string]string{
		"ROUTER_HANDLERS":       config.HandlerSimulate,
		"SIM_CUSTOMER_COUNT":    strconv.Itoa(r.o.Customers),
		"SIM_EVENTS_PER_SECOND": strconv.FormatFloat(r.o.Rate, 'f', -1, 64),
		"SIM_MAX_LAG":           strconv.FormatInt(r.o.MaxLag, 10),
	}))
	if err != nil {
		return err
	}
	defer sim.stop()

	if err := watch(ctx, r.o.Warmup, pipe, sim); err != nil {
		return err
	}
	b0, err := readBatches(ctx, pipe)
	if err != nil {
		return err
	}
	meter := r.startCPU(pipe, sim)
	peaks := sampleRuntime(ctx, pipe)
	waitProfile := r.profile(ctx, pipe, PhaseIngest, r.o.Duration)
	w, err := measureWindow(ctx, r.o.Duration, pipe, sim)
	if err != nil {
		return err
	}
	waitProfile()
	r.cpu(PhaseIngest, meter.stop())
	r.note(PhaseIngest, "persist,detect held %s", peaks())
	if b1, err := readBatches(ctx, pipe); err == nil {
		r.note(PhaseIngest, "%s", b1.describe(b0, w.seconds, r.cfg.Persist.Writers))
	}
	r.res.Ingest = w.inserted / w.seconds
	r.res.IngestProduced = w.produced / w.seconds
	r.progress("ingest: %.0f rows/s committed, %.0f events/s produced over %.1fs", r.res.Ingest, r.res.IngestProduced, w.seconds)

	r.stop(sim)
	_, total, err := b.endOffsets(ctx, r.cfg.Kafka.TopicRaw)
	if err != nil {
		return err
	}
	r.res.IngestBacklog = total - int64(w.insertedEnd)
	want, invalid, err := r.validIDs(ctx, b, r.cfg.Kafka.TopicRaw)
	if err != nil {
		return err
	}
	r.progress("ingest: simulator stopped at %d events (%d invalid); waiting for persist to store them", total, invalid)
	if _, err := waitInserts(ctx, pipe, int64(len(want)), nil); err != nil {
		return err
	}
	if rss, err := pipe.peakRSS(); err == nil {
		r.res.IngestRSS = mb(rss)
	}
	check, err := r.db.verify(ctx, want)
	if err != nil {
		return err
	}
	r.res.IngestCheck = check
	r.progress("ingest: %+v", check)
	r.stop(pipe)
	return nil
}

// window is what a measured window saw on the children's counters.
type window struct {
	seconds               float64
	inserted, produced    float64
	insertedEnd, consumed float64
}

// measureWindow reads rows inserted (pipe) and events produced (sim) over d.
func measureWindow(ctx context.Context, d time.Duration, pipe, sim *child) (window, error) {
	read := func() (time.Time, float64, float64, error) {
		t := time.Now()
		ins, err := pipe.metric(ctx, mInserts)
		if err != nil {
			return t, 0, 0, err
		}
		prod, err := sim.metric(ctx, mProduced)
		return t, ins, prod, err
	}
	t0, ins0, prod0, err := read()
	if err != nil {
		return window{}, err
	}
	if err := watch(ctx, d, pipe, sim); err != nil {
		return window{}, err
	}
	t1, ins1, prod1, err := read()
	if err != nil {
		return window{}, err
	}
	return window{seconds: t1.Sub(t0).Seconds(), inserted: ins1 - ins0, produced: prod1 - prod0, insertedEnd: ins1}, nil
}

// waitInserts polls pipe's inserted rows every 20 ms until they reach n,
// and returns when it saw them reach it. It fails when they stop moving
// for a minute. first, when set, receives when the first row was seen.
func waitInserts(ctx context.Context, pipe *child, n int64, first *time.Time) (time.Time, error) {
	last, lastMove := -1.0, time.Now()
	for {
		if pipe.exited() {
			return time.Time{}, pipe.failure()
		}
		v, err := pipe.metric(ctx, mInserts)
		now := time.Now()
		if err == nil {
			if first != nil && first.IsZero() && v > 0 {
				*first = now
			}
			if int64(v) >= n {
				return now, nil
			}
			if v != last {
				last, lastMove = v, now
			}
		}
		if now.Sub(lastMove) > time.Minute {
			return time.Time{}, fmt.Errorf("persist stuck at %.0f of %d rows for a minute (log: %s)", last, n, pipe.logPath)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return time.Time{}, err
		}
	}
}

// validIDs reads topic back and returns the event ids of the records the
// pipeline's validation accepts, and how many it refuses.
func (r *runner) validIDs(ctx context.Context, b *broker, topic string) (idSet, int64, error) {
	limits := r.cfg.Validation.Limits()
	want := idSet{}
	var invalid int64
	var perr error
	err := b.readAll(ctx, topic, func(rec *kgo.Record) {
		h, err := limits.Validate(rec.Value, time.Now())
		if err != nil {
			invalid++
			return
		}
		id, err := uuid.Parse(h.EventID)
		if err != nil {
			perr = err
			return
		}
		want[id] = struct{}{}
	})
	if err == nil {
		err = perr
	}
	return want, invalid, err
}

func mb(bytes int64) float64 { return float64(bytes) / (1 << 20) }

// batchStats are persist's committed batches, from its histograms.
type batchStats struct{ batches, rows, seconds float64 }

func readBatches(ctx context.Context, c *child) (batchStats, error) {
	var s batchStats
	var err error
	for _, m := range []struct {
		name string
		into *float64
	}{
		{"heartbeat_persist_batch_rows_count", &s.batches},
		{"heartbeat_persist_batch_rows_sum", &s.rows},
		{"heartbeat_persist_batch_seconds_sum", &s.seconds},
	} {
		if *m.into, err = c.metric(ctx, m.name); err != nil {
			return s, err
		}
	}
	return s, nil
}

// describe says how big and how long persist's batches were between b and
// s, over wall seconds, and how busy its writers were.
func (s batchStats) describe(b batchStats, wall float64, writers int) string {
	n, rows, secs := s.batches-b.batches, s.rows-b.rows, s.seconds-b.seconds
	if n <= 0 {
		return "no batch committed"
	}
	return fmt.Sprintf("persist committed %.0f batches, %.0f rows and %.1f ms per batch on average (%.0f rows/s per busy writer); its %d writers were busy %.0f%% of the time",
		n, rows/n, secs/n*1000, rows/secs, writers, secs/(wall*float64(writers))*100)
}

package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/simulate"
)

// drainPhase produces -drain-events valid readings (or takes the records
// of -drain-topic on -drain-brokers), then starts persist alone, in a
// fresh consumer group, and times it from its start to its last committed
// row. It then measures, in the same run, a bare COPY of as many rows into
// an unindexed table: the limit any sink writing to this PostgreSQL has.
func (r *runner) drainPhase(ctx context.Context) error {
	topic := r.o.DrainTopic
	if topic == "" {
		topic = r.cfg.Kafka.TopicRaw
	}
	r.drainEnv = map[string]string{
		"KAFKA_TOPIC_RAW":         topic,
		"KAFKA_CONSUMER_GROUP_DB": fmt.Sprintf("bench.persist.%x", randUint64()),
	}
	var b *broker
	var err error
	if len(r.o.DrainBrokers) > 0 {
		kafka := r.cfg.Kafka
		kafka.TopicRaw = topic
		b, err = externalBroker(ctx, r.o.DrainBrokers, kafka)
	} else {
		b, err = startBroker(ctx, r.cfg.Kafka)
	}
	if err != nil {
		return err
	}
	r.drained = b // closed by the next phase, after detect used it
	_, held, err := b.endOffsets(ctx, topic)
	if err != nil {
		return fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	var want idSet
	if held == 0 {
		start := time.Now()
		if want, err = r.preload(ctx, b, topic, r.o.DrainEvents); err != nil {
			return err
		}
		took := time.Since(start)
		r.progress("drain: produced %d readings into %s in %s (%.0f/s)", len(want), topic, took.Round(time.Millisecond), float64(len(want))/took.Seconds())
	} else {
		var invalid int64
		if want, invalid, err = r.validIDs(ctx, b, topic); err != nil {
			return err
		}
		r.progress("drain: %s already holds %d records: %d valid readings, %d invalid", topic, held, len(want), invalid)
		r.note(PhaseDrain, "drained the %d records %s held on %s (%d invalid)", held, topic, b.addr(), invalid)
	}

	// The server's counts of what the phases before wrote, which a TRUNCATE
	// leaves: the drain reports its own.
	base, baseErr := r.db.counted(ctx)
	t0 := time.Now()
	persist, err := r.start(ctx, "drain-persist", r.env(b, with(r.drainEnv, map[string]string{"ROUTER_HANDLERS": config.HandlerPersist})))
	if err != nil {
		return err
	}
	defer persist.stop()
	meter := r.startCPU(persist)
	peaks := sampleRuntime(ctx, persist)
	waitProfile := r.profile(ctx, persist, PhaseDrain, min(r.o.Duration, 10*time.Second))
	var first time.Time
	end, err := waitInserts(ctx, persist, int64(len(want)), &first)
	if err != nil {
		return err
	}
	// The rate counts the readings stored; the CPU, all of persist's work
	// for them: up to its last commit.
	if err := b.waitConsumed(ctx, r.cfg, r.drainEnv["KAFKA_CONSUMER_GROUP_DB"], topic, time.Minute+2*r.cfg.Persist.CommitInterval); err != nil {
		return err
	}
	r.res.DrainCommitted = time.Since(t0).Seconds()
	use := meter.stop()
	r.cpu(PhaseDrain, use)
	r.note(PhaseDrain, "persist held %s", peaks())
	waitProfile()
	if b, err := readBatches(ctx, persist); err == nil {
		r.note(PhaseDrain, "%s", b.describe(batchStats{}, end.Sub(first).Seconds(), r.cfg.Persist.Writers))
	}
	r.res.DrainEvents = int64(len(want))
	r.res.DrainSeconds = end.Sub(t0).Seconds()
	r.res.DrainFirstRow = first.Sub(t0).Seconds()
	r.res.Drain = float64(len(want)) / r.res.DrainSeconds
	// The meter ran from persist's start to a little after its last row:
	// CPU per row counts all of it, the start-up included, as the rate does.
	rows := float64(len(want))
	secs := use.Seconds
	r.res.DrainSinkCPU = use.Children["drain-persist"] * secs / rows * 1e6
	r.res.DrainPostgresCPU = (use.Postgres + use.PostgresShared) * secs / rows * 1e6
	r.res.DrainPostgresShared = use.PostgresShared * secs / rows * 1e6
	if cores := use.Children["drain-persist"] + use.Postgres + use.PostgresShared; cores > 0 {
		// Rows per CPU-second: the meter ran to the last commit, past
		// the last row.
		r.res.DrainPerCore = rows / (cores * use.Seconds)
	}
	r.progress("drain: %d rows in %.2fs from persist's start (first row after %.2fs, all committed after %.2fs): %.0f rows/s; CPU per 1,000 rows: persist %.2f ms, PostgreSQL %.2f ms",
		len(want), r.res.DrainSeconds, r.res.DrainFirstRow, r.res.DrainCommitted, r.res.Drain, r.res.DrainSinkCPU, r.res.DrainPostgresCPU)
	if rss, err := persist.peakRSS(); err == nil {
		r.res.DrainRSS = mb(rss)
	}
	check, err := r.db.verify(ctx, want)
	if err != nil {
		return err
	}
	r.res.DrainCheck = check
	r.progress("drain: %+v", check)
	r.stop(persist)
	// A server that counts no table activity (track_counts off) leaves these
	// figures out; the drain's own figures stand.
	var writes tableWrites
	err = baseErr
	if err == nil {
		writes, err = r.db.writesSince(ctx, base, check.Stored)
	}
	if err != nil {
		r.note(PhaseDrain, "rows written besides the readings not counted: %v", err)
	} else {
		per := func(n int64) float64 { return float64(n) / rows * 1000 }
		r.res.DrainWritesCounted = true
		r.res.DrainHistoryRows, r.res.DrainLastSeenWrites, r.res.DrainRollupWrites = per(writes.history), per(writes.lastSeen), per(writes.minuteRates)
		r.progress("drain: per 1,000 readings persist wrote %.0f customer_last_seen rows and %.0f heartbeat_minute_rates rows (and %.0f customer_history rows: the detector writes those)",
			r.res.DrainLastSeenWrites, r.res.DrainRollupWrites, r.res.DrainHistoryRows)
	}

	bare, err := r.db.bareCopy(ctx, len(want), r.o.Customers)
	if err != nil {
		return err
	}
	r.res.BareCopy, r.res.BareCopyPostgresCPU = bare.rate, bare.postgresMS
	r.progress("drain: bare COPY of %d rows into an unindexed table: %.0f rows/s, PostgreSQL %.2f ms per 1,000 rows", len(want), bare.rate, bare.postgresMS)
	return nil
}

// with returns the union of maps, later ones winning.
func with(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// preload produces n valid readings of the simulator's generator (keyed by
// customer, as the simulator publishes them) into topic with franz-go, and
// returns their event ids. Event times end about now, a second divided by
// the customers apart (each customer about once a second, as a sensor
// reports: a millisecond with the default 1,000), closer when that would
// reach back more than 12 hours.
func (r *runner) preload(ctx context.Context, b *broker, topic string, n int) (idSet, error) {
	cl, err := b.client(kgo.DefaultProduceTopic(topic), kgo.MaxBufferedRecords(100_000), uncompressed)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	gen := simulate.NewGenerator(simulate.GeneratorConfig{
		Customers: r.o.Customers, Seed: randUint64(),
		LateRatio: r.cfg.Sim.LateRatio, AnomalyRatio: r.cfg.Sim.AnomalyRatio,
	})
	step := min(time.Second/time.Duration(max(r.o.Customers, 1)), 12*time.Hour/time.Duration(n))
	base := time.Now().Add(-time.Duration(n)*step - 10*time.Second)
	want := make(idSet, n)
	var failed atomic.Int64
	var firstErr error
	var once sync.Once
	done := func(_ *kgo.Record, err error) {
		if err != nil {
			failed.Add(1)
			once.Do(func() { firstErr = err })
		}
	}
	for i := range n {
		ev := gen.Next(base.Add(time.Duration(i) * step))
		id, err := uuid.Parse(ev.ID)
		if err != nil {
			return nil, err
		}
		want[id] = struct{}{}
		rec := &kgo.Record{Key: []byte(ev.Key), Value: ev.Payload,
			Headers: []kgo.RecordHeader{{Key: messages.UUIDHeader, Value: []byte(ev.ID)}}}
		cl.Produce(ctx, rec, done)
	}
	if err := cl.Flush(ctx); err != nil {
		return nil, err
	}
	if f := failed.Load(); f > 0 {
		return nil, fmt.Errorf("preload: %d of %d records not produced: %w", f, n, firstErr)
	}
	return want, nil
}

// detectPhase runs detect alone over the topic the drain phase filled, in a
// fresh consumer group, writing its history (customer_history) as it goes.
func (r *runner) detectPhase(ctx context.Context) error {
	b := r.drained
	n := r.res.DrainEvents
	group := fmt.Sprintf("bench.detect.%x", randUint64())
	historyBefore, err := r.db.count(ctx, "customer_history")
	if err != nil {
		return err
	}
	t0 := time.Now()
	det, err := r.start(ctx, "detect", r.env(b, with(r.drainEnv, map[string]string{
		"ROUTER_HANDLERS":              config.HandlerDetect,
		"KAFKA_CONSUMER_GROUP_ANOMALY": group,
	})))
	if err != nil {
		return err
	}
	defer det.stop()
	meter := r.startCPU(det)
	peaks := sampleRuntime(ctx, det)
	waitProfile := r.profile(ctx, det, PhaseDetect, min(r.o.Duration, 10*time.Second))
	consumed := func() (float64, error) { return det.metric(ctx, mConsumed, `handler="detect"`) }
	var tFirst time.Time
	var cFirst float64
	var tEnd time.Time
	var cEnd float64
	for {
		if det.exited() {
			return det.failure()
		}
		c, err := consumed()
		now := time.Now()
		if err == nil && c > 0 {
			if tFirst.IsZero() {
				tFirst, cFirst = now, c
			}
			tEnd, cEnd = now, c
			if int64(c) >= n || now.Sub(tFirst) >= r.o.Duration {
				break
			}
		}
		if tFirst.IsZero() && now.Sub(t0) > time.Minute {
			return fmt.Errorf("detect consumed nothing within a minute (log: %s)", det.logPath)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	if tEnd.Sub(tFirst) <= 0 {
		return fmt.Errorf("detect consumed all %d events before a second sample; raise -drain-events", n)
	}
	r.cpu(PhaseDetect, meter.stop())
	r.note(PhaseDetect, "detect held %s", peaks())
	waitProfile()
	r.res.Detect = (cEnd - cFirst) / tEnd.Sub(tFirst).Seconds()
	r.res.DetectConsumed = int64(cEnd)
	r.res.DetectAnomalies, _ = det.metric(ctx, mAnomaly)
	if rss, err := det.peakRSS(); err == nil {
		r.res.DetectRSS = mb(rss)
	}
	r.progress("detect: %.0f events/s (%.0f consumed, %.0f anomalies recorded, first after %.2fs)",
		r.res.Detect, cEnd, r.res.DetectAnomalies, tFirst.Sub(t0).Seconds())
	r.stop(det)
	// Stopped, detect has written the history of all it evaluated.
	if history, err := r.db.count(ctx, "customer_history"); err == nil && cEnd > 0 {
		r.res.DetectHistoryRows = float64(history-historyBefore) / cEnd * 1000
		r.progress("detect: per 1,000 readings it wrote %.0f customer_history rows", r.res.DetectHistoryRows)
	} else if err != nil {
		r.note(PhaseDetect, "customer_history rows not counted: %v", err)
	}
	return nil
}

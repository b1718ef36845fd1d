package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/messages/rules"
)

// anomalyRate is the heart rate of the latency phase's injected anomalies:
// HIGH_HEART_RATE at the default thresholds.
const anomalyRate = 150

// pollEvery is how often the latency phase looks for new anomaly rows.
const pollEvery = 5 * time.Millisecond

const latencyIndex = "CREATE INDEX IF NOT EXISTS bench_anomalies_detected_at ON anomalies (detected_at)"

// sighting is when the bench first saw an anomaly, and of which reading.
type sighting struct {
	event [16]byte
	at    time.Time
}

// sightings records first sightings by anomaly id, from one goroutine each.
type sightings struct {
	mu   sync.Mutex
	seen map[[16]byte]sighting
}

func newSightings() *sightings { return &sightings{seen: map[[16]byte]sighting{}} }

func (s *sightings) add(anomaly, event [16]byte, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.seen[anomaly]; !ok {
		s.seen[anomaly] = sighting{event: event, at: at}
	}
}

func (s *sightings) snapshot() map[[16]byte]sighting {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.seen)
}

// events returns the readings that raised the anomalies seen.
func (s *sightings) events() idSet {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(idSet, len(s.seen))
	for _, v := range s.seen {
		out[v.event] = struct{}{}
	}
	return out
}

// latencyPhase runs persist,detect while the bench publishes readings at
// -latency-rate, every -anomaly-every-th of them at 150 bpm, and measures,
// for every anomaly of a reading published after the warm-up, the time
// from the publication to (a) its row being visible in PostgreSQL and (b)
// its message being consumable on the anomaly topic.
func (r *runner) latencyPhase(ctx context.Context) error {
	b, err := startBroker(ctx, r.cfg.Kafka)
	if err != nil {
		return err
	}
	defer b.close()
	// The per-reading rules (per_event): every injected 150 bpm reading is an
	// anomaly at once, so its latency is the pipeline's, not a rule's
	// sustain time.
	pipe, err := r.start(ctx, "latency-pipeline", r.env(b, map[string]string{"ROUTER_HANDLERS": "persist,detect", "DETECTION_MODE": rules.ModePerEvent}))
	if err != nil {
		return err
	}
	defer pipe.stop()
	// Only for the bench's polling: anomalies has no index on detected_at.
	// It costs detect an index entry per anomaly, so latencies are, if
	// anything, overstated.
	if _, err := r.db.pool.Exec(ctx, latencyIndex); err != nil {
		return err
	}
	defer r.db.pool.Exec(context.WithoutCancel(ctx), "DROP INDEX IF EXISTS bench_anomalies_detected_at")

	rows, msgs := newSightings(), newSightings()
	wctx, stopWatching := context.WithCancel(ctx)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(2)
	go func() { defer wg.Done(); errs <- r.pollAnomalyRows(wctx, rows) }()
	go func() { defer wg.Done(); errs <- r.consumeAnomalies(wctx, b, msgs) }()
	defer func() { stopWatching(); wg.Wait() }()

	prefix := randUint64()
	meter := r.startCPU(pipe)
	waitProfile := r.profile(ctx, pipe, PhaseLatency, r.o.Warmup+r.o.Duration)
	pub, measureFrom, err := r.publishAtRate(ctx, b, prefix, pipe)
	if err != nil {
		return err
	}
	r.cpu(PhaseLatency, meter.stop())
	waitProfile()
	// Every injected anomaly of the window must show up in both places.
	var injected [][16]byte
	for seq := range pub {
		if seq%r.o.AnomalyEvery == 0 && pub[seq] >= measureFrom {
			injected = append(injected, seqUUID(prefix, uint64(seq)))
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		inRows, inMsgs := rows.events(), msgs.events()
		missing := 0
		for _, id := range injected {
			_, asRow := inRows[id]
			_, asMsg := inMsgs[id]
			if !asRow || !asMsg {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			r.res.AnomalyMissing = int64(missing)
			break
		}
		if err := watch(ctx, 50*time.Millisecond, pipe); err != nil {
			return err
		}
	}
	stopWatching()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil && ctx.Err() == nil {
			return err
		}
	}
	rowSeen, msgSeen := rows.snapshot(), msgs.snapshot()
	rowLat := latencies(rowSeen, prefix, pub, measureFrom)
	msgLat := latencies(msgSeen, prefix, pub, measureFrom)
	// The outbox's share: from the row being visible to the message being
	// consumable, for the anomalies seen both ways.
	var fwd []float64
	for id, m := range msgSeen {
		seq := seqOf(m.event)
		if row, ok := rowSeen[id]; ok && seqUUID(prefix, seq) == m.event && seq < uint64(len(pub)) && pub[seq] >= measureFrom {
			fwd = append(fwd, float64(m.at.Sub(row.at).Microseconds())/1000)
		}
	}
	slices.Sort(fwd)
	r.res.ForwardP50, r.res.ForwardP99 = percentile(fwd, 0.50), percentile(fwd, 0.99)
	if len(rowLat) == 0 || len(msgLat) == 0 {
		return fmt.Errorf("no anomaly of the measured window was seen (rows %d, messages %d; log: %s)", len(rowLat), len(msgLat), pipe.logPath)
	}
	r.res.LatencyRowP50, r.res.LatencyRowP99 = percentile(rowLat, 0.50), percentile(rowLat, 0.99)
	r.res.LatencyMsgP50, r.res.LatencyMsgP99 = percentile(msgLat, 0.50), percentile(msgLat, 0.99)
	r.res.LatencyMsgMax = percentile(msgLat, 1)
	r.res.AnomalySamples = int64(len(msgLat))
	r.res.AnomalyInjected = int64(len(injected))
	r.progress("latency: row p50 %.1f ms p99 %.1f ms; message p50 %.1f ms p99 %.1f ms max %.1f ms (%d anomalies, %d injected, %d missing)",
		r.res.LatencyRowP50, r.res.LatencyRowP99, r.res.LatencyMsgP50, r.res.LatencyMsgP99, r.res.LatencyMsgMax,
		len(msgLat), len(injected), r.res.AnomalyMissing)
	r.note(PhaseLatency, "publish → row visible p50 %.1f ms, p99 %.1f ms; row visible → message consumable (outbox forwarder) p50 %.1f ms, p99 %.1f ms; rows polled every %s",
		r.res.LatencyRowP50, r.res.LatencyRowP99, r.res.ForwardP50, r.res.ForwardP99, pollEvery)
	if r.res.AnomalyMissing > 0 {
		return fmt.Errorf("%d injected anomalies not seen as both row and message within 15s (log: %s)", r.res.AnomalyMissing, pipe.logPath)
	}
	r.stop(pipe)
	return nil
}

// publishAtRate publishes warm-up plus duration worth of readings at
// -latency-rate. Reading seq has event id seqUUID(prefix, seq), event time
// its publication time, and 150 bpm when seq is a multiple of
// -anomaly-every. It returns each reading's publication time (Unix ns) and
// the start of the measured window.
func (r *runner) publishAtRate(ctx context.Context, b *broker, prefix uint64, pipe *child) ([]int64, int64, error) {
	cl, err := b.client(kgo.DefaultProduceTopic(r.cfg.Kafka.TopicRaw), kgo.ProducerLinger(0), uncompressed)
	if err != nil {
		return nil, 0, err
	}
	defer cl.Close()
	total := int(r.o.LatencyRate * (r.o.Warmup + r.o.Duration).Seconds())
	pub := make([]int64, 0, total)
	customers := make([]string, r.o.Customers)
	for i := range customers {
		customers[i] = fmt.Sprintf("cust_%05d", i+1)
	}
	rng := rand.New(rand.NewPCG(randUint64(), 0))
	var perr error
	var mu sync.Mutex
	done := func(_ *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			perr = err
			mu.Unlock()
		}
	}
	start := time.Now()
	measureFrom := start.Add(r.o.Warmup).UnixNano()
	lastCheck := start
	for seq := 0; seq < total; {
		due := min(total, int(r.o.LatencyRate*time.Since(start).Seconds()))
		for ; seq < due; seq++ {
			c := rng.IntN(len(customers))
			rate := 60 + c%30
			if seq%r.o.AnomalyEvery == 0 {
				rate = anomalyRate
			}
			now := time.Now()
			id := uuid.UUID(seqUUID(prefix, uint64(seq))).String()
			payload, err := messages.Heartbeat{EventID: id, CustomerID: customers[c], Timestamp: now.UTC().Truncate(time.Millisecond), HeartRate: rate}.Marshal()
			if err != nil {
				return nil, 0, err
			}
			pub = append(pub, now.UnixNano())
			cl.Produce(ctx, &kgo.Record{Key: []byte(customers[c]), Value: payload,
				Headers: []kgo.RecordHeader{{Key: messages.UUIDHeader, Value: []byte(id)}}}, done)
		}
		if time.Since(lastCheck) > 250*time.Millisecond {
			lastCheck = time.Now()
			if pipe.exited() {
				return nil, 0, pipe.failure()
			}
		}
		if err := sleep(ctx, time.Millisecond); err != nil {
			return nil, 0, err
		}
	}
	if err := cl.Flush(ctx); err != nil {
		return nil, 0, err
	}
	mu.Lock()
	defer mu.Unlock()
	if perr != nil {
		return nil, 0, fmt.Errorf("publish: %w", perr)
	}
	return pub, measureFrom, nil
}

// pollAnomalyRows looks for new anomaly rows every pollEvery until ctx
// ends. A row's detected_at is taken before its transaction commits, so each
// poll looks a second back from the newest one seen. The bench's index on
// detected_at (latencyIndex) keeps each poll to those rows.
func (r *runner) pollAnomalyRows(ctx context.Context, s *sightings) error {
	conn, err := r.db.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	const q = `SELECT anomaly_id, event_id, detected_at FROM anomalies WHERE detected_at > $1`
	var newest time.Time
	var found [][2][16]byte
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		sent := time.Now()
		rows, err := conn.Query(ctx, q, newest.Add(-time.Second))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("poll anomalies: %w", err)
		}
		var aid, eid pgtype.UUID
		var det time.Time
		found = found[:0]
		_, err = pgx.ForEachRow(rows, []any{&aid, &eid, &det}, func() error {
			found = append(found, [2][16]byte{aid.Bytes, eid.Bytes})
			if det.After(newest) {
				newest = det
			}
			return nil
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("poll anomalies: %w", err)
		}
		// The rows of one result were visible when the query ran: stamp
		// them with the time it was sent.
		for _, f := range found {
			s.add(f[0], f[1], sent)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// consumeAnomalies reads the anomaly topic from its start and records when
// each anomaly message arrived.
func (r *runner) consumeAnomalies(ctx context.Context, b *broker, s *sightings) error {
	cl, err := b.client(kgo.ConsumeTopics(r.cfg.Kafka.TopicAnomaly), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		fs := cl.PollFetches(ctx)
		at := time.Now()
		if ctx.Err() != nil {
			return nil
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return fmt.Errorf("consume %s: %w", r.cfg.Kafka.TopicAnomaly, ferr)
		}
		var perr error
		fs.EachRecord(func(rec *kgo.Record) {
			var a struct {
				AnomalyID string `json:"anomaly_id"`
				EventID   string `json:"event_id"`
			}
			if err := json.Unmarshal(rec.Value, &a); err != nil {
				perr = fmt.Errorf("anomaly message %s: %w", rec.Value, err)
				return
			}
			aid, err1 := uuid.Parse(a.AnomalyID)
			eid, err2 := uuid.Parse(a.EventID)
			if err1 != nil || err2 != nil {
				perr = fmt.Errorf("anomaly message %s: bad ids", rec.Value)
				return
			}
			s.add(aid, eid, at)
		})
		if perr != nil {
			return perr
		}
	}
}

// latencies returns, in milliseconds, the time from publication to
// sighting of every anomaly seen whose reading the bench published after
// from.
func latencies(seen map[[16]byte]sighting, prefix uint64, pub []int64, from int64) []float64 {
	var out []float64
	for _, s := range seen {
		if seqUUID(prefix, seqOf(s.event)) != s.event {
			continue // not a reading of this phase
		}
		seq := seqOf(s.event)
		if seq >= uint64(len(pub)) || pub[seq] < from {
			continue
		}
		out = append(out, float64(s.at.UnixNano()-pub[seq])/1e6)
	}
	slices.Sort(out)
	return out
}

// percentile is the nearest-rank q-quantile of sorted xs.
func percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

package simulate

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/heartbeat/heartbeat/messages"
)

// PhysiologySimulator publishes a [Physiology] scenario live, like
// [Simulator] publishes the seed's stream: through the same publisher, a
// customer always on the same publishing goroutine, with the seed's
// injection of invalid events. Speed compresses time: at 60 a simulated
// hour takes a minute. The scenario is placed so that it ends now (Speed
// 1: its readings are live); its ground truth is written to LabelsFile
// first. The same seed gives the same readings, ids and relative times.
type PhysiologySimulator struct {
	Config     PhysiologyConfig
	Publisher  message.Publisher
	Topic      string
	Speed      float64
	LabelsFile string
	// InvalidRatio is the share of readings sent as invalid events instead.
	InvalidRatio float64
	// Total stops after that many events; 0 runs the whole scenario.
	Total      int64
	Publishers int

	OnPublished func(Event)
	OnError     func(error)
	// Now is the wall clock (time.Now when nil).
	Now func() time.Time
}

// Run publishes the scenario until it ends, Total events are published or
// ctx ends.
func (s *PhysiologySimulator) Run(ctx context.Context) error {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	speed := s.Speed
	if speed <= 0 {
		speed = 1
	}
	cfg := s.Config.withDefaults()
	wallStart := now()
	// The scenario ends when the run does: at Speed 1 it starts now.
	cfg.Start = wallStart.Add(-cfg.Span + time.Duration(float64(cfg.Span)/speed)).Truncate(time.Millisecond)
	gen := NewPhysiology(cfg)
	if s.LabelsFile != "" {
		if err := writeLabelsFile(s.LabelsFile, gen.Labels()); err != nil {
			return err
		}
	}
	ids := gen.CustomerIDs()
	ns := uuid.NewSHA1(uuid.NameSpaceOID, []byte("heartbeat physiology "+strconv.FormatUint(cfg.Seed, 10)))
	invalid := NewGenerator(GeneratorConfig{Customers: 1, Seed: cfg.Seed ^ 0x1badcafe})

	pub := &Simulator{Publisher: s.Publisher, Topic: s.Topic, OnPublished: s.OnPublished, OnError: s.OnError}
	workers := max(s.Publishers, 1)
	queues := make([]chan Event, workers)
	var wg sync.WaitGroup
	for i := range queues {
		queues[i] = make(chan Event, 256)
		wg.Go(func() { pub.drain(ctx, queues[i]) })
	}
	defer func() {
		for _, q := range queues {
			close(q)
		}
		wg.Wait()
	}()
	var sent int64
	for s.Total == 0 || sent < s.Total {
		r, ok := gen.Next()
		if !ok {
			return nil
		}
		due := wallStart.Add(time.Duration(float64(r.Time.Sub(cfg.Start)) / speed))
		if wait := due.Sub(now()); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		h := messages.Heartbeat{
			EventID:    uuid.NewSHA1(ns, fmt.Appendf(nil, "%s/%d", ids[r.Customer], r.Time.Sub(cfg.Start).Milliseconds())).String(),
			CustomerID: ids[r.Customer], Timestamp: r.Time, HeartRate: r.Rate,
		}
		ev := Event{ID: h.EventID, CorrelationID: invalid.uuid(), Key: h.CustomerID, Kind: KindNormal, Reading: h}
		if s.InvalidRatio > 0 && invalid.rng.Float64() < s.InvalidRatio {
			ev.Kind, ev.Payload, ev.Reading = KindInvalid, invalid.invalidPayload(h), messages.Heartbeat{}
		} else {
			ev.Payload, _ = h.Marshal()
		}
		select {
		case queues[shardOf(ev.Key, workers)] <- ev:
		case <-ctx.Done():
			return nil
		}
		sent++
	}
	return nil
}

func writeLabelsFile(name string, labels []Label) error {
	f, err := os.Create(name)
	if err != nil {
		return fmt.Errorf("simulator labels: %w", err)
	}
	w := bufio.NewWriter(f)
	if err := WriteLabels(w, labels); err != nil {
		_ = f.Close()
		return fmt.Errorf("simulator labels %s: %w", name, err)
	}
	if err := w.Flush(); err != nil {
		_ = f.Close()
		return fmt.Errorf("simulator labels %s: %w", name, err)
	}
	return f.Close()
}

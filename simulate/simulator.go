package simulate

import (
	"context"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	wmmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/heartbeat/heartbeat/messages"
)

// tick is the simulator's step of virtual time.
const tick = 10 * time.Millisecond

// Simulator publishes a Generator's stream at a rate, with bursts.
type Simulator struct {
	Generator *Generator
	Publisher message.Publisher
	Topic     string
	// Rate is events per second outside bursts; BurstMultiplier scales it
	// during bursts.
	Rate            float64
	BurstMultiplier float64
	Bursts          *BurstSchedule
	// Total stops the simulator after that many events; 0 runs forever.
	Total int64
	// Publishers is how many goroutines publish. A customer always goes to
	// the same one, so one customer's events stay in order.
	Publishers int
	// Start anchors the virtual clock; zero means now.
	Start time.Time

	// Throttle, when set, is called before each step of virtual time and
	// may block to hold the stream back (SIM_MAX_LAG); the wall-clock
	// pacing restarts after it, so the stream does not burst to catch up.
	Throttle func(context.Context) error

	OnPublished func(Event)
	OnError     func(error)
	Logger      *slog.Logger
}

// Run publishes until ctx ends or Total events are published. Event times
// advance by a virtual clock of 10 ms ticks, paced to the wall clock, so the
// same seed gives the same stream of ids, values and relative times.
func (s *Simulator) Run(ctx context.Context) error {
	workers := max(s.Publishers, 1)
	queues := make([]chan Event, workers)
	var wg sync.WaitGroup
	for i := range queues {
		queues[i] = make(chan Event, 256)
		wg.Add(1)
		go func(q <-chan Event) {
			defer wg.Done()
			s.drain(ctx, q)
		}(queues[i])
	}
	defer func() {
		for _, q := range queues {
			close(q)
		}
		wg.Wait()
	}()

	start := s.Start
	if start.IsZero() {
		start = time.Now()
	}
	wallStart := time.Now()
	var sent int64
	var carry float64
	bursting := false
	for k := int64(0); ; k++ {
		if k%int64(time.Second/tick) == 0 && s.Bursts != nil {
			bursting = s.Bursts.Bursting()
		}
		rate := s.Rate
		if bursting {
			rate *= s.BurstMultiplier
		}
		carry += rate * tick.Seconds()
		n := int64(carry)
		carry -= float64(n)
		if s.Total > 0 {
			n = min(n, s.Total-sent)
		}
		if s.Throttle != nil {
			held := time.Now()
			if err := s.Throttle(ctx); err != nil {
				return nil // ctx ended
			}
			if d := time.Since(held); d > tick {
				wallStart = wallStart.Add(d)
			}
		}
		at := start.Add(time.Duration(k) * tick)
		for range n {
			ev := s.Generator.Next(at)
			select {
			case queues[shardOf(ev.Key, workers)] <- ev:
			case <-ctx.Done():
				return nil
			}
		}
		sent += n
		if s.Total > 0 && sent >= s.Total {
			return nil
		}
		if wait := time.Until(wallStart.Add(time.Duration(k+1) * tick)); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		} else if ctx.Err() != nil {
			return nil
		}
	}
}

func shardOf(key string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// drain publishes q's events until q is closed: each with whatever else
// waits in q at that moment, in one Publish call.
func (s *Simulator) drain(ctx context.Context, q <-chan Event) {
	var batch []Event
	for ev := range q {
		batch = append(batch[:0], ev)
	more:
		for len(batch) < maxPublishBatch {
			select {
			case ev, ok := <-q:
				if !ok {
					break more
				}
				batch = append(batch, ev)
			default:
				break more
			}
		}
		s.publish(ctx, batch)
	}
}

// maxPublishBatch bounds the events one Publish call carries.
const maxPublishBatch = 256

// publishGrace bounds how long a publish under way at the stop may take.
const publishGrace = 5 * time.Second

// publish sends evs in one Publish call, in order, retrying with backoff
// until they are acknowledged or ctx ends, so a broker hiccup delays the
// stream instead of dropping events. A retry may publish some of them
// twice; their event ids are the same, and persist stores each once.
func (s *Simulator) publish(ctx context.Context, evs []Event) {
	if ctx.Err() != nil {
		return // stopped: nothing new starts
	}
	// A publish under way when ctx ends is finished, for up to
	// publishGrace, not abandoned: abandoned, its records can still reach
	// the broker, stored downstream but never counted as produced.
	inflight, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	defer context.AfterFunc(ctx, func() { time.AfterFunc(publishGrace, cancel) })()
	backoff := 50 * time.Millisecond
	msgs := make([]*message.Message, len(evs))
	for {
		for i, ev := range evs {
			msg := message.NewMessage(ev.ID, ev.Payload)
			msg.Metadata.Set(messages.KeyMetadata, ev.Key)
			msg.Metadata.Set(wmmw.CorrelationIDMetadataKey, ev.CorrelationID)
			msg.SetContext(inflight)
			msgs[i] = msg
		}
		err := s.Publisher.Publish(s.Topic, msgs...)
		if err == nil {
			if s.OnPublished != nil {
				for _, ev := range evs {
					s.OnPublished(ev)
				}
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		if s.OnError != nil {
			s.OnError(err)
		}
		if s.Logger != nil {
			s.Logger.Warn("publish failed, retrying", "topic", s.Topic, "events", len(evs), "first_event_id", evs[0].ID, "err", err, "backoff", backoff)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// MaxLag is a Throttle holding the simulator back while lag (a consumer
// group's records still to consume) is above limit, checking every 20 ms:
// a load the pipeline keeps up with (SIM_MAX_LAG). A lag it cannot read
// (the group not there yet, a broker hiccup) holds nothing back: the bound
// is for load tests, not a guarantee.
func MaxLag(log *slog.Logger, lag func(context.Context) (int64, error), limit int64) func(context.Context) error {
	warned := false
	return func(ctx context.Context) error {
		for {
			n, err := lag(ctx)
			if err != nil {
				if !warned && ctx.Err() == nil {
					warned = true
					log.Debug("SIM_MAX_LAG: the lag is not readable; not holding back", "err", err)
				}
				return ctx.Err()
			}
			if n <= limit {
				return nil
			}
			t := time.NewTimer(20 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
	}
}

package windowed

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heartbeat/heartbeat/messages"
)

// ackCheckInterval is how often the acknowledged prefix of each window is
// collected: it bounds how late a full window resumes fetching.
const ackCheckInterval = 5 * time.Millisecond

// Subscriber consumes one topic as a member of a consumer group and keeps many
// messages of each partition in flight. It implements [message.Subscriber].
type Subscriber struct {
	cfg    Config
	logger watermill.LoggerAdapter

	mu    sync.Mutex
	topic string
	// ctx is the subscription's: every message's context derives from it.
	ctx    context.Context
	client *kgo.Client
	out    chan *message.Message
	parts  map[int32]*partition
	closed bool

	// pauseMu orders pause and resume decisions with revokes.
	pauseMu sync.Mutex
	// commitMu orders commits, so that a revoke's final commit is never
	// overtaken by an older periodic one.
	commitMu sync.Mutex

	resendMu    sync.Mutex
	resends     []resendAt
	resendReady chan struct{}

	closing    chan struct{}
	cancelPoll context.CancelFunc
	senders    sync.WaitGroup // goroutines that write to out
	loops      sync.WaitGroup // ack and commit loops
	closeOnce  sync.Once
}

type resendAt struct {
	resend
	due time.Time
}

// NewSubscriber checks cfg and returns a subscriber that connects on
// Subscribe.
func NewSubscriber(cfg Config, logger watermill.LoggerAdapter) (*Subscriber, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid windowed subscriber config: %w", err)
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	return &Subscriber{
		cfg:         cfg,
		logger:      logger.With(watermill.LogFields{"consumer_group": cfg.ConsumerGroup}),
		parts:       make(map[int32]*partition),
		resendReady: make(chan struct{}, 1),
		closing:     make(chan struct{}),
	}, nil
}

// Subscribe joins the consumer group for topic and returns the channel its
// records arrive on. The channel is closed when ctx is done or the subscriber
// is closed. A Subscriber serves one topic: make another for another topic.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("subscriber closed")
	}
	if s.topic != "" {
		return nil, fmt.Errorf("subscriber already consumes %s: one topic per subscriber", s.topic)
	}

	// The client calls back (AdjustFetchOffsetsFn, OnPartitions*) as soon
	// as it exists: what the callbacks read is set before it is made.
	logger := s.logger
	s.topic, s.ctx, s.logger = topic, ctx, logger.With(watermill.LogFields{"topic": topic})
	opts := []kgo.Opt{
		kgo.SeedBrokers(s.cfg.Brokers...),
		kgo.ConsumerGroup(s.cfg.ConsumerGroup),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		// Polls and rebalance callbacks exclude each other, so every
		// polled record is matched to the window of the assignment it
		// was fetched under.
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsRevoked(s.onRevoked),
		kgo.OnPartitionsLost(s.onLost),
		// A resumed partition joins the next fetch request only, so a
		// fetch waiting on the broker for more data holds it back: with
		// windows pausing and resuming partitions all the time, a 500 ms
		// wait halved persist's and detect's throughput (bench: drain
		// 88k -> 125k rows/s, detect 100k -> 200k events/s at 50 ms). An
		// idle consumer sends 20 fetches a second.
		kgo.FetchMaxWait(50 * time.Millisecond),
		kgo.WithLogger(kgoLogger{s.logger}),
	}
	client, err := kgo.NewClient(append(opts, s.cfg.ClientOpts...)...)
	if err != nil {
		s.topic, s.ctx, s.logger = "", nil, logger
		return nil, fmt.Errorf("create kafka client for %s: %w", topic, err)
	}

	s.client = client
	s.out = make(chan *message.Message)
	pollCtx, cancel := context.WithCancel(context.Background())
	s.cancelPoll = cancel

	s.senders.Add(2)
	go s.pollLoop(pollCtx)
	go s.resendLoop()
	s.loops.Add(2)
	go s.ackLoop()
	go s.commitLoop()
	go func() {
		select {
		case <-ctx.Done():
			s.shutdown()
		case <-s.closing:
		}
	}()
	return s.out, nil
}

// Close stops delivering, waits up to DrainTimeout for delivered messages to
// be settled, commits what was acknowledged, leaves the group and closes the
// output channel. It does not need anyone to read the channel.
func (s *Subscriber) Close() error {
	s.shutdown()
	return nil
}

func (s *Subscriber) shutdown() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		client := s.client
		s.mu.Unlock()

		close(s.closing)
		if client == nil {
			return
		}
		s.cancelPoll()
		s.senders.Wait()
		close(s.out)
		s.loops.Wait()

		// Leaving the group revokes every partition: onRevoked drains
		// and commits them.
		client.Close()

		s.mu.Lock()
		left := s.detachLocked(nil, true)
		s.mu.Unlock()
		s.markRevoked(left)
		s.logger.Info("Windowed subscriber closed", nil)
	})
}

// pollLoop fetches records and delivers them in partition order.
func (s *Subscriber) pollLoop(ctx context.Context) {
	defer s.senders.Done()
	type work struct {
		p       *partition
		records []*kgo.Record
	}
	var batch []work
	for {
		fetches := s.client.PollRecords(ctx, s.cfg.MaxPollRecords)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			s.client.AllowRebalance()
			return
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			s.logger.Error("Fetch failed", err, watermill.LogFields{"partition": partition})
		})
		batch = batch[:0]
		// With BlockRebalanceOnPoll no revoke runs until AllowRebalance:
		// the windows looked up here belong to the assignment these
		// records were fetched under.
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			if len(fp.Records) > 0 {
				batch = append(batch, work{s.partitionFor(fp.Partition), fp.Records})
			}
		})
		s.client.AllowRebalance()
		for i, w := range batch {
			s.enqueue(w.p, w.records)
			batch[i] = work{}
		}
	}
}

// partitionFor returns the window of an assigned partition, creating it for
// the first records of a new assignment.
func (s *Subscriber) partitionFor(id int32) *partition {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.parts[id]
	if !ok {
		p = newPartition(s.topic, id)
		s.parts[id] = p
		// pollLoop, a sender, is running: Add cannot race shutdown's Wait.
		s.senders.Add(1)
		if s.cfg.Ordered {
			go s.deliverOrdered(p)
		} else {
			go s.deliverWindowed(p)
		}
	}
	return p
}

// deliverWindowed delivers p's queued records in order without waiting for
// acks, keeping at most MaxMessagesInFlightPerPartition of its messages
// unsettled, until p is revoked or the subscriber closes. While that many are
// out, records gather in the queue: the next batch message takes them all
// (up to BatchRecords), so batches grow with the backlog instead of the
// messages multiplying. Nacked messages are delivered again by the ack loop.
func (s *Subscriber) deliverWindowed(p *partition) {
	defer s.senders.Done()
	var out []*message.Message // delivered, maybe not settled
	for {
		if len(out) >= s.cfg.MaxMessagesInFlightPerPartition {
			out = unsettled(out)
		}
		if len(out) >= s.cfg.MaxMessagesInFlightPerPartition {
			select {
			case <-out[0].Acked():
			case <-out[0].Nacked():
			case <-p.done:
				return
			case <-s.closing:
				return
			}
			continue
		}
		seq, msg, ok := s.take(p)
		if !ok {
			return
		}
		if msg == nil {
			continue
		}
		select {
		case s.out <- msg:
			out = append(out, msg)
		case <-p.done:
			s.abandon(p, seq)
			return
		case <-s.closing:
			s.abandon(p, seq)
			return
		}
	}
}

// unsettled keeps the messages of out neither acked nor nacked, in order.
func unsettled(out []*message.Message) []*message.Message {
	n := 0
	for _, m := range out {
		if !isClosed(m.Acked()) && !isClosed(m.Nacked()) {
			out[n] = m
			n++
		}
	}
	clear(out[n:])
	return out[:n]
}

// take registers the next message of p's queue and returns it with its
// first record's sequence number. It waits for records when the queue is
// empty, returning a nil message when some arrived; false when p is revoked
// or the subscriber closes.
func (s *Subscriber) take(p *partition) (uint64, *message.Message, bool) {
	p.mu.Lock()
	if p.revoked {
		p.mu.Unlock()
		return 0, nil, false
	}
	if len(p.queue) == 0 {
		p.mu.Unlock()
		select {
		case <-p.ready:
			return 0, nil, true
		case <-p.done:
			return 0, nil, false
		case <-s.closing:
			return 0, nil, false
		}
	}
	seq := p.nextSeq()
	msg, n := s.next(p, p.queue)
	clear(p.queue[:n])
	p.queue = p.queue[n:]
	if len(p.queue) == 0 {
		p.queue = nil
	}
	p.mu.Unlock()
	return seq, msg, true
}

// next registers the next message of records in p's window — a batch of up
// to BatchRecords of them, or the first alone — and returns it with how many
// records it took. Call with p.mu held.
func (s *Subscriber) next(p *partition, records []queued) (*message.Message, int) {
	if s.cfg.BatchRecords <= 1 {
		msg := records[0].rec.Message(s.ctx)
		p.register(&records[0], msg, nil, 0)
		return msg, 1
	}
	n := min(len(records), s.cfg.BatchRecords)
	b := &messages.Batch{Records: make([]messages.Record, n)}
	for i := range records[:n] {
		b.Records[i] = records[i].rec
	}
	first, last := b.Records[0].Source, b.Records[n-1].Source
	msg := message.NewMessage(first.Topic+"-"+strconv.FormatInt(int64(first.Partition), 10)+"-"+
		strconv.FormatInt(first.Offset, 10)+"-"+strconv.FormatInt(last.Offset, 10), nil)
	msg.SetContext(messages.WithBatch(messages.WithSource(s.ctx, first), b))
	for i := range records[:n] {
		p.register(&records[i], msg, b, i)
	}
	return msg, n
}

// enqueue hands fetched records to p's delivery goroutine.
func (s *Subscriber) enqueue(p *partition, records []*kgo.Record) {
	qs := copyRecords(records, p.assignment, nil)
	p.mu.Lock()
	if p.revoked {
		p.mu.Unlock()
		return
	}
	p.queue = append(p.queue, qs...)
	full := p.load() >= s.cfg.MaxInFlightPerPartition
	p.mu.Unlock()
	select {
	case p.ready <- struct{}{}:
	default:
	}
	if full {
		// Pause now, before the next poll, rather than at the ack loop's
		// next round: every fetch in between would overshoot the window.
		s.updatePauses([]*partition{p})
	}
}

// deliverOrdered delivers p's queued records one message at a time until p
// is revoked or the subscriber closes: each only once the one before it was
// acked.
func (s *Subscriber) deliverOrdered(p *partition) {
	defer s.senders.Done()
	for {
		seq, msg, ok := s.take(p)
		if !ok {
			return
		}
		if msg != nil && !s.sendInOrder(p, seq, msg) {
			return
		}
	}
}

// sendInOrder delivers msg, whose first record has sequence number seq, and
// waits for its ack. A nacked message is delivered again after
// NackResendSleep: a copy, or a batch's records not done one by one. It
// reports false when p is revoked or the subscriber closes.
func (s *Subscriber) sendInOrder(p *partition, seq uint64, msg *message.Message) bool {
	// Read before the router has the message and sets its context.
	b, isBatch := messages.BatchOf(msg)
	for {
		select {
		case s.out <- msg:
		case <-p.done:
			s.abandon(p, seq)
			return false
		case <-s.closing:
			s.abandon(p, seq)
			return false
		}
		select {
		case <-msg.Acked():
			return true
		case <-msg.Nacked():
		case <-p.done:
			return false
		case <-s.closing:
			return false
		}
		t := time.NewTimer(s.cfg.NackResendSleep)
		select {
		case <-t.C:
		case <-p.done:
			t.Stop()
			return false
		case <-s.closing:
			t.Stop()
			return false
		}
		if !isBatch {
			p.mu.Lock()
			e := p.at(seq)
			if p.revoked || e == nil {
				p.mu.Unlock()
				return false
			}
			msg = msg.CopyWithContext()
			e.msg = msg
			p.mu.Unlock()
			continue
		}
		// Split: each record not done becomes its own message, in order.
		for i := range b.Records {
			p.mu.Lock()
			if p.revoked {
				p.mu.Unlock()
				return false
			}
			e := p.at(seq + uint64(i))
			if e == nil || !p.retry(s.ctx, e) {
				// Done before the nack: acknowledged (and maybe gone).
				p.mu.Unlock()
				continue
			}
			one := e.msg
			p.mu.Unlock()
			if !s.sendInOrder(p, seq+uint64(i), one) {
				return false
			}
		}
		return true
	}
}

// abandon marks the records of p from seq on as never delivered.
func (s *Subscriber) abandon(p *partition, seq uint64) {
	p.mu.Lock()
	p.dropFrom(seq)
	p.mu.Unlock()
}

// abandonOne marks the record of p with sequence number seq as never
// delivered.
func (s *Subscriber) abandonOne(p *partition, seq uint64) {
	p.mu.Lock()
	if e := p.at(seq); e != nil && e.state == delivered {
		e.state = dropped
	}
	p.mu.Unlock()
}

// copyRecords appends records to dst as messages carry them, their bytes
// copied into one buffer and their headers into one slice. A fetched
// record's bytes point into its whole decompressed batch, which would stay
// in memory as long as any one of its records is in flight; the copies hold
// only what is in flight, in two allocations for the lot. Their Source
// names the partition's assignment.
func copyRecords(records []*kgo.Record, assignment uint64, dst []queued) []queued {
	size, headers := 0, 0
	for _, r := range records {
		size += len(r.Key) + len(r.Value)
		for _, h := range r.Headers {
			size += len(h.Value)
		}
		headers += len(r.Headers)
	}
	buf := make([]byte, 0, size)
	hs := make([]messages.Header, 0, headers)
	take := func(b []byte) []byte {
		if b == nil {
			return nil
		}
		start := len(buf)
		buf = append(buf, b...)
		return buf[start:len(buf):len(buf)]
	}
	for _, r := range records {
		rec := messages.Record{
			Source: messages.Source{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Assignment: assignment},
			Key:    take(r.Key), Value: take(r.Value),
		}
		if len(r.Headers) > 0 {
			start := len(hs)
			for _, h := range r.Headers {
				hs = append(hs, messages.Header{Key: headerKey(h.Key), Value: take(h.Value)})
			}
			rec.Headers = hs[start:len(hs):len(hs)]
		}
		dst = append(dst, queued{rec: rec, epoch: r.LeaderEpoch})
	}
	return dst
}

// headerKey returns the pipeline's own header keys as constants, so that
// records do not each keep a copy of them.
func headerKey(k string) string {
	switch k {
	case messages.UUIDHeader:
		return messages.UUIDHeader
	case messages.CorrelationIDMetadata:
		return messages.CorrelationIDMetadata
	case messages.KeyMetadata:
		return messages.KeyMetadata
	}
	return k
}

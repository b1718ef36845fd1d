package windowed

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heartbeat/heartbeat/messages"
)

// entryState is where one delivered record is between delivery and ack.
type entryState uint8

const (
	// delivered: handed (or being handed) to the consumer; its message's
	// ack or nack decides what comes next.
	delivered entryState = iota
	// acked: acknowledged, waiting for the records before it.
	acked
	// resending: nacked; a copy waits in the resend queue.
	resending
	// dropped: never reached the consumer because delivery was abandoned
	// (revoke or close). Settled, but never acknowledged.
	dropped
)

type entry struct {
	offset int64
	epoch  int32
	state  entryState
	msg    *message.Message
	// batch is the batch message's batch the record is at index idx of;
	// nil for a record delivered as its own message.
	batch *messages.Batch
	idx   int
}

// partition is the window of one assigned partition. A new one is made for
// every assignment, so state from an earlier ownership never leaks into a
// later one.
type partition struct {
	topic string
	id    int32
	// assignment names this assignment of the partition among all of the
	// process's (messages.Source.Assignment): a partition revoked and
	// assigned again gets a new one.
	assignment uint64
	// done is closed when the partition is revoked or lost: delivery of
	// its records stops.
	done chan struct{}

	// paused is guarded by Subscriber.pauseMu, not mu.
	paused bool

	mu sync.Mutex
	// entries[head:] is the window in delivery (offset) order; the entry
	// at index i has sequence number headSeq+i-head.
	entries []entry
	head    int
	headSeq uint64
	// ackedUpTo is the offset after the contiguous acknowledged prefix:
	// the offset to commit. -1 until something is acknowledged.
	ackedUpTo  int64
	ackedEpoch int32
	// committed is the last offset committed for this assignment.
	committed int64
	revoked   bool

	// Records fetched and not yet delivered, and a signal to the
	// partition's delivery goroutine that more arrived.
	queue []queued
	ready chan struct{}
}

// assignments numbers the process's partition assignments.
var assignments atomic.Uint64

func newPartition(topic string, id int32) *partition {
	return &partition{topic: topic, id: id, assignment: assignments.Add(1), done: make(chan struct{}), ackedUpTo: -1, committed: -1,
		ready: make(chan struct{}, 1)}
}

// load is the window plus the records fetched and not yet delivered: what
// fetching pauses on. Call with mu held.
func (p *partition) load() int { return p.window() + len(p.queue) }

// window is the number of records from the oldest unacknowledged one to the
// newest delivered one. Call with mu held.
func (p *partition) window() int { return len(p.entries) - p.head }

// queued is a fetched record waiting for delivery, copied out of the
// fetch's buffers (see copyRecords).
type queued struct {
	rec   messages.Record
	epoch int32
}

// register appends a record about to be delivered to the window, as msg
// or as record idx of batch msg. Call with mu held.
func (p *partition) register(q *queued, msg *message.Message, batch *messages.Batch, idx int) {
	p.entries = append(p.entries, entry{offset: q.rec.Source.Offset, epoch: q.epoch, msg: msg, batch: batch, idx: idx})
}

// nextSeq is the sequence number the next registered entry gets. Call with
// mu held.
func (p *partition) nextSeq() uint64 { return p.headSeq + uint64(p.window()) }

// at returns the entry with sequence number seq, or nil if it has left the
// window. Call with mu held.
func (p *partition) at(seq uint64) *entry {
	if seq < p.headSeq {
		return nil
	}
	i := p.head + int(seq-p.headSeq)
	if i >= len(p.entries) {
		return nil
	}
	return &p.entries[i]
}

// doneBeforeNack reports whether e is a record its batch's handler had
// finished with before the batch was nacked: acknowledged, though the rest
// of its batch will be delivered again.
func (e *entry) doneBeforeNack() bool {
	// Done is read only once the nack was seen: the handler has returned.
	return e.state == delivered && e.batch != nil && isClosed(e.msg.Nacked()) && e.idx < e.batch.Done
}

// dropFrom marks the entries from seq on as never delivered. Call with mu
// held.
func (p *partition) dropFrom(seq uint64) {
	for e := p.at(seq); e != nil; e = p.at(seq) {
		if e.state == delivered {
			e.state = dropped
		}
		seq++
	}
}

// advance moves the head past the acknowledged prefix of the window and
// reports whether it moved. Call with mu held.
func (p *partition) advance() bool {
	start := p.head
	for p.head < len(p.entries) {
		e := &p.entries[p.head]
		if e.state != acked && (e.state != delivered || !isClosed(e.msg.Acked())) && !e.doneBeforeNack() {
			break
		}
		p.ackedUpTo, p.ackedEpoch = e.offset+1, e.epoch
		*e = entry{}
		p.head++
	}
	moved := p.head - start
	p.headSeq += uint64(moved)
	p.compact()
	return moved > 0
}

// compact reclaims the space before head once it is most of the slice, so
// that appends reuse memory instead of growing forever.
func (p *partition) compact() {
	if p.head == len(p.entries) {
		p.entries, p.head = p.entries[:0], 0
		return
	}
	if p.head < 1024 || p.head*2 < len(p.entries) {
		return
	}
	n := copy(p.entries, p.entries[p.head:])
	clear(p.entries[n:])
	p.entries, p.head = p.entries[:n], 0
}

// resend is a nacked message's copy waiting to be delivered again.
type resend struct {
	p   *partition
	seq uint64
	msg *message.Message
}

// collectNacks marks acknowledged entries beyond the head, replaces each
// nacked message by a fresh copy — a nacked batch by one message for each of
// its records not done — and appends it to out. Call with mu held.
func (p *partition) collectNacks(ctx context.Context, out []resend) []resend {
	for i := p.head; i < len(p.entries); i++ {
		e := &p.entries[i]
		if e.state != delivered {
			continue
		}
		if isClosed(e.msg.Acked()) {
			e.state = acked
			continue
		}
		if !isClosed(e.msg.Nacked()) {
			continue
		}
		if !p.retry(ctx, e) {
			continue
		}
		e.state = resending
		out = append(out, resend{p: p, seq: p.headSeq + uint64(i-p.head), msg: e.msg})
	}
	return out
}

// retry replaces the nacked message of e by the one to deliver again: a
// copy, or for a record of a batch its own message (ctx is the
// subscriber's). It reports false, marking e acked, for a record its batch's
// handler had finished with. Call with mu held.
func (p *partition) retry(ctx context.Context, e *entry) bool {
	if e.batch == nil {
		e.msg = e.msg.CopyWithContext()
		return true
	}
	b, i := e.batch, e.idx
	e.batch = nil
	if i < b.Done {
		e.state = acked
		return false
	}
	e.msg = b.Records[i].Message(ctx)
	return true
}

// settled reports whether no message of the window is still with the
// consumer: every one was acked, nacked or never delivered. Call with mu
// held.
func (p *partition) settled() bool {
	for i := p.head; i < len(p.entries); i++ {
		e := &p.entries[i]
		if e.state == delivered && !isClosed(e.msg.Acked()) && !isClosed(e.msg.Nacked()) {
			return false
		}
	}
	return true
}

// toCommit returns the offset to commit when acks moved past the last
// commit. Call with mu held.
func (p *partition) toCommit() (kgo.EpochOffset, bool) {
	if p.ackedUpTo <= p.committed {
		return kgo.EpochOffset{}, false
	}
	return kgo.EpochOffset{Epoch: p.ackedEpoch, Offset: p.ackedUpTo}, true
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

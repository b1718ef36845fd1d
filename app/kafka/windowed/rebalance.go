package windowed

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/twmb/franz-go/pkg/kgo"
)

// onRevoked runs before revoked partitions go to another member: it stops
// their delivery, waits up to DrainTimeout for the messages in flight to be
// settled, and commits what was acknowledged. Acks arriving later are ignored.
func (s *Subscriber) onRevoked(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	parts := s.detach(revoked[s.topic])
	if len(parts) == 0 {
		return
	}
	start := time.Now()
	settled := s.drain(parts, start.Add(s.cfg.DrainTimeout))
	if err := s.commit(parts, true); err != nil {
		s.logger.Error("Commit of revoked partitions failed", err, watermill.LogFields{"partitions": ids(parts)})
	}
	fields := watermill.LogFields{"partitions": ids(parts), "waited": time.Since(start).String()}
	if !settled {
		s.logger.Info("Revoked partitions with messages still in flight; they will be redelivered to the new owner", fields)
		return
	}
	s.logger.Debug("Revoked partitions", fields)
}

// onLost runs when the partitions may already belong to another member: a
// commit would be refused and waiting would only delay rejoining, so it just
// stops their delivery. What was not committed is redelivered.
func (s *Subscriber) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	if parts := s.detach(lost[s.topic]); len(parts) > 0 {
		s.logger.Info("Lost partitions", watermill.LogFields{"partitions": ids(parts)})
	}
}

// detach removes the windows of ids from the assignment, stops their
// delivery and resumes their fetching so a later assignment starts unpaused.
func (s *Subscriber) detach(ids []int32) []*partition {
	if len(ids) == 0 {
		// A cooperative member is told of every session's end, with
		// nothing revoked when it keeps its partitions.
		return nil
	}
	s.mu.Lock()
	parts := s.detachLocked(ids, false)
	s.mu.Unlock()
	s.markRevoked(parts)

	s.pauseMu.Lock()
	defer s.pauseMu.Unlock()
	var resume []int32
	for _, p := range parts {
		if p.paused {
			p.paused = false
			resume = append(resume, p.id)
		}
	}
	if len(resume) > 0 {
		s.client.ResumeFetchPartitions(map[string][]int32{s.topic: resume})
	}
	return parts
}

// detachLocked removes the windows of ids, or all of them if all is set.
// Call with s.mu held.
func (s *Subscriber) detachLocked(ids []int32, all bool) []*partition {
	if all {
		ids = slices.Collect(maps.Keys(s.parts))
	}
	parts := make([]*partition, 0, len(ids))
	for _, id := range ids {
		if p, ok := s.parts[id]; ok {
			delete(s.parts, id)
			parts = append(parts, p)
		}
	}
	return parts
}

func (s *Subscriber) markRevoked(parts []*partition) {
	for _, p := range parts {
		p.mu.Lock()
		if !p.revoked {
			p.revoked = true
			close(p.done)
		}
		p.mu.Unlock()
	}
}

// drain waits until no message of parts is still with the consumer, or until
// deadline. It reports whether all were settled.
func (s *Subscriber) drain(parts []*partition, deadline time.Time) bool {
	ticker := time.NewTicker(time.Millisecond)
	defer ticker.Stop()
	for {
		settled := true
		for _, p := range parts {
			p.mu.Lock()
			p.advance()
			settled = settled && p.settled()
			p.mu.Unlock()
		}
		if settled || time.Now().After(deadline) {
			return settled
		}
		<-ticker.C
	}
}

func ids(parts []*partition) []int32 {
	out := make([]int32, len(parts))
	for i, p := range parts {
		out[i] = p.id
	}
	slices.Sort(out)
	return out
}

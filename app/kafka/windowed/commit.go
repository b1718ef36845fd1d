package windowed

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// commitTimeout bounds one commit request.
const commitTimeout = 10 * time.Second

// commitLoop commits the acknowledged prefix of every assigned partition each
// CommitInterval.
func (s *Subscriber) commitLoop() {
	defer s.loops.Done()
	ticker := time.NewTicker(s.cfg.CommitInterval)
	defer ticker.Stop()
	var parts []*partition
	for {
		select {
		case <-s.closing:
			return
		case <-ticker.C:
		}
		parts = s.assigned(parts[:0])
		if err := s.commit(parts, false); err != nil {
			s.logger.Error("Periodic commit failed", err, nil)
		}
		clear(parts)
	}
}

// commit commits, for each of parts, the offset after its contiguous
// acknowledged prefix if that moved since the last commit. Revoked partitions
// are skipped unless final is set: only the revoke itself commits them, once,
// after their in-flight messages settled.
func (s *Subscriber) commit(parts []*partition, final bool) error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()

	offsets := make(map[int32]kgo.EpochOffset)
	for _, p := range parts {
		p.mu.Lock()
		if !p.revoked || final {
			p.advance()
			if o, ok := p.toCommit(); ok {
				offsets[p.id] = o
			}
		}
		p.mu.Unlock()
	}
	if len(offsets) == 0 {
		return nil
	}

	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	var (
		reqErr error
		failed = make(map[int32]error)
	)
	s.client.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{s.topic: offsets},
		func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
			if err != nil {
				reqErr = err
				return
			}
			for _, t := range resp.Topics {
				for _, rp := range t.Partitions {
					if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
						failed[rp.Partition] = err
					}
				}
			}
		})
	if reqErr != nil {
		return fmt.Errorf("commit offsets of %d partitions: %w", len(offsets), reqErr)
	}

	for _, p := range parts {
		o, ok := offsets[p.id]
		if !ok || failed[p.id] != nil {
			continue
		}
		p.mu.Lock()
		p.committed = max(p.committed, o.Offset)
		p.mu.Unlock()
	}
	s.logger.Trace("Committed offsets", watermill.LogFields{"offsets": len(offsets), "final": final})
	if len(failed) > 0 {
		errs := make([]error, 0, len(failed))
		for id, err := range failed {
			errs = append(errs, fmt.Errorf("partition %d: %w", id, err))
		}
		return fmt.Errorf("commit offsets: %w", errors.Join(errs...))
	}
	return nil
}

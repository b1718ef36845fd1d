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

// commitFailureLogEvery bounds how often a run of failing periodic commits
// is logged: its first failure is, then one a minute, then its end.
const commitFailureLogEvery = time.Minute

// commitLoop commits the acknowledged prefix of every assigned partition each
// CommitInterval.
func (s *Subscriber) commitLoop() {
	defer s.loops.Done()
	ticker := time.NewTicker(s.cfg.CommitInterval)
	defer ticker.Stop()
	var (
		parts    []*partition
		failures int
		logged   time.Time
	)
	for {
		select {
		case <-s.closing:
			return
		case <-ticker.C:
		}
		parts = s.assigned(parts[:0])
		err := s.commit(parts, false)
		clear(parts)
		switch {
		case err != nil:
			failures++
			if failures == 1 || time.Since(logged) >= commitFailureLogEvery {
				s.logger.Error("Periodic commit failed", err, watermill.LogFields{"failures": failures})
				logged = time.Now()
			}
		case failures > 0:
			s.logger.Info("Periodic commit succeeded again", watermill.LogFields{"failures": failures})
			failures = 0
		}
	}
}

// commit commits, for each of parts, the offset after its contiguous
// acknowledged prefix if that moved since the last commit, once
// BeforeCommit (if any) succeeded. Revoked partitions
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
	if s.cfg.BeforeCommit != nil {
		ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
		err := s.cfg.BeforeCommit(ctx)
		cancel()
		if err != nil {
			return fmt.Errorf("before committing offsets of %d partitions: %w", len(offsets), err)
		}
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

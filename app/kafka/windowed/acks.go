package windowed

import (
	"time"

	"github.com/ThreeDotsLabs/watermill"
)

// ackLoop collects acks and nacks without a goroutine per message: every
// ackCheckInterval it moves each window's head past the acknowledged prefix
// and pauses or resumes fetching; every nack scan it also looks through the
// whole window for nacked messages to deliver again.
func (s *Subscriber) ackLoop() {
	defer s.loops.Done()
	ticker := time.NewTicker(ackCheckInterval)
	defer ticker.Stop()
	nackScan := min(s.cfg.NackResendSleep/2, 50*time.Millisecond)
	lastScan := time.Now()
	var (
		parts   []*partition
		resends []resend
	)
	for {
		select {
		case <-s.closing:
			return
		case <-ticker.C:
		}
		parts = s.assigned(parts[:0])
		scan := time.Since(lastScan) >= nackScan
		if scan {
			lastScan = time.Now()
		}
		for _, p := range parts {
			p.mu.Lock()
			if !p.revoked {
				p.advance()
				// Ordered partitions deliver their nacked messages again themselves.
				if scan && !s.cfg.Ordered {
					resends = p.collectNacks(s.ctx, resends)
				}
			}
			p.mu.Unlock()
		}
		s.updatePauses(parts)
		if len(resends) > 0 {
			s.queueResends(resends)
			clear(resends)
			resends = resends[:0]
		}
		clear(parts)
	}
}

// assigned appends the windows of the currently assigned partitions to dst.
func (s *Subscriber) assigned(dst []*partition) []*partition {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.parts {
		dst = append(dst, p)
	}
	return dst
}

// updatePauses pauses fetching the partitions whose window is full and
// resumes the ones whose window has room again.
func (s *Subscriber) updatePauses(parts []*partition) {
	s.pauseMu.Lock()
	defer s.pauseMu.Unlock()
	var pause, resume []int32
	for _, p := range parts {
		p.mu.Lock()
		revoked, full := p.revoked, p.load() >= s.cfg.MaxInFlightPerPartition
		p.mu.Unlock()
		switch {
		case revoked:
		case full && !p.paused:
			p.paused = true
			pause = append(pause, p.id)
		case !full && p.paused:
			p.paused = false
			resume = append(resume, p.id)
		}
	}
	if len(pause) > 0 {
		s.client.PauseFetchPartitions(map[string][]int32{s.topic: pause})
		s.logger.Trace("Paused full partitions", watermill.LogFields{"partitions": pause})
	}
	if len(resume) > 0 {
		s.client.ResumeFetchPartitions(map[string][]int32{s.topic: resume})
		s.logger.Trace("Resumed partitions", watermill.LogFields{"partitions": resume})
	}
}

func (s *Subscriber) queueResends(rs []resend) {
	due := time.Now().Add(s.cfg.NackResendSleep)
	s.resendMu.Lock()
	for _, r := range rs {
		s.resends = append(s.resends, resendAt{resend: r, due: due})
	}
	s.resendMu.Unlock()
	select {
	case s.resendReady <- struct{}{}:
	default:
	}
}

// resendLoop delivers nacked messages again once their NackResendSleep has
// passed. The queue is in due order because every entry waits the same time.
func (s *Subscriber) resendLoop() {
	defer s.senders.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.resendMu.Lock()
		var next resendAt
		ready := len(s.resends) > 0
		if ready {
			next = s.resends[0]
		}
		s.resendMu.Unlock()

		if ready {
			if wait := time.Until(next.due); wait > 0 {
				timer.Reset(wait)
				select {
				case <-s.closing:
					return
				case <-timer.C:
				}
			}
			s.resendMu.Lock()
			s.resends[0] = resendAt{}
			s.resends = s.resends[1:]
			s.resendMu.Unlock()
			if !s.redeliver(next.resend) {
				return
			}
			continue
		}
		select {
		case <-s.closing:
			return
		case <-s.resendReady:
		}
	}
}

// redeliver sends a nacked message's copy unless its partition was revoked
// meanwhile. It reports false when the subscriber is closing.
func (s *Subscriber) redeliver(r resend) bool {
	p := r.p
	p.mu.Lock()
	e := p.at(r.seq)
	if p.revoked || e == nil || e.state != resending {
		p.mu.Unlock()
		return true
	}
	e.state = delivered
	p.mu.Unlock()

	select {
	case s.out <- r.msg:
		return true
	case <-p.done:
		s.abandonOne(p, r.seq)
		return true
	case <-s.closing:
		s.abandonOne(p, r.seq)
		return false
	}
}

//go:build chaos

package main

import (
	"fmt"
	"strings"
	"time"
)

// brokerRestart: the broker process is SIGTERMed mid-run and started again
// on the same port and data directory.
func (s *chaosScenario) brokerRestart() {
	simStart := s.startPipeline()
	sleepUntil(simStart.Add(s.exp.duration * 2 / 5))
	raw, _ := s.k.records(s.cfg.Kafka.TopicRaw)
	old := s.proc("broker")
	took, inTime := old.terminate(15 * time.Second)
	if !inTime || old.exitCode() != 0 {
		s.t.Errorf("%s on SIGTERM: exit %v after %s", old.name, old.exitErr, took)
	}
	s.logf("%s stopped at +%s (%d of %d events produced), exit %d in %s", old.name, old.exitedAt.Sub(simStart).Round(time.Millisecond),
		raw, s.c.events, old.exitCode(), took.Round(time.Millisecond))
	s.startBroker()
	back := time.Now()
	var worst time.Duration
	var detail []string
	for _, group := range s.groups() {
		d, how, err := s.waitAdvance(group, s.snapshot(group), back, 2*time.Minute, 1, nil)
		if err != nil {
			s.t.Errorf("group %s made no progress after the broker came back: %v", group, err)
			continue
		}
		worst = max(worst, d)
		detail = append(detail, fmt.Sprintf("%s %.1fs (%s)", group, d.Seconds(), how))
	}
	s.row.recovery = worst.Round(100 * time.Millisecond).String()
	s.note("broker SIGTERM exit %d in %.1fs at %d/%d produced; after restart: %s", old.exitCode(), took.Seconds(), raw, s.c.events, strings.Join(detail, ", "))
	s.logf("broker back; %s", strings.Join(detail, ", "))
}

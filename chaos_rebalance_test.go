//go:build chaos

package main

import (
	"fmt"
	"time"
)

// rebalance: a second persist joins the group mid-stream and later leaves
// with SIGTERM.
func (s *chaosScenario) rebalance() {
	simStart := s.startPipeline()
	group := s.cfg.Kafka.GroupDB
	window := s.exp.duration

	sleepUntil(simStart.Add(window / 4))
	second := s.startService("persist")
	if trace, err := s.waitGroup(group, 2, time.Minute); err != nil {
		s.t.Errorf("group %s never stable with 2 members: %v (%s)", group, err, trace)
	} else {
		s.logf("after %s joined, group %s: %s", second.name, group, trace)
	}
	join, how, err := s.waitAdvance(group, s.snapshot(group), second.started, time.Minute, 2, nil)
	if err != nil {
		s.t.Errorf("no progress after %s joined: %v", second.name, err)
	}
	s.logf("%s joined at +%s; group stable and committing after %s (%s)", second.name, second.started.Sub(simStart).Round(time.Millisecond), join.Round(time.Millisecond), how)

	sleepUntil(simStart.Add(window * 2 / 3))
	leaving := time.Now()
	took, inTime := second.terminate(chaosShutdownBound)
	if !inTime || second.exitCode() != 0 {
		s.t.Errorf("%s on SIGTERM: exit %v after %s (want 0 within %s)", second.name, second.exitErr, took, chaosShutdownBound)
	}
	if trace, err := s.waitGroup(group, 1, 2*time.Minute); err != nil {
		s.t.Errorf("group %s never stable with 1 member: %v (%s)", group, err, trace)
	} else {
		s.logf("after %s left, group %s: %s", second.name, group, trace)
	}
	leave, how2, err := s.waitAdvance(group, s.snapshot(group), leaving, time.Minute, 1, nil)
	if err != nil {
		s.t.Errorf("no progress after %s left: %v", second.name, err)
	}
	s.logf("%s left at +%s (SIGTERM, exit %d in %s); group committing again after %s (%s)", second.name,
		leaving.Sub(simStart).Round(time.Millisecond), second.exitCode(), took.Round(time.Millisecond), leave.Round(time.Millisecond), how2)
	s.note("join: stable and committing %.1fs after start; leave: SIGTERM exit %d in %.1fs, committing again %.1fs later",
		join.Seconds(), second.exitCode(), took.Seconds(), leave.Seconds())
	s.row.recovery = fmt.Sprintf("join %.1fs, leave %.1fs", join.Seconds(), leave.Seconds())
}

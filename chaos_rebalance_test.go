//go:build chaos

package main

import (
	"fmt"
	"strings"
	"time"
)

// rebalance: a second persist and a second detect join their groups
// mid-stream and later leave with SIGTERM. The partitions the second detect
// took go back to the first, which held their customers' state before: it
// must rebuild that state, not evaluate against the rates from before
// (the anomalies check it).
func (s *chaosScenario) rebalance() {
	simStart := s.startPipeline()
	window := s.exp.duration
	roles := []string{"persist", "detect"}

	firstDetect := s.proc("detect")
	sleepUntil(simStart.Add(window / 4))
	second := map[string]*chaosProc{}
	for _, role := range roles {
		second[role] = s.startService(role)
	}
	var notes []string
	for _, role := range roles {
		group, p := s.groupFor(role), second[role]
		if trace, err := s.waitGroup(group, 2, time.Minute); err != nil {
			s.t.Errorf("group %s never stable with 2 members: %v (%s)", group, err, trace)
		} else {
			s.logf("after %s joined, group %s: %s", p.name, group, trace)
		}
		join, how, err := s.waitAdvance(group, s.snapshot(group), p.started, time.Minute, 2, nil)
		if err != nil {
			s.t.Errorf("no progress after %s joined: %v", p.name, err)
		}
		s.logf("%s joined at +%s; group stable and committing after %s (%s)", p.name, p.started.Sub(simStart).Round(time.Millisecond), join.Round(time.Millisecond), how)
		notes = append(notes, fmt.Sprintf("%s join %.1fs", role, join.Seconds()))
	}

	sleepUntil(simStart.Add(window * 2 / 3))
	// The second detect had partitions and records of them; the first one's
	// rebuilds are counted from here.
	if n, err := scrapeMetric(second["detect"].metrics, "heartbeat_messages_consumed_total"); err != nil || n == 0 {
		s.t.Errorf("%s consumed no record before leaving (%v, %v): no partition moved", second["detect"].name, n, err)
	}
	lookups, err := scrapeMetric(firstDetect.metrics, "heartbeat_detector_state_lookups_total")
	if err != nil {
		s.t.Errorf("%s state lookups: %v", firstDetect.name, err)
	}
	// The customers the second detect rebuilt when it took its partitions.
	moved, err := scrapeMetric(second["detect"].metrics, "heartbeat_detector_state_lookups_total")
	if err != nil || moved == 0 {
		s.t.Errorf("%s rebuilt no customer's state (%v, %v): no partition moved", second["detect"].name, moved, err)
	}
	leaving := time.Now()
	for _, role := range roles {
		p := second[role]
		took, inTime := p.terminate(chaosShutdownBound)
		if !inTime || p.exitCode() != 0 {
			s.t.Errorf("%s on SIGTERM: exit %v after %s (want 0 within %s)", p.name, p.exitErr, took, chaosShutdownBound)
		}
		s.note("%s left: SIGTERM exit %d in %.1fs", p.name, p.exitCode(), took.Seconds())
	}
	for _, role := range roles {
		group, p := s.groupFor(role), second[role]
		if trace, err := s.waitGroup(group, 1, 2*time.Minute); err != nil {
			s.t.Errorf("group %s never stable with 1 member: %v (%s)", group, err, trace)
		} else {
			s.logf("after %s left, group %s: %s", p.name, group, trace)
		}
		leave, how, err := s.waitAdvance(group, s.snapshot(group), leaving, time.Minute, 1, nil)
		if err != nil {
			s.t.Errorf("no progress after %s left: %v", p.name, err)
		}
		s.logf("%s left at +%s; group committing again after %s (%s)", p.name,
			leaving.Sub(simStart).Round(time.Millisecond), leave.Round(time.Millisecond), how)
		notes = append(notes, fmt.Sprintf("%s leave %.1fs", role, leave.Seconds()))
	}
	// The partitions the second detect had came back to the first, which
	// held their customers' state from before: it rebuilds them — at least
	// half as many as the second one did (every customer sends again in
	// the third of the stream left).
	var after float64
	if err := poll(30*time.Second, 100*time.Millisecond, func() (bool, error) {
		n, err := scrapeMetric(firstDetect.metrics, "heartbeat_detector_state_lookups_total")
		after = n
		return err == nil && n-lookups >= moved/2, nil
	}); err != nil {
		s.t.Errorf("%s rebuilt %.0f customers' state after the partitions came back, the second detect %.0f when it took them: it kept what it held before",
			firstDetect.name, after-lookups, moved)
	}
	s.note("%s rebuilt %.0f customers' state after the partitions came back (%s %.0f when it took them)", firstDetect.name, after-lookups, second["detect"].name, moved)
	s.note("stable and committing after: %s", strings.Join(notes, ", "))
	s.row.recovery = strings.Join(notes, ", ")
}

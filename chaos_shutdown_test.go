//go:build chaos

package main

import (
	"context"
	"time"
)

// shutdown: persist is SIGTERMed while the raw topic holds a large backlog.
func (s *chaosScenario) shutdown() {
	s.startService("simulate")
	half := int64(s.c.events / 2)
	if err := poll(2*time.Minute, 50*time.Millisecond, func() (bool, error) {
		n, err := s.k.records(s.cfg.Kafka.TopicRaw)
		return n >= half, err
	}); err != nil {
		s.t.Fatalf("the simulator did not produce half the events: %v", err)
	}
	persist := s.startService("persist")
	s.startService("detect")
	// Let persist get going on the backlog, then stop it.
	first := int64(max(len(s.exp.valid)/20, 1))
	if err := poll(2*time.Minute, 20*time.Millisecond, func() (bool, error) {
		n, err := s.storedRows(context.Background())
		return n >= first, err
	}); err != nil {
		s.t.Fatalf("persist stored nothing: %v", err)
	}
	backlog, _ := s.k.lag(s.cfg.Kafka.GroupDB, s.cfg.Kafka.TopicRaw)
	took, inTime := persist.terminate(chaosShutdownBound)
	stored, _ := s.storedRows(context.Background())
	if !inTime || persist.exitCode() != 0 {
		s.t.Errorf("%s on SIGTERM with a backlog of %d: exit %v after %s (want exit 0 within %s)\n%s",
			persist.name, backlog, persist.exitErr, took.Round(time.Millisecond), chaosShutdownBound, persist.tail(20))
	}
	s.logf("%s SIGTERMed with a backlog of %d records: exit %d in %s (%d rows stored)", persist.name, backlog, persist.exitCode(), took.Round(time.Millisecond), stored)
	snap, gone := s.snapshot(s.cfg.Kafka.GroupDB), s.members(s.cfg.Kafka.GroupDB)
	p := s.start("persist")
	d, how, err := s.waitAdvance(s.cfg.Kafka.GroupDB, snap, p.started, 2*time.Minute, 1, gone)
	if err != nil {
		s.t.Errorf("%s made no progress: %v", p.name, err)
	}
	s.row.recovery = d.Round(100 * time.Millisecond).String()
	s.note("persist SIGTERMed with a backlog of %d records: exit %d in %.1fs; restarted, %s after %.1fs", backlog, persist.exitCode(), took.Seconds(), how, d.Seconds())
}

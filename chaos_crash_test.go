//go:build chaos

package main

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// crash: persist and detect are each SIGKILLed at three random moments, one
// in each third of the production, and restarted right away. A kill waits
// until the previous restart has recovered (its group stable with one member
// and its committed offsets advancing), so that every kill hits a consumer
// that is consuming; a kill that comes after the simulator finished is noted.
// The recovery of a kill is the time from the restart until the group's
// committed offsets advance again.
func (s *chaosScenario) crash() {
	simStart := s.startPipeline()
	window := s.exp.duration
	type result struct {
		role   string
		worst  time.Duration
		detail []string
	}
	results := make(chan result, 2)
	for i, role := range []string{"persist", "detect"} {
		rng := rand.New(rand.NewPCG(s.c.randSeed, uint64(i+1)))
		go func() {
			r := result{role: role}
			defer func() { results <- r }()
			seg := window / 3
			for k := range 3 {
				at := simStart.Add(time.Duration(k)*seg + time.Duration((0.1+0.8*rng.Float64())*float64(seg)))
				if late := time.Now().Add(time.Duration((0.2 + 1.8*rng.Float64()) * float64(time.Second))); k > 0 && late.After(at) {
					at = late
				}
				sleepUntil(at)
				old := s.proc(role)
				producing := !s.simDone()
				s.kill(old)
				group := s.groupFor(role)
				snap, gone := s.snapshot(group), s.members(group)
				p := s.start(role)
				when := old.exitedAt.Sub(simStart)
				d, how, err := s.waitAdvance(group, snap, p.started, 90*time.Second, 1, gone)
				after := ""
				if !producing {
					after = ", after the simulator finished"
				}
				if err != nil {
					s.t.Errorf("%s made no progress after kill %d at +%s%s: %v", role, k+1, when.Round(time.Millisecond), after, err)
					r.detail = append(r.detail, fmt.Sprintf("kill %d at +%.1fs%s: no progress", k+1, when.Seconds(), after))
					return
				}
				r.worst = max(r.worst, d)
				r.detail = append(r.detail, fmt.Sprintf("kill %d at +%.1fs%s: %.1fs", k+1, when.Seconds(), after, d.Seconds()))
				s.logf("kill -9 %s at +%s%s; %s recovered in %s (%s)", old.name, when.Round(time.Millisecond), after, p.name, d.Round(time.Millisecond), how)
			}
		}()
	}
	var worst time.Duration
	for range 2 {
		r := <-results
		worst = max(worst, r.worst)
		s.note("%s SIGKILL → recovery: %s", r.role, strings.Join(r.detail, "; "))
	}
	s.row.recovery = "max " + worst.Round(100*time.Millisecond).String()
}

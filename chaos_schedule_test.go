//go:build chaos

package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"time"
)

const (
	// chaosSessionTimeout is the consumers' session timeout (app/kafka.go).
	chaosSessionTimeout = 10 * time.Second
	// chaosRebalanceTimeout is their rebalance timeout (franz-go's default).
	chaosRebalanceTimeout = 60 * time.Second
	// chaosScheduleEvents is how many faults a kill schedule holds.
	chaosScheduleEvents = 7
	// chaosParkedWait bounds the wait for a restarted member's join to be
	// seen waiting in a rebalance, before it is killed anyway.
	chaosParkedWait = chaosSessionTimeout + 2*time.Second
	// keeperExpiredLog is the broker's WARN line for a member it removed.
	keeperExpiredLog = "consumer group member expired"
)

// chaosSlot is one replica of persist or detect: the process running in it
// now, restarted in place after a kill. A static slot gives every process
// it runs the same KAFKA_GROUP_INSTANCE_ID.
type chaosSlot struct {
	role, instance string
	proc           *chaosProc
}

// killSchedule: persist and detect are SIGKILLed on a random schedule drawn
// from the scenario's seed: gaps between faults of 0.5 s to twice the
// session timeout, and no waiting for recovery in between. The faults:
//
//   - kill: a random replica of a role, restarted at once;
//   - double kill: a replica killed and restarted, and the restarted process
//     killed again while its JoinGroup waits in the rebalance (for the
//     first one's session to expire), then restarted (the stall of issue
//     11: kfake could keep the second one in the group for good);
//   - scale up: a second replica of a role, static (with an instance id) or
//     not at random, so that at some point two persist and two detect run
//     at once; and, sometimes, scale down: that replica killed for good.
//
// Within the session timeout plus the rebalance timeout plus a margin after
// the last start, each group must hold exactly the live processes, owning
// every partition between them, and have committed up to the end offsets;
// then the usual end state (verify).
func (s *chaosScenario) killSchedule() {
	rng := rand.New(rand.NewPCG(s.seed, 0x6b696c6c))
	plan := chaosPlan(rng)
	s.logf("kill schedule, seed %d: %s", s.seed, strings.Join(plan, ", "))

	slots := map[string][]*chaosSlot{}
	var lastStart time.Time
	run := func(sl *chaosSlot) {
		var extra map[string]string
		if sl.instance != "" {
			extra = map[string]string{"KAFKA_GROUP_INSTANCE_ID": sl.instance}
		}
		sl.proc = s.startWith(sl.role, extra)
		lastStart = sl.proc.started
	}
	for _, role := range []string{"persist", "detect"} {
		sl := &chaosSlot{role: role}
		run(sl)
		slots[role] = []*chaosSlot{sl}
	}
	// The fault report: group dumps when anything failed.
	s.t.Cleanup(func() {
		if s.t.Failed() {
			for _, g := range s.groups() {
				s.t.Logf("group %s at the end:\n%s", g, s.groupReport(g))
			}
		}
	})
	simStart := s.startService("simulate").started

	var kills, parkedKills, notParked int
	var done []string
	for _, step := range plan {
		gap := time.Duration(500+rng.Int64N(int64(2*chaosSessionTimeout/time.Millisecond)-500)) * time.Millisecond
		time.Sleep(gap) // the schedule itself: the gap is the fault's timing
		verb, role, _ := strings.Cut(step, " ")
		group := s.groupFor(role)
		at := time.Since(simStart).Seconds()
		switch verb {
		case "kill":
			sl := slots[role][rng.IntN(len(slots[role]))]
			old := sl.proc
			s.kill(old)
			kills++
			run(sl)
			done = append(done, fmt.Sprintf("+%.1fs kill %s", at, old.name))
		case "double-kill":
			var dynamic []*chaosSlot
			for _, sl := range slots[role] {
				if sl.instance == "" {
					dynamic = append(dynamic, sl)
				}
			}
			sl := dynamic[rng.IntN(len(dynamic))]
			first := sl.proc
			s.kill(first)
			run(sl)
			second := sl.proc
			parked, waited := s.waitParked(group, second)
			s.kill(second)
			kills += 2
			how := fmt.Sprintf("its join waiting %.1fs after its start", waited.Seconds())
			if parked {
				parkedKills++
			} else {
				notParked++
				how = fmt.Sprintf("its join not seen waiting within %s", chaosParkedWait)
			}
			run(sl)
			done = append(done, fmt.Sprintf("+%.1fs kill %s, kill %s (%s)", at, first.name, second.name, how))
		case "scale-up":
			sl := &chaosSlot{role: role}
			if rng.IntN(2) == 0 {
				sl.instance = fmt.Sprintf("chaos-%s-b", role)
			}
			run(sl)
			slots[role] = append(slots[role], sl)
			kind := "dynamic"
			if sl.instance != "" {
				kind = "static " + sl.instance
			}
			done = append(done, fmt.Sprintf("+%.1fs start %s (%s)", at, sl.proc.name, kind))
		case "scale-down":
			sl := slots[role][len(slots[role])-1]
			s.kill(sl.proc)
			kills++
			slots[role] = slots[role][:len(slots[role])-1]
			done = append(done, fmt.Sprintf("+%.1fs kill %s for good", at, sl.proc.name))
		}
		s.logf("%s", done[len(done)-1])
	}

	// Kafka's bound for a group to be whole again after the last start.
	bound := chaosSessionTimeout + chaosRebalanceTimeout + 20*time.Second
	var worst time.Duration
	var detail []string
	for _, role := range []string{"persist", "detect"} {
		group := s.groupFor(role)
		live := map[string]bool{}
		for _, sl := range slots[role] {
			live[sl.proc.clientID()] = true
		}
		var last string
		err := poll(time.Until(lastStart.Add(bound)), 25*time.Millisecond, func() (bool, error) {
			ok, why := s.groupWhole(group, live)
			last = why
			return ok, nil
		})
		took := time.Since(lastStart)
		if err != nil {
			s.t.Errorf("group %s not whole within %s of the last start (session timeout + rebalance timeout + 20 s): %s\n%s",
				group, bound, last, s.groupReport(group))
			detail = append(detail, fmt.Sprintf("%s NOT whole", group))
			continue
		}
		worst = max(worst, took)
		detail = append(detail, fmt.Sprintf("%s whole %.1fs after the last start, with %d live members", group, took.Seconds(), len(live)))
	}
	// Within the same bound, both groups have consumed and committed
	// everything (verify then checks what they stored).
	var lags string
	if err := poll(time.Until(lastStart.Add(bound)), 100*time.Millisecond, func() (bool, error) {
		lags = ""
		for _, g := range s.groups() {
			lag, err := s.k.lag(g, s.cfg.Kafka.TopicRaw)
			if err != nil {
				return false, err
			}
			lags += fmt.Sprintf(" %s %d", g, lag)
			if lag != 0 {
				return false, nil
			}
		}
		return s.simDone(), nil
	}); err != nil {
		s.t.Errorf("committed offsets not at the end offsets within %s of the last start (lag:%s): %v", bound, lags, err)
	} else {
		detail = append(detail, fmt.Sprintf("everything committed %.1fs after the last start", time.Since(lastStart).Seconds()))
	}
	expired := chaosCount(s.proc("broker").logPath, keeperExpiredLog)
	s.row.recovery = fmt.Sprintf("whole %.1fs after last start", worst.Seconds())
	s.note("seed %d: %d kills (%d while the restarted member's join waited, %d not seen waiting); %s; the broker expired %d members that kfake kept",
		s.seed, kills, parkedKills, notParked, strings.Join(detail, ", "), expired)
	s.note("schedule: %s", strings.Join(done, "; "))
}

// chaosPlan draws a kill schedule: a double kill and a scale-up for each
// role, more kills and double kills up to chaosScheduleEvents, in random
// order, and for each role at random a scale-down after both scale-ups
// (so that two persist and two detect run together for a while).
func chaosPlan(rng *rand.Rand) []string {
	plan := []string{"double-kill persist", "double-kill detect", "scale-up persist", "scale-up detect"}
	extra := []string{"kill persist", "kill detect", "double-kill persist", "double-kill detect"}
	for len(plan) < chaosScheduleEvents {
		plan = append(plan, extra[rng.IntN(len(extra))])
	}
	rng.Shuffle(len(plan), func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })
	both := max(slices.Index(plan, "scale-up persist"), slices.Index(plan, "scale-up detect"))
	for _, role := range []string{"persist", "detect"} {
		if rng.IntN(2) == 0 {
			at := both + 1 + rng.IntN(len(plan)-both)
			plan = slices.Insert(plan, at, "scale-down "+role)
		}
	}
	return plan
}

// waitParked waits until p's consumer is a member of group while the group
// is in PreparingRebalance: its JoinGroup was accepted and waits for the
// rebalance to complete. It reports whether it saw that, and after how long
// since p started.
func (s *chaosScenario) waitParked(group string, p *chaosProc) (bool, time.Duration) {
	err := poll(chaosParkedWait, 5*time.Millisecond, func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		dg, err := s.k.adm.DescribeGroups(ctx, group)
		if err != nil {
			return false, err
		}
		g := dg[group]
		if g.State != "PreparingRebalance" {
			return false, nil
		}
		for _, m := range g.Members {
			if m.ClientID == p.clientID() {
				return true, nil
			}
		}
		return false, nil
	})
	return err == nil, time.Since(p.started)
}

// groupWhole reports whether group is Stable with exactly the members of
// the live processes (by client id), each partition of the raw topic
// assigned to exactly one of them; else what is wrong.
func (s *chaosScenario) groupWhole(group string, live map[string]bool) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	dg, err := s.k.adm.DescribeGroups(ctx, group)
	if err != nil {
		return false, err.Error()
	}
	g := dg[group]
	if g.Err != nil {
		return false, g.Err.Error()
	}
	if g.State != "Stable" {
		return false, "state " + g.State
	}
	owners := map[int32][]string{}
	seen := map[string]bool{}
	var dead []string
	for _, m := range g.Members {
		seen[m.ClientID] = true
		if !live[m.ClientID] {
			dead = append(dead, fmt.Sprintf("%s (%s)", m.ClientID, m.MemberID))
		}
		if c, ok := m.Assigned.AsConsumer(); ok {
			for _, t := range c.Topics {
				if t.Topic == s.cfg.Kafka.TopicRaw {
					for _, p := range t.Partitions {
						owners[p] = append(owners[p], m.ClientID)
					}
				}
			}
		}
	}
	var missing []string
	for name := range live {
		if !seen[name] {
			missing = append(missing, name)
		}
	}
	var wrong []string
	for p := range s.cfg.Kafka.PartitionsRaw {
		if len(owners[p]) != 1 {
			wrong = append(wrong, fmt.Sprintf("p%d owned by %v", p, owners[p]))
		}
	}
	if len(dead) > 0 || len(missing) > 0 || len(wrong) > 0 {
		slices.Sort(dead)
		slices.Sort(missing)
		return false, fmt.Sprintf("members of dead processes %v, live processes not members %v, partitions %v", dead, missing, wrong)
	}
	return true, ""
}

// groupReport prints group as DescribeGroups shows it, and its committed
// offsets against the raw topic's end offsets.
func (s *chaosScenario) groupReport(group string) string {
	var b strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	dg, err := s.k.adm.DescribeGroups(ctx, group)
	if err != nil {
		fmt.Fprintf(&b, "  DescribeGroups: %v\n", err)
	} else {
		g := dg[group]
		fmt.Fprintf(&b, "  state %s, protocol %s, %d members (err %v)\n", g.State, g.Protocol, len(g.Members), g.Err)
		for _, m := range g.Members {
			instance := "-"
			if m.InstanceID != nil {
				instance = *m.InstanceID
			}
			var parts []int32
			if c, ok := m.Assigned.AsConsumer(); ok {
				for _, t := range c.Topics {
					parts = append(parts, t.Partitions...)
				}
			}
			slices.Sort(parts)
			fmt.Fprintf(&b, "  member %s client %s host %s instance %s partitions %v\n", m.MemberID, m.ClientID, m.ClientHost, instance, parts)
		}
	}
	ends, err := s.k.offsets(s.cfg.Kafka.TopicRaw, true)
	com, cerr := s.k.committed(group, s.cfg.Kafka.TopicRaw)
	if err != nil || cerr != nil {
		fmt.Fprintf(&b, "  offsets: %v %v\n", err, cerr)
		return b.String()
	}
	b.WriteString("  committed/end by partition:")
	for p := range s.cfg.Kafka.PartitionsRaw {
		mark := ""
		if com[p] != ends[p] {
			mark = "*"
		}
		fmt.Fprintf(&b, " p%d %d/%d%s", p, com[p], ends[p], mark)
	}
	b.WriteString("\n")
	return b.String()
}

// chaosCount counts the lines of the file at path that contain text.
func chaosCount(path, text string) int {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return strings.Count(string(raw), text)
}

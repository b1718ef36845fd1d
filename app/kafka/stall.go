package kafka

import (
	"cmp"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/heartbeat/heartbeat/app/telemetry"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
)

// groupStalls follows one consumer group's committed offsets, read with its
// lag every few seconds, and reports a stall: a partition that has records
// to consume and whose committed offset has not moved for the stall bound.
// It is reported whatever holds the partition — a member that stopped
// committing, a member that died and is still in the group, or no member at
// all (the consumers stopped) — because in each case the records wait.
// A rebalance moves partitions within seconds and is not one.
type groupStalls struct {
	group string
	after time.Duration
	log   *slog.Logger
	// health gets the group's stall (check "consumer group G") and a
	// group whose progress cannot be read (check "consumer group G progress").
	health  *telemetry.Health
	stalled prometheus.Gauge

	parts map[topicPartition]*partitionProgress
	// current is the stall being reported, nil when there is none.
	current []stalledPartition
	// stallStart is when the current stall was first reported.
	stallStart time.Time

	lastRead   time.Time // last successful read of the group
	unreadable bool      // an unreadable spell is being reported
}

type topicPartition struct {
	topic     string
	partition int32
}

type partitionProgress struct {
	commit int64     // committed offset last seen (-1: none)
	since  time.Time // when it last moved, or the partition last had nothing to consume
}

// stalledPartition is one partition of a stall.
type stalledPartition struct {
	topicPartition
	lag   int64
	since time.Time
	owner string
}

func newGroupStalls(group string, after time.Duration, log *slog.Logger, health *telemetry.Health, stalled prometheus.Gauge, now time.Time) *groupStalls {
	stalled.Set(0)
	return &groupStalls{group: group, after: after, log: log, health: health, stalled: stalled,
		parts: map[topicPartition]*partitionProgress{}, lastRead: now}
}

// observe takes one read of the group's lag made at now.
func (g *groupStalls) observe(l kadm.DescribedGroupLag, now time.Time) {
	if err := l.Error(); err != nil {
		g.unread(err, now)
		return
	}
	g.readAgain(now)
	var stalled []stalledPartition
	seen := make(map[topicPartition]bool, len(g.parts))
	for topic, ps := range l.Lag {
		for p, m := range ps {
			if m.Err != nil {
				// A partition whose lag is unknown keeps its last state:
				// neither a stall nor progress.
				seen[topicPartition{topic, p}] = true
				continue
			}
			key := topicPartition{topic, p}
			seen[key] = true
			pp, ok := g.parts[key]
			if !ok {
				pp = &partitionProgress{commit: m.Commit.At, since: now}
				g.parts[key] = pp
			}
			if m.Lag <= 0 || m.Commit.At != pp.commit {
				pp.commit, pp.since = m.Commit.At, now
				continue
			}
			if now.Sub(pp.since) >= g.after {
				stalled = append(stalled, stalledPartition{topicPartition: key, lag: m.Lag, since: pp.since, owner: owner(m.Member, l.State)})
			}
		}
	}
	for key := range g.parts {
		if !seen[key] {
			delete(g.parts, key)
		}
	}
	slices.SortFunc(stalled, func(a, b stalledPartition) int {
		return cmp.Or(cmp.Compare(a.topic, b.topic), cmp.Compare(a.partition, b.partition))
	})
	g.report(stalled, l.State, now)
}

// report logs a stall when it starts or its partitions change (WARN) and
// when it ends (INFO), and keeps the gauge and the health reason current.
func (g *groupStalls) report(stalled []stalledPartition, state string, now time.Time) {
	check := "consumer group " + g.group
	g.stalled.Set(float64(len(stalled)))
	if len(stalled) == 0 {
		if g.current != nil {
			g.log.Info("consumer group progressing again", "group", g.group,
				"stalled_for", now.Sub(g.stallStart).Round(time.Second))
			g.health.Set(check, "")
			g.current = nil
		}
		return
	}
	if g.current == nil {
		g.stallStart = now
	}
	var lag int64
	oldest := now
	for _, s := range stalled {
		lag += s.lag
		if s.since.Before(oldest) {
			oldest = s.since
		}
	}
	parts := partitionList(stalled)
	owners := ownerList(stalled)
	idle := now.Sub(oldest).Round(time.Second)
	if !samePartitions(g.current, stalled) {
		g.log.Warn("consumer group stalled: records waiting and no committed progress",
			"group", g.group, "state", state, "partitions", parts, "lag", lag,
			"without_progress", idle, "owners", owners)
	}
	g.current = stalled
	g.health.Set(check, fmt.Sprintf("consumer group %s (state %s) stalled: partitions %s have %d records to consume and no committed progress for %s (STALL_AFTER %s); owners: %s",
		g.group, state, parts, lag, idle, g.after, owners))
}

// unread notes a failed read; one that lasts the stall bound is reported,
// since a stall could hide behind it.
func (g *groupStalls) unread(err error, now time.Time) {
	if now.Sub(g.lastRead) < g.after {
		return
	}
	if !g.unreadable {
		g.log.Warn("consumer group progress cannot be read", "group", g.group,
			"for", now.Sub(g.lastRead).Round(time.Second), "err", err)
		g.unreadable = true
	}
	g.health.Set("consumer group "+g.group+" progress", fmt.Sprintf("the progress of consumer group %s cannot be read for %s: %v",
		g.group, now.Sub(g.lastRead).Round(time.Second), err))
}

func (g *groupStalls) readAgain(now time.Time) {
	if g.unreadable {
		g.log.Info("consumer group progress readable again", "group", g.group)
		g.health.Set("consumer group "+g.group+" progress", "")
		g.unreadable = false
	}
	g.lastRead = now
}

// owner names the member a partition is assigned to.
func owner(m *kadm.DescribedGroupMember, state string) string {
	if m == nil {
		return "no member (group " + state + ")"
	}
	s := "member " + m.MemberID
	if m.InstanceID != nil {
		s += " instance " + *m.InstanceID
	}
	return s + " (client " + m.ClientID + ", host " + m.ClientHost + ")"
}

// partitionList is "topic:1,2,5; other:0".
func partitionList(ps []stalledPartition) string {
	var b strings.Builder
	for i, p := range ps {
		switch {
		case i == 0:
			b.WriteString(p.topic + ":")
		case ps[i-1].topic != p.topic:
			b.WriteString("; " + p.topic + ":")
		default:
			b.WriteString(",")
		}
		b.WriteString(strconv.Itoa(int(p.partition)))
	}
	return b.String()
}

// ownerList is "topic:1,2 → member … (…); topic:5 → no member (group Empty)".
func ownerList(ps []stalledPartition) string {
	byOwner := map[string][]stalledPartition{}
	var order []string
	for _, p := range ps {
		if _, ok := byOwner[p.owner]; !ok {
			order = append(order, p.owner)
		}
		byOwner[p.owner] = append(byOwner[p.owner], p)
	}
	out := make([]string, len(order))
	for i, o := range order {
		out[i] = partitionList(byOwner[o]) + " → " + o
	}
	return strings.Join(out, "; ")
}

func samePartitions(a, b []stalledPartition) bool {
	return slices.EqualFunc(a, b, func(x, y stalledPartition) bool {
		return x.topicPartition == y.topicPartition && x.owner == y.owner
	})
}

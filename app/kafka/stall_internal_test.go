package kafka

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/heartbeat/heartbeat/app/telemetry"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
)

// TestGroupStallsCases drives the stall rule through reads a broker could
// give, 5 s apart, with a 60 s bound: which ones are a stall, and what the
// operator is told.
func TestGroupStallsCases(t *testing.T) {
	const topic = "events.raw.v1"
	memberA := &kadm.DescribedGroupMember{MemberID: "a-1", ClientID: "heartbeat", ClientHost: "/10.0.0.1"}
	memberB := &kadm.DescribedGroupMember{MemberID: "b-1", ClientID: "heartbeat", ClientHost: "/10.0.0.2"}
	type part struct {
		commit, lag int64
		member      *kadm.DescribedGroupMember
		err         error
	}
	read := func(state string, parts map[int32]part) kadm.DescribedGroupLag {
		l := kadm.DescribedGroupLag{Group: "g", State: state, Lag: kadm.GroupLag{topic: {}}}
		for p, pt := range parts {
			m := kadm.GroupMemberLag{Member: pt.member, Topic: topic, Partition: p, Lag: pt.lag, Err: pt.err}
			m.Commit.At = pt.commit
			l.Lag[topic][p] = m
		}
		return l
	}
	// reads returns a read per step (5 s each) from f(step).
	reads := func(n int, f func(step int) kadm.DescribedGroupLag) []kadm.DescribedGroupLag {
		out := make([]kadm.DescribedGroupLag, n)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		reads []kadm.DescribedGroupLag
		// want is the reason's expected parts; empty: healthy at the end.
		want     []string
		stalled  float64
		warnings int
	}{
		{
			name: "lag with the commit moving every read is progress",
			reads: reads(40, func(i int) kadm.DescribedGroupLag {
				return read("Stable", map[int32]part{0: {commit: int64(100 * i), lag: 5000, member: memberA}})
			}),
		},
		{
			name: "a rebalance: lag and no commit for 15 s, then the new owner commits",
			reads: reads(40, func(i int) kadm.DescribedGroupLag {
				commit := int64(100)
				if i > 3 {
					commit = int64(100 * i)
				}
				owner, state := memberA, "Stable"
				switch {
				case i >= 1 && i <= 3:
					owner, state = nil, "PreparingRebalance"
				case i > 3:
					owner = memberB
				}
				return read(state, map[int32]part{0: {commit: commit, lag: 300, member: owner}})
			}),
		},
		{
			name: "idle for long, then records arrive and are consumed at once",
			reads: reads(40, func(i int) kadm.DescribedGroupLag {
				if i == 39 {
					return read("Stable", map[int32]part{0: {commit: 50, lag: 3, member: memberA}})
				}
				return read("Stable", map[int32]part{0: {commit: 50, lag: 0, member: memberA}})
			}),
		},
		{
			name: "a member that stopped committing: only its partition is named, with it",
			reads: reads(20, func(i int) kadm.DescribedGroupLag {
				return read("Stable", map[int32]part{
					0: {commit: int64(10 * i), lag: 20, member: memberA},
					1: {commit: 7, lag: 20 + int64(i), member: memberB},
				})
			}),
			want:     []string{"consumer group g (state Stable) stalled", "partitions events.raw.v1:1 have 39 records", "owners: events.raw.v1:1 → member b-1 (client heartbeat, host /10.0.0.2)", "no committed progress for 1m35s"},
			stalled:  1,
			warnings: 1,
		},
		{
			name: "no member at all while records arrive",
			reads: reads(20, func(i int) kadm.DescribedGroupLag {
				return read("Empty", map[int32]part{0: {commit: 7, lag: int64(i + 1)}, 1: {commit: 9, lag: 4}})
			}),
			want:     []string{"(state Empty) stalled", "partitions events.raw.v1:0,1 have 24 records", "owners: events.raw.v1:0,1 → no member (group Empty)"},
			stalled:  2,
			warnings: 1,
		},
		{
			name: "a partition whose lag cannot be read is neither a stall nor progress",
			reads: reads(20, func(i int) kadm.DescribedGroupLag {
				if i > 2 {
					return read("Stable", map[int32]part{0: {commit: -1, lag: -1, member: memberA, err: errors.New("NOT_LEADER_FOR_PARTITION")}})
				}
				return read("Stable", map[int32]part{0: {commit: int64(i), lag: 9, member: memberA}})
			}),
		},
		{
			name: "the group cannot be read for longer than the bound",
			reads: reads(20, func(i int) kadm.DescribedGroupLag {
				return kadm.DescribedGroupLag{Group: "g", DescribeErr: errors.New("COORDINATOR_NOT_AVAILABLE")}
			}),
			want:     []string{"the progress of consumer group g cannot be read for 1m35s: COORDINATOR_NOT_AVAILABLE"},
			warnings: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			health := telemetry.NewHealth()
			g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "stalled"})
			start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
			s := newGroupStalls("g", time.Minute, slog.New(slog.NewTextHandler(&logs, nil)), health, g, start)
			for i, r := range tc.reads {
				s.observe(r, start.Add(time.Duration(i)*5*time.Second))
			}
			reasons, _ := health.Problems()
			if len(tc.want) == 0 {
				require.Empty(t, reasons, logs.String())
			} else {
				require.Len(t, reasons, 1)
				for _, w := range tc.want {
					require.Contains(t, reasons[0], w)
				}
			}
			require.Equal(t, tc.stalled, testutil.ToFloat64(g))
			require.Equal(t, tc.warnings, strings.Count(logs.String(), "level=WARN"), logs.String())
		})
	}
}

package kafka

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestSessionKeeperRule walks the keeper's rule through request and look
// sequences on a fake clock: which members it removes, and when.
func TestSessionKeeperRule(t *testing.T) {
	const group = "g"
	session := 10 * time.Second
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	member := func(id string) kadm.DescribedGroupMember {
		return kadm.DescribedGroupMember{MemberID: id, ClientID: "c-" + id, ClientHost: "127.0.0.1:1"}
	}
	static := func(id, instance string) kadm.DescribedGroupMember {
		m := member(id)
		m.InstanceID = &instance
		return m
	}
	join := func(id string, instance *string) kmsg.Request {
		r := kmsg.NewPtrJoinGroupRequest()
		r.Group, r.MemberID, r.InstanceID, r.SessionTimeoutMillis = group, id, instance, int32(session/time.Millisecond)
		return r
	}
	syncGen := func(id string, generation int32) kmsg.Request {
		r := kmsg.NewPtrSyncGroupRequest()
		r.Group, r.MemberID, r.Generation = group, id, generation
		return r
	}
	sync := func(id string) kmsg.Request { return syncGen(id, 0) }
	heartbeat := func(id string) kmsg.Request {
		r := kmsg.NewPtrHeartbeatRequest()
		r.Group, r.MemberID = group, id
		return r
	}
	leave := func(id string) kmsg.Request {
		r := kmsg.NewPtrLeaveGroupRequest()
		r.Group = group
		m := kmsg.NewLeaveGroupRequestMember()
		m.MemberID = id
		r.Members = append(r.Members, m)
		return r
	}
	commit := func(id string) kmsg.Request {
		r := kmsg.NewPtrOffsetCommitRequest()
		r.Group, r.MemberID = group, id
		return r
	}
	type request struct {
		at  time.Duration
		req kmsg.Request
	}
	type look struct {
		at      time.Duration
		state   string
		members []kadm.DescribedGroupMember
		expired []string // member ids
	}
	instance := "replica-a"
	for _, tc := range []struct {
		name     string
		requests []request
		looks    []look
	}{
		{
			name:     "a member heartbeating is kept; one silent for its session plus the grace is removed",
			requests: []request{{0, join("a", nil)}, {0, join("b", nil)}, {0, sync("a")}, {0, sync("b")}, {5 * time.Second, heartbeat("a")}, {14 * time.Second, heartbeat("a")}},
			looks: []look{
				{10 * time.Second, "Stable", []kadm.DescribedGroupMember{member("a"), member("b")}, nil},
				{session + keeperGrace, "Stable", []kadm.DescribedGroupMember{member("a"), member("b")}, nil},
				{session + keeperGrace + time.Millisecond, "Stable", []kadm.DescribedGroupMember{member("a"), member("b")}, []string{"b"}},
			},
		},
		{
			name:     "offset commits are signs of life too",
			requests: []request{{0, join("a", nil)}, {0, sync("a")}, {8 * time.Second, commit("a")}},
			looks:    []look{{15 * time.Second, "Stable", []kadm.DescribedGroupMember{member("a")}, nil}},
		},
		{
			// The case kfake gets wrong: the member died while its
			// join waited, and it never syncs.
			name:     "a waiting join keeps its member; its session starts when the join has been answered",
			requests: []request{{0, join("a", nil)}},
			looks: []look{
				{30 * time.Second, "PreparingRebalance", []kadm.DescribedGroupMember{member("a")}, nil},
				{30*time.Second + keeperPoll, "Stable", []kadm.DescribedGroupMember{member("a")}, nil},
				{30*time.Second + keeperPoll + session + keeperGrace, "Stable", []kadm.DescribedGroupMember{member("a")}, nil},
				{30*time.Second + keeperPoll + session + keeperGrace + time.Millisecond, "Stable", []kadm.DescribedGroupMember{member("a")}, []string{"a"}},
			},
		},
		{
			name:     "a sync waiting for the leader keeps its member",
			requests: []request{{0, join("a", nil)}, {time.Second, sync("a")}},
			looks: []look{
				{30 * time.Second, "CompletingRebalance", []kadm.DescribedGroupMember{member("a")}, nil},
				{31 * time.Second, "Stable", []kadm.DescribedGroupMember{member("a")}, nil},
				{31*time.Second + session + keeperGrace + time.Millisecond, "Stable", []kadm.DescribedGroupMember{member("a")}, []string{"a"}},
			},
		},
		{
			name:     "a member whose last word was its sync is not taken for waiting in a later rebalance",
			requests: []request{{0, join("a", nil)}, {0, sync("a")}, {0, join("b", nil)}, {0, sync("b")}, {20 * time.Second, heartbeat("b")}},
			looks: []look{
				{20 * time.Second, "PreparingRebalance", []kadm.DescribedGroupMember{member("a"), member("b")}, []string{"a"}},
			},
		},
		{
			// A rebalance can complete and the next begin between two
			// looks; a later generation's sync tells the first is over.
			name: "a join answered since (a later generation synced) is not taken for waiting in the next rebalance",
			requests: []request{{0, join("a", nil)}, {0, syncGen("a", 1)}, {0, join("b", nil)}, {time.Millisecond, join("a", nil)},
				{2 * time.Millisecond, syncGen("a", 2)}, {3 * time.Millisecond, join("a", nil)}},
			looks: []look{
				{session + keeperGrace + time.Millisecond, "PreparingRebalance", []kadm.DescribedGroupMember{member("a"), member("b")}, []string{"b"}},
			},
		},
		{
			name:     "a join sent before a look saw the group settle is not taken for waiting in the next rebalance",
			requests: []request{{0, join("b", nil)}},
			looks: []look{
				{time.Second, "Stable", []kadm.DescribedGroupMember{member("b")}, nil},
				{5 * time.Second, "PreparingRebalance", []kadm.DescribedGroupMember{member("b")}, nil},
				{session + keeperGrace + time.Millisecond, "PreparingRebalance", []kadm.DescribedGroupMember{member("b")}, []string{"b"}},
			},
		},
		{
			name: "a restarted static member's join (no member id yet) counts for the member that holds its instance id",
			requests: []request{{0, join("old", &instance)}, {0, sync("old")},
				{20 * time.Second, join("", &instance)}},
			looks: []look{
				{25 * time.Second, "Stable", []kadm.DescribedGroupMember{static("new", instance)}, nil},
				{20*time.Second + session + keeperGrace + time.Millisecond, "Stable", []kadm.DescribedGroupMember{static("new", instance)}, []string{"new"}},
			},
		},
		{
			name:     "a static member's join waiting without a member id keeps it",
			requests: []request{{0, join("", &instance)}},
			looks: []look{
				{time.Minute, "PreparingRebalance", []kadm.DescribedGroupMember{static("s", instance)}, nil},
				{time.Minute + keeperPoll, "CompletingRebalance", []kadm.DescribedGroupMember{static("s", instance)}, nil},
				{time.Minute + keeperPoll + session + keeperGrace + time.Millisecond, "Stable", []kadm.DescribedGroupMember{static("s", instance)}, []string{"s"}},
			},
		},
		{
			name: "a member no request was seen from is timed from the first look with the broker's longest session",
			looks: []look{
				{0, "Stable", []kadm.DescribedGroupMember{member("restored")}, nil},
				{brokerMaxSessionTimeout + keeperGrace, "Stable", []kadm.DescribedGroupMember{member("restored")}, nil},
				{brokerMaxSessionTimeout + keeperGrace + time.Millisecond, "Stable", []kadm.DescribedGroupMember{member("restored")}, []string{"restored"}},
			},
		},
		{
			name:     "a member that left is not removed again",
			requests: []request{{0, join("a", nil)}, {time.Second, leave("a")}},
			looks:    []look{{time.Minute, "Empty", nil, nil}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := &sessionKeeper{groups: map[string]*groupLives{}, requests: map[int16]int{}, own: map[[2]string]time.Time{}}
			next := 0
			for _, l := range tc.looks {
				for next < len(tc.requests) && tc.requests[next].at <= l.at {
					r := tc.requests[next]
					k.observe(r.req, at(r.at))
					next++
				}
				k.mu.Lock()
				got, _ := k.group(group).sweep(group, at(l.at), l.state, l.members)
				k.mu.Unlock()
				var ids []string
				for _, e := range got {
					ids = append(ids, e.member)
					require.Equal(t, group, e.group)
					require.Equal(t, "c-"+e.member, e.clientID)
					require.Greater(t, e.silent, e.session, "a member is removed only once silent for longer than its session")
				}
				require.ElementsMatch(t, l.expired, ids, "look at +%s (%s)", l.at, l.state)
			}
		})
	}
}

// TestSessionKeeperForgetsGoneMembers: the records of members no longer in
// a group are dropped once no session could still run on them, so a broker
// running for months does not accumulate them.
func TestSessionKeeperForgetsGoneMembers(t *testing.T) {
	k := &sessionKeeper{groups: map[string]*groupLives{}, requests: map[int16]int{}, own: map[[2]string]time.Time{}}
	t0 := time.Now()
	for i := range 100 {
		r := kmsg.NewPtrHeartbeatRequest()
		r.Group, r.MemberID = "g", string(rune('a'+i%26))+string(rune('a'+i/26))
		k.observe(r, t0)
	}
	g := k.groups["g"]
	require.Len(t, g.members, 100)
	g.sweep("g", t0.Add(brokerMaxSessionTimeout), "Empty", nil)
	require.Len(t, g.members, 100, "kept while a session could still run")
	g.sweep("g", t0.Add(brokerMaxSessionTimeout+keeperGrace+time.Millisecond), "Empty", nil)
	require.Empty(t, g.members)
}

// TestSessionKeeperRenewsItsControls: kfake's control functions remember
// every connection they saw, so the keeper replaces its own every
// keeperControlRenew requests; the replacement goes on observing.
func TestSessionKeeperRenewsItsControls(t *testing.T) {
	b, err := StartBroker("127.0.0.1:0", "", slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	defer b.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.ListenAddrs()...))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n := 2*keeperControlRenew + 5
	for range n {
		req := kmsg.NewPtrHeartbeatRequest()
		req.Group, req.MemberID = "g", "m"
		_, err := req.RequestWith(ctx, cl)
		require.NoError(t, err)
	}
	k := b.keeper
	k.mu.Lock()
	defer k.mu.Unlock()
	require.Equal(t, n%keeperControlRenew, k.requests[int16(kmsg.Heartbeat)], "heartbeats seen by the control installed at the last renewal")
	require.Contains(t, k.groups["g"].members, "m")
}

// TestStaticRejoinKeepsTheSubscription: a restarted static member's join
// gets the metadata of the member it replaces only when that member's
// session still runs and the subscription is the same; kfake then hands it
// that member's assignment without a rebalance, as Kafka does.
func TestStaticRejoinKeepsTheSubscription(t *testing.T) {
	const group, instance = "g", "persist-1"
	session := 10 * time.Second
	t0 := time.Now()
	meta := func(generation int32, owned []int32, topics ...string) []byte {
		m := kmsg.NewConsumerMemberMetadata()
		m.Version, m.Topics, m.Generation = 3, topics, generation
		if owned != nil {
			op := kmsg.NewConsumerMemberMetadataOwnedPartition()
			op.Topic, op.Partitions = topics[0], owned
			m.OwnedPartitions = append(m.OwnedPartitions, op)
		}
		return m.AppendTo(nil)
	}
	join := func(member string, metadata []byte) *kmsg.JoinGroupRequest {
		r := kmsg.NewPtrJoinGroupRequest()
		id := instance
		r.Group, r.MemberID, r.InstanceID, r.ProtocolType = group, member, &id, "consumer"
		r.SessionTimeoutMillis = int32(session / time.Millisecond)
		p := kmsg.NewJoinGroupRequestProtocol()
		p.Name, p.Metadata = "cooperative-sticky", metadata
		r.Protocols = append(r.Protocols, p)
		return r
	}
	old := meta(7, []int32{0, 1, 2}, "events.raw.v1")
	for _, tc := range []struct {
		name     string
		after    time.Duration // since the old member's last heartbeat
		rejoin   *kmsg.JoinGroupRequest
		replaced bool
	}{
		{"same subscription, session running", session, join("", meta(-1, nil, "events.raw.v1")), true},
		{"session over: a new member", session + time.Millisecond, join("", meta(-1, nil, "events.raw.v1")), false},
		{"another subscription", time.Second, join("", meta(-1, nil, "events.raw.v1", "events.dlq.v1")), false},
		{"a member rejoining with its member id", time.Second, join("persist-1-abc", meta(8, []int32{0, 1}, "events.raw.v1")), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := &sessionKeeper{groups: map[string]*groupLives{}, requests: map[int16]int{}, own: map[[2]string]time.Time{}}
			k.observe(join("persist-1-abc", old), t0)
			hb := kmsg.NewPtrHeartbeatRequest()
			id := instance
			hb.Group, hb.MemberID, hb.InstanceID = group, "persist-1-abc", &id
			k.observe(hb, t0.Add(time.Second))
			sent := slices.Clone(tc.rejoin.Protocols[0].Metadata)
			k.observe(tc.rejoin, t0.Add(time.Second+tc.after))
			if tc.replaced {
				require.Equal(t, old, tc.rejoin.Protocols[0].Metadata, "the join carries the replaced member's metadata")
			} else {
				require.Equal(t, sent, tc.rejoin.Protocols[0].Metadata, "the join is left as the client sent it")
			}
		})
	}
}

// TestSessionKeeperKeepsWaitingJoinsAlive: kfake would time out a member
// whose join waits for the rebalance; the keeper heartbeats for it, with
// the group's generation, every third of its session timeout while it
// waits, and its own heartbeats do not count as the member's.
func TestSessionKeeperKeepsWaitingJoinsAlive(t *testing.T) {
	const group = "g"
	session := 9 * time.Second
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	k := &sessionKeeper{groups: map[string]*groupLives{}, requests: map[int16]int{}, own: map[[2]string]time.Time{}}
	hb := kmsg.NewPtrHeartbeatRequest()
	hb.Group, hb.MemberID, hb.Generation = group, "a", 4
	k.observe(hb, t0)
	join := kmsg.NewPtrJoinGroupRequest()
	join.Group, join.MemberID, join.SessionTimeoutMillis = group, "a", int32(session/time.Millisecond)
	k.observe(join, t0.Add(time.Second))
	members := []kadm.DescribedGroupMember{{MemberID: "a"}}
	for _, step := range []struct {
		at    time.Duration
		state string
		kept  bool
	}{
		{3 * time.Second, "PreparingRebalance", false},
		{4 * time.Second, "PreparingRebalance", true}, // a third of the session since the join
		{6 * time.Second, "PreparingRebalance", false},
		{7 * time.Second, "PreparingRebalance", true},
		{60 * time.Second, "PreparingRebalance", true}, // waits as long as it takes, never expired
		{61 * time.Second, "Stable", false},            // answered: its own heartbeats from now on
		{70 * time.Second, "Stable", false},
	} {
		k.mu.Lock()
		expired, kept := k.groups[group].sweep(group, t0.Add(step.at), step.state, members)
		k.mu.Unlock()
		require.Empty(t, expired, "+%s", step.at)
		if !step.kept {
			require.Empty(t, kept, "+%s", step.at)
			continue
		}
		require.Equal(t, []keepAlive{{group: group, member: "a", generation: 4}}, kept, "+%s", step.at)
		// The keeper's heartbeat reaches the broker: not the member's.
		k.own[[2]string{group, "a"}] = t0.Add(step.at)
		own := kmsg.NewPtrHeartbeatRequest()
		own.Group, own.MemberID, own.Generation = group, "a", 4
		k.observe(own, t0.Add(step.at+time.Millisecond))
		require.Equal(t, int16(kmsg.JoinGroup), k.groups[group].members["a"].key, "the member's last word is still its join")
	}
	k.mu.Lock()
	expired, _ := k.groups[group].sweep(group, t0.Add(61*time.Second+session+keeperGrace+time.Millisecond), "Stable", members)
	k.mu.Unlock()
	require.Len(t, expired, 1, "once answered, a member that says nothing for its session is removed")
}

// TestSessionKeeperKeepsWaitingSyncsAlive: a follower waiting in
// SyncGroup for the leader's assignment is kept alive like a waiting join,
// until the group leaves CompletingRebalance.
func TestSessionKeeperKeepsWaitingSyncsAlive(t *testing.T) {
	const group = "g"
	session := 6 * time.Second
	t0 := time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)
	k := &sessionKeeper{groups: map[string]*groupLives{}, requests: map[int16]int{}, own: map[[2]string]time.Time{}}
	join := kmsg.NewPtrJoinGroupRequest()
	join.Group, join.MemberID, join.SessionTimeoutMillis = group, "f", int32(session/time.Millisecond)
	k.observe(join, t0)
	sync := kmsg.NewPtrSyncGroupRequest()
	sync.Group, sync.MemberID, sync.Generation = group, "f", 5
	k.observe(sync, t0.Add(100*time.Millisecond))
	members := []kadm.DescribedGroupMember{{MemberID: "f"}}
	for _, step := range []struct {
		at    time.Duration
		state string
		kept  bool
	}{
		{time.Second, "CompletingRebalance", false},
		{2200 * time.Millisecond, "CompletingRebalance", true}, // a third of the session since the sync
		{3 * time.Second, "CompletingRebalance", false},
		{4300 * time.Millisecond, "CompletingRebalance", true},
		{30 * time.Second, "CompletingRebalance", true}, // never expired while it waits
		{31 * time.Second, "PreparingRebalance", false}, // answered: the leader's session ended
	} {
		k.mu.Lock()
		expired, kept := k.groups[group].sweep(group, t0.Add(step.at), step.state, members)
		k.mu.Unlock()
		require.Empty(t, expired, "+%s", step.at)
		if step.kept {
			require.Equal(t, []keepAlive{{group: group, member: "f", generation: 5}}, kept, "+%s", step.at)
		} else {
			require.Empty(t, kept, "+%s", step.at)
		}
	}
}

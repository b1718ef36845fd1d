package kafka_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heartbeat/heartbeat/app/kafka"
	"github.com/heartbeat/heartbeat/app/telemetry/telemetrytest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// brokerLog collects the broker's JSON log from several goroutines.
type brokerLog struct{ telemetrytest.LogBuffer }

// records returns the JSON log records whose message contains msg.
func (b *brokerLog) records(msg string) []map[string]any {
	var out []map[string]any
	for _, line := range b.Lines(msg) {
		var r map[string]any
		if json.Unmarshal([]byte(line), &r) == nil && strings.Contains(fmt.Sprint(r["msg"]), msg) {
			out = append(out, r)
		}
	}
	return out
}

// testBroker starts the in-process broker with a topic of partitions and
// returns it with an admin client and the broker's log.
func testBroker(t *testing.T, topic string, partitions int32) (*kafka.Broker, *kadm.Client, *brokerLog) {
	t.Helper()
	logs := &brokerLog{}
	b, err := kafka.StartBroker("127.0.0.1:0", "", slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	require.NoError(t, err)
	t.Cleanup(b.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.ListenAddrs()...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = adm.CreateTopic(ctx, partitions, 1, nil, topic)
	require.NoError(t, err)
	return b, adm, logs
}

// process is a consumer-group member whose "process" can be killed like
// kill -9: every connection of its client is closed at once and it never
// connects again, so it neither answers nor leaves.
type process struct {
	name string
	cl   *kgo.Client

	mu    sync.Mutex
	dead  bool
	conns []net.Conn
}

func (p *process) dial(ctx context.Context, network, host string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, host)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dead {
		c.Close()
		return nil, errors.New("process killed")
	}
	p.conns = append(p.conns, c)
	return c, nil
}

func (p *process) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dead = true
	for _, c := range p.conns {
		c.Close()
	}
}

// startProcess joins group on b as client id name, consuming topic.
func startProcess(t *testing.T, b *kafka.Broker, group, topic, name, instance string, session, heartbeat time.Duration) *process {
	t.Helper()
	p := &process{name: name}
	opts := []kgo.Opt{kgo.SeedBrokers(b.ListenAddrs()...), kgo.Dialer(p.dial), kgo.ClientID(name),
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.SessionTimeout(session), kgo.HeartbeatInterval(heartbeat), kgo.RebalanceTimeout(10 * time.Second),
		kgo.RetryTimeout(2 * time.Second)}
	if instance != "" {
		opts = append(opts, kgo.InstanceID(instance))
	}
	cl, err := kgo.NewClient(opts...)
	require.NoError(t, err)
	p.cl = cl
	t.Cleanup(func() {
		// A killed process's client cannot reach the broker any more:
		// closing it must not hold the test up.
		if p.dead {
			go cl.Close()
			return
		}
		cl.Close()
	})
	return p
}

// groupView is a group as DescribeGroups shows it: its state and, by
// client id, each member's id and assigned partitions of topic.
type groupView struct {
	state   string
	members map[string]memberView
}

type memberView struct {
	id       string
	assigned []int32
}

func describe(adm *kadm.Client, group, topic string) (groupView, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	dg, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return groupView{}, err
	}
	d := dg[group]
	if d.Err != nil {
		return groupView{}, d.Err
	}
	v := groupView{state: d.State, members: map[string]memberView{}}
	for _, m := range d.Members {
		mv := memberView{id: m.MemberID}
		if c, ok := m.Assigned.AsConsumer(); ok {
			for _, ta := range c.Topics {
				if ta.Topic == topic {
					mv.assigned = append(mv.assigned, ta.Partitions...)
				}
			}
		}
		slices.Sort(mv.assigned)
		v.members[m.ClientID] = mv
	}
	return v, nil
}

func (v groupView) String() string {
	var parts []string
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range v.members {
			if !yield(n) {
				return
			}
		}
	}) {
		m := v.members[name]
		parts = append(parts, fmt.Sprintf("%s (%s) %v", name, m.id, m.assigned))
	}
	return fmt.Sprintf("%s: %s", v.state, strings.Join(parts, "; "))
}

// waitGroup polls the group until ok accepts it, and returns the view; the
// error tells what it last saw.
func waitGroup(adm *kadm.Client, group, topic string, timeout time.Duration, what string, ok func(groupView) bool) (groupView, error) {
	deadline := time.Now().Add(timeout)
	var last groupView
	var lastErr error
	for time.Now().Before(deadline) {
		v, err := describe(adm, group, topic)
		if err == nil && ok(v) {
			return v, nil
		}
		last, lastErr = v, err
		time.Sleep(10 * time.Millisecond)
	}
	return last, fmt.Errorf("group %s: %s not within %s; last seen %s (describe error: %v)", group, what, timeout, last, lastErr)
}

// ownsAll reports whether the group is Stable with exactly the members
// named, which between them own each of partitions partitions once.
func ownsAll(v groupView, partitions int32, names ...string) bool {
	if v.state != "Stable" || len(v.members) != len(names) {
		return false
	}
	var all []int32
	for _, n := range names {
		m, ok := v.members[n]
		if !ok {
			return false
		}
		all = append(all, m.assigned...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	if len(all) != int(partitions) {
		return false
	}
	for i, p := range all {
		if p != int32(i) {
			return false
		}
	}
	return true
}

// TestBrokerExpiresMemberKilledWhileItsJoinWaits is the regression test of
// a group that stalled for good: a member whose process dies while its
// JoinGroup waits for a rebalance must still leave the group once its
// session timeout passes. kfake answers such a join into the closed
// connection, and half the time then never arms the member's session
// timer; the live leader assigns the dead member partitions and nobody
// consumes them.
//
// The join waits either behind a live member that has yet to rejoin (a
// short wait: the broker must remove the dead member itself), or behind a
// killed member whose session has not expired yet, with a longer session
// than the live member's. The live member's join then waits for longer than
// its own session timeout: kfake would time it out and drop its join
// unanswered; it must keep its membership, as on Kafka.
//
// Eight groups (dynamic and static members; three of each behind a live
// member, one behind a dead one) run at the same time, so the broken path
// is taken in at least one of them but for a 1-in-64 chance.
func TestBrokerExpiresMemberKilledWhileItsJoinWaits(t *testing.T) {
	const (
		topic        = "sessions"
		partitions   = 8
		session      = 6 * time.Second // kfake's minimum
		firstSession = 9 * time.Second
		rebalance    = 10 * time.Second // RebalanceTimeout of the clients
	)
	b, adm, logs := testBroker(t, topic, partitions)

	type result struct {
		name string
		dead map[string]string // member id -> process name
		took time.Duration
		err  error
	}
	// run is one group's sequence.
	run := func(name string, static, behindDead bool) (r result) {
		r = result{name: name, dead: map[string]string{}}
		group := "cg." + name
		instance := func(role string) string {
			if static {
				return role
			}
			return ""
		}
		// Behind a live member, the join waits until its next heartbeat:
		// less than a third of the session timeout.
		heartbeat := 1500 * time.Millisecond
		if behindDead {
			heartbeat = 500 * time.Millisecond
		}
		startProcess(t, b, group, topic, "live", instance("live"), session, heartbeat)
		var before groupView
		if before, r.err = waitGroup(adm, group, topic, 20*time.Second, "the live member owning every partition",
			func(v groupView) bool { return ownsAll(v, partitions, "live") }); r.err != nil {
			return r
		}
		wait, bound := 5*time.Second, session+rebalance+5*time.Second
		if behindDead {
			first := startProcess(t, b, group, topic, "first", instance("first"), firstSession, heartbeat)
			var two groupView
			if two, r.err = waitGroup(adm, group, topic, 20*time.Second, "two members sharing the partitions",
				func(v groupView) bool { return ownsAll(v, partitions, "live", "first") }); r.err != nil {
				return r
			}
			first.kill()
			r.dead[two.members["first"].id] = "first"
			wait, bound = firstSession/2, bound+firstSession
		}

		// Kill the next member's process while its join waits.
		parked := startProcess(t, b, group, topic, "parked", instance("parked"), session, heartbeat)
		w, err := waitGroup(adm, group, topic, wait, "the new member's join waiting in PreparingRebalance",
			func(v groupView) bool { _, in := v.members["parked"]; return in && v.state == "PreparingRebalance" })
		if r.err = err; err != nil {
			return r
		}
		parked.kill()
		killed := time.Now()
		r.dead[w.members["parked"].id] = "parked"

		// Kafka's bound: the first member's session, then the parked
		// one's from its join's completion, then a rebalance.
		end, err := waitGroup(adm, group, topic, bound, "only the live member, owning every partition",
			func(v groupView) bool { return ownsAll(v, partitions, "live") })
		if r.err = err; err != nil {
			return r
		}
		if got, want := end.members["live"].id, before.members["live"].id; got != want {
			r.err = fmt.Errorf("group %s: the live member lost its membership (member id %s, was %s)", group, got, want)
		}
		r.took = time.Since(killed)
		return r
	}

	results := make(chan result)
	n := 0
	for _, static := range []bool{false, true} {
		for _, behindDead := range []bool{false, true} {
			// Behind a dead member the keeper's keep-alives arm kfake's
			// timer on the waiting join: the broken path is taken
			// behind live members, half the time each.
			copies := 3
			if behindDead {
				copies = 1
			}
			for i := range copies {
				name := fmt.Sprintf("%s-behind-%s-%d", map[bool]string{false: "dynamic", true: "static"}[static],
					map[bool]string{false: "live", true: "dead"}[behindDead], i)
				n++
				go func() { results <- run(name, static, behindDead) }()
			}
		}
	}
	dead := map[string]string{}
	for range n {
		r := <-results
		maps.Copy(dead, r.dead)
		if r.err != nil {
			t.Errorf("%s: %v", r.name, r.err)
			continue
		}
		t.Logf("%s: the live member alone with every partition %.1fs after the parked member was killed", r.name, r.took.Seconds())
	}

	// Every member the broker expired was a killed one, and its log line
	// tells an operator which.
	expired := logs.records("consumer group member expired")
	for _, r := range expired {
		who, ok := dead[fmt.Sprint(r["member"])]
		if !ok {
			t.Errorf("the broker expired a member that was not killed: %v", r)
			continue
		}
		if r["level"] != "WARN" || r["group"] == "" || r["client_id"] != who || r["client_host"] == "" || r["silent"] == nil || r["session_timeout"] == nil {
			t.Errorf("expiry log line lacks what an operator needs: %v", r)
		}
	}
	t.Logf("the session keeper expired %d killed members: those whose join kfake answered into a closed connection without arming their session", len(expired))
}

// TestBrokerTellsAFollowerWaitingForADeadLeaderToRejoin: the leader of a
// rebalance dies after its join was answered and never sends the
// assignment; a follower waits in SyncGroup. Kafka removes the dead leader
// when its session ends and answers the follower REBALANCE_IN_PROGRESS, and
// the follower's join then completes the next rebalance at once.
//
// kfake times the follower out as well while its sync waits (a client
// sends no heartbeat then), and removing a member whose sync waits puts
// kfake's count of joined members one below the truth: every later
// rebalance of the group then waits out its rebalance timeout, which each
// rejoin starts again, so live members can wait for their assignment
// forever. The follower here has the shorter session, so without the
// keeper's keep-alive for a waiting sync it is the one removed.
func TestBrokerTellsAFollowerWaitingForADeadLeaderToRejoin(t *testing.T) {
	const (
		topic     = "syncs"
		group     = "cg.syncs"
		leaderTTL = 9 * time.Second
		follower  = 6 * time.Second  // kfake's minimum session timeout
		rebalance = 60 * time.Second // long: a join answered by the timer fails the test
	)
	b, _, _ := testBroker(t, topic, 4)
	// A client per member: responses on a connection come in request
	// order, so one member's waiting join would hold the other's back.
	client := func() *kgo.Client {
		cl, err := kgo.NewClient(kgo.SeedBrokers(b.ListenAddrs()...))
		require.NoError(t, err)
		t.Cleanup(cl.Close)
		return cl
	}
	lc, fc := client(), client()

	meta := kmsg.NewConsumerMemberMetadata()
	meta.Topics = []string{topic}
	join := func(ctx context.Context, cl *kgo.Client, member string, session time.Duration) (*kmsg.JoinGroupResponse, error) {
		req := kmsg.NewPtrJoinGroupRequest()
		req.Group, req.MemberID, req.ProtocolType = group, member, "consumer"
		req.SessionTimeoutMillis, req.RebalanceTimeoutMillis = int32(session/time.Millisecond), int32(rebalance/time.Millisecond)
		p := kmsg.NewJoinGroupRequestProtocol()
		p.Name, p.Metadata = "range", meta.AppendTo(nil)
		req.Protocols = append(req.Protocols, p)
		for {
			resp, err := req.RequestWith(ctx, cl)
			if err != nil {
				return nil, err
			}
			if resp.ErrorCode == kerr.MemberIDRequired.Code {
				req.MemberID = resp.MemberID
				continue
			}
			return resp, kerr.ErrorForCode(resp.ErrorCode)
		}
	}
	sync := func(ctx context.Context, cl *kgo.Client, member string, generation int32, assign bool) (*kmsg.SyncGroupResponse, error) {
		req := kmsg.NewPtrSyncGroupRequest()
		req.Group, req.MemberID, req.Generation = group, member, generation
		req.ProtocolType, req.Protocol = kmsg.StringPtr("consumer"), kmsg.StringPtr("range")
		if assign {
			a := kmsg.NewSyncGroupRequestGroupAssignment()
			a.MemberID = member
			req.GroupAssignment = append(req.GroupAssignment, a)
		}
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return nil, err
		}
		return resp, kerr.ErrorForCode(resp.ErrorCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// The leader-to-be forms the group alone.
	lj, err := join(ctx, lc, "", leaderTTL)
	require.NoError(t, err)
	leader := lj.MemberID
	require.Equal(t, leader, lj.LeaderID)
	_, err = sync(ctx, lc, leader, lj.Generation, true)
	require.NoError(t, err)

	// The follower joins; the leader joins again, and both are answered.
	fjoined := make(chan *kmsg.JoinGroupResponse, 1)
	go func() {
		r, err := join(ctx, fc, "", follower)
		assert.NoError(t, err)
		fjoined <- r
	}()
	var again *kmsg.JoinGroupResponse
	require.Eventually(t, func() bool {
		// The leader's heartbeat learns of the rebalance, as a client's would.
		hb := kmsg.NewPtrHeartbeatRequest()
		hb.Group, hb.MemberID, hb.Generation = group, leader, lj.Generation
		resp, err := hb.RequestWith(ctx, lc)
		return err == nil && resp.ErrorCode == kerr.RebalanceInProgress.Code
	}, 10*time.Second, 50*time.Millisecond, "the follower's join starts a rebalance")
	again, err = join(ctx, lc, leader, leaderTTL)
	require.NoError(t, err)
	require.Equal(t, leader, again.LeaderID)
	fj := <-fjoined
	require.NotNil(t, fj)

	// The leader dies here: it never syncs, never heartbeats. The
	// follower's sync waits for the assignment.
	waited := time.Now()
	fs, err := sync(ctx, fc, fj.MemberID, fj.Generation, false)
	require.ErrorIs(t, err, kerr.RebalanceInProgress,
		"the follower waiting for a dead leader's assignment must be told to rejoin (answered %v after %s)", fs, time.Since(waited).Round(time.Millisecond))

	// Its join then completes the rebalance at once: it is the only member.
	jctx, jcancel := context.WithTimeout(ctx, rebalance/2)
	defer jcancel()
	fj2, err := join(jctx, fc, fj.MemberID, follower)
	require.NoError(t, err, "the follower's rejoin must be answered before the rebalance timeout: the broker counts it")
	require.Equal(t, fj.MemberID, fj2.LeaderID)
	_, err = sync(ctx, fc, fj.MemberID, fj2.Generation, true)
	require.NoError(t, err)
}

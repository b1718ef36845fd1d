package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Broker is the in-process Kafka-protocol broker: franz-go's kfake cluster,
// with its consumer groups held to Kafka's session rule and static
// membership (see sessionKeeper).
type Broker struct {
	*kfake.Cluster
	keeper *sessionKeeper
}

// Close stops the session keeper, then the cluster.
func (b *Broker) Close() {
	b.keeper.close()
	b.Cluster.Close()
}

// brokerMaxSessionTimeout is the longest session timeout the in-process
// broker accepts (kfake's default, set explicitly because the keeper relies
// on it): the keeper times a member whose session timeout it never saw with
// it.
const brokerMaxSessionTimeout = 5 * time.Minute

const (
	// keeperPoll is how often the keeper looks at the groups.
	keeperPoll = 500 * time.Millisecond
	// keeperGrace is how long past its session timeout a silent member is
	// left to kfake's own session timer before the keeper removes it, so
	// that the keeper acts (and warns) only where kfake does not.
	keeperGrace = 2 * keeperPoll
	// keeperControlRenew bounds the memory kfake's control functions keep:
	// each remembers the last request of every connection it has seen,
	// closed ones included, so every this many requests the keeper
	// replaces its control with a fresh one.
	keeperControlRenew = 1024
)

// sessionKeeper holds kfake's classic consumer groups to Kafka's session
// rule: a member that has shown no sign of life (a JoinGroup, SyncGroup,
// Heartbeat or OffsetCommit carrying its member id) for its session timeout
// leaves the group, whatever state its join or sync is in.
//
// kfake breaks the rule in one case: when a JoinGroup that waited for a
// rebalance is answered after its client died, the answer to the closed
// connection may count as not delivered, and kfake then never arms that
// member's session timer; the leader assigns it partitions, the group turns
// Stable, and the dead member keeps them forever, with nobody consuming and
// nothing logged. Real Kafka arms a member's session timer when its join
// completes, delivered or not.
//
// The keeper watches every group request through kfake's control hooks
// (kfake still handles each request), looks at the groups every keeperPoll
// with DescribeGroups through a client of its own, and sends a LeaveGroup
// for a member silent for longer than its session timeout plus
// keeperGrace, logging one WARN line per member. A join or sync that is
// still waiting to be answered counts as alive, and the session starts
// again when it has been answered, as Kafka's does.
//
// kfake also breaks the rule the other way: it expires a member whose join
// waits in a rebalance (waiting for another member) once its session
// timeout passes since its last heartbeat, and drops that join unanswered,
// so the live client waits for its request timeout (the rebalance timeout
// plus 10 s) before it joins again. Kafka does not time a member out while
// its join waits. The keeper therefore heartbeats for a member whose join
// has been waiting for a third of its session timeout, with the group's
// generation, which restarts kfake's timer as the member's own heartbeat
// would.
//
// A third break: kfake times out a follower whose SyncGroup waits for the
// leader's assignment (a client sends no heartbeat meanwhile), and removing
// a member whose sync waits leaves kfake's count of joined members one
// below the truth, so every later rebalance of the group waits out its
// rebalance timeout, which each rejoin starts again: live members can wait
// for their assignment forever. Kafka instead removes the leader that
// never sent the assignment and tells the followers to rejoin. The keeper
// therefore keeps a member whose sync waits alive the same way, so that a
// dead leader's session, not its followers', ends first.
//
// It also lets a restarted static member replace itself without a
// rebalance, as on Kafka (see rejoinStatic): the one request it changes.
type sessionKeeper struct {
	log     *slog.Logger
	cluster *kfake.Cluster
	cl      *kgo.Client
	adm     *kadm.Client

	mu       sync.Mutex
	groups   map[string]*groupLives
	requests map[int16]int // requests seen by each control since it was installed
	// own holds the keeper's own heartbeats in flight, by group and member,
	// so that they are not taken for the member's.
	own map[[2]string]time.Time

	cancel context.CancelFunc
	done   chan struct{}
}

// groupLives is what the keeper knows of one group's members.
type groupLives struct {
	// members by member id.
	members map[string]*life
	// instances holds the joins of static members that came without a
	// member id (a restarted static member), by instance id: the member
	// id the broker gives such a join is only known from the next look.
	instances map[string]*life
	// statics holds the latest join of each static member, by instance id.
	statics map[string]*staticJoin
	// generation is the latest generation a member's request carried:
	// the group's, or the one a rebalance under way completes.
	generation int32
	// settledAt is the last look that saw the group outside
	// PreparingRebalance: the joins sent before it have been answered.
	settledAt time.Time
}

// staticJoin is the latest JoinGroup of a static member.
type staticJoin struct {
	protocols []kmsg.JoinGroupRequestProtocol
	session   time.Duration
	// alive is the latest request carrying the instance id.
	alive time.Time
}

// life is a member's latest sign of life.
type life struct {
	at time.Time
	// key is the request that gave it (kmsg.JoinGroup, ...; -1 when it is
	// the first look at a member the keeper saw no request from).
	key int16
	// gen is, for a JoinGroup, the group's generation when it was sent
	// (the rebalance that answers it makes the next); for the other
	// requests, the generation they carried.
	gen int32
	// session is the session timeout of the member's latest JoinGroup, 0
	// when the keeper saw none.
	session time.Duration
	// parked records that the member's join or sync was waiting for an
	// answer at the last look; parkedAt is the last look that saw it
	// waiting, or the first after it was answered.
	parked   bool
	parkedAt time.Time
	// keptAt is when the keeper last heartbeat for the member.
	keptAt time.Time
}

// expiry is a member the keeper removes.
type expiry struct {
	group, member, instance, clientID, clientHost string
	silent, session                               time.Duration
}

// keepAlive is a member whose join or sync waits, for which the keeper
// heartbeats.
type keepAlive struct {
	group, member string
	instance      *string
	generation    int32
}

// groupRequestKeys are the requests that carry a member id.
var groupRequestKeys = []int16{int16(kmsg.JoinGroup), int16(kmsg.SyncGroup), int16(kmsg.Heartbeat),
	int16(kmsg.OffsetCommit), int16(kmsg.LeaveGroup)}

// startSessionKeeper installs the keeper's control functions on c and
// starts watching its groups.
func startSessionKeeper(c *kfake.Cluster, log *slog.Logger) (*sessionKeeper, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ClientID("heartbeat-broker-session-keeper"))
	if err != nil {
		return nil, fmt.Errorf("session keeper client: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	k := &sessionKeeper{log: log, cluster: c, cl: cl, adm: kadm.NewClient(cl),
		groups: map[string]*groupLives{}, requests: map[int16]int{}, own: map[[2]string]time.Time{},
		cancel: cancel, done: make(chan struct{})}
	for _, key := range groupRequestKeys {
		k.install(key)
	}
	go k.run(ctx)
	return k, nil
}

func (k *sessionKeeper) close() {
	k.cancel()
	<-k.done
	k.cl.Close()
}

// install adds the control function that observes requests of key. It
// runs on kfake's request loop: it records (and may rewrite a static
// rejoin, before kfake handles it), and never calls back into the cluster
// but to replace itself, which kfake allows.
func (k *sessionKeeper) install(key int16) {
	k.cluster.ControlKey(key, func(req kmsg.Request) (kmsg.Response, error, bool) {
		k.observe(req, time.Now())
		k.mu.Lock()
		k.requests[key]++
		renew := k.requests[key] >= keeperControlRenew
		if renew {
			k.requests[key] = 0
		}
		k.mu.Unlock()
		if renew {
			k.cluster.DropControl()
			k.install(key)
		}
		return nil, nil, false // kfake handles the request as usual
	})
}

// observe records the sign of life a group request gives.
func (k *sessionKeeper) observe(req kmsg.Request, now time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch r := req.(type) {
	case *kmsg.JoinGroupRequest:
		session := time.Duration(r.SessionTimeoutMillis) * time.Millisecond
		if r.InstanceID != nil {
			k.group(r.Group).rejoinStatic(r, session, now)
		}
		switch {
		case r.MemberID != "":
			k.group(r.Group).touch(r.MemberID, nil, now, kmsg.JoinGroup, session, -1)
		case r.InstanceID != nil:
			g := k.group(r.Group)
			g.instances[*r.InstanceID] = &life{at: now, key: int16(kmsg.JoinGroup), session: session, gen: g.generation}
		}
		// A dynamic member's first join carries no member id: kfake
		// answers it at once and times the member id it hands out.
	case *kmsg.SyncGroupRequest:
		k.group(r.Group).touch(r.MemberID, r.InstanceID, now, kmsg.SyncGroup, 0, r.Generation)
	case *kmsg.HeartbeatRequest:
		own := [2]string{r.Group, r.MemberID}
		if sent, ok := k.own[own]; ok {
			delete(k.own, own)
			if now.Sub(sent) < keeperPoll {
				return // the keeper's, for a member whose join waits
			}
		}
		k.group(r.Group).touch(r.MemberID, r.InstanceID, now, kmsg.Heartbeat, 0, r.Generation)
	case *kmsg.OffsetCommitRequest:
		if r.MemberID != "" {
			k.group(r.Group).touch(r.MemberID, r.InstanceID, now, kmsg.OffsetCommit, 0, r.Generation)
		}
	case *kmsg.LeaveGroupRequest:
		g := k.group(r.Group)
		delete(g.members, r.MemberID)
		for _, m := range r.Members {
			delete(g.members, m.MemberID)
			if m.InstanceID != nil {
				delete(g.instances, *m.InstanceID)
			}
		}
	}
}

// group returns the record of group, creating it. Call with k.mu held.
func (k *sessionKeeper) group(name string) *groupLives {
	g := k.groups[name]
	if g == nil {
		g = &groupLives{members: map[string]*life{}, instances: map[string]*life{}, statics: map[string]*staticJoin{}}
		k.groups[name] = g
	}
	return g
}

// touch records a request of member (and, when it carries one, of its
// instance id): generation is what the request carried, -1 for a join.
func (g *groupLives) touch(member string, instance *string, now time.Time, key kmsg.Key, session time.Duration, generation int32) {
	g.generation = max(g.generation, generation)
	if key == kmsg.JoinGroup {
		generation = g.generation
	}
	if instance != nil {
		if sj := g.statics[*instance]; sj != nil {
			sj.alive = now
		}
	}
	if member == "" {
		return
	}
	l := g.members[member]
	if l == nil {
		l = &life{}
		g.members[member] = l
	}
	l.at, l.key, l.gen = now, int16(key), generation
	if session > 0 {
		l.session = session
	}
}

func (k *sessionKeeper) run(ctx context.Context) {
	defer close(k.done)
	t := time.NewTicker(keeperPoll)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := k.look(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil && !failing:
			failing = true
			k.log.Warn("broker session keeper cannot describe the consumer groups; members that stop heartbeating may keep their partitions until it can", "err", err)
		case err == nil && failing:
			failing = false
			k.log.Info("broker session keeper describes the consumer groups again")
		}
	}
}

// look describes the groups that have members, and removes the members
// that outlived their session.
func (k *sessionKeeper) look(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	listed, err := k.adm.ListGroups(ctx, "PreparingRebalance", "CompletingRebalance", "Stable")
	if err != nil {
		return fmt.Errorf("list groups: %w", err)
	}
	var described kadm.DescribedGroups
	if names := listed.Groups(); len(names) > 0 {
		if described, err = k.adm.DescribeGroups(ctx, names...); err != nil {
			return fmt.Errorf("describe groups %v: %w", names, err)
		}
	}
	now := time.Now()
	k.mu.Lock()
	var expired []expiry
	var kept []keepAlive
	for name, d := range described {
		if _, known := k.groups[name]; !known && d.Err == nil && len(d.Members) > 0 {
			// Members the keeper saw no request from (restored from
			// BROKER_DATA_DIR, where kfake times them itself).
			k.group(name)
		}
	}
	for name, g := range k.groups {
		d, ok := described[name]
		if ok && d.Err != nil {
			continue
		}
		e, ka := g.sweep(name, now, d.State, d.Members)
		expired, kept = append(expired, e...), append(kept, ka...)
		if len(g.members) == 0 && len(g.instances) == 0 && len(g.statics) == 0 {
			delete(k.groups, name)
		}
	}
	for key, sent := range k.own {
		if now.Sub(sent) >= keeperPoll {
			delete(k.own, key) // never seen: it did not reach the broker
		}
	}
	for _, ka := range kept {
		k.own[[2]string{ka.group, ka.member}] = now
	}
	k.mu.Unlock()
	for _, ka := range kept {
		k.heartbeat(ctx, ka)
	}
	for _, e := range expired {
		k.expire(ctx, e)
	}
	return nil
}

// sweep updates g from a look at the group at now (its state and members)
// and returns the members silent for longer than their session timeout
// plus keeperGrace, and the members whose join or sync has waited for a
// third of their session timeout since their last request or keep-alive. A member
// whose session timeout the keeper never saw is given the broker's
// maximum. Records of members gone from the group are dropped once no
// session could still be running on them.
func (g *groupLives) sweep(group string, now time.Time, state string, members []kadm.DescribedGroupMember) ([]expiry, []keepAlive) {
	var out []expiry
	var kept []keepAlive
	if state != "PreparingRebalance" {
		g.settledAt = now
	}
	present := make(map[string]bool, len(members))
	for _, m := range members {
		present[m.MemberID] = true
		var il *life // the latest join by its instance id, without member id
		if m.InstanceID != nil {
			il = g.instances[*m.InstanceID]
		}
		l := g.members[m.MemberID]
		if l == nil {
			l = &life{at: now, key: -1}
			if il != nil {
				*l = life{at: il.at, key: il.key, session: il.session, gen: il.gen}
			}
			g.members[m.MemberID] = l
		}
		at, key, gen, session := l.at, l.key, l.gen, l.session
		if il != nil {
			if il.at.After(at) {
				at, key, gen = il.at, il.key, il.gen
			}
			if session == 0 {
				session = il.session
			}
		}
		// A join waits if the rebalance it joined is still under way: no
		// member has synced a later generation, and no look saw the
		// group settle since. A sync waits for the leader's.
		parked := key == int16(kmsg.JoinGroup) && state == "PreparingRebalance" && gen == g.generation && at.After(g.settledAt) ||
			key == int16(kmsg.SyncGroup) && state == "CompletingRebalance" && gen == g.generation
		if parked || l.parked {
			// Kafka arms a member's session timer when its join
			// completes: while the join waits the member is alive,
			// and its session starts at the first look after.
			l.parkedAt = now
		}
		l.parked = parked
		if session == 0 {
			session = brokerMaxSessionTimeout
		}
		if parked && now.Sub(later(at, l.keptAt)) >= session/3 {
			kept = append(kept, keepAlive{group: group, member: m.MemberID, instance: m.InstanceID, generation: g.generation})
			l.keptAt = now
		}
		at = later(at, l.parkedAt)
		if silent := now.Sub(at); silent > session+keeperGrace {
			e := expiry{group: group, member: m.MemberID, clientID: m.ClientID, clientHost: m.ClientHost,
				silent: silent, session: session}
			if m.InstanceID != nil {
				e.instance = *m.InstanceID
			}
			out = append(out, e)
		}
	}
	stale := now.Add(-(brokerMaxSessionTimeout + keeperGrace))
	for id, l := range g.members {
		if !present[id] && later(l.at, l.parkedAt).Before(stale) {
			delete(g.members, id)
		}
	}
	for id, l := range g.instances {
		if l.at.Before(stale) {
			delete(g.instances, id)
		}
	}
	for id, sj := range g.statics {
		if sj.alive.Before(stale) {
			delete(g.statics, id)
		}
	}
	return out, kept
}

// rejoinStatic lets a restarted static member take its place back without
// a rebalance, as Kafka does (KIP-345): joining with the instance id of a
// member whose session still runs, with the same protocols and
// subscription, it gets that member's assignment. Kafka decides this on
// the protocols' names; kfake compares the join's metadata bytes, which
// franz-go's balancers fill with the client's generation and owned
// partitions, so a restarted client never matches and the whole group
// rebalances. The keeper therefore gives such a join the metadata of the
// member it replaces: the subscription is the same, and the partitions it
// claims are the ones that member held and the broker hands to its
// successor. A join with another subscription is left alone.
func (g *groupLives) rejoinStatic(r *kmsg.JoinGroupRequest, session time.Duration, now time.Time) {
	sj := g.statics[*r.InstanceID]
	if r.MemberID == "" && sj != nil && now.Sub(sj.alive) <= sj.session &&
		r.ProtocolType == "consumer" && sameSubscription(r.Protocols, sj.protocols) {
		for i := range r.Protocols {
			r.Protocols[i].Metadata = sj.protocols[i].Metadata
		}
	}
	g.statics[*r.InstanceID] = &staticJoin{protocols: r.Protocols, session: session, alive: now}
}

// sameSubscription reports whether two joins offer the same protocols, in
// the same order, each with the same topics and rack.
func sameSubscription(a, b []kmsg.JoinGroupRequestProtocol) bool {
	if len(a) != len(b) || len(a) == 0 {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name {
			return false
		}
		var ma, mb kmsg.ConsumerMemberMetadata
		if ma.ReadFrom(a[i].Metadata) != nil || mb.ReadFrom(b[i].Metadata) != nil {
			return false
		}
		if !slices.Equal(slices.Sorted(slices.Values(ma.Topics)), slices.Sorted(slices.Values(mb.Topics))) ||
			(ma.Rack == nil) != (mb.Rack == nil) || ma.Rack != nil && *ma.Rack != *mb.Rack {
			return false
		}
	}
	return true
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// heartbeat sends a heartbeat for a member whose join or sync waits, which
// kfake takes (answering REBALANCE_IN_PROGRESS to a join's) after
// restarting the member's session timer.
func (k *sessionKeeper) heartbeat(ctx context.Context, ka keepAlive) {
	req := kmsg.NewPtrHeartbeatRequest()
	req.Group, req.MemberID, req.InstanceID, req.Generation = ka.group, ka.member, ka.instance, ka.generation
	resp, err := req.RequestWith(ctx, k.cl)
	if err == nil {
		err = kerr.ErrorForCode(resp.ErrorCode)
	}
	if err != nil && !errors.Is(err, kerr.RebalanceInProgress) {
		// The rebalance moved on since the look, or the member is gone.
		k.log.Debug("broker session keeper: keep-alive for a waiting member not taken", "group", ka.group, "member", ka.member, "generation", ka.generation, "err", err)
	}
}

// expire removes e's member from its group with a LeaveGroup for its
// member id (never its instance id, which a restarted replica may already
// hold again).
func (k *sessionKeeper) expire(ctx context.Context, e expiry) {
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = e.group
	m := kmsg.NewLeaveGroupRequestMember()
	m.MemberID = e.member
	m.Reason = kmsg.StringPtr(fmt.Sprintf("no heartbeat for %s, longer than its session timeout %s", e.silent.Round(time.Millisecond), e.session))
	req.Members = append(req.Members, m)
	resp, err := req.RequestWith(ctx, k.cl)
	if err == nil {
		err = kerr.ErrorForCode(resp.ErrorCode)
		for _, rm := range resp.Members {
			if err == nil {
				err = kerr.ErrorForCode(rm.ErrorCode)
			}
		}
	}
	switch {
	case errors.Is(err, kerr.UnknownMemberID):
		// It left, or kfake's own session timer removed it, since the look.
		k.log.Debug("broker session keeper: member already gone", "group", e.group, "member", e.member)
	case err != nil:
		k.log.Warn("broker session keeper cannot remove a member silent for longer than its session timeout; retrying at the next look",
			"group", e.group, "member", e.member, "client_id", e.clientID, "client_host", e.clientHost,
			"silent", e.silent.Round(time.Millisecond), "session_timeout", e.session, "err", err)
	default:
		k.log.Warn("consumer group member expired: no heartbeat for longer than its session timeout; its partitions go to the live members",
			"group", e.group, "member", e.member, "instance_id", e.instance, "client_id", e.clientID, "client_host", e.clientHost,
			"silent", e.silent.Round(time.Millisecond), "session_timeout", e.session)
	}
}

package windowed_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/app/kafka/windowed"
	"github.com/heartbeat/heartbeat/messages"
)

// deliveries records, per member, which assignment delivered each
// partition's messages, in the order they came.
type deliveries struct {
	mu  sync.Mutex
	got map[string]map[int32][]uint64 // member → partition → assignment of each message
}

func (d *deliveries) consume(member string, ch <-chan *message.Message, n *atomic.Int64) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for msg := range ch {
			src, _ := messages.SourceFromContext(msg.Context())
			d.mu.Lock()
			if d.got[member] == nil {
				d.got[member] = map[int32][]uint64{}
			}
			d.got[member][src.Partition] = append(d.got[member][src.Partition], src.Assignment)
			d.mu.Unlock()
			msg.Ack()
			n.Add(1)
		}
	}()
	return done
}

// assignments returns the distinct assignments that delivered member's
// messages of partition p, in the order they began.
func (d *deliveries) assignments(member string, p int32) []uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []uint64
	for _, a := range d.got[member][p] {
		if len(out) == 0 || out[len(out)-1] != a {
			out = append(out, a)
		}
	}
	return out
}

// A record's Source names the assignment that delivered it: one for all the
// records of a partition while a member holds it, another when the
// partition comes back to that member after another one had it — what tells
// the detector its state of the partition's customers went stale.
func TestSubscriber_AssignmentNamesTheDelivery(t *testing.T) {
	c := newCluster(t)
	const group = "assignments"
	all := allPartitions()
	small := func(cfg *windowed.Config) { cfg.MaxInFlightPerPartition = 50 }
	d := &deliveries{got: map[string]map[int32][]uint64{}}
	var n1, n2 atomic.Int64
	c.produce(t, 100, all...)

	_, ch1 := subscribe(t, c, group, small)
	d.consume("first", ch1, &n1)
	// Every partition delivered to the first member before the second joins.
	require.Eventually(t, func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return len(d.got["first"]) == len(all)
	}, waitFor, tick)

	second, ch2 := subscribe(t, c, group, small)
	done2 := d.consume("second", ch2, &n2)
	require.Eventually(t, func() bool {
		c.produce(t, 5, all...)
		return n2.Load() >= 50
	}, waitFor, 20*time.Millisecond, "second member got no records")
	require.NoError(t, second.Close())
	<-done2

	// The stream goes on until the first member has had a message of every
	// partition the second one had, since it left.
	var moved []int32
	for _, p := range all {
		if len(d.assignments("second", p)) > 0 {
			moved = append(moved, p)
		}
	}
	require.NotEmpty(t, moved)
	require.Eventually(t, func() bool {
		c.produce(t, 5, all...)
		for _, p := range moved {
			if len(d.assignments("first", p)) < 2 {
				return false
			}
		}
		return true
	}, waitFor, 20*time.Millisecond, "the moved partitions did not come back to the first member")

	seen := map[uint64]string{}
	for _, member := range []string{"first", "second"} {
		for _, p := range all {
			for _, a := range d.assignments(member, p) {
				require.NotZero(t, a, "%s partition %d: a message without assignment", member, p)
				where := fmt.Sprintf("%s partition %d", member, p)
				if prev, ok := seen[a]; ok && prev != where {
					t.Fatalf("assignment %d delivered to %s and to %s", a, prev, where)
				}
				seen[a] = where
			}
		}
	}
	for _, p := range moved {
		as := d.assignments("first", p)
		require.Len(t, as, 2, "partition %d: before the second member took it, and after it came back", p)
		require.NotEqual(t, as[0], as[1])
	}
}

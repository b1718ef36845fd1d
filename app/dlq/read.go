package dlq

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// bounds returns the start and end offsets of each partition of topic.
func bounds(ctx context.Context, adm *kadm.Client, topic string) (start, end map[int32]int64, err error) {
	list := func(what string, f func(context.Context, ...string) (kadm.ListedOffsets, error)) (map[int32]int64, error) {
		listed, err := f(ctx, topic)
		if err == nil {
			err = listed.Error()
		}
		if err != nil {
			return nil, fmt.Errorf("list %s offsets of %s: %w", what, topic, err)
		}
		out := map[int32]int64{}
		listed.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
		if len(out) == 0 {
			return nil, fmt.Errorf("list %s offsets of %s: topic has no partitions", what, topic)
		}
		return out, nil
	}
	if start, err = list("start", adm.ListStartOffsets); err != nil {
		return nil, nil, err
	}
	if end, err = list("end", adm.ListEndOffsets); err != nil {
		return nil, nil, err
	}
	return start, end, nil
}

// read calls fn with the records of o.Topic from from[p] up to end[p]
// (excluded), batch by batch and in offset order within a partition, and
// returns once every partition has reached its end. Records that arrive
// meanwhile are not read.
func read(ctx context.Context, o Options, from, end map[int32]int64, fn func([]*kgo.Record) error) error {
	remaining := map[int32]int64{}
	start := map[int32]kgo.Offset{}
	for p, e := range end {
		if f := from[p]; f < e {
			remaining[p] = e
			start[p] = kgo.NewOffset().At(f)
		}
	}
	if len(remaining) == 0 {
		return nil
	}
	cons, err := newClient(o, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{o.Topic: start}))
	if err != nil {
		return err
	}
	defer cons.Close()

	lastRecord := time.Now()
	for len(remaining) > 0 {
		pollCtx, cancel := context.WithTimeout(ctx, o.IdleTimeout)
		fetches := cons.PollFetches(pollCtx)
		cancel()
		if err := ctx.Err(); err != nil {
			return err
		}
		var fetchErr error
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && fetchErr == nil {
				fetchErr = fmt.Errorf("read %s partition %d: %w", t, p, err)
			}
		})
		if fetchErr != nil {
			return fetchErr
		}
		var batch []*kgo.Record
		var done []int32
		fetches.EachRecord(func(r *kgo.Record) {
			e, ok := remaining[r.Partition]
			if !ok {
				return
			}
			if r.Offset < e {
				batch = append(batch, r)
			}
			// Past the last offset (a gap at the end, as compaction
			// leaves, shows as a later record): the partition is done.
			if r.Offset >= e-1 {
				delete(remaining, r.Partition)
				done = append(done, r.Partition)
			}
		})
		if len(done) > 0 {
			cons.PauseFetchPartitions(map[string][]int32{o.Topic: done})
		}
		if len(batch) == 0 {
			if time.Since(lastRecord) >= o.IdleTimeout {
				return fmt.Errorf("read %s: no record for %s from partitions %v before their end offsets",
					o.Topic, o.IdleTimeout, slices.Sorted(maps.Keys(remaining)))
			}
			continue
		}
		lastRecord = time.Now()
		if err := fn(batch); err != nil {
			return err
		}
	}
	return nil
}

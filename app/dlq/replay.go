package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Result counts what Replay did; in a dry run, what it would have done.
type Result struct {
	// Replayed messages were republished to their original topic.
	Replayed int `json:"replayed"`
	// Skipped messages did not match the filter. They are passed all the
	// same: only a replay with FromStart sees them again.
	Skipped int `json:"skipped"`
	// Duplicates matched but carried the message UUID of a message already
	// replayed to the same topic in this run (one message poisoned by two
	// handlers): republishing it once lets every handler process it again.
	Duplicates int `json:"duplicates"`
	// Unroutable lists the DLQ records that matched but name no original
	// topic (topic_poisoned), or the DLQ itself, and so cannot be replayed.
	Unroutable []string `json:"unroutable,omitempty"`
	DryRun     bool     `json:"dry_run"`
}

// commitTimeout bounds the commit of what was replayed, which also runs after
// ctx was cancelled so that an interrupted replay is not repeated.
const commitTimeout = 10 * time.Second

// Replay republishes the poisoned messages filter selects to their original
// topic: same key, payload and headers (message UUID, correlation id), the
// poison headers removed and replayed_from added. It reads each DLQ partition
// from the committed offset of opts.Group (or from the start, with
// opts.FromStart) to the end offset found when it starts, publishes
// synchronously and idempotently, then commits, per partition, the offset
// after the last record it got through: up to the end when all went well,
// otherwise up to the first record it failed to publish. Records filter does
// not select are skipped and committed past as well.
//
// Replay writes the replayed messages to w (as List does) and a summary line.
// With opts.DryRun it publishes and commits nothing.
func Replay(ctx context.Context, opts Options, filter Filter, w io.Writer) (Result, error) {
	res := Result{DryRun: opts.DryRun}
	opts, err := opts.withDefaults()
	if err != nil {
		return res, err
	}
	if err := filter.Validate(); err != nil {
		return res, err
	}
	cl, err := newClient(opts)
	if err != nil {
		return res, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	start, end, err := bounds(ctx, adm, opts.Topic)
	if err != nil {
		return res, err
	}
	committed, err := committedOffsets(ctx, adm, opts.Group, opts.Topic)
	if err != nil {
		return res, err
	}
	from := map[int32]int64{}
	for p, s := range start {
		from[p] = s
		if c, ok := committed[p]; ok && !opts.FromStart {
			from[p] = min(max(c, s), end[p])
		}
	}

	r := replayer{cl: cl, opts: opts, filter: filter, now: opts.Now(), res: &res,
		next: maps.Clone(from), seen: map[string]bool{}, out: &printer{w: w, json: opts.JSON}}
	readErr := read(ctx, opts, from, end, func(rs []*kgo.Record) error { return r.batch(ctx, rs) })
	var commitErr error
	if !opts.DryRun {
		commitErr = r.commit(ctx, committed)
	}
	if err := errors.Join(readErr, commitErr); err != nil {
		// What was replayed before the failure is still worth knowing.
		_ = r.out.flush()
		_ = r.summary(w)
		return res, err
	}
	if err := r.out.flush(); err != nil {
		return res, err
	}
	return res, r.summary(w)
}

type replayer struct {
	cl     *kgo.Client
	opts   Options
	filter Filter
	now    time.Time
	res    *Result
	// next is, per DLQ partition, the offset after the last record got
	// through: what to commit.
	next map[int32]int64
	// seen holds topic and message UUID of the messages replayed so far.
	seen map[string]bool
	out  *printer
}

type decision int

const (
	skip decision = iota
	publish
	duplicate
	unroutable
)

// batch replays the selected records of rs and advances next past every
// record of a partition up to the first one that failed to publish.
func (r *replayer) batch(ctx context.Context, rs []*kgo.Record) error {
	entries := make([]Entry, len(rs))
	decisions := make([]decision, len(rs))
	var toSend []*kgo.Record
	sendIdx := map[*kgo.Record]int{} // ProduceSync's results come in completion order
	for i, rec := range rs {
		e := newEntry(rec, r.now)
		entries[i] = e
		switch {
		case !r.filter.Match(e):
			decisions[i] = skip
		case e.Topic == "" || e.Topic == r.opts.Topic:
			decisions[i] = unroutable
		case e.MessageID != "" && r.seen[e.Topic+"\x00"+e.MessageID]:
			decisions[i] = duplicate
		default:
			decisions[i] = publish
			if e.MessageID != "" {
				r.seen[e.Topic+"\x00"+e.MessageID] = true
			}
			out := replayRecord(rec, e)
			toSend = append(toSend, out)
			sendIdx[out] = i
		}
	}

	failed := make([]error, len(rs))
	if len(toSend) > 0 && !r.opts.DryRun {
		// Cancelling ctx fails only the records not yet sent: the results
		// still tell which ones were written.
		results := r.cl.ProduceSync(ctx, toSend...)
		for _, pr := range results {
			failed[sendIdx[pr.Record]] = pr.Err
		}
	}

	var firstErr error
	stopped := map[int32]bool{}
	for i, rec := range rs {
		p := rec.Partition
		if stopped[p] {
			continue
		}
		if err := failed[i]; err != nil {
			stopped[p] = true
			if firstErr == nil {
				firstErr = fmt.Errorf("replay %s to %s: %w", entries[i].Coordinates(), entries[i].Topic, err)
			}
			continue
		}
		r.next[p] = rec.Offset + 1
		switch decisions[i] {
		case skip:
			r.res.Skipped++
		case duplicate:
			r.res.Duplicates++
		case unroutable:
			r.res.Unroutable = append(r.res.Unroutable, entries[i].Coordinates())
		case publish:
			r.res.Replayed++
			if err := r.out.add(entries[i]); err != nil && firstErr == nil {
				firstErr = err
			}
		}
	}
	return firstErr
}

// commit stores next as the group's offsets where they moved.
func (r *replayer) commit(ctx context.Context, committed map[int32]int64) error {
	offsets := kadm.Offsets{}
	meta := fmt.Sprintf("heartbeat dlq replay %s at %s", r.filter, r.now.UTC().Format(time.RFC3339))
	if len(meta) > 512 {
		meta = meta[:512]
	}
	for p, n := range r.next {
		if c, ok := committed[p]; ok && c == n {
			continue
		}
		offsets.Add(kadm.Offset{Topic: r.opts.Topic, Partition: p, At: n, LeaderEpoch: -1, Metadata: meta})
	}
	if len(offsets) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	if err := kadm.NewClient(r.cl).CommitAllOffsets(ctx, r.opts.Group, offsets); err != nil {
		return fmt.Errorf("commit replay progress to group %s (a next replay may publish some messages again): %w", r.opts.Group, err)
	}
	return nil
}

func (r *replayer) summary(w io.Writer) error {
	if r.opts.JSON {
		return json.NewEncoder(w).Encode(r.res)
	}
	var b strings.Builder
	res := r.res
	verb, skipVerb := "replayed", "skipped"
	if res.DryRun {
		b.WriteString("dry run: ")
		verb, skipVerb = "would replay", "would skip"
	}
	fmt.Fprintf(&b, "%s %d, %s %d (filter: %s)", verb, res.Replayed, skipVerb, res.Skipped, r.filter)
	if res.Duplicates > 0 {
		fmt.Fprintf(&b, ", %d %s of a message already replayed", res.Duplicates, plural(res.Duplicates, "duplicate", "duplicates"))
	}
	if len(res.Unroutable) > 0 {
		fmt.Fprintf(&b, ", %d without an original topic (%s)", len(res.Unroutable), strings.Join(res.Unroutable, ", "))
	}
	switch {
	case res.DryRun:
		b.WriteString("; nothing published or committed")
	case res.Skipped > 0:
		fmt.Fprintf(&b, "; skipped messages are passed: replay them later with --from-start")
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// committedOffsets returns the group's committed offsets of topic's
// partitions; none when the group does not exist yet.
func committedOffsets(ctx context.Context, adm *kadm.Client, group, topic string) (map[int32]int64, error) {
	resp, err := adm.FetchOffsets(ctx, group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		return map[int32]int64{}, nil
	}
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("fetch offsets of group %s: %w", group, err)
	}
	out := map[int32]int64{}
	for p, o := range resp[topic] {
		if o.At >= 0 {
			out[p] = o.At
		}
	}
	return out, nil
}

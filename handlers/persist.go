package handlers

import (
	"context"
	"slices"
	"time"

	"github.com/heartbeat/heartbeat/messages"
)

// IngestSink takes a batch's records for storage and returns once they are
// durable: stored, with the partition checkpoint past them. (The router
// gives Persist a [Batcher] that gathers the submissions of concurrent
// batch messages into COPY transactions.)
type IngestSink interface {
	SubmitAll(ctx context.Context, items []messages.Ingest) error
}

// Persist validates readings and stores the valid ones. A batch's records
// go to storage in one submission, the valid readings as rows and the
// invalid ones as their place in the checkpoint only, so that the
// checkpoint covers every record persist has finished with; the handler
// returns — and the batch is acked — only once that submission committed.
// The invalid records it lists in the batch (Batch.Refused) for the
// InvalidEvents middleware to route to the invalid topic.
type Persist struct {
	limits messages.Limits
	sink   IngestSink
	now    func() time.Time
}

// NewPersist returns a Persist validating with limits at the time now
// tells, storing into sink.
func NewPersist(limits messages.Limits, sink IngestSink, now func() time.Time) (*Persist, error) {
	if err := require("Persist", dep{"a sink", sink != nil}, dep{"a clock", now != nil}); err != nil {
		return nil, err
	}
	return &Persist{limits: limits, sink: sink, now: now}, nil
}

// HandleBatch implements [BatchHandler].
func (p *Persist) HandleBatch(ctx context.Context, b *messages.Batch) error {
	if b.Done >= len(b.Records) {
		return nil
	}
	now := p.now()
	records := b.Records[b.Done:]
	items := make([]messages.Ingest, len(records))
	var refused []messages.Refusal
	for i := range records {
		r := &records[i]
		h, err := p.limits.Validate(r.Value, now)
		if err == nil {
			items[i] = messages.Ingest{Reading: h, Source: r.Source}
			continue
		}
		verr, ok := messages.AsValidationError(err)
		if !ok {
			return err
		}
		items[i] = messages.Ingest{Source: r.Source, Refused: true}
		refused = append(refused, messages.Refusal{Record: b.Done + i, Err: verr})
	}
	// A refused record read from no Kafka partition (a message of another
	// pub/sub) has no place in the checkpoint.
	items = slices.DeleteFunc(items, func(in messages.Ingest) bool { return in.Refused && in.Source.Offset < 0 })
	if len(items) > 0 {
		if err := p.sink.SubmitAll(ctx, items); err != nil {
			return err
		}
	}
	b.Refuse(refused)
	b.Done = len(b.Records)
	return nil
}

// EventWrite adapts a batch write that reports how many rows were new
// (sql.EventWriter.Write) to the [Batcher]'s WriteFunc, reporting each
// committed batch.
func EventWrite(write func(context.Context, []messages.Ingest) (int64, error), inserted func(rows, inserted int, took time.Duration)) WriteFunc[messages.Ingest] {
	return func(ctx context.Context, rows []messages.Ingest) error {
		start := time.Now()
		n, err := write(ctx, rows)
		if err == nil && inserted != nil {
			inserted(len(rows), int(n), time.Since(start))
		}
		return err
	}
}

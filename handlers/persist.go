package handlers

import (
	"context"
	"errors"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/heartbeat/heartbeat/messages"
	hbsql "github.com/heartbeat/heartbeat/sql"
)

// Persist validates readings and stores the valid ones. Each message's
// handler call waits until the batch holding its row has committed, together
// with the partition checkpoint, and only then acks.
//
// A batch message (messages.Batch) is handled whole: its invalid records'
// envelopes published in one call (RouteInvalid), then all its records
// submitted together — rows for the valid ones, checkpoint entries for the
// rest — so that one handler call, not one per record, waits for the
// commit. A lone message's invalid reading is returned as the
// *messages.ValidationError, for the InvalidEvents middleware to route.
type Persist struct {
	Limits  messages.Limits
	Batcher *Batcher[hbsql.EventRow]
	Now     func() time.Time
	// RouteInvalid publishes the envelopes of a batch's invalid records
	// (middleware.InvalidEvents.Route).
	RouteInvalid func(msgs []*message.Message, verrs []*messages.ValidationError) error
	// NewCorrelationID names a record that arrived without a correlation id.
	NewCorrelationID func() string
}

// Handle implements message.NoPublishHandlerFunc.
func (p *Persist) Handle(msg *message.Message) error {
	if b, ok := messages.BatchOf(msg); ok {
		return p.handleBatch(msg, b)
	}
	h, err := p.Limits.Validate(msg.Payload, p.Now())
	if err != nil {
		return err
	}
	src, _ := messages.SourceFromContext(msg.Context())
	return p.Batcher.Submit(msg.Context(), hbsql.EventRow{Event: h, Source: src})
}

func (p *Persist) handleBatch(msg *message.Message, b *messages.Batch) error {
	now := p.Now()
	rows := make([]hbsql.EventRow, len(b.Records))
	var (
		invalid []*message.Message
		verrs   []*messages.ValidationError
	)
	for i := range b.Records {
		r := &b.Records[i]
		h, err := p.Limits.Validate(r.Value, now)
		if err == nil {
			rows[i] = hbsql.EventRow{Event: h, Source: r.Source}
			continue
		}
		verr, ok := messages.AsValidationError(err)
		if !ok {
			return err
		}
		rows[i] = hbsql.EventRow{Source: r.Source, CheckpointOnly: true}
		if !b.Routed {
			invalid = append(invalid, recordMessage(msg.Context(), r, p.NewCorrelationID))
			verrs = append(verrs, verr)
		}
	}
	ctx := msg.Context()
	if len(invalid) > 0 {
		if p.RouteInvalid == nil {
			return errors.New("persist: a batch holds invalid records and no RouteInvalid is set")
		}
		if err := p.RouteInvalid(invalid, verrs); err != nil {
			return err
		}
		// The envelopes are out: finish recording them even if the message's
		// context ends now (shutdown), so a restart does not publish them again.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
		defer cancel()
	}
	b.Routed = true
	if err := p.Batcher.SubmitAll(ctx, rows); err != nil {
		return err
	}
	b.Done = len(b.Records)
	return nil
}

// Settle records a message that needs no row (an invalid event, already
// routed) in the checkpoint, so the checkpoint covers every record persist
// has finished with.
func (p *Persist) Settle(msg *message.Message) error {
	src, ok := messages.SourceFromContext(msg.Context())
	if !ok || src.Offset < 0 {
		return nil
	}
	// The envelope is already out: finish recording it even if the message's
	// context ends now (shutdown), so a restart does not publish it again.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(msg.Context()), settleTimeout)
	defer cancel()
	return p.Batcher.Submit(ctx, hbsql.EventRow{Source: src, CheckpointOnly: true})
}

// settleTimeout bounds Settle once the message's context has ended.
const settleTimeout = 5 * time.Second

// EventWrite adapts a batch write that reports how many rows were new
// (hbsql.EventWriter.Write) to a WriteFunc, reporting each committed batch.
func EventWrite(write func(context.Context, []hbsql.EventRow) (int64, error), inserted func(rows, inserted int, took time.Duration)) WriteFunc[hbsql.EventRow] {
	return func(ctx context.Context, rows []hbsql.EventRow) error {
		start := time.Now()
		n, err := write(ctx, rows)
		if err == nil && inserted != nil {
			inserted(len(rows), int(n), time.Since(start))
		}
		return err
	}
}

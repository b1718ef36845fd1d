package handlers

import (
	"context"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/heartbeat/heartbeat/messages"
	hbsql "github.com/heartbeat/heartbeat/sql"
)

// Persist validates readings and stores the valid ones. Each message's
// handler call waits until the batch holding its row has committed, together
// with the partition checkpoint, and only then acks.
type Persist struct {
	Limits  messages.Limits
	Batcher *Batcher[hbsql.EventRow]
	Now     func() time.Time
}

// Handle implements message.NoPublishHandlerFunc.
func (p *Persist) Handle(msg *message.Message) error {
	h, err := p.Limits.Validate(msg.Payload, p.Now())
	if err != nil {
		return err
	}
	src, _ := messages.SourceFromContext(msg.Context())
	return p.Batcher.Submit(msg.Context(), hbsql.EventRow{Event: h, Source: src})
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

package handlers

import (
	"context"

	"github.com/ThreeDotsLabs/watermill/message"
	wmmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/heartbeat/heartbeat/messages"
)

// recordMessage is record r of a batch message as its own message, with
// its correlation id (recordCorrelationID).
func recordMessage(ctx context.Context, r *messages.Record, newID func() string) *message.Message {
	m := r.Message(ctx)
	if id := recordCorrelationID(r, newID); id != wmmw.MessageCorrelationID(m) {
		wmmw.SetCorrelationID(id, m)
	}
	return m
}

// recordCorrelationID is r's correlation id, or a new one from newID (when
// set) for a record produced without.
func recordCorrelationID(r *messages.Record, newID func() string) string {
	if id := r.Header(messages.CorrelationIDMetadata); id != "" || newID == nil {
		return id
	}
	return newID()
}

// RecordHandler handles a message, or one record of a batch message as it
// would the record's own message; newID names a record without a
// correlation id.
type RecordHandler interface {
	Handle(msg *message.Message) error
	HandleRecord(ctx context.Context, r *messages.Record, newID func() string) error
}

// BatchHandler is a RecordHandler that handles a batch's records not done
// at once, marking them done when it succeeds.
type BatchHandler interface {
	RecordHandler
	HandleBatch(ctx context.Context, b *messages.Batch, newID func() string) error
}

// EachRecord adapts h to batch messages: it hands h each record not done of
// a batch message in order, counting it done when h succeeds, and stops at
// the first error — a retry resumes there; or the whole batch, if h is a
// BatchHandler. Other messages go to h.Handle.
func EachRecord(h RecordHandler, newID func() string) message.NoPublishHandlerFunc {
	bh, whole := h.(BatchHandler)
	return func(msg *message.Message) error {
		b, ok := messages.BatchOf(msg)
		if !ok {
			return h.Handle(msg)
		}
		ctx := msg.Context()
		if whole {
			return bh.HandleBatch(ctx, b, newID)
		}
		for b.Done < len(b.Records) {
			if err := h.HandleRecord(ctx, &b.Records[b.Done], newID); err != nil {
				return err
			}
			b.Done++
		}
		return nil
	}
}

package messages

import (
	"context"
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"
)

// UUIDHeader is the record header that holds a Watermill message's UUID, the
// one watermill-kafka's marshaler writes.
const UUIDHeader = "_watermill_message_uuid"

// Header is one Kafka record header.
type Header struct {
	Key   string
	Value []byte
}

// Record is one Kafka record carried by a batch message.
type Record struct {
	Source  Source
	Key     []byte
	Value   []byte
	Headers []Header
}

// Header returns the value of the record's header key, or "".
func (r *Record) Header(key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// Message is the Watermill message a per-record subscriber would deliver for
// r: UUID from the Watermill header, or one made of the record's
// coordinates; the other headers as metadata; the key as KeyMetadata unless a
// header already set it; its Source in the context, derived from ctx.
func (r *Record) Message(ctx context.Context) *message.Message {
	msg := message.NewMessage("", r.Value)
	for _, h := range r.Headers {
		if h.Key == UUIDHeader {
			msg.UUID = string(h.Value)
			continue
		}
		msg.Metadata[h.Key] = string(h.Value)
	}
	if msg.UUID == "" {
		msg.UUID = r.Source.Topic + "-" + strconv.FormatInt(int64(r.Source.Partition), 10) + "-" + strconv.FormatInt(r.Source.Offset, 10)
	}
	if _, ok := msg.Metadata[KeyMetadata]; !ok && r.Key != nil {
		msg.Metadata[KeyMetadata] = string(r.Key)
	}
	// A record's message is never itself a batch, whatever ctx carries.
	ctx = context.WithValue(ctx, batchKey{}, (*Batch)(nil))
	msg.SetContext(WithSource(ctx, r.Source))
	return msg
}

// Batch is what a batch message carries in its context: consecutive records
// of one partition, in offset order, to be handled as one message and
// acknowledged together. The message's own payload is empty.
//
// A handler that cannot finish a batch for a reason other than the
// infrastructure's fails it; the subscriber then delivers the records that
// are not Done again one message each, so that the bad one alone is retried
// and poisoned, with its own payload.
type Batch struct {
	Records []Record
	// Done counts the leading records the handler has finished with: a
	// retry of the batch message resumes after them, and a split delivers
	// only the rest again.
	Done int
	// Routed is set once the batch's invalid records are on the invalid
	// topic, so that a retry does not publish their envelopes again.
	Routed bool
}

type batchKey struct{}

// WithBatch returns ctx carrying b.
func WithBatch(ctx context.Context, b *Batch) context.Context {
	return context.WithValue(ctx, batchKey{}, b)
}

// BatchFromContext returns the batch a batch message's context carries.
func BatchFromContext(ctx context.Context) (*Batch, bool) {
	b, _ := ctx.Value(batchKey{}).(*Batch)
	return b, b != nil
}

// BatchOf returns the batch msg carries, if it is a batch message.
func BatchOf(msg *message.Message) (*Batch, bool) {
	return BatchFromContext(msg.Context())
}

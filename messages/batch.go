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

// Batch is the one unit every handler works on: consecutive records of one
// partition, in offset order, handled together and acknowledged together.
// The subscriber delivers a partition's records as batch messages (the
// Batch in the context, an empty payload); any other message — a record
// delivered alone after a split, or a message of another pub/sub (Watermill's
// GoChannel in tests) — is a batch of one record ([AsBatch]).
//
// A handler works through Records from Done on, counting each record done
// as it finishes with it: a retry of the message resumes after them. A
// handler that cannot finish a batch for a reason other than the
// infrastructure's fails it; the subscriber then delivers the records not
// Done again one message each, so that the bad one alone is retried and
// poisoned, with its own payload.
//
// Invalid records flow one way, from the handler to the InvalidEvents
// middleware: the handler lists the records it refused in Refused (with the
// validation error), and the middleware publishes their envelopes to the
// invalid topic, counting them in Routed.
type Batch struct {
	Records []Record
	// Done counts the leading records the handler has finished with.
	Done int
	// Refused are the records the handler found invalid in its last pass
	// over the batch, in record order; Routed counts those whose envelopes
	// are published. A handler's pass from Done replaces both.
	Refused []Refusal
	Routed  int
	// single: made from one message, not by the subscriber: there is
	// nothing to split.
	single bool
}

// Refusal is a record of a batch refused as invalid, and why.
type Refusal struct {
	Record int // index in Batch.Records
	Err    *ValidationError
}

// Refuse starts a handler's pass over b from Done: the refusals of an
// earlier pass, routed or not, are forgotten (the pass finds them again).
func (b *Batch) Refuse(refusals []Refusal) { b.Refused, b.Routed = refusals, 0 }

// Single reports whether b was made from a single message ([AsBatch]), not
// delivered by the subscriber as a batch message.
func (b *Batch) Single() bool { return b.single }

type batchKey struct{}

// WithBatch returns ctx carrying b.
func WithBatch(ctx context.Context, b *Batch) context.Context {
	return context.WithValue(ctx, batchKey{}, b)
}

// BatchOf returns the batch msg carries, if the subscriber delivered it as
// a batch message.
func BatchOf(msg *message.Message) (*Batch, bool) {
	b, _ := msg.Context().Value(batchKey{}).(*Batch)
	return b, b != nil && !b.single
}

// AsBatch returns the batch msg carries, or msg as a batch of one record —
// its payload, metadata, key and source (partition and offset -1 when its
// context has none) — kept in msg's context, so that the middleware and
// the handler, and every retry, see the same one.
func AsBatch(msg *message.Message) *Batch {
	if b, _ := msg.Context().Value(batchKey{}).(*Batch); b != nil {
		return b
	}
	src, ok := SourceFromContext(msg.Context())
	if !ok {
		src = Source{Topic: message.SubscribeTopicFromCtx(msg.Context()), Partition: -1, Offset: -1}
	}
	r := Record{Source: src, Value: msg.Payload, Headers: make([]Header, 0, len(msg.Metadata)+1)}
	r.Headers = append(r.Headers, Header{Key: UUIDHeader, Value: []byte(msg.UUID)})
	for k, v := range msg.Metadata {
		r.Headers = append(r.Headers, Header{Key: k, Value: []byte(v)})
	}
	if key := msg.Metadata.Get(KeyMetadata); key != "" {
		r.Key = []byte(key)
	}
	b := &Batch{Records: []Record{r}, single: true}
	msg.SetContext(WithBatch(msg.Context(), b))
	return b
}

// CorrelationID is r's correlation id: its header, or for a record produced
// without one a new id from newID, kept in r's headers, so that everything
// derived from r — its envelope, its anomalies — carries the same.
func (r *Record) CorrelationID(newID func() string) string {
	if id := r.Header(CorrelationIDMetadata); id != "" {
		return id
	}
	id := newID()
	r.Headers = append(r.Headers, Header{Key: CorrelationIDMetadata, Value: []byte(id)})
	return id
}

package middleware

import (
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"
)

// BoundedPublisher keeps messages under the broker's size limit by cutting
// their payload, and says so in metadata (payload_truncated, payload_bytes).
// The poison queue publishes through it: a message that is poisoned because
// it is huge must still reach the DLQ, or it would be redelivered forever;
// its source coordinates (topic_poisoned and the original record) point at
// the whole payload.
type BoundedPublisher struct {
	message.Publisher
	// MaxBytes bounds payload plus metadata.
	MaxBytes int
}

// Publish implements message.Publisher.
func (b BoundedPublisher) Publish(topic string, msgs ...*message.Message) error {
	for i, m := range msgs {
		size := len(m.Payload) + len(m.UUID)
		for k, v := range m.Metadata {
			size += len(k) + len(v)
		}
		if size <= b.MaxBytes {
			continue
		}
		cut := m.Copy()
		keep := max(0, len(m.Payload)-(size-b.MaxBytes))
		cut.Payload = m.Payload[:keep]
		cut.Metadata.Set("payload_truncated", "true")
		cut.Metadata.Set("payload_bytes", strconv.Itoa(len(m.Payload)))
		msgs[i] = cut
	}
	return b.Publisher.Publish(topic, msgs...)
}

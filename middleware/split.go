package middleware

import (
	"errors"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/heartbeat/heartbeat/messages"
)

// SplitError is a batch message's failure for a reason that is not the
// infrastructure's. It is not retried and not poisoned as a batch: the
// batch is nacked, and the subscriber delivers its records not done again
// one message each, so that the failing record alone is retried and
// poisoned, with its own payload and metadata.
type SplitError struct{ Err error }

func (e *SplitError) Error() string { return "batch split into its records: " + e.Err.Error() }
func (e *SplitError) Unwrap() error { return e.Err }

// IsSplit reports whether err asks for its batch to be split.
func IsSplit(err error) bool {
	var s *SplitError
	return errors.As(err, &s)
}

// SplitBatches turns a batch message's failure that is not transient
// ([IsTransient]) into a [SplitError]. Place it outside Retry (whose
// ShouldRetry should refuse [IsSplit] errors) and inside PoisonQueue (whose
// filter should let them pass), so a batch message is never poisoned whole:
// it carries no payload of its own.
func SplitBatches(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		out, err := h(msg)
		if err == nil || IsTransient(err) || IsSplit(err) {
			return out, err
		}
		if _, ok := messages.BatchOf(msg); ok {
			return nil, &SplitError{Err: err}
		}
		return out, err
	}
}

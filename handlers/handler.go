package handlers

import (
	"context"
	"fmt"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/heartbeat/heartbeat/messages"
)

// BatchHandler is the contract of this package's handlers: handle the
// records of b from b.Done on, in order, counting each record done as it is
// finished with; an error leaves the rest for the retry (or the split).
type BatchHandler interface {
	HandleBatch(ctx context.Context, b *messages.Batch) error
}

// Handler adapts h to Watermill's router: a batch message is handled as
// its batch, any other message as a batch of one record.
func Handler(h BatchHandler) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		return h.HandleBatch(msg.Context(), messages.AsBatch(msg))
	}
}

// dep is a dependency a constructor requires: its name, and whether it
// is set.
type dep struct {
	name string
	set  bool
}

// require refuses a handler whose required dependencies are not all set,
// naming the missing ones.
func require(handler string, deps ...dep) error {
	var absent []string
	for _, d := range deps {
		if !d.set {
			absent = append(absent, d.name)
		}
	}
	if len(absent) == 0 {
		return nil
	}
	return fmt.Errorf("handlers: %s needs %s", handler, strings.Join(absent, ", "))
}

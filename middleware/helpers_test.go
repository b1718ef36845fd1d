package middleware_test

import (
	"context"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/handlers/handlerstest"
	"github.com/heartbeat/heartbeat/messages"
)

// publisher records what is published through it; while fail is set,
// every Publish fails with it (and is still recorded as tried).
type publisher struct {
	mu    sync.Mutex
	fail  error
	tried [][]*message.Message
	ok    map[string][]*message.Message
}

func (p *publisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tried = append(p.tried, msgs)
	if p.fail != nil {
		return p.fail
	}
	if p.ok == nil {
		p.ok = map[string][]*message.Message{}
	}
	p.ok[topic] = append(p.ok[topic], msgs...)
	return nil
}

func (p *publisher) Close() error { return nil }

func (p *publisher) setFail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fail = err
}

// calls returns what each Publish call was given, failed or not.
func (p *publisher) calls() [][]*message.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][]*message.Message(nil), p.tried...)
}

// published returns what was published on topic.
func (p *publisher) published(topic string) []*message.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*message.Message(nil), p.ok[topic]...)
}

// batchMessage is a batch message as the subscriber delivers it: b in its
// context, no payload of its own.
func batchMessage(b *messages.Batch) *message.Message {
	msg := message.NewMessage(uuid.NewString(), nil)
	msg.SetContext(messages.WithBatch(context.Background(), b))
	return msg
}

// newPubSub is a GoChannel on which a Publish returns once the message is
// acked (BlockPublishUntilSubscriberAck), and a late subscriber still
// receives it (Persistent).
func newPubSub(t *testing.T) *gochannel.GoChannel {
	t.Helper()
	ps := gochannel.NewGoChannel(gochannel.Config{Persistent: true, BlockPublishUntilSubscriberAck: true}, watermill.NopLogger{})
	t.Cleanup(func() { require.NoError(t, ps.Close()) })
	return ps
}

// route runs h as handler name of a router reading topic "in" of ps, with
// mw around it (the first outermost). A message published to "in" is
// handled, middleware included, before Publish returns; h must ack it in
// the end.
func route(t *testing.T, ps *gochannel.GoChannel, name string, h message.HandlerFunc, mw ...message.HandlerMiddleware) {
	t.Helper()
	r, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	require.NoError(t, err)
	r.AddConsumerHandler(name, "in", ps, func(msg *message.Message) error {
		_, err := h(msg)
		return err
	}).AddMiddleware(mw...)
	handlerstest.Run(t, r)
}

package middleware_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	wmmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/handlers/handlerstest"
	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/middleware"
)

var rejectedAt = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// refuser is a handler that refuses the records of its batch whose payload
// is in bad, with that error, from Done on, as persist does.
func refuser(bad map[string]*messages.ValidationError) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		b := messages.AsBatch(msg)
		if b.Done >= len(b.Records) {
			return nil, nil
		}
		var refused []messages.Refusal
		for i := b.Done; i < len(b.Records); i++ {
			if verr, ok := bad[string(b.Records[i].Value)]; ok {
				refused = append(refused, messages.Refusal{Record: i, Err: verr})
			}
		}
		b.Refuse(refused)
		b.Done = len(b.Records)
		return nil, nil
	}
}

type routed struct {
	handler string
	class   messages.Class
}

// invalidEvents is the middleware under test, publishing to pub, naming
// records without a correlation id new-1, new-2, …, and recording OnRouted.
func invalidEvents(pub message.Publisher, got *[]routed) middleware.InvalidEvents {
	n := 0
	return middleware.InvalidEvents{Publisher: pub, Topic: "events.invalid.v1", Now: func() time.Time { return rejectedAt },
		NewID:    func() string { n++; return fmt.Sprintf("new-%d", n) },
		OnRouted: func(h string, c messages.Class) { *got = append(*got, routed{h, c}) }}
}

var (
	notJSON  = &messages.ValidationError{Class: messages.ClassSchema, Field: "payload", Reason: "is not JSON"}
	tooFast  = &messages.ValidationError{Class: messages.ClassDomain, Field: "heart_rate", Reason: "250 is outside [30, 220] bpm"}
	badBatch = map[string]*messages.ValidationError{"not json": notJSON, "250 bpm": tooFast, "also not json": notJSON}
)

func src(offset int64) messages.Source {
	return messages.Source{Topic: "events.raw.v1", Partition: 7, Offset: offset}
}

// fourRecords is a batch: a good record, then three refused ones — with a
// correlation id and a key header, with a Kafka key only, with neither.
func fourRecords() *messages.Batch {
	return &messages.Batch{Records: []messages.Record{
		{Source: src(40), Key: []byte("c0"), Value: []byte("good")},
		{Source: src(41), Key: []byte("record-key"), Value: []byte("not json"), Headers: []messages.Header{
			{Key: messages.CorrelationIDMetadata, Value: []byte("corr-41")}, {Key: messages.KeyMetadata, Value: []byte("header-key")}}},
		{Source: src(42), Key: []byte("c2"), Value: []byte("250 bpm")},
		{Source: src(43), Value: []byte("also not json")},
	}}
}

func TestInvalidEventsPublishesEachRefusedRecordOnce(t *testing.T) {
	pub := &publisher{}
	var got []routed
	h := invalidEvents(pub, &got).Middleware(refuser(badBatch))
	b := fourRecords()
	msg := batchMessage(b)

	out, err := h(msg)
	require.NoError(t, err)
	require.Nil(t, out)
	require.Len(t, pub.calls(), 1, "the batch's envelopes in one Publish call")
	envs := pub.published("events.invalid.v1")
	require.Len(t, envs, 3)
	want := []struct {
		record      int
		verr        *messages.ValidationError
		correlation string
		key         string
	}{
		{1, notJSON, "corr-41", "header-key"}, // kept; the header wins over the Kafka key
		{2, tooFast, "new-1", "c2"},           // given; the Kafka key
		{3, notJSON, "new-2", ""},             // given; no key
	}
	for i, w := range want {
		env := envs[i]
		var e messages.InvalidEvent
		require.NoError(t, json.Unmarshal(env.Payload, &e))
		r := b.Records[w.record]
		require.Equal(t, string(r.Value), e.Payload, "the original payload")
		require.Equal(t, w.verr.Class, e.Class)
		require.Equal(t, w.verr.Field, e.Field)
		require.Equal(t, w.verr.Reason, e.Reason)
		require.Equal(t, "events.raw.v1", e.SourceTopic)
		require.Equal(t, int32(7), e.SourcePartition)
		require.Equal(t, r.Source.Offset, e.SourceOffset)
		require.Equal(t, rejectedAt, e.RejectedAt)
		require.Equal(t, w.correlation, wmmw.MessageCorrelationID(env))
		require.Equal(t, w.correlation, r.Header(messages.CorrelationIDMetadata), "the record keeps the id its envelope carries")
		require.Equal(t, w.key, env.Metadata.Get(messages.KeyMetadata))
		_, err := uuid.Parse(env.UUID)
		require.NoError(t, err)
	}
	require.Equal(t, 3, b.Routed)
	require.Equal(t, 4, b.Done)
	require.Equal(t, []routed{{"", messages.ClassSchema}, {"", messages.ClassDomain}, {"", messages.ClassSchema}}, got)

	// The message again (a retry after a later failure): everything is
	// routed, nothing is published twice.
	_, err = h(msg)
	require.NoError(t, err)
	require.Len(t, pub.calls(), 1)
	require.Len(t, got, 3)

	// The same records refused again (a redelivery) give envelopes with the
	// same ids; other records other ids.
	again := &publisher{}
	_, err = invalidEvents(again, &[]routed{}).Middleware(refuser(badBatch))(batchMessage(fourRecords()))
	require.NoError(t, err)
	ids := map[string]bool{}
	for i, env := range again.published("events.invalid.v1") {
		require.Equal(t, envs[i].UUID, env.UUID, "envelope %d", i)
		ids[env.UUID] = true
	}
	require.Len(t, ids, 3)
}

// A failed publish must not ack a record whose envelope is lost: Done moves
// back to the first record not routed, the error is the handler's, and the
// retry routes the envelopes again, with the same ids.
func TestInvalidEventsFailedPublishIsRoutedByTheRetry(t *testing.T) {
	down := errors.New("broker unreachable")
	pub := &publisher{fail: down}
	var got []routed
	h := invalidEvents(pub, &got).Middleware(refuser(badBatch))
	b := fourRecords()
	msg := batchMessage(b)

	out, err := h(msg)
	require.ErrorIs(t, err, down)
	require.ErrorContains(t, err, "publish to invalid topic events.invalid.v1")
	require.Nil(t, out)
	require.Equal(t, 1, b.Done, "back to the first refused record")
	require.Zero(t, b.Routed)
	require.Empty(t, got, "nothing counted as routed")
	require.Empty(t, pub.published("events.invalid.v1"))
	failed := pub.calls()[0]
	require.Len(t, failed, 3)

	pub.setFail(nil)
	_, err = h(msg)
	require.NoError(t, err)
	envs := pub.published("events.invalid.v1")
	require.Len(t, envs, 3)
	for i := range envs {
		require.Equal(t, failed[i].UUID, envs[i].UUID)
	}
	require.Equal(t, 4, b.Done)
	require.Equal(t, 3, b.Routed)
	require.Len(t, got, 3)
}

// A handler's error is returned as it is, and nothing is routed: its
// refusals, if any, come again with the retry.
func TestInvalidEventsLeavesAFailedHandlerAlone(t *testing.T) {
	pub := &publisher{}
	fail := errors.New("database down")
	h := invalidEvents(pub, &[]routed{}).Middleware(func(msg *message.Message) ([]*message.Message, error) {
		b := messages.AsBatch(msg)
		b.Refuse([]messages.Refusal{{Record: 1, Err: notJSON}})
		return nil, fail
	})
	b := fourRecords()
	_, err := h(batchMessage(b))
	require.Same(t, fail, err)
	require.Empty(t, pub.calls())
	require.Zero(t, b.Done)
}

// Through a router on GoChannel: single messages refused are published to
// the invalid topic and counted under the handler's name.
func TestInvalidEventsCountsByHandler(t *testing.T) {
	var got []routed
	ps := newPubSub(t)
	route(t, ps, "persist", refuser(badBatch), invalidEvents(ps, &got).Middleware)
	for _, payload := range []string{"not json", "good", "250 bpm"} {
		m := message.NewMessage(uuid.NewString(), []byte(payload))
		m.Metadata.Set(wmmw.CorrelationIDMetadataKey, "corr-"+payload)
		require.NoError(t, ps.Publish("in", m))
	}
	require.Equal(t, []routed{{"persist", messages.ClassSchema}, {"persist", messages.ClassDomain}}, got)
	byPayload := map[string]string{} // payload -> correlation id
	for _, env := range handlerstest.Read(t, ps, "events.invalid.v1", 2) {
		var e messages.InvalidEvent
		require.NoError(t, json.Unmarshal(env.Payload, &e))
		require.Equal(t, int64(-1), e.SourceOffset, "from no Kafka partition")
		byPayload[e.Payload] = wmmw.MessageCorrelationID(env)
	}
	require.Equal(t, map[string]string{"not json": "corr-not json", "250 bpm": "corr-250 bpm"}, byPayload)
}

package messages

import (
	"github.com/ThreeDotsLabs/watermill/message"
)

// Ingest is what persist hands storage for one record of the raw topic: a
// valid reading to store with where it was read from, or, Refused, only its
// place in the partition — an invalid record persist has finished with, so
// that storage's checkpoint covers every record (its envelope goes to the
// invalid topic).
type Ingest struct {
	Reading Heartbeat
	Source  Source
	Refused bool
}

// Episode statuses (anomalies.status, and the status of an episode's
// messages).
const (
	EpisodeOpen   = "open"
	EpisodeClosed = "closed"
)

// EpisodeUpdate is one change of an episode's anomalies row — its opening,
// reclassification or closing, as the row now is — and the message on
// events.anomaly.v1 that announces it: storage records both in one
// transaction (the outbox).
type EpisodeUpdate struct {
	Episode EpisodeAnomaly
	Message *message.Message
}

// Package dlq lets an operator inspect and replay the poison queue
// (events.dlq.v1) once the cause of the failures is fixed.
//
// A poisoned message is the original message as Watermill's PoisonQueue
// middleware published it: payload, key and every metadata key as a Kafka
// header (the message UUID under _watermill_message_uuid), plus
// reason_poisoned, topic_poisoned, handler_poisoned and subscriber_poisoned.
//
// [List] reads the whole topic, from the start to the end offsets it finds
// when it starts, and prints one line per poisoned message; it never waits
// for more.
//
// [Replay] republishes the messages a [Filter] selects to their original
// topic, with the same payload, key and headers (so the same message UUID and
// correlation id) but without the poison headers, and with a replayed_from
// header naming the DLQ record (events.dlq.v1/<partition>/<offset>). The
// handlers process them again; they are idempotent, so this is safe.
//
// Replay remembers how far it got in the consumer group heartbeat.dlq-replay:
// it reads each DLQ partition from the group's committed offset to the end
// offset and then commits the end offset, so running it twice replays nothing
// the second time. Records the filter did not select are passed as well: a
// later replay with another filter does not see them again unless it is run
// with FromStart (--from-start). If publishing fails, only the records of a
// partition before the first failure are committed.
//
// `heartbeat dlq list` and `heartbeat dlq replay` (app/cli) call them.
package dlq

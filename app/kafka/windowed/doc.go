// Package windowed is a Watermill [message.Subscriber] on franz-go that keeps
// many messages of each Kafka partition in flight at once.
//
// watermill-kafka's subscriber hands out one message per partition and waits
// for its ack before the next, so a handler that acks only when its batch has
// been committed to a database sees one message per partition per batch.
// [Subscriber] instead delivers a partition's records in order without waiting,
// up to [Config.MaxInFlightPerPartition] of them between the oldest
// unacknowledged record and the newest delivered one (the window), and pauses
// fetching that partition when the window is full.
//
// With [Config.BatchRecords] above 1, consecutive records of a partition go
// out as one batch message (a [messages.Batch] in its context), so that the
// router's per-message work is paid per batch; a nacked batch comes back as
// one message for each of its records its handler had not done.
// [Config.MaxMessagesInFlightPerPartition] bounds a partition's unsettled
// messages: records arriving meanwhile gather into the next batch, so
// batches grow with the backlog. [Config.Ordered] delivers a partition's
// messages one at a time, each after the one before it was acked, for
// handlers that keep state in partition order.
//
// Acks and nacks arrive in any order. The group's committed offset of a
// partition only moves to the end of the contiguous acknowledged prefix of
// its window, so a crash or rebalance never skips an unacknowledged record;
// and, with [Config.BeforeCommit], only once that hook has made durable
// what the consumer keeps for the acknowledged records (detect: its
// history of the readings it evaluated).
// A nacked message is delivered again, as a copy, after
// [Config.NackResendSleep]; later records keep flowing meanwhile.
//
// When partitions are revoked the subscriber stops delivering their records,
// waits a bounded time for the handlers to settle the ones in flight, commits
// what was acknowledged and only then lets the rebalance go on.
//
// Each message's context carries its Kafka coordinates
// ([messages.SourceFromContext]).
package windowed

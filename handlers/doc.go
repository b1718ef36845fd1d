// Package handlers holds the router's handlers. Each reads the raw topic and
// works on batches ([messages.Batch]: a partition's consecutive records;
// any single message is a batch of one), through one contract,
// [BatchHandler], adapted to Watermill by [Handler]:
//
//   - [Persist] validates readings and stores the valid ones, in COPY
//     batches with the partition checkpoint; the records it refuses as
//     invalid it lists in the batch for the InvalidEvents middleware to
//     route.
//   - [DetectEpisodes], the default detector (DETECTION_MODE=episode),
//     evaluates valid readings against the episode rules and records each
//     episode's opening, reclassification and closing with its anomaly
//     message (transactional outbox).
//   - [Detect], DETECTION_MODE=per_event, evaluates each valid reading on
//     its own against LOW, HIGH and SPIKE.
//
// Returning nil acks the batch, an error nacks it. Each handler declares the
// small interfaces it needs of storage, in the domain types of package
// messages, and its constructor refuses a missing dependency.
package handlers

// Package messages holds the pipeline's data contracts and the domain types
// they carry; it imports nothing of the pipeline's own:
//
//   - the reading on events.raw.v1 ([Heartbeat]), its decoding and its one
//     validation ([Limits.Validate], [ValidationError]), shared by every
//     handler;
//   - the invalid-event envelope on events.invalid.v1 ([InvalidEvent]);
//   - the anomaly messages on events.anomaly.v1 of both detection modes:
//     [Anomaly], one per anomalous reading (per_event), and [EpisodeAnomaly],
//     an episode's opening, reclassification or closing (episode, the
//     default); the anomaly types, severities and close reasons; and their
//     deterministic ids ([AnomalyID], [EpisodeID]);
//   - readings and episodes as the rules see them ([Reading], [Episode]);
//   - what the handlers hand storage: a record to store or checkpoint
//     ([Ingest]), an episode change with its message ([EpisodeUpdate]);
//   - the batch every handler works on ([Batch], [Record], [Refusal]; any
//     single message is a batch of one, [AsBatch]), a record's source
//     coordinates ([Source]), and the metadata keys every message carries.
package messages

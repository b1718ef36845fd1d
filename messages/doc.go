// Package messages holds the data contracts of the pipeline: the heartbeat
// event read from events.raw.v1, its one validation, the invalid-event envelope
// written to events.invalid.v1, the anomaly event written to events.anomaly.v1,
// and the metadata keys every message carries.
package messages

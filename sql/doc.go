// Package sql owns the PostgreSQL side of the pipeline: the embedded,
// versioned migrations (migrations/*.sql), database creation, and the
// writes the handlers make — COPY batches of readings with their
// checkpoint, and anomalies with their outbox message, each in one
// transaction; and the detector's history of the readings it evaluated,
// written late, before detect commits its offsets (history_late.go).
package sql

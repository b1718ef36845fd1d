// Package bench measures the pipeline against its performance targets (see the README's Performance section),
// in one run, on the in-process Kafka broker and a real PostgreSQL server:
// `heartbeat bench` ([Run]; app/cli reads its command line).
//
// The bench process hosts the broker (franz-go's kfake, which keeps every
// record in the memory of the process running it) and a fresh database
// heartbeat_bench_<random>, dropped at the end unless -keep. The pipeline
// under test runs as child processes of the same binary (ROUTER_HANDLERS
// chooses their role), so their CPU and peak RSS (VmHWM) are theirs alone.
//
// Phases, in order, each on a fresh broker and emptied tables:
//
//   - copy: the ceiling, pgx CopyFrom of 10,000-row batches into a table
//     created LIKE heartbeat_events, one connection.
//   - per-row: the naive path, one autocommitted
//     INSERT … ON CONFLICT DO NOTHING per event, one connection.
//   - ingest: a simulator child (ROUTER_HANDLERS=simulate) at the -rate it
//     sustains and a pipeline child (persist,detect); rows committed per
//     second after a warm-up, from heartbeat_db_inserts_total. Then the
//     simulator stops, persist catches up, and every valid record of the raw
//     topic is looked up in heartbeat_events (lost, duplicated).
//   - drain: -drain-events valid readings produced first, then persist alone,
//     in a fresh consumer group; from its start to its last committed row,
//     with persist's and PostgreSQL's CPU per 1,000 rows. Every produced id
//     is checked. Then a bare COPY of as many rows into a table with no key,
//     index or partition: the limit of any sink, in the same run. With
//     -drain-brokers (and -drain-topic) the phase runs on an existing Kafka
//     and drains the records its topic holds, so that another sink can drain
//     the same records beside it (docs/performance.md).
//   - detect: detect alone over the same topic, in a fresh consumer group,
//     writing its history (customer_history rows per 1,000 readings).
//   - latency: persist,detect while the bench publishes readings at a fixed
//     rate, every 100th at 150 bpm; for every anomaly of a reading published
//     after the warm-up, the time from its publication to the anomaly row
//     being visible in PostgreSQL and to the anomaly message being
//     consumable on events.anomaly.v1.
//   - memory: persist,detect's VmHWM while a simulator child drives
//     -rss-customers customers at -rate.
package bench

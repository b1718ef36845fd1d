package telemetry

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/messages/rules"
)

// Metrics are the pipeline's own counters: its flow (produced, consumed,
// stored, invalid, poisoned, anomalies) under names existing dashboards
// read, plus what an operator needs to see an outage.
type Metrics struct {
	Produced       prometheus.Counter
	ProduceErrors  prometheus.Counter
	Consumed       *prometheus.CounterVec // handler
	DBInserts      prometheus.Counter
	Invalid        *prometheus.CounterVec // handler, class
	DLQ            *prometheus.CounterVec // handler
	Anomalies      *prometheus.CounterVec // type, severity
	Retries        *prometheus.CounterVec // handler
	TransientFails *prometheus.CounterVec // handler
	PausedSeconds  *prometheus.CounterVec // handler
	StateRestores  *prometheus.CounterVec // outcome
	BatchRows      prometheus.Histogram
	BatchSeconds   prometheus.Histogram
}

// NewMetrics registers the counters on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	return &Metrics{
		Produced: f.NewCounter(prometheus.CounterOpts{Name: "heartbeat_messages_produced_total",
			Help: "Heartbeat events the simulator published to Kafka (acknowledged by the broker)."}),
		ProduceErrors: f.NewCounter(prometheus.CounterOpts{Name: "heartbeat_produce_errors_total",
			Help: "Heartbeat events the simulator failed to publish."}),
		Consumed: f.NewCounterVec(prometheus.CounterOpts{Name: "heartbeat_messages_consumed_total",
			Help: "Readings (Kafka records) a handler received, each record of a batch message counted (redeliveries included)."}, []string{"handler"}),
		DBInserts: f.NewCounter(prometheus.CounterOpts{Name: "heartbeat_db_inserts_total",
			Help: "Rows committed to heartbeat_events (redelivered duplicates excluded)."}),
		Invalid: f.NewCounterVec(prometheus.CounterOpts{Name: "heartbeat_invalid_total",
			Help: "Events routed to the invalid topic, by failure class."}, []string{"handler", "class"}),
		DLQ: f.NewCounterVec(prometheus.CounterOpts{Name: "heartbeat_dlq_total",
			Help: "Messages routed to the poison queue after retries."}, []string{"handler"}),
		Anomalies: f.NewCounterVec(prometheus.CounterOpts{Name: "heartbeat_anomalies_total",
			Help: "Anomalies committed (row and outbox message), by type and severity."}, []string{"type", "severity"}),
		Retries: f.NewCounterVec(prometheus.CounterOpts{Name: "heartbeat_handler_retries_total",
			Help: "Handler attempts retried after an error."}, []string{"handler"}),
		TransientFails: f.NewCounterVec(prometheus.CounterOpts{Name: "heartbeat_transient_failures_total",
			Help: "Messages nacked for redelivery because of an infrastructure failure (database or broker unreachable) instead of being poisoned."}, []string{"handler"}),
		PausedSeconds: f.NewCounterVec(prometheus.CounterOpts{Name: "heartbeat_backpressure_paused_seconds_total",
			Help: "Seconds handlers spent waiting for the database or broker to recover, summed over in-flight messages."}, []string{"handler"}),
		StateRestores: f.NewCounterVec(prometheus.CounterOpts{Name: "heartbeat_detector_state_lookups_total",
			Help: "Customer states the detector rebuilt from customer_history, by outcome (found, none)."}, []string{"outcome"}),
		BatchRows: f.NewHistogram(prometheus.HistogramOpts{Name: "heartbeat_persist_batch_rows",
			Help: "Rows per committed persist batch.", Buckets: prometheus.ExponentialBuckets(1, 4, 9)}),
		BatchSeconds: f.NewHistogram(prometheus.HistogramOpts{Name: "heartbeat_persist_batch_seconds",
			Help: "Time to write and commit one persist batch.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
	}
}

// InitHandler creates the labelled series of a handler at zero, so that
// Prometheus sees the first poisoned or invalid message as an increase.
func (m *Metrics) InitHandler(handler string) {
	m.Consumed.WithLabelValues(handler)
	m.DLQ.WithLabelValues(handler)
	m.Retries.WithLabelValues(handler)
	m.TransientFails.WithLabelValues(handler)
	m.PausedSeconds.WithLabelValues(handler)
	switch handler {
	case "persist":
		m.Invalid.WithLabelValues(handler, "schema")
		m.Invalid.WithLabelValues(handler, "domain")
	case "detect":
		for _, outcome := range []string{"found", "none"} {
			m.StateRestores.WithLabelValues(outcome)
		}
	}
}

// InitAnomalies creates the anomaly series of the rules of DETECTION_MODE
// mode at zero, so that the first anomaly of each type is an increase and
// the dashboard lists the rules in use, not the other mode's.
func (m *Metrics) InitAnomalies(mode string) {
	types := [][2]string{{messages.LowHeartRate, messages.SeverityHigh}, {messages.HighHeartRate, messages.SeverityHigh}, {messages.Spike, messages.SeverityMedium}}
	if mode == rules.ModeEpisode {
		types = [][2]string{{messages.SustainedHigh, messages.SeverityHigh}, {messages.SustainedLow, messages.SeverityHigh},
			{messages.Spike, messages.SeverityMedium}, {messages.SignalLoss, messages.SeverityLow}}
	}
	for _, t := range types {
		m.Anomalies.WithLabelValues(t[0], t[1])
	}
}

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

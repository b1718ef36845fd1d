package telemetry

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// progressCounters are the metrics summed into the progress line.
var progressCounters = []struct{ label, metric string }{
	{"produced", "heartbeat_messages_produced_total"},
	{"persisted", "heartbeat_db_inserts_total"},
	{"invalid", "heartbeat_invalid_total"},
	{"dlq", "heartbeat_dlq_total"},
	{"anomalies", "heartbeat_anomalies_total"},
}

// Totals sums each counter family of reg by name.
func Totals(reg prometheus.Gatherer) (map[string]float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	out := make(map[string]float64, len(mfs))
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if c := m.GetCounter(); c != nil {
				out[mf.GetName()] += c.GetValue()
			}
		}
	}
	return out, nil
}

// ReportProgress logs one line every interval with the totals and rates of
// the pipeline's counters, read from the same registry /metrics serves,
// and a last line when ctx ends.
func ReportProgress(ctx context.Context, reg prometheus.Gatherer, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	prev, _ := Totals(reg)
	last := time.Now()
	report := func(final bool) {
		cur, err := Totals(reg)
		if err != nil {
			log.Warn("progress: gather metrics", "err", err)
			return
		}
		secs := time.Since(last).Seconds()
		attrs := make([]any, 0, 2*len(progressCounters)+4)
		for _, c := range progressCounters {
			attrs = append(attrs, c.label, int64(cur[c.metric]))
		}
		attrs = append(attrs,
			"produced_per_s", int64((cur["heartbeat_messages_produced_total"]-prev["heartbeat_messages_produced_total"])/secs),
			"persisted_per_s", int64((cur["heartbeat_db_inserts_total"]-prev["heartbeat_db_inserts_total"])/secs))
		msg := "progress"
		if final {
			msg = "final totals"
		}
		log.Info(msg, attrs...)
		prev, last = cur, time.Now()
	}
	for {
		select {
		case <-ctx.Done():
			report(true)
			return
		case <-t.C:
			report(false)
		}
	}
}

package bench

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSumMetric(t *testing.T) {
	body := []byte(`# HELP heartbeat_messages_consumed_total Messages read.
# TYPE heartbeat_messages_consumed_total counter
heartbeat_messages_consumed_total{handler="detect"} 1.5e+06
heartbeat_messages_consumed_total{handler="persist"} 250
heartbeat_messages_consumed_total_extra 7
heartbeat_persist_batch_rows_sum 1234
heartbeat_persist_batch_rows_count 3
`)
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"heartbeat_messages_consumed_total", nil, 1_500_250},
		{"heartbeat_messages_consumed_total", []string{`handler="detect"`}, 1_500_000},
		{"heartbeat_persist_batch_rows_sum", nil, 1234},
		{"heartbeat_persist_batch_rows_count", nil, 3},
	} {
		t.Run(tc.name+strings.Join(tc.labels, ","), func(t *testing.T) {
			got, err := sumMetric(body, tc.name, tc.labels...)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	_, err := sumMetric(body, "heartbeat_missing_total")
	require.Error(t, err)
}

func TestSeqUUIDRoundTrip(t *testing.T) {
	for _, seq := range []uint64{0, 1, 99, 1 << 40} {
		id := seqUUID(0xdeadbeef_01234567, seq)
		require.Equal(t, seq, seqOf(id))
		require.Equal(t, byte(0x40), id[6]&0xf0, "version 4")
		require.Equal(t, byte(0x80), id[8]&0xc0, "RFC 4122 variant")
	}
}

func TestPercentile(t *testing.T) {
	xs := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	require.Equal(t, 5.0, percentile(xs, 0.5))
	require.Equal(t, 10.0, percentile(xs, 0.99))
	require.Equal(t, 10.0, percentile(xs, 1))
	require.Equal(t, 1.0, percentile(xs, 0))
	require.Zero(t, percentile(nil, 0.5))
}

func TestHuman(t *testing.T) {
	require.Equal(t, "1,234,568", human(1234567.8))
	require.Equal(t, "999", human(999))
	require.Equal(t, "0.45", human(0.45))
}

func TestResultJSONHasEveryKey(t *testing.T) {
	o, err := Options{Binary: "x", DatabaseURL: "postgres://x", Duration: 1, Customers: 1, RSSCustomers: 1, DrainEvents: 1, CopyRows: 1,
		LatencyRate: 1, AnomalyEvery: 1, SimPublishers: 1}.withDefaults()
	require.NoError(t, err)
	r := newResult(o)
	r.CopyCeiling, r.Ingest = 100, 50
	r.DrainPostgresCPU, r.BareCopyPostgresCPU = 4.6, 0.8
	js := string(r.JSON())
	for _, key := range []string{`"copy_ceiling_rows_per_s":100`, `"ingest_vs_copy":0.5`, `"lost":0`, `"duplicated":0`,
		`"drain_postgres_vs_bare_copy":5.75`, `"drain_postgres_cpu_ms_per_1000","drain_postgres_vs_bare_copy",`,
		`"anomaly_latency_p99_ms"`, `"peak_rss_mb"`, `"detect_events_per_s"`, `"targets_missed":[`} {
		require.Contains(t, js, key)
	}
}

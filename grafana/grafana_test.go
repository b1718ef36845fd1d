package grafana_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/grafana"
)

// TestExpandSQL pins the expansion to Grafana's own output format
// (grafana-postgresql-datasource/macros_test.go uses the same range).
func TestExpandSQL(t *testing.T) {
	from := time.Date(2018, 4, 12, 18, 0, 0, 0, time.UTC)
	tr := grafana.TimeRange{From: from, To: from.Add(5 * time.Minute)}
	for _, tc := range []struct{ in, want string }{
		{"select $__time(time_column)", `select time_column AS "time"`},
		{"select $__timeEpoch(time)", `select extract(epoch from time) as "time"`},
		{"WHERE $__timeFilter(time_column)", "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'"},
		{"GROUP BY $__timeGroup(time_column,'5m')", "GROUP BY floor(extract(epoch from time_column)/300)*300"},
		{"GROUP BY $__timeGroup(time_column, 5m)", "GROUP BY floor(extract(epoch from time_column)/300)*300"},
		{"select $__timeGroup(time_column,'5m'), 1", `select floor(extract(epoch from time_column)/300)*300 AS "time", 1`},
		{"select $__timeGroupAlias(time_column,'5m')", `select floor(extract(epoch from time_column)/300)*300 AS "time"`},
		{"select $__timeGroupAlias(event_time, 1m, 0)", `select floor(extract(epoch from event_time)/60)*60 AS "time"`},
		{"select $__timeFrom()", "select '2018-04-12T18:00:00Z'"},
		{"select $__timeTo()", "select '2018-04-12T18:05:00Z'"},
		{"select $__unixEpochFilter(time)", "select time >= 1523556000 AND time <= 1523556300"},
		{"select $__unixEpochGroupAlias(time_column,'5m')", `select floor((time_column)/300)*300 AS "time"`},
		{"select $__unixEpochFrom(), $__interval, $__interval_ms", "select 1523556000, 1m, 60000"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := grafana.ExpandSQL(tc.in, tr, time.Minute)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	for _, bad := range []string{"$__timeFilter()", "$__timeGroup(c)", "$__timeGroup(c, 1m, maybe)", "$__timeGroup(c, soon)", "$__nope(c)"} {
		t.Run(bad, func(t *testing.T) {
			_, err := grafana.ExpandSQL(bad, tr, time.Minute)
			require.Error(t, err)
		})
	}
}

// TestExpandPromQL: the variables of Grafana's Prometheus datasource, with
// $__rate_interval = max($__interval + scrape interval, 4 × scrape interval).
func TestExpandPromQL(t *testing.T) {
	from := time.Date(2018, 4, 12, 18, 0, 0, 0, time.UTC)
	hour := grafana.TimeRange{From: from, To: from.Add(time.Hour)}
	got, err := grafana.ExpandPromQL("rate(x[$__rate_interval]) + rate(x[${__interval}]) + increase(x[$__range])", hour, 15*time.Second)
	require.NoError(t, err)
	require.Equal(t, "rate(x[60s]) + rate(x[15s]) + increase(x[3600s])", got, "max(15s + 15s, 4 × 15s)")
	got, err = grafana.ExpandPromQL("rate(x[$__rate_interval])", hour, time.Second)
	require.NoError(t, err)
	require.Equal(t, "rate(x[6s])", got, "1h over 1000 px is 3.6 s, rounded to 5 s, plus one scrape")
	got, err = grafana.ExpandPromQL("x[$__interval_ms] $__range_s $__range_ms", hour, time.Second)
	require.NoError(t, err)
	require.Equal(t, "x[5000] 3600 3600000", got)
	_, err = grafana.ExpandPromQL("rate(x[$window])", hour, time.Second)
	require.ErrorContains(t, err, "$window")
}

// TestTimesAndIntervals: the dashboard's relative times and Grafana's
// interval arithmetic (gtime.ParseInterval, rangeutil.roundInterval,
// gtime.FormatInterval).
func TestTimesAndIntervals(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Time
	}{{"now", now}, {"now-1h", now.Add(-time.Hour)}, {"now-2d", now.AddDate(0, 0, -2)}, {"now-1w", now.AddDate(0, 0, -7)}} {
		got, err := grafana.ParseTime(c.in, now)
		require.NoError(t, err, c.in)
		require.Equal(t, c.want, got, c.in)
	}
	for _, bad := range []string{"yesterday", "now+1h", "2026-11-25"} {
		_, err := grafana.ParseTime(bad, now)
		require.Error(t, err, bad)
	}
	for in, want := range map[string]time.Duration{"90s": 90 * time.Second, "1M": 30 * 24 * time.Hour, "1y": 365 * 24 * time.Hour} {
		got, err := grafana.ParseInterval(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for d, want := range map[time.Duration]string{500 * time.Millisecond: "500ms", 90 * time.Second: "1m", 3 * time.Hour: "3h", 48 * time.Hour: "2d"} {
		require.Equal(t, want, grafana.FormatInterval(d))
	}
	hour := grafana.TimeRange{From: now.Add(-time.Hour), To: now}
	require.Equal(t, 5*time.Second, grafana.Interval(hour, time.Second), "3.6 s rounded")
	require.Equal(t, time.Minute, grafana.Interval(hour, time.Minute), "never below the minimum")
	day := grafana.TimeRange{From: now.Add(-24 * time.Hour), To: now}
	require.Equal(t, time.Minute, grafana.Interval(day, time.Second), "86.4 s rounded")
}

// Package dashbench is `heartbeat bench -dashboards`: it loads a large
// synthetic history into a fresh database — readings with the pipeline's
// per-minute rollups, and anomalies — and times every PostgreSQL query of
// the provisioned dashboard, expanded as Grafana expands it, against the
// same panel computed from the raw readings.
package dashbench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heartbeat/heartbeat/grafana"
	hbsql "github.com/heartbeat/heartbeat/sql"
)

// RawPanels computes the rollup-backed panels from heartbeat_events, as the
// original dashboard did: the baseline the rollups are measured against
// (and, when every reading is recent, the answers they must give).
var RawPanels = map[string]string{
	"Average heart rate (5 min)": `SELECT avg(heart_rate)::float8 FROM heartbeat_events
		WHERE event_time BETWEEN $__timeTo()::timestamptz - interval '5 minutes' AND $__timeTo()`,
	"p95 heart rate (5 min)": `SELECT percentile_disc(0.95) WITHIN GROUP (ORDER BY heart_rate) FROM heartbeat_events
		WHERE event_time BETWEEN $__timeTo()::timestamptz - interval '5 minutes' AND $__timeTo()`,
	"Active customers (5 min)": `SELECT count(DISTINCT customer_id) FROM heartbeat_events
		WHERE event_time BETWEEN $__timeTo()::timestamptz - interval '5 minutes' AND $__timeTo()`,
	"Heartbeats ingested per minute": `SELECT $__timeGroupAlias(event_time, 1m, 0), count(*) FROM heartbeat_events
		WHERE $__timeFilter(event_time) GROUP BY 1 ORDER BY 1`,
}

// Options of a run.
type Options struct {
	DatabaseURL string // server to create the bench database on
	Rows        int64  // readings to load
	Days        int    // spread over this many days, ending now
	Customers   int
	Range       time.Duration // the dashboard's time range
	Runs        int           // timed runs per query (the median is reported)
	Keep        bool
	JSON        bool // adds one JSON object on the last line
}

// Result is one panel query's timing.
type Result struct {
	Panel  string  `json:"panel"`
	RefID  string  `json:"ref_id"`
	MS     float64 `json:"ms"`
	RawMS  float64 `json:"raw_ms,omitempty"`
	Ratio  float64 `json:"raw_over_rollup,omitempty"`
	Rows   int     `json:"rows_returned"`
	Source string  `json:"source"`
}

// DefaultOptions are the README's dashboards measurement, scaled down:
// 10 million readings of 100,000 customers over 7 days, a 6-hour range, the
// median of 5 runs.
func DefaultOptions() Options {
	return Options{Rows: 10_000_000, Days: 7, Customers: 100_000, Range: 6 * time.Hour, Runs: 5}
}

// Run loads the data and times the queries.
func Run(ctx context.Context, o Options, out io.Writer) ([]Result, error) {
	if o.DatabaseURL == "" {
		return nil, errors.New("bench -dashboards: no PostgreSQL server to create the bench database on")
	}
	if o.Rows <= 0 || o.Days <= 0 || o.Customers <= 0 || o.Runs <= 0 || o.Range <= 0 {
		return nil, errors.New("bench -dashboards: -rows, -days, -customers, -range and -runs must be positive")
	}
	pool, drop, err := createDatabase(ctx, o.DatabaseURL, o.Keep)
	if err != nil {
		return nil, err
	}
	defer drop()
	now := time.Now().UTC().Truncate(time.Second)
	start := time.Now()
	if err := load(ctx, pool, o, now); err != nil {
		return nil, err
	}
	loaded := time.Since(start)
	fmt.Fprintf(out, "loaded %d readings over %d days (%d customers) with rollups and anomalies in %s\n",
		o.Rows, o.Days, o.Customers, loaded.Round(time.Second))

	tr := grafana.TimeRange{From: now.Add(-o.Range), To: now}
	interval := grafana.Interval(tr, time.Minute)
	queries, err := grafana.SQLQueries()
	if err != nil {
		return nil, err
	}
	var results []Result
	for _, q := range queries {
		sql, err := grafana.ExpandSQL(q.SQL, tr, interval)
		if err != nil {
			return nil, fmt.Errorf("panel %q: %w", q.Panel, err)
		}
		ms, n, err := timeQuery(ctx, pool, sql, o.Runs)
		if err != nil {
			return nil, fmt.Errorf("panel %q: %w", q.Panel, err)
		}
		r := Result{Panel: q.Panel, RefID: q.RefID, MS: ms, Rows: n, Source: "dashboard"}
		if raw, ok := RawPanels[q.Panel]; ok {
			sql, err := grafana.ExpandSQL(raw, tr, interval)
			if err != nil {
				return nil, err
			}
			if r.RawMS, _, err = timeQuery(ctx, pool, sql, 1); err != nil {
				return nil, fmt.Errorf("raw version of %q: %w", q.Panel, err)
			}
			r.Ratio = r.RawMS / r.MS
			r.Source = "rollup"
		}
		results = append(results, r)
	}
	report(out, o, loaded, results)
	return results, nil
}

func report(out io.Writer, o Options, loaded time.Duration, rs []Result) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "panel\tsource\tms (median)\traw ms\traw/rollup\t")
	worst := 0.0
	for _, r := range rs {
		raw, ratio := "", ""
		if r.RawMS > 0 {
			raw, ratio = fmt.Sprintf("%.1f", r.RawMS), fmt.Sprintf("%.0f×", r.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%s\t%s\t\n", r.Panel, r.Source, r.MS, raw, ratio)
		worst = max(worst, r.MS)
	}
	_ = tw.Flush()
	fmt.Fprintf(out, "slowest panel query: %.1f ms over %d readings\n", worst, o.Rows)
	if o.JSON {
		b, _ := json.Marshal(map[string]any{"rows": o.Rows, "days": o.Days, "customers": o.Customers,
			"load_seconds": loaded.Seconds(), "max_panel_ms": worst, "panels": rs})
		fmt.Fprintln(out, string(b))
	}
}

// timeQuery runs sql runs times and returns the median duration in ms.
func timeQuery(ctx context.Context, pool *pgxpool.Pool, sql string, runs int) (float64, int, error) {
	var times []float64
	n := 0
	for range runs {
		start := time.Now()
		rows, err := pool.Query(ctx, sql)
		if err != nil {
			return 0, 0, err
		}
		n = 0
		for rows.Next() {
			n++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return 0, 0, err
		}
		times = append(times, float64(time.Since(start).Microseconds())/1000)
	}
	slices.Sort(times)
	return times[len(times)/2], n, nil
}

func createDatabase(ctx context.Context, base string, keep bool) (*pgxpool.Pool, func(), error) {
	db, err := hbsql.CreateScratch(ctx, base, "heartbeat_dashbench_")
	if err != nil {
		return nil, nil, fmt.Errorf("create the bench database: %w", err)
	}
	pool, err := pgxpool.New(ctx, db.URL)
	if err != nil {
		_ = db.Drop(ctx)
		return nil, nil, err
	}
	drop := func() {
		pool.Close()
		if keep {
			fmt.Fprintf(os.Stderr, "kept database %s\n", db.Name)
			return
		}
		_ = db.Drop(context.Background())
	}
	if _, err := hbsql.Migrate(ctx, pool); err != nil {
		drop()
		return nil, nil, err
	}
	return pool, drop, nil
}

// load fills heartbeat_events day by day with generate_series (one
// statement per day, parameters only), then builds the rollups from it as
// ingest would have, and anomalies for 1 % of the readings.
func load(ctx context.Context, pool *pgxpool.Pool, o Options, now time.Time) error {
	first := now.Add(-time.Duration(o.Days) * 24 * time.Hour)
	if _, err := hbsql.EnsurePartitions(ctx, pool, now, now.Sub(first)); err != nil {
		return err
	}
	span := now.Sub(first)
	perDay := o.Rows / int64(o.Days)
	for d := range o.Days {
		from := int64(d) * perDay
		to := from + perDay - 1
		if d == o.Days-1 {
			to = o.Rows - 1
		}
		// Reading i is at first + i/Rows of the span: uniform over the days.
		_, err := pool.Exec(ctx, `INSERT INTO heartbeat_events
			(event_id, customer_id, event_time, ingest_time, heart_rate, source_topic, source_partition, source_offset)
			SELECT gen_random_uuid(), 'cust_' || lpad((i % $3)::text, 6, '0'),
			       $4::timestamptz + (i::float8 / $5::float8) * $6::interval,
			       $4::timestamptz + (i::float8 / $5::float8) * $6::interval,
			       (45 + (hashint8(i) & 127) % 90)::smallint, 'events.raw.v1', (i % 24)::int, i
			FROM generate_series($1::bigint, $2::bigint) AS i`,
			from, to, o.Customers, first, o.Rows, span)
		if err != nil {
			return fmt.Errorf("load day %d: %w", d, err)
		}
	}
	steps := []string{
		`INSERT INTO heartbeat_minute_rates SELECT date_trunc('minute', event_time), heart_rate, count(*) FROM heartbeat_events GROUP BY 1, 2`,
		`INSERT INTO customer_last_seen SELECT customer_id, date_bin('1 minute', max(event_time), timestamptz '2000-01-01 00:00:00+00') FROM heartbeat_events GROUP BY customer_id`,
		`INSERT INTO anomalies (anomaly_id, event_id, customer_id, anomaly_type, severity, heart_rate, event_time, detected_at, details)
		 SELECT gen_random_uuid(), event_id, customer_id,
		        (ARRAY['LOW_HEART_RATE','HIGH_HEART_RATE','SPIKE'])[1 + source_offset % 3],
		        (ARRAY['high','high','medium'])[1 + source_offset % 3], heart_rate, event_time, event_time + interval '50 ms',
		        jsonb_build_object('threshold', 50, 'measured', heart_rate)
		 FROM heartbeat_events WHERE source_offset % 100 = 0`,
		`ANALYZE`,
	}
	for _, s := range steps {
		if _, err := pool.Exec(ctx, s); err != nil {
			return fmt.Errorf("build rollups: %w", err)
		}
	}
	return nil
}

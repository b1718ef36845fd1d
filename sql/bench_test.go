package sql_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/heartbeat/heartbeat/messages"
	hbsql "github.com/heartbeat/heartbeat/sql"
)

func benchRows(n, batch int, now time.Time) []messages.Ingest {
	rows := make([]messages.Ingest, n)
	for i := range rows {
		rows[i] = messages.Ingest{
			Reading: messages.Heartbeat{EventID: uuid.NewString(), CustomerID: fmt.Sprintf("cust_%05d", i%10000),
				Timestamp: now.Add(time.Duration(i) * time.Millisecond), HeartRate: 60 + i%40},
			Source: messages.Source{Topic: "events.raw.v1", Partition: int32(i % 24), Offset: int64(batch*n + i)},
		}
	}
	return rows
}

// BenchmarkWriteBatch measures persist's write of one batch — COPY into
// staging, merge with dedup, rollups, checkpoint, commit — against a bare
// COPY of the same rows into a table of the same shape: the ratio is what
// the pipeline's guarantees cost in the database.
func BenchmarkWriteBatch(b *testing.B) {
	for _, size := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("persist/%d", size), func(b *testing.B) {
			pool := database(b)
			ctx := context.Background()
			if _, err := hbsql.Migrate(ctx, pool); err != nil {
				b.Fatal(err)
			}
			now := time.Now().Add(-time.Hour)
			if _, err := hbsql.EnsurePartitions(ctx, pool, now, 24*time.Hour); err != nil {
				b.Fatal(err)
			}
			w := hbsql.NewEventWriter(pool, "bench")
			i := 0
			for b.Loop() {
				b.StopTimer()
				rows := benchRows(size, i, now)
				i++
				b.StartTimer()
				if _, err := w.Write(ctx, rows); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(size*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
		b.Run(fmt.Sprintf("copy/%d", size), func(b *testing.B) {
			pool := database(b)
			ctx := context.Background()
			if _, err := pool.Exec(ctx, `CREATE TABLE copy_target (event_id uuid, customer_id varchar(64), event_time timestamptz,
				ingest_time timestamptz DEFAULT now(), heart_rate smallint, source_topic text, source_partition integer, source_offset bigint)`); err != nil {
				b.Fatal(err)
			}
			cols := []string{"event_id", "customer_id", "event_time", "heart_rate", "source_topic", "source_partition", "source_offset"}
			now := time.Now()
			i := 0
			for b.Loop() {
				b.StopTimer()
				rows := benchRows(size, i, now)
				i++
				src := make([][]any, len(rows))
				for j, r := range rows {
					src[j] = []any{r.Reading.EventID, r.Reading.CustomerID, r.Reading.Timestamp, int16(r.Reading.HeartRate), r.Source.Topic, r.Source.Partition, r.Source.Offset}
				}
				b.StartTimer()
				if _, err := pool.CopyFrom(ctx, pgx.Identifier{"copy_target"}, cols, pgx.CopyFromRows(src)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(size*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

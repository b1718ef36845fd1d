package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/messages"
	hbsql "github.com/heartbeat/heartbeat/sql"
	"github.com/heartbeat/heartbeat/sql/pgtest"
)

// The drain's rows-written figures count what the drain wrote, not what
// the phases before it wrote into the same tables (the server's counts
// survive the TRUNCATE between phases).
func TestWritesSinceCountsOnlyWhatCameAfter(t *testing.T) {
	ctx := context.Background()
	url, pool := pgtest.Database(t, "heartbeat_bench_writes_")
	_, err := hbsql.Migrate(ctx, pool)
	require.NoError(t, err)
	d := &database{pool: pool}
	// One minute, so that every reading falls on the same rollup minute.
	at := time.Now().UTC().Truncate(time.Minute).Add(10 * time.Second)
	// write stores n readings of customers prefix0… on connections of its
	// own, closed at the end: a backend reports its counts as it exits.
	write := func(prefix string, customers, n int, offset int64) {
		p, err := pgxpool.New(ctx, url)
		require.NoError(t, err)
		defer p.Close()
		rows := make([]messages.Ingest, n)
		for i := range rows {
			rows[i] = messages.Ingest{
				Reading: messages.Heartbeat{EventID: uuid.NewString(), CustomerID: fmt.Sprintf("%s%d", prefix, i%customers),
					Timestamp: at.Add(time.Duration(i) * time.Millisecond), HeartRate: 70 + i%5},
				Source: messages.Source{Topic: "events.raw.v1", Partition: 0, Offset: offset + int64(i)},
			}
		}
		w := hbsql.NewEventWriter(p, "bench")
		_, err = w.Write(ctx, rows)
		require.NoError(t, err)
		// and the detector's history of them, as detect writes it
		h := hbsql.NewHistoryWriter(p)
		require.NoError(t, h.Keep(ctx, rows))
		require.NoError(t, h.Flush(ctx))
	}

	write("before-", 50, 500, 0) // a phase before the drain
	_, err = d.writesSince(ctx, tableWrites{}, 500)
	require.NoError(t, err)
	base, err := d.counted(ctx)
	require.NoError(t, err)

	write("drain-", 20, 200, 500)
	got, err := d.writesSince(ctx, base, 200)
	require.NoError(t, err)
	// 20 customers: a history row and a new last-seen row each; the 5 rates
	// of the minute were there already and are updated.
	require.Equal(t, tableWrites{readings: 200, history: 20, lastSeen: 20, minuteRates: 5}, got)
}

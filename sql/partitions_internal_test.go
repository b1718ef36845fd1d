package sql

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/messages"
)

// BenchmarkKnownDays is what partitions on demand add to a batch of 5000
// readings whose days are known: finding the days, and the cache check.
// Compare with BenchmarkWriteBatch/persist/5000, the write itself.
func BenchmarkKnownDays(b *testing.B) {
	midnight := time.Now().UTC().Truncate(24 * time.Hour)
	rows := make([]messages.Ingest, 5000)
	for i := range rows {
		// Across midnight, two partitions interleaved as partitions deliver them.
		rows[i].Reading = messages.Heartbeat{Timestamp: midnight.Add(time.Duration(i%2*2-1) * time.Duration(i) * time.Millisecond)}
	}
	p := NewPartitions(nil)
	for _, d := range batchDays(rows) {
		p.known[d] = struct{}{}
	}
	ctx := context.Background()
	for b.Loop() {
		if _, err := p.Ensure(ctx, batchDays(rows)...); err != nil {
			b.Fatal(err)
		}
	}
}

func TestDayOf(t *testing.T) {
	for _, c := range []struct {
		at   time.Time
		want string
	}{
		{time.Date(2016, 2, 29, 23, 59, 59, 999e6, time.UTC), "2016-02-29"},
		{time.Date(2016, 3, 1, 0, 0, 0, 0, time.UTC), "2016-03-01"},
		{time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC), "1969-12-31"},
		{time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC), "1970-01-01"},
		{time.Date(2016, 3, 1, 0, 30, 0, 0, time.FixedZone("CET", 3600)), "2016-02-29"}, // UTC days
	} {
		require.Equal(t, c.want, DayOf(c.at).String(), c.at)
	}
}

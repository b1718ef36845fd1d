package sql_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	hbsql "github.com/heartbeat/heartbeat/sql"
)

// TestOutboxBacklog: the messages after the forwarder's mark (transaction,
// then offset within it) wait; those at or before it are forwarded; with no
// mark every message waits.
func TestOutboxBacklog(t *testing.T) {
	pool := episodeDB(t)
	ctx := context.Background()

	n, oldest, err := hbsql.OutboxBacklog(ctx, pool)
	require.NoError(t, err)
	require.Zero(t, n)
	require.Zero(t, oldest)

	// Two messages in one transaction, one in the next, written as
	// watermill-sql writes them.
	type row struct {
		tx     string
		offset int64
	}
	var rows []row
	for _, count := range []int{2, 1} {
		require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			for range count {
				var r row
				if err := tx.QueryRow(ctx, `INSERT INTO watermill_outbox (uuid, payload, metadata, transaction_id)
					VALUES (gen_random_uuid()::text, '{}', '{}', pg_current_xact_id())
					RETURNING transaction_id::text, "offset"`).Scan(&r.tx, &r.offset); err != nil {
					return err
				}
				rows = append(rows, r)
			}
			return nil
		}))
	}
	require.Equal(t, rows[0].tx, rows[1].tx)
	require.NotEqual(t, rows[1].tx, rows[2].tx)
	// Their transactions began a minute ago.
	_, err = pool.Exec(ctx, `UPDATE watermill_outbox SET created_at = LOCALTIMESTAMP - interval '1 minute'`)
	require.NoError(t, err)

	for _, tc := range []struct {
		name string
		mark *row
		want int64
	}{
		{"nothing forwarded yet", nil, 3},
		{"the first message of the first transaction", &rows[0], 2},
		{"the whole first transaction", &rows[1], 1},
		{"everything", &rows[2], 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pool.Exec(ctx, `DELETE FROM watermill_offsets_outbox`)
			require.NoError(t, err)
			if tc.mark != nil {
				_, err = pool.Exec(ctx, `INSERT INTO watermill_offsets_outbox (consumer_group, offset_acked, last_processed_transaction_id)
					VALUES ('', $1, $2::xid8)`, tc.mark.offset, tc.mark.tx)
				require.NoError(t, err)
			}
			n, oldest, err := hbsql.OutboxBacklog(ctx, pool)
			require.NoError(t, err)
			require.Equal(t, tc.want, n)
			if tc.want > 0 {
				require.InDelta(t, time.Minute.Seconds(), oldest.Seconds(), 5)
			} else {
				require.Zero(t, oldest)
			}
			pending, err := hbsql.OutboxPending(ctx, pool)
			require.NoError(t, err)
			require.Equal(t, tc.want, pending)
		})
	}
}

package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	hbsql "github.com/heartbeat/heartbeat/sql"
)

// database is the bench's own database on the server under test.
type database struct {
	*hbsql.Scratch
	pool   *pgxpool.Pool
	server string // PostgreSQL version
}

// createDatabase creates heartbeat_bench_<random> on the server of
// serverURL and applies the migrations.
func createDatabase(ctx context.Context, serverURL string) (*database, error) {
	s, err := hbsql.CreateScratch(ctx, serverURL, "heartbeat_bench_")
	if err != nil {
		return nil, err
	}
	d := &database{Scratch: s}
	cfg, err := pgxpool.ParseConfig(s.URL)
	if err != nil {
		d.drop(ctx)
		return nil, err
	}
	cfg.MaxConns = 4
	if d.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		d.drop(ctx)
		return nil, err
	}
	if err := d.pool.QueryRow(ctx, "SHOW server_version").Scan(&d.server); err != nil {
		d.drop(ctx)
		return nil, err
	}
	if _, err := hbsql.Migrate(ctx, d.pool); err != nil {
		d.drop(ctx)
		return nil, fmt.Errorf("migrate %s: %w", s.Name, err)
	}
	return d, nil
}

// drop closes the pool and drops the database, disconnecting what is left.
func (d *database) drop(ctx context.Context) error {
	if d.pool != nil {
		d.pool.Close()
	}
	return d.Drop(ctx)
}

// reset empties every table the pipeline writes, so a phase starts from
// nothing, and checkpoints so that the previous phase's WAL is not flushed
// during the next one.
func (d *database) reset(ctx context.Context) error {
	rows, err := d.pool.Query(ctx, `SELECT quote_ident(c.relname) FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition
		  AND c.relname NOT IN ('schema_migrations', 'bench_copy', 'bench_per_row', 'bench_bare')`)
	if err != nil {
		return err
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	if len(tables) > 0 {
		if _, err := d.pool.Exec(ctx, "TRUNCATE "+strings.Join(tables, ", ")); err != nil {
			return fmt.Errorf("empty the tables: %w", err)
		}
	}
	_, _ = d.pool.Exec(ctx, "CHECKPOINT") // needs a superuser or pg_checkpoint; best effort
	return nil
}

// idSet is a set of event ids.
type idSet map[[16]byte]struct{}

// integrity is what a phase's verification found.
type integrity struct {
	Expected   int64 // valid readings the phase produced
	Stored     int64 // rows in heartbeat_events
	Lost       int64 // expected ids not stored
	Duplicated int64 // count(*) - count(DISTINCT event_id)
	Unexpected int64 // stored ids nobody produced
}

// verify compares heartbeat_events with the ids that were produced.
func (d *database) verify(ctx context.Context, want idSet) (integrity, error) {
	r := integrity{Expected: int64(len(want))}
	seen := make(map[[16]byte]struct{}, len(want))
	rows, err := d.pool.Query(ctx, "SELECT event_id FROM heartbeat_events")
	if err != nil {
		return r, err
	}
	var id pgtype.UUID
	_, err = pgx.ForEachRow(rows, []any{&id}, func() error {
		r.Stored++
		if _, dup := seen[id.Bytes]; dup {
			r.Duplicated++
			return nil
		}
		seen[id.Bytes] = struct{}{}
		if _, ok := want[id.Bytes]; !ok {
			r.Unexpected++
		}
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("read heartbeat_events: %w", err)
	}
	r.Lost = r.Expected - (int64(len(seen)) - r.Unexpected)
	return r, nil
}

// count is SELECT count(*) of table.
func (d *database) count(ctx context.Context, table string) (int64, error) {
	var n int64
	err := d.pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{table}.Sanitize()).Scan(&n)
	return n, err
}

// tableWrites is what persist wrote besides the readings: rows of
// customer_history, and rows inserted or updated in customer_last_seen and
// in heartbeat_minute_rates. They grow with the customers a batch holds,
// not with its readings: what makes PostgreSQL's work per reading depend on
// the shape of the data.
type tableWrites struct {
	// readings is the server's count of rows inserted into heartbeat_events
	// (a transaction rolled back by a stored reading included): how far it
	// has counted what persist did.
	readings, history, lastSeen, minuteRates int64
}

// writesQuery reads the history rows stored (committed rows: a batch that
// fell back to the merge path wrote none in its first attempt) and the
// server's counts of the other writes (pg_stat_user_tables, partitions
// summed).
const writesQuery = `SELECT
	coalesce(sum(n_tup_ins) FILTER (WHERE relname LIKE 'heartbeat\_events\_p%'), 0)::bigint,
	(SELECT count(*) FROM customer_history),
	coalesce(sum(n_tup_ins + n_tup_upd) FILTER (WHERE relname = 'customer_last_seen'), 0)::bigint,
	coalesce(sum(n_tup_ins + n_tup_upd) FILTER (WHERE relname = 'heartbeat_minute_rates'), 0)::bigint
FROM pg_stat_user_tables`

// counted reads persist's writes so far. The server's counts survive the
// TRUNCATE between phases (and the bench truncates customer_history only
// then): a phase subtracts those it began with (writesSince).
func (d *database) counted(ctx context.Context) (tableWrites, error) {
	var w tableWrites
	err := d.pool.QueryRow(ctx, writesQuery).Scan(&w.readings, &w.history, &w.lastSeen, &w.minuteRates)
	return w, err
}

// writesSince reads persist's writes since base, once persist has stopped
// and the server has counted them: a backend reports its counts when it
// exits, one table after another. It polls until the readings' count has
// grown by readings and two reads 100 ms apart agree, for at most 10 s.
func (d *database) writesSince(ctx context.Context, base tableWrites, readings int64) (tableWrites, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var last tableWrites
	for first := true; ; first = false {
		w, err := d.counted(ctx)
		w = tableWrites{w.readings - base.readings, w.history - base.history, w.lastSeen - base.lastSeen, w.minuteRates - base.minuteRates}
		if err == nil && w.readings >= readings && !first && w == last {
			return w, nil
		}
		if err == nil {
			last = w
			err = fmt.Errorf("the server counts %d of %d readings stored", w.readings, readings)
			if w.readings >= readings {
				err = errors.New("the server's counts did not settle")
			}
		}
		select {
		case <-ctx.Done():
			return w, fmt.Errorf("persist's writes per table: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

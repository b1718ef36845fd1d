package main

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/app/cli"
)

// TestPoisonedMessageIsReplayedOnceFixed: a reading the database refuses on
// its own (here a trigger stands in for a bug) is retried, poisoned with its
// reason, acked — the rest of the stream flows on — and, once the cause is
// fixed, `dlq replay` brings it back and it is stored exactly once.
func TestPoisonedMessageIsReplayedOnceFixed(t *testing.T) {
	dbURL, pool := testDatabase(t)
	broker := testBroker(t)
	ctx := context.Background()
	env := pipelineEnv(broker, dbURL, map[string]string{"ROUTER_HANDLERS": "persist", "RETRY_MAX_RETRIES": "2", "RETRY_INITIAL_INTERVAL": "10ms"})
	p := startPipeline(t, env) // migrates the database
	p.stop(t)
	_, err := pool.Exec(ctx, `CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN IF NEW.customer_id = 'cust_poison' THEN RAISE EXCEPTION 'cust_poison is refused by a bug'; END IF; RETURN NEW; END $$;
		CREATE TRIGGER refuse_poison BEFORE INSERT ON heartbeat_events FOR EACH ROW EXECUTE FUNCTION refuse_poison();`)
	require.NoError(t, err)
	p = startPipeline(t, env)

	now := time.Now()
	poison := validRecord("cust_poison", 70, now)
	recs := []*record{validRecord("cust_a", 70, now), poison, validRecord("cust_b", 71, now)}
	produce(t, broker, "events.raw.v1", recs)
	waitForRows(t, pool, "SELECT count(*) FROM heartbeat_events", 2)

	t.Setenv("KAFKA_BOOTSTRAP_SERVERS", broker)
	var out, errOut bytes.Buffer
	dlqCmd := func(args ...string) int {
		out.Reset()
		errOut.Reset()
		return cli.Main(ctx, append([]string{"dlq"}, args...), &out, &errOut, newPipeline)
	}
	require.Eventually(t, func() bool {
		return dlqCmd("list") == 0 &&
			bytes.Contains(out.Bytes(), []byte("cust_poison is refused by a bug"))
	}, 20*time.Second, 50*time.Millisecond, "dlq list shows the poisoned message: %s", out.String())
	require.Contains(t, out.String(), "persist")
	// Records without a Watermill message id are named by their position.
	require.Contains(t, out.String(), fmt.Sprintf("events.raw.v1-%d-%d", poison.partition, poison.offset))

	_, err = pool.Exec(ctx, `DROP TRIGGER refuse_poison ON heartbeat_events`)
	require.NoError(t, err)
	require.Zero(t, dlqCmd("replay", "--handler", "persist"), errOut.String())
	require.Contains(t, out.String(), "replayed 1")
	waitForRows(t, pool, "SELECT count(*) FROM heartbeat_events", 3)
	var n int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM heartbeat_events WHERE event_id = $1", poison.eventID).Scan(&n))
	require.Equal(t, 1, n)

	require.Zero(t, dlqCmd("replay"), errOut.String())
	require.Contains(t, out.String(), "replayed 0", "a second replay replays nothing")
	p.stop(t)
}

package dlq_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/app/dlq"
)

func TestMain_BadArgumentsNameTheProblem(t *testing.T) {
	brokers := []string{"127.0.0.1:1"} // never reached: arguments are checked first
	cases := []struct {
		args []string
		want string
	}{
		{nil, "dlq: missing command: list or replay"},
		{[]string{"purge"}, `dlq: unknown command "purge": want list or replay`},
		{[]string{"list", "--bogus"}, "dlq list: flag provided but not defined: -bogus"},
		{[]string{"list", "extra"}, `dlq list: unexpected argument "extra"`},
		{[]string{"list", "--handler", "persist"}, "dlq list: flag provided but not defined: -handler"},
		{[]string{"replay", "--since", "yesterday"}, `dlq replay: invalid value "yesterday" for flag -since: want a positive duration such as 30m, 2h or 72h`},
		{[]string{"replay", "--since", "-5m"}, "flag -since: want a positive duration"},
		{[]string{"replay", "--partition", "x"}, `invalid value "x" for flag -partition: want a partition number`},
		{[]string{"replay", "--partition", "-1"}, `invalid value "-1" for flag -partition`},
		{[]string{"replay", "--partition", "1", "--offset", "-3"}, `invalid value "-3" for flag -offset`},
		{[]string{"replay", "--offset", "3"}, "dlq replay: flag --offset needs --partition"},
		{[]string{"replay", "--handler", ""}, "dlq replay: flag --handler is empty"},
		{[]string{"replay", "--id", " "}, "dlq replay: flag --id is empty"},
		{[]string{"replay", "--reason-contains", ""}, "dlq replay: flag --reason-contains is empty"},
		{[]string{"replay", "--handler"}, "dlq replay: flag needs an argument: -handler"},
		{[]string{"replay", "persist"}, `dlq replay: unexpected argument "persist": every option is a flag`},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out bytes.Buffer
			err := dlq.Main(context.Background(), brokers, dlqTopic, nil, tc.args, &out)
			require.ErrorContains(t, err, tc.want)
			require.Empty(t, out.String(), "errors are returned, not printed")
		})
	}
}

func TestMain_HelpPrintsUsage(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"help"}, {"list", "-h"}, {"replay", "--help"}} {
		var out bytes.Buffer
		require.NoError(t, dlq.Main(context.Background(), nil, "", nil, args, &out), args)
		require.Equal(t, dlq.Usage, out.String(), args)
	}
}

func TestMain_NeedsBrokers(t *testing.T) {
	err := dlq.Main(context.Background(), nil, "", nil, []string{"list"}, &bytes.Buffer{})
	require.ErrorContains(t, err, "KAFKA_BOOTSTRAP_SERVERS")
}

func TestMain_ListAndReplay(t *testing.T) {
	c := newCluster(t)
	offsets := c.produce(t, fixture...)
	run := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		require.NoError(t, dlq.Main(ctx(t), c.addrs, dlqTopic, nil, args, &out), out.String())
		return out.String()
	}

	out := run("list")
	require.Contains(t, out, "5 poisoned messages in events.dlq.v1")

	out = run("replay", "--handler", "persist", "--reason-contains", "SQLSTATE", "--dry-run")
	require.Contains(t, out, fixture[0].id)
	require.Contains(t, out, fixture[3].id)
	require.Contains(t, out, "dry run: would replay 2, would skip 3")
	require.Empty(t, c.records(t, rawTopic))

	out = run("replay", "--partition", "5", "--offset", "1", "--json")
	lines := jsonLines(t, out)
	require.Len(t, lines, 2, out)
	require.Equal(t, fixture[4].id, lines[0]["message_id"])
	require.EqualValues(t, offsets[4], lines[0]["offset"])
	require.Equal(t, map[string]any{"replayed": 1.0, "skipped": 4.0, "duplicates": 0.0, "dry_run": false}, lines[1])
	require.Equal(t, []string{fixture[4].id}, ids(c.records(t, rawTopic)))

	out = run("replay")
	require.Equal(t, "replayed 0, skipped 0 (filter: all)\n", out)

	out = run("replay", "--from-start", "--id", fixture[2].id, "--since", "1h")
	require.Contains(t, out, "replayed 1, skipped 4 (filter: since=1h0m0s id="+fixture[2].id+")")
}

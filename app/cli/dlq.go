package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/app/dlq"
)

// dlqEnvironment is what both subcommands read.
const dlqEnvironment = `
		KAFKA_BOOTSTRAP_SERVERS	the cluster's brokers; empty: BROKER_ADDR
		BROKER_ADDR	the broker of heartbeat broker (default 127.0.0.1:19092)
		KAFKA_TOPIC_DLQ	the poison queue (default events.dlq.v1)
		KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_TLS_*	how to connect to the cluster`

var dlqUsage = usage{
	synopsis: `
		heartbeat dlq list [-json]
		heartbeat dlq replay [filter flags] [-from-start] [-dry-run] [-json]`,
	about: `
Inspects and replays the poison queue: the messages a handler gave up on
after RETRY_MAX_RETRIES retries, each with the reason it failed.

  list    prints every message in the queue; it does not wait for more
  replay  republishes the messages a filter selects to their original
          topic, once their cause is fixed

"heartbeat dlq list -h" and "heartbeat dlq replay -h" print their flags.
The queue is that of the pipeline's Kafka: KAFKA_BOOTSTRAP_SERVERS, or the
broker of heartbeat broker at BROKER_ADDR. The in-process broker of a
plain heartbeat is reachable only at the address it logs at start-up.`,
	environment: dlqEnvironment,
	examples: `
		heartbeat dlq list
		heartbeat dlq replay -handler persist -since 2h -dry-run`,
}

var dlqListUsage = usage{
	synopsis: `heartbeat dlq list [-json]`,
	about: `
Prints every message in the poison queue, from its start to its end when
the command starts (it does not wait for more): its position in the queue
(partition/offset), original topic, handler, age, correlation id, message
id and reason, then a count.`,
	environment: dlqEnvironment,
	examples: `
		heartbeat dlq list
		KAFKA_BOOTSTRAP_SERVERS=kafka:9092 heartbeat dlq list -json`,
}

var dlqReplayUsage = usage{
	synopsis: `
		heartbeat dlq replay [-handler NAME] [-reason-contains TEXT] [-since DURATION]
		                     [-id UUID] [-partition N [-offset N]]
		                     [-from-start] [-dry-run] [-json]`,
	about: `
Republishes the selected messages of the poison queue to their original
topic, with the same payload, key, message id and correlation id, without
the poison headers and with replayed_from=<dlq topic>/<partition>/<offset>.
Every filter given must match; with none, every message is replayed. The
handlers are idempotent: a message replayed that was in fact stored is not
stored twice. Progress is committed in the consumer group
heartbeat.dlq-replay, so a second run replays nothing again; messages a
filter did not select are passed as well: select among them later with
-from-start.`,
	environment: dlqEnvironment,
	examples: `
		heartbeat dlq replay -dry-run                  # what would be replayed
		heartbeat dlq replay -handler persist -reason-contains "value too long" -since 2h
		heartbeat dlq replay -partition 3 -offset 1207`,
}

// runDLQ is `heartbeat dlq list|replay`.
func runDLQ(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		return withUsage{errors.New("dlq: missing subcommand: list or replay"), dlqUsage, nil}
	}
	switch sub, rest := args[0], args[1:]; {
	case sub == "list":
		return dlqList(ctx, e, rest)
	case sub == "replay":
		return dlqReplay(ctx, e, rest)
	case sub == "help" && len(rest) > 0:
		return runDLQ(ctx, e, append(rest[:len(rest):len(rest)], "-h"))
	case sub == "help" || isHelpFlag(sub):
		dlqUsage.print(e.stdout, nil)
		return errHelp
	default:
		return usageError{"dlq", fmt.Errorf("unknown subcommand %q: want list or replay", sub)}
	}
}

func dlqList(ctx context.Context, e *env, args []string) error {
	var o dlq.Options
	fs := flag.NewFlagSet("dlq list", flag.ContinueOnError)
	fs.BoolVar(&o.JSON, "json", false, "one JSON object per message, with the full reason, instead of a table")
	ops, err := e.parse("dlq list", fs, dlqListUsage, args)
	if err != nil {
		return err
	}
	if err := noOperands("dlq list", ops); err != nil {
		return err
	}
	if o, err = dlqOptions(ctx, o); err != nil {
		return err
	}
	return dlq.List(ctx, o, e.stdout)
}

func dlqReplay(ctx context.Context, e *env, args []string) error {
	var o dlq.Options
	var f dlq.Filter
	fs := flag.NewFlagSet("dlq replay", flag.ContinueOnError)
	fs.StringVar(&f.Handler, "handler", "", "poisoned by the handler `NAME` (persist, detect)")
	fs.StringVar(&f.ReasonContains, "reason-contains", "", "whose reason contains `TEXT` (case-sensitive)")
	fs.Func("since", "poisoned at most `DURATION` ago (30m, 2h, 72h)", func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return errors.New("want a positive duration such as 30m, 2h or 72h")
		}
		f.Since = d
		return nil
	})
	fs.StringVar(&f.ID, "id", "", "the message whose id (_watermill_message_uuid) is `UUID`")
	fs.Func("partition", "in the queue's partition `N`", func(s string) error {
		n, err := strconv.ParseInt(s, 10, 32)
		if err != nil || n < 0 {
			return errors.New("want a partition number (0, 1, ...)")
		}
		p := int32(n)
		f.Partition = &p
		return nil
	})
	fs.Func("offset", "at offset `N` of -partition", func(s string) error {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return errors.New("want an offset (0, 1, ...)")
		}
		f.Offset = &n
		return nil
	})
	fs.BoolVar(&o.FromStart, "from-start", false, "read the queue from its start, not from where the last replay stopped")
	fs.BoolVar(&o.DryRun, "dry-run", false, "print what would be replayed; publish and commit nothing")
	fs.BoolVar(&o.JSON, "json", false, "one JSON object per message, then a summary object")
	ops, err := e.parse("dlq replay", fs, dlqReplayUsage, args)
	if err != nil {
		return err
	}
	if err := noOperands("dlq replay", ops); err != nil {
		return err
	}
	if f.Offset != nil && f.Partition == nil {
		return usageError{"dlq replay", errors.New("-offset needs -partition: an offset is only meaningful within one partition")}
	}
	for name, v := range map[string]string{"handler": f.Handler, "reason-contains": f.ReasonContains, "id": f.ID} {
		if isSet(fs, name) && strings.TrimSpace(v) == "" {
			return usageError{"dlq replay", fmt.Errorf("-%s is empty: leave it out to select every message", name)}
		}
	}
	if o, err = dlqOptions(ctx, o); err != nil {
		return err
	}
	_, err = dlq.Replay(ctx, o, f, e.stdout)
	return err
}

// dlqOptions completes o with the poison queue of the configuration, once
// its Kafka answers.
func dlqOptions(ctx context.Context, o dlq.Options) (dlq.Options, error) {
	cfg, err := config.LoadConfig(ctx, nil)
	if err != nil {
		return o, err
	}
	if o.Brokers, o.ClientOpts, err = reachKafka(ctx, cfg); err != nil {
		return o, err
	}
	o.Topic = cfg.Kafka.TopicDLQ
	return o, nil
}

func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/app/replay"
)

var replayUsage = usage{
	synopsis: `heartbeat replay [-shift-to-now] [-speed N] [-topic T] [-workers N] FILE.csv`,
	about: `
Publishes a recorded heart-rate series to the raw topic, as a sensor would
have, for a running pipeline to store and check. FILE.csv has a header
line naming customer_id, timestamp (RFC 3339, with a zone) and heart_rate,
then one reading a line; a rate with a fraction is rounded. Event ids come
from customer and timestamp, so a recording replayed twice is stored once.
Readings the pipeline will refuse — older than MAX_EVENT_AGE, in the future,
out of HEART_RATE_MIN..MAX — are counted in a WARNING first: an old
recording needs -shift-to-now.`,
	environment: `
		KAFKA_BOOTSTRAP_SERVERS	the pipeline's brokers; empty: BROKER_ADDR
		BROKER_ADDR	the broker of heartbeat broker (default 127.0.0.1:19092)
		KAFKA_TOPIC_RAW	the topic published to (default events.raw.v1)
		MAX_EVENT_AGE, MAX_CLOCK_SKEW, HEART_RATE_MIN, HEART_RATE_MAX	what the warnings check
		KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_TLS_*	how to connect to the cluster`,
	examples: `
		heartbeat broker &
		KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 heartbeat &
		heartbeat replay -shift-to-now testdata/empatica-e4-hr.csv
		# against a plain heartbeat: the address its in-process broker logged
		KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:41234 heartbeat replay -shift-to-now recording.csv`,
}

// runReplay is `heartbeat replay FILE.csv`.
func runReplay(ctx context.Context, e *env, args []string) error {
	j := replay.Job{}
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.Float64Var(&j.Speed, "speed", 0, "replay at `N` times real time (1: as recorded); 0: as fast as possible")
	fs.BoolVar(&j.ShiftToNow, "shift-to-now", false, "shift every timestamp by whole hours so that the latest falls within the last hour")
	fs.StringVar(&j.Topic, "topic", "", "publish to topic `T` instead of KAFKA_TOPIC_RAW")
	fs.IntVar(&j.Workers, "workers", 16, "`N` publishing goroutines (one customer always uses the same one)")
	ops, err := e.parse("replay", fs, replayUsage, args)
	if err != nil {
		return err
	}
	if len(ops) != 1 {
		return withUsage{fmt.Errorf("replay: want one CSV file, got %d arguments", len(ops)), replayUsage, fs}
	}
	if j.Speed < 0 || j.Workers < 1 {
		return usageError{"replay", errors.New("-speed must be 0 or more and -workers at least 1")}
	}
	cfg, err := config.LoadConfig(ctx, nil)
	if err != nil {
		return err
	}
	j.File = ops[0]
	if j.Recording, err = replay.Load(j.File); err != nil {
		return err
	}
	brokers, _, err := reachKafka(ctx, cfg)
	if err != nil {
		return err
	}
	return replay.Run(ctx, cfg, brokers, j, e.stdout, e.stderr)
}

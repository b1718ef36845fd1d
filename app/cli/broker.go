package cli

import (
	"context"
	"flag"

	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/app/kafka"
	"github.com/heartbeat/heartbeat/app/telemetry"
)

var brokerUsage = usage{
	synopsis: `heartbeat broker`,
	about: `
Runs only the in-process Kafka-protocol broker (franz-go's kfake) on
BROKER_ADDR, with the pipeline's topics created, until SIGINT or SIGTERM:
the broker that pipelines run apart share, and that dlq and replay use
when KAFKA_BOOTSTRAP_SERVERS is empty. Its records, topics and group
offsets live in memory, or on disk in BROKER_DATA_DIR when that is set.`,
	environment: `
		BROKER_ADDR	listen address (default 127.0.0.1:19092)
		BROKER_DATA_DIR	directory keeping the broker's data across restarts (default: memory only)
		KAFKA_TOPIC_*, KAFKA_PARTITIONS_*	the topics created at start
		LOG_LEVEL	debug, info, warn or error`,
	examples: `
		BROKER_DATA_DIR=/tmp/heartbeat-broker heartbeat broker
		KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 heartbeat     # a pipeline on it`,
}

// runBroker is `heartbeat broker`.
func runBroker(ctx context.Context, e *env, args []string) error {
	ops, err := e.parse("broker", flag.NewFlagSet("broker", flag.ContinueOnError), brokerUsage, args)
	if err != nil {
		return err
	}
	if err := noOperands("broker", ops); err != nil {
		return err
	}
	cfg, err := config.LoadConfig(ctx, nil)
	if err != nil {
		return err
	}
	return kafka.RunBroker(ctx, cfg, telemetry.NewLogger(cfg.LogLevel))
}

package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/app/kafka"
)

// pingTimeout bounds the wait for a Kafka broker to answer: it answers at
// once when up, and an address nothing listens on is refused at once.
const pingTimeout = 10 * time.Second

// reachKafka returns the brokers of the tools that talk to a running
// pipeline's Kafka (dlq, replay) — KAFKA_BOOTSTRAP_SERVERS, or else
// BROKER_ADDR, the broker of `heartbeat broker` — and their client options,
// once one of them has answered. When none does, the error says which
// variable the address came from and how to point the tool at a broker:
// the in-process broker of a plain `heartbeat` listens on a port of its
// own choosing, which only its log tells.
func reachKafka(ctx context.Context, cfg config.Config) ([]string, []kgo.Opt, error) {
	opts, err := kafka.FranzOpts(cfg.Kafka.Security)
	if err != nil {
		return nil, nil, err
	}
	brokers, fromBrokerAddr := cfg.Kafka.BootstrapServers, false
	if len(brokers) == 0 {
		brokers, fromBrokerAddr = []string{cfg.Broker.Addr}, true
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
	if err != nil {
		return nil, nil, fmt.Errorf("KAFKA_BOOTSTRAP_SERVERS: %w", err)
	}
	defer cl.Close()
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	err = cl.Ping(pctx)
	switch {
	case err == nil:
		return brokers, opts, nil
	case ctx.Err() != nil:
		return nil, nil, context.Cause(ctx)
	case fromBrokerAddr:
		return nil, nil, fmt.Errorf("no Kafka broker at BROKER_ADDR=%s, used because KAFKA_BOOTSTRAP_SERVERS is empty (%v): "+
			"start one with `heartbeat broker` (BROKER_DATA_DIR=DIR keeps its records) and run the pipeline with "+
			"KAFKA_BOOTSTRAP_SERVERS=%s, or set KAFKA_BOOTSTRAP_SERVERS to the address of the in-process broker "+
			"that a plain `heartbeat` logs at start-up", cfg.Broker.Addr, err, cfg.Broker.Addr)
	}
	return nil, nil, fmt.Errorf("no Kafka broker at KAFKA_BOOTSTRAP_SERVERS=%s (%v): check the address (a plain "+
		"`heartbeat` logs its in-process broker's, a new one at each start) and KAFKA_SECURITY_PROTOCOL, "+
		"KAFKA_SASL_*, KAFKA_TLS_*", strings.Join(brokers, ","), err)
}

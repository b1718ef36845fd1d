package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"github.com/heartbeat/heartbeat/app/config"
	"github.com/twmb/franz-go/pkg/kfake"
)

// StartBroker starts the in-process Kafka-protocol broker (franz-go's kfake)
// listening on addr ("127.0.0.1:0" picks a free port). With dataDir set, its
// records, topics and group offsets survive a restart. Its consumer groups
// keep Kafka's session rule (see [Broker]); log gets a WARN line for each
// member the broker removes for want of heartbeats.
func StartBroker(addr, dataDir string, log *slog.Logger) (*Broker, error) {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("BROKER_ADDR: %w", err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("BROKER_ADDR: port %q is not a number", portText)
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, net.JoinHostPort(host, strconv.Itoa(port)))
		}),
		kfake.BrokerConfigs(map[string]string{"message.max.bytes": strconv.Itoa(MaxMessageBytes)}),
		kfake.GroupMaxSessionTimeout(brokerMaxSessionTimeout),
	}
	if dataDir != "" {
		opts = append(opts, kfake.DataDir(dataDir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start in-process broker on %s: %w", addr, err)
	}
	k, err := startSessionKeeper(c, log)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("start in-process broker on %s: %w", addr, err)
	}
	return &Broker{Cluster: c, keeper: k}, nil
}

// MaxMessageBytes is the largest record the in-process broker accepts, as a
// default Kafka broker does (message.max.bytes).
const MaxMessageBytes = 1048588

// RunBroker runs only the in-process broker, on BROKER_ADDR, keeping its
// data in BROKER_DATA_DIR when set, until ctx ends.
func RunBroker(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	c, err := StartBroker(cfg.Broker.Addr, cfg.Broker.DataDir, log)
	if err != nil {
		if cfg.Broker.DataDir != "" {
			return fmt.Errorf("BROKER_ADDR=%s, BROKER_DATA_DIR=%s: %w", cfg.Broker.Addr, cfg.Broker.DataDir, err)
		}
		return fmt.Errorf("BROKER_ADDR=%s: %w", cfg.Broker.Addr, err)
	}
	defer c.Close()
	if cfg.Broker.DataDir != "" {
		log.Info("in-process Kafka broker (kfake) running", "addr", c.ListenAddrs(), "data_dir", cfg.Broker.DataDir)
	} else {
		log.Info("in-process Kafka broker (kfake) running; records are kept in memory only (set BROKER_DATA_DIR to keep them)", "addr", c.ListenAddrs())
	}
	tctx, cancel := context.WithTimeout(ctx, cfg.StartupTimeout)
	defer cancel()
	if err := EnsureTopics(tctx, c.ListenAddrs(), nil, cfg.Kafka.ReplicationFactor, Topics(cfg.Kafka), log); err != nil {
		return err
	}
	<-ctx.Done()
	log.Info("broker stopping")
	return nil
}

package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/heartbeat/heartbeat/messages"
)

// Handler names accepted in ROUTER_HANDLERS.
const (
	HandlerSimulate = "simulate"
	HandlerPersist  = "persist"
	HandlerDetect   = "detect"
)

// KnownHandlers lists the valid ROUTER_HANDLERS names.
var KnownHandlers = []string{HandlerSimulate, HandlerPersist, HandlerDetect}

// Config is all configuration, read from the environment. The names are the
// original system's where it had one, so its .env keeps working.
type Config struct {
	RouterHandlers   []string      `env:"ROUTER_HANDLERS, default=simulate,persist,detect"`
	LogLevel         string        `env:"LOG_LEVEL, default=info"`
	MetricsAddr      string        `env:"METRICS_ADDR"`
	ProgressInterval time.Duration `env:"PROGRESS_INTERVAL, default=5s"`
	ShutdownTimeout  time.Duration `env:"SHUTDOWN_TIMEOUT, default=8s"`

	Kafka      KafkaConfig
	Broker     BrokerConfig
	Postgres   PostgresConfig
	Sim        SimConfig
	Validation ValidationConfig
	Anomaly    AnomalyConfig
	Detection  DetectionConfig
	Persist    PersistConfig
	Retry      RetryConfig
	OutboxPoll time.Duration `env:"OUTBOX_POLL_INTERVAL, default=10ms"`
	Health     HealthConfig
}

// KafkaConfig names the cluster, topics and consumer groups.
type KafkaConfig struct {
	// BootstrapServers empty means: start an in-process broker.
	BootstrapServers []string `env:"KAFKA_BOOTSTRAP_SERVERS"`
	TopicRaw         string   `env:"KAFKA_TOPIC_RAW, default=events.raw.v1"`
	TopicInvalid     string   `env:"KAFKA_TOPIC_INVALID, default=events.invalid.v1"`
	TopicAnomaly     string   `env:"KAFKA_TOPIC_ANOMALY, default=events.anomaly.v1"`
	TopicDLQ         string   `env:"KAFKA_TOPIC_DLQ, default=events.dlq.v1"`
	GroupDB          string   `env:"KAFKA_CONSUMER_GROUP_DB, default=cg.db-writer.v1"`
	GroupAnomaly     string   `env:"KAFKA_CONSUMER_GROUP_ANOMALY, default=cg.anomaly.v1"`
	PartitionsRaw    int32    `env:"KAFKA_PARTITIONS_RAW, default=24"`
	PartitionsOther  int32    `env:"KAFKA_PARTITIONS_OTHER, default=6"`
	// ReplicationFactor -1 takes the broker's default.
	ReplicationFactor int16  `env:"KAFKA_REPLICATION_FACTOR, default=-1"`
	ClientID          string `env:"KAFKA_CLIENT_ID, default=heartbeat"`
	// GroupInstanceID, when set, makes this process a static member
	// (KIP-345) of the consumer groups it joins: a replica restarted with
	// the same id takes its partitions back without a rebalance. It must
	// be unique among the live replicas of a group.
	GroupInstanceID string `env:"KAFKA_GROUP_INSTANCE_ID"`
	Security        KafkaSecurity
}

// BrokerConfig configures the in-process broker (`go run . broker`).
type BrokerConfig struct {
	Addr    string `env:"BROKER_ADDR, default=127.0.0.1:19092"`
	DataDir string `env:"BROKER_DATA_DIR"`
}

// PostgresConfig locates the database. DatabaseURL, when set, wins.
type PostgresConfig struct {
	DatabaseURL string `env:"DATABASE_URL"`
	Host        string `env:"POSTGRES_HOST, default=127.0.0.1"`
	Port        int    `env:"POSTGRES_PORT, default=5432"`
	DB          string `env:"POSTGRES_DB, default=heartbeat"`
	User        string `env:"POSTGRES_USER, default=postgres"`
	Password    string `env:"POSTGRES_PASSWORD"`
	SSLMode     string `env:"POSTGRES_SSLMODE, default=prefer"`
	MaxConns    int32  `env:"POSTGRES_MAX_CONNS, default=8"`
}

// SimConfig drives the simulator.
type SimConfig struct {
	CustomerCount   int     `env:"SIM_CUSTOMER_COUNT, default=1000"`
	EventsPerSecond float64 `env:"SIM_EVENTS_PER_SECOND, default=200"`
	BurstMultiplier float64 `env:"SIM_BURST_MULTIPLIER, default=3"`
	InvalidRatio    float64 `env:"SIM_INVALID_RATIO, default=0.02"`
	LateRatio       float64 `env:"SIM_LATE_RATIO, default=0.03"`
	AnomalyRatio    float64 `env:"SIM_ANOMALY_RATIO, default=0.01"`
	Seed            uint64  `env:"SIM_SEED, default=0"`
	TotalEvents     int64   `env:"SIM_TOTAL_EVENTS, default=0"`
	Publishers      int     `env:"SIM_PUBLISHERS, default=8"`
	// MaxLag, when positive, holds the simulator back while persist's
	// consumer group has more than that many records of the raw topic
	// still to consume: a load that the pipeline can keep up with.
	MaxLag int64 `env:"SIM_MAX_LAG, default=0"`
}

// ValidationConfig bounds a valid reading.
type ValidationConfig struct {
	HeartRateMin int           `env:"HEART_RATE_MIN, default=30"`
	HeartRateMax int           `env:"HEART_RATE_MAX, default=220"`
	MaxClockSkew time.Duration `env:"MAX_CLOCK_SKEW, default=5m"`
	MaxEventAge  time.Duration `env:"MAX_EVENT_AGE, default=24h"`
}

// Limits returns the validation limits.
func (v ValidationConfig) Limits() messages.Limits {
	return messages.Limits{MinHeartRate: v.HeartRateMin, MaxHeartRate: v.HeartRateMax,
		MaxClockSkew: v.MaxClockSkew, MaxEventAge: v.MaxEventAge}
}

// AnomalyConfig holds the detection thresholds.
type AnomalyConfig struct {
	LowThreshold  int           `env:"ANOMALY_LOW_THRESHOLD, default=50"`
	HighThreshold int           `env:"ANOMALY_HIGH_THRESHOLD, default=140"`
	SpikeDelta    int           `env:"ANOMALY_SPIKE_DELTA, default=30"`
	StateTTL      time.Duration `env:"DETECT_STATE_TTL, default=1h"`
	// HistoryWait bounds how long the detector waits for persist to store a
	// customer's earlier readings when it rebuilds that customer's state.
	HistoryWait time.Duration `env:"DETECT_HISTORY_WAIT, default=30s"`
}

// PersistConfig tunes the batched writer.
type PersistConfig struct {
	BatchSize    int           `env:"PERSIST_BATCH_SIZE, default=5000"`
	BatchTimeout time.Duration `env:"PERSIST_BATCH_TIMEOUT, default=5ms"`
	Writers      int           `env:"PERSIST_WRITERS, default=2"`
	// MaxInFlightPerPartition bounds the records of one partition that
	// persist holds at once (delivered, not yet acknowledged).
	MaxInFlightPerPartition int `env:"PERSIST_MAX_IN_FLIGHT_PER_PARTITION, default=1000"`
	// RetentionDays drops daily partitions of heartbeat_events older than
	// that many days; 0 keeps everything.
	RetentionDays int `env:"HEARTBEAT_RETENTION_DAYS, default=0"`
}

// RetryConfig bounds the handler retries before a message is poisoned.
type RetryConfig struct {
	MaxRetries      int           `env:"RETRY_MAX_RETRIES, default=5"`
	InitialInterval time.Duration `env:"RETRY_INITIAL_INTERVAL, default=100ms"`
	MaxInterval     time.Duration `env:"RETRY_MAX_INTERVAL, default=5s"`
}

// groupInstanceID is Kafka's rule for group.instance.id (that of topic
// names): the broker refuses any other.
var groupInstanceID = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// LoadConfig reads the configuration from l (the process environment when
// nil) and validates it. Errors name the variable to fix.
func LoadConfig(ctx context.Context, l envconfig.Lookuper) (Config, error) {
	if l == nil {
		l = envconfig.OsLookuper()
	}
	var c Config
	if err := envconfig.ProcessWith(ctx, &envconfig.Config{Target: &c, Lookuper: l}); err != nil {
		return c, explainEnvError(err, l)
	}
	c.normalize()
	return c, c.validate()
}

func (c *Config) normalize() {
	c.RouterHandlers = trimAll(c.RouterHandlers)
	c.Kafka.BootstrapServers = trimAll(c.Kafka.BootstrapServers)
	c.LogLevel = strings.ToLower(strings.TrimSpace(c.LogLevel))
}

func trimAll(xs []string) []string {
	out := xs[:0]
	for _, x := range xs {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// Runs reports whether handler name is selected by ROUTER_HANDLERS.
func (c Config) Runs(name string) bool { return slices.Contains(c.RouterHandlers, name) }

// EffectiveMetricsAddr is METRICS_ADDR, or the original system's port for
// the role: 8000 with the simulator, 8001 with persist, 8002 for detect
// alone, so processes of one machine do not collide.
func (c Config) EffectiveMetricsAddr() string {
	if c.MetricsAddr != "" {
		return c.MetricsAddr
	}
	switch {
	case c.Runs(HandlerSimulate):
		return "127.0.0.1:8000"
	case c.Runs(HandlerPersist):
		return "127.0.0.1:8001"
	default:
		return "127.0.0.1:8002"
	}
}

func (c Config) validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
	}
	if len(c.RouterHandlers) == 0 {
		bad("ROUTER_HANDLERS", "is empty; valid handlers are %s", strings.Join(KnownHandlers, ", "))
	}
	for _, h := range c.RouterHandlers {
		if !slices.Contains(KnownHandlers, h) {
			bad("ROUTER_HANDLERS", "unknown handler %q; valid handlers are %s", h, strings.Join(KnownHandlers, ", "))
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("LOG_LEVEL", "%q is not one of debug, info, warn, error", c.LogLevel)
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			bad("METRICS_ADDR", "%q is not host:port (like 127.0.0.1:8000 or :8000)", c.MetricsAddr)
		}
	}
	positive := func(name string, v float64) {
		if v <= 0 {
			bad(name, "must be greater than 0, got %v", v)
		}
	}
	positiveDur := func(name string, d time.Duration) {
		if d <= 0 {
			bad(name, "must be a positive duration (like 5s), got %s", d)
		}
	}
	positiveDur("PROGRESS_INTERVAL", c.ProgressInterval)
	positiveDur("SHUTDOWN_TIMEOUT", c.ShutdownTimeout)
	positiveDur("OUTBOX_POLL_INTERVAL", c.OutboxPoll)
	errs = append(errs, c.Health.validate()...)
	if _, _, err := net.SplitHostPort(c.Broker.Addr); err != nil {
		bad("BROKER_ADDR", "%q is not host:port (like 127.0.0.1:19092)", c.Broker.Addr)
	}
	for _, s := range c.Kafka.BootstrapServers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			bad("KAFKA_BOOTSTRAP_SERVERS", "%q is not host:port (like kafka:9092)", s)
		}
	}
	for name, t := range map[string]string{"KAFKA_TOPIC_RAW": c.Kafka.TopicRaw, "KAFKA_TOPIC_INVALID": c.Kafka.TopicInvalid,
		"KAFKA_TOPIC_ANOMALY": c.Kafka.TopicAnomaly, "KAFKA_TOPIC_DLQ": c.Kafka.TopicDLQ,
		"KAFKA_CONSUMER_GROUP_DB": c.Kafka.GroupDB, "KAFKA_CONSUMER_GROUP_ANOMALY": c.Kafka.GroupAnomaly} {
		if strings.TrimSpace(t) == "" {
			bad(name, "is empty")
		}
	}
	if id := c.Kafka.GroupInstanceID; id != "" && (!groupInstanceID.MatchString(id) || id == "." || id == "..") {
		bad("KAFKA_GROUP_INSTANCE_ID", "%q is not a valid group instance id: up to 249 of a-z, A-Z, 0-9, '.', '_' and '-' (like persist-1)", id)
	}
	errs = append(errs, c.Kafka.Security.validate()...)
	positive("KAFKA_PARTITIONS_RAW", float64(c.Kafka.PartitionsRaw))
	positive("KAFKA_PARTITIONS_OTHER", float64(c.Kafka.PartitionsOther))
	if c.Postgres.DatabaseURL != "" {
		if u, err := url.Parse(c.Postgres.DatabaseURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			bad("DATABASE_URL", "is not a postgres:// URL")
		}
	}
	if c.Postgres.Port < 1 || c.Postgres.Port > 65535 {
		bad("POSTGRES_PORT", "%d is not a TCP port", c.Postgres.Port)
	}
	switch c.Postgres.SSLMode {
	case "disable", "allow", "prefer", "require", "verify-ca", "verify-full":
	default:
		bad("POSTGRES_SSLMODE", "%q is not one of disable, allow, prefer, require, verify-ca, verify-full", c.Postgres.SSLMode)
	}
	positive("POSTGRES_MAX_CONNS", float64(c.Postgres.MaxConns))
	positive("SIM_CUSTOMER_COUNT", float64(c.Sim.CustomerCount))
	positive("SIM_EVENTS_PER_SECOND", c.Sim.EventsPerSecond)
	if c.Sim.BurstMultiplier < 1 {
		bad("SIM_BURST_MULTIPLIER", "must be at least 1, got %v", c.Sim.BurstMultiplier)
	}
	for name, r := range map[string]float64{"SIM_INVALID_RATIO": c.Sim.InvalidRatio, "SIM_LATE_RATIO": c.Sim.LateRatio, "SIM_ANOMALY_RATIO": c.Sim.AnomalyRatio} {
		if r < 0 || r > 1 {
			bad(name, "must be between 0 and 1, got %v", r)
		}
	}
	if c.Sim.TotalEvents < 0 {
		bad("SIM_TOTAL_EVENTS", "must be 0 (run forever) or a positive count, got %d", c.Sim.TotalEvents)
	}
	positive("SIM_PUBLISHERS", float64(c.Sim.Publishers))
	if c.Sim.MaxLag < 0 {
		bad("SIM_MAX_LAG", "must be 0 (no bound) or a positive number of records, got %d", c.Sim.MaxLag)
	}
	v := c.Validation
	if v.HeartRateMin < 0 || v.HeartRateMin >= v.HeartRateMax || v.HeartRateMax > 400 {
		bad("HEART_RATE_MIN", "and HEART_RATE_MAX must satisfy 0 <= min < max <= 400, got %d and %d", v.HeartRateMin, v.HeartRateMax)
	}
	positiveDur("MAX_CLOCK_SKEW", v.MaxClockSkew)
	positiveDur("MAX_EVENT_AGE", v.MaxEventAge)
	a := c.Anomaly
	if a.LowThreshold >= a.HighThreshold {
		bad("ANOMALY_LOW_THRESHOLD", "%d must be below ANOMALY_HIGH_THRESHOLD %d", a.LowThreshold, a.HighThreshold)
	}
	positive("ANOMALY_SPIKE_DELTA", float64(a.SpikeDelta))
	errs = append(errs, c.Detection.Validate(a))
	positiveDur("DETECT_STATE_TTL", a.StateTTL)
	positiveDur("DETECT_HISTORY_WAIT", a.HistoryWait)
	positive("PERSIST_BATCH_SIZE", float64(c.Persist.BatchSize))
	positiveDur("PERSIST_BATCH_TIMEOUT", c.Persist.BatchTimeout)
	positive("PERSIST_WRITERS", float64(c.Persist.Writers))
	positive("PERSIST_MAX_IN_FLIGHT_PER_PARTITION", float64(c.Persist.MaxInFlightPerPartition))
	if c.Persist.RetentionDays < 0 {
		bad("HEARTBEAT_RETENTION_DAYS", "must be 0 (keep everything) or a number of days, got %d", c.Persist.RetentionDays)
	} else if r := time.Duration(c.Persist.RetentionDays) * 24 * time.Hour; r > 0 && r < c.Validation.MaxEventAge {
		bad("HEARTBEAT_RETENTION_DAYS", "%d days is shorter than MAX_EVENT_AGE %s: valid readings would land in dropped partitions", c.Persist.RetentionDays, c.Validation.MaxEventAge)
	}
	if c.Retry.MaxRetries < 0 {
		bad("RETRY_MAX_RETRIES", "must be 0 or more, got %d", c.Retry.MaxRetries)
	}
	positiveDur("RETRY_INITIAL_INTERVAL", c.Retry.InitialInterval)
	positiveDur("RETRY_MAX_INTERVAL", c.Retry.MaxInterval)
	return errors.Join(errs...)
}

// explainEnvError rewrites go-envconfig's error, which names the Go field
// ("Sim: EventsPerSecond: strconv.ParseFloat: ..."), into one naming the
// environment variable and the value that failed.
func explainEnvError(err error, l envconfig.Lookuper) error {
	msg := err.Error()
	t := reflect.TypeOf(Config{})
	for {
		name, rest, ok := strings.Cut(msg, ": ")
		if !ok {
			break
		}
		f, found := t.FieldByName(name)
		if !found {
			break
		}
		msg = rest
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Duration(0)) {
			t = f.Type
			continue
		}
		env, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		val, _ := l.Lookup(env)
		return fmt.Errorf("%s=%s: %s (expected %s)", env, strconv.Quote(val), lastCause(rest), kindOf(f.Type))
	}
	return err
}

func lastCause(s string) string {
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}

func kindOf(t reflect.Type) string {
	switch {
	case t == reflect.TypeOf(time.Duration(0)):
		return "a duration like 5s or 100ms"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "a whole number"
	case t.Kind() == reflect.Float64:
		return "a number"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() == reflect.Slice:
		return "a comma-separated list"
	}
	return "a string"
}

package config

import (
	"context"
	"errors"
	"fmt"
	"math"
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
// kept stable across releases, so an existing .env keeps working.
type Config struct {
	RouterHandlers   []string      `env:"ROUTER_HANDLERS, default=simulate,persist,detect"`
	LogLevel         string        `env:"LOG_LEVEL, default=info"`
	MetricsAddr      string        `env:"METRICS_ADDR"`
	ProgressInterval time.Duration `env:"PROGRESS_INTERVAL, default=5s"`
	ShutdownTimeout  time.Duration `env:"SHUTDOWN_TIMEOUT, default=8s"`
	// StartupTimeout bounds how long start-up waits for Kafka, and for
	// PostgreSQL, to be reachable.
	StartupTimeout time.Duration `env:"STARTUP_TIMEOUT, default=30s"`

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
	// CommitInterval is how often the detector writes its history
	// (customer_history) of the readings it evaluated and then commits its
	// Kafka offsets. Longer: fewer, fuller history rows (less work for
	// PostgreSQL with many customers), and more evaluated again after a
	// crash.
	CommitInterval time.Duration `env:"DETECT_COMMIT_INTERVAL, default=1s"`
}

// PersistConfig tunes the batched writer.
type PersistConfig struct {
	BatchSize    int           `env:"PERSIST_BATCH_SIZE, default=5000"`
	BatchTimeout time.Duration `env:"PERSIST_BATCH_TIMEOUT, default=5ms"`
	Writers      int           `env:"PERSIST_WRITERS, default=2"`
	// MaxInFlightPerPartition bounds the records of one partition that
	// persist holds at once (delivered, not yet acknowledged).
	MaxInFlightPerPartition int `env:"PERSIST_MAX_IN_FLIGHT_PER_PARTITION, default=1000"`
	// CommitInterval is how often persist commits its Kafka offsets (past
	// the records stored): longer, more redelivered after a crash.
	CommitInterval time.Duration `env:"PERSIST_COMMIT_INTERVAL, default=200ms"`
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
// nil) and validates it. Errors name the variable to fix. A variable set to
// the empty string is taken as unset: its default applies.
func LoadConfig(ctx context.Context, l envconfig.Lookuper) (Config, error) {
	if l == nil {
		l = envconfig.OsLookuper()
	}
	l = emptyIsUnset{l}
	var c Config
	if err := envconfig.ProcessWith(ctx, &envconfig.Config{Target: &c, Lookuper: l}); err != nil {
		return c, explainEnvError(err, l)
	}
	c.normalize()
	return c, c.validate()
}

// emptyIsUnset answers a variable set to "" as not set, so that its
// default applies (go-envconfig would leave the field zero: a
// RETRY_MAX_RETRIES= line in an env file would mean no retries). Deployment
// tools write such lines for variables they pass on without a value.
type emptyIsUnset struct{ envconfig.Lookuper }

func (l emptyIsUnset) Lookup(key string) (string, bool) {
	v, ok := l.Lookuper.Lookup(key)
	return v, ok && v != ""
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

// EffectiveMetricsAddr is METRICS_ADDR, or the conventional port for
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

// Upper bounds of settings whose larger values the process cannot honour:
// they overflow a computation, allocate beyond any machine's memory up
// front, or ask Kafka or PostgreSQL for what they refuse.
const (
	// maxDays is the longest whole number of days a time.Duration holds
	// (about 292 years): HEARTBEAT_RETENTION_DAYS is compared with
	// MAX_EVENT_AGE.
	maxDays = int64(math.MaxInt64 / int64(24*time.Hour))
	// maxPartitions bounds KAFKA_PARTITIONS_*: the consumers keep state per
	// partition, and the in-process broker allocates every one.
	maxPartitions = 10000
	// maxRuleDuration bounds the episode rules' durations, which the
	// detector adds up (several times ANOMALY_SIGNAL_LOSS_AFTER) to find how
	// far back to restore a customer.
	maxRuleDuration = 30 * 24 * time.Hour
	// maxRetryInterval bounds the retry delays, which double up to it.
	maxRetryInterval = time.Hour
	// maxRate bounds heart-rate thresholds: heartbeat_events stores 0..400.
	maxRate = 400
)

// kafkaName is what Kafka accepts as a topic name.
var kafkaName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,249}$`)

func (c Config) validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
	}
	between := func(name string, v, lo, hi int64) {
		if v < lo || v > hi {
			bad(name, "must be between %d and %d, got %d", lo, hi, v)
		}
	}
	// !(v > 0) also refuses NaN, which every comparison lets through.
	positive := func(name string, v float64) {
		if !(v > 0) || math.IsInf(v, 0) {
			bad(name, "must be a number greater than 0, got %v", v)
		}
	}
	durBetween := func(name string, d, lo, hi time.Duration) {
		switch {
		case d < lo && lo <= 1:
			bad(name, "must be a positive duration (like 5s), got %s", d)
		case d < lo:
			bad(name, "must be at least %s, got %s", lo, d)
		case d > hi:
			bad(name, "must be at most %s, got %s", hi, d)
		}
	}
	const forever = time.Duration(math.MaxInt64)
	hostPort := func(name, addr, example string, port0 bool) {
		_, port, err := net.SplitHostPort(addr)
		n, perr := strconv.Atoi(port)
		if err != nil || perr != nil || n < 0 || n > 65535 || n == 0 && !port0 {
			bad(name, "%q is not host:port with a port number (like %s)", addr, example)
		}
	}

	if len(c.RouterHandlers) == 0 {
		bad("ROUTER_HANDLERS", "is empty; valid handlers are %s", strings.Join(KnownHandlers, ", "))
	}
	for i, h := range c.RouterHandlers {
		switch {
		case !slices.Contains(KnownHandlers, h):
			bad("ROUTER_HANDLERS", "unknown handler %q; valid handlers are %s", h, strings.Join(KnownHandlers, ", "))
		// Each handler runs once whatever the count, so a name given twice
		// is a slip, most likely for another handler meant instead.
		case slices.Contains(c.RouterHandlers[:i], h):
			bad("ROUTER_HANDLERS", "%q is named twice in %q: name each handler once", h, strings.Join(c.RouterHandlers, ","))
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("LOG_LEVEL", "%q is not one of debug, info, warn, error", c.LogLevel)
	}
	if c.MetricsAddr != "" {
		hostPort("METRICS_ADDR", c.MetricsAddr, "127.0.0.1:8000 or :8000", true)
	}
	// A progress line or an outbox poll more often than that is a busy loop.
	durBetween("PROGRESS_INTERVAL", c.ProgressInterval, 100*time.Millisecond, forever)
	durBetween("SHUTDOWN_TIMEOUT", c.ShutdownTimeout, 1, forever)
	durBetween("STARTUP_TIMEOUT", c.StartupTimeout, 1, forever)
	durBetween("OUTBOX_POLL_INTERVAL", c.OutboxPoll, time.Millisecond, forever)
	errs = append(errs, c.Health.validate()...)
	hostPort("BROKER_ADDR", c.Broker.Addr, "127.0.0.1:19092", true)
	for _, s := range c.Kafka.BootstrapServers {
		hostPort("KAFKA_BOOTSTRAP_SERVERS", s, "kafka:9092", false)
	}
	k := c.Kafka
	topics := [][2]string{{"KAFKA_TOPIC_RAW", k.TopicRaw}, {"KAFKA_TOPIC_INVALID", k.TopicInvalid},
		{"KAFKA_TOPIC_ANOMALY", k.TopicAnomaly}, {"KAFKA_TOPIC_DLQ", k.TopicDLQ}}
	for i, t := range topics {
		if !kafkaName.MatchString(t[1]) || t[1] == "." || t[1] == ".." {
			bad(t[0], "%q is not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -)", t[1])
		}
		// The same topic for two roles loops records back into the
		// pipeline (an invalid envelope consumed again as a reading).
		for _, u := range topics[:i] {
			if t[1] == u[1] {
				bad(t[0], "%q is also %s: each topic needs its own name", t[1], u[0])
			}
		}
	}
	for _, g := range [][2]string{{"KAFKA_CONSUMER_GROUP_DB", k.GroupDB}, {"KAFKA_CONSUMER_GROUP_ANOMALY", k.GroupAnomaly}, {"KAFKA_CLIENT_ID", k.ClientID}} {
		if strings.TrimSpace(g[1]) == "" || len(g[1]) > 249 {
			bad(g[0], "must be 1 to 249 characters, got %d", len(g[1]))
		}
	}
	// One group would split the raw topic's partitions between persist and
	// detect: each reading stored or checked, not both.
	if k.GroupDB == k.GroupAnomaly {
		bad("KAFKA_CONSUMER_GROUP_ANOMALY", "%q is also KAFKA_CONSUMER_GROUP_DB: persist and detect each need their own group", k.GroupAnomaly)
	}
	if id := c.Kafka.GroupInstanceID; id != "" && (!groupInstanceID.MatchString(id) || id == "." || id == "..") {
		bad("KAFKA_GROUP_INSTANCE_ID", "%q is not a valid group instance id: up to 249 of a-z, A-Z, 0-9, '.', '_' and '-' (like persist-1)", id)
	}
	errs = append(errs, c.Kafka.Security.validate()...)
	between("KAFKA_PARTITIONS_RAW", int64(k.PartitionsRaw), 1, maxPartitions)
	between("KAFKA_PARTITIONS_OTHER", int64(k.PartitionsOther), 1, maxPartitions)
	if k.ReplicationFactor != -1 && k.ReplicationFactor < 1 {
		bad("KAFKA_REPLICATION_FACTOR", "must be -1 (the broker's default) or at least 1, got %d", k.ReplicationFactor)
	}
	pg := c.Postgres
	if pg.DatabaseURL != "" {
		if u, err := url.Parse(pg.DatabaseURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			bad("DATABASE_URL", "is not a postgres:// URL")
		}
	}
	if pg.Port < 1 || pg.Port > 65535 {
		bad("POSTGRES_PORT", "%d is not a TCP port", pg.Port)
	}
	// A host name has at most 253 bytes (a socket directory fewer).
	if len(pg.Host) > 253 {
		bad("POSTGRES_HOST", "must be a host name or address of at most 253 bytes, got %d", len(pg.Host))
	}
	// PostgreSQL cuts longer names to 63 bytes, silently.
	for _, n := range [][2]string{{"POSTGRES_DB", pg.DB}, {"POSTGRES_USER", pg.User}} {
		if n[1] == "" || len(n[1]) > 63 {
			bad(n[0], "must be 1 to 63 bytes (PostgreSQL's longest name), got %d", len(n[1]))
		}
	}
	switch pg.SSLMode {
	case "disable", "allow", "prefer", "require", "verify-ca", "verify-full":
	default:
		bad("POSTGRES_SSLMODE", "%q is not one of disable, allow, prefer, require, verify-ca, verify-full", pg.SSLMode)
	}
	between("POSTGRES_MAX_CONNS", int64(pg.MaxConns), 1, 10000)
	sim := c.Sim
	between("SIM_CUSTOMER_COUNT", int64(sim.CustomerCount), 1, 1_000_000)
	positive("SIM_EVENTS_PER_SECOND", sim.EventsPerSecond)
	if sim.EventsPerSecond > 1e6 {
		bad("SIM_EVENTS_PER_SECOND", "must be at most 1000000, got %v", sim.EventsPerSecond)
	}
	if !(sim.BurstMultiplier >= 1 && sim.BurstMultiplier <= 100) {
		bad("SIM_BURST_MULTIPLIER", "must be between 1 and 100, got %v", sim.BurstMultiplier)
	}
	for _, r := range []struct {
		name string
		v    float64
	}{{"SIM_INVALID_RATIO", sim.InvalidRatio}, {"SIM_LATE_RATIO", sim.LateRatio}, {"SIM_ANOMALY_RATIO", sim.AnomalyRatio}} {
		if !(r.v >= 0 && r.v <= 1) {
			bad(r.name, "must be between 0 and 1, got %v", r.v)
		}
	}
	if sim.TotalEvents < 0 {
		bad("SIM_TOTAL_EVENTS", "must be 0 (run forever) or a positive count, got %d", sim.TotalEvents)
	}
	between("SIM_PUBLISHERS", int64(sim.Publishers), 1, 1024)
	if sim.MaxLag < 0 {
		bad("SIM_MAX_LAG", "must be 0 (no bound) or a positive number of records, got %d", sim.MaxLag)
	}
	v := c.Validation
	if v.HeartRateMin < 0 || v.HeartRateMin >= v.HeartRateMax || v.HeartRateMax > maxRate {
		bad("HEART_RATE_MIN", "and HEART_RATE_MAX must satisfy 0 <= min < max <= %d, got %d and %d", maxRate, v.HeartRateMin, v.HeartRateMax)
	}
	durBetween("MAX_CLOCK_SKEW", v.MaxClockSkew, 1, forever)
	durBetween("MAX_EVENT_AGE", v.MaxEventAge, 1, forever)
	a := c.Anomaly
	between("ANOMALY_LOW_THRESHOLD", int64(a.LowThreshold), 0, maxRate)
	between("ANOMALY_HIGH_THRESHOLD", int64(a.HighThreshold), 0, maxRate)
	if a.LowThreshold >= a.HighThreshold {
		bad("ANOMALY_LOW_THRESHOLD", "%d must be below ANOMALY_HIGH_THRESHOLD %d", a.LowThreshold, a.HighThreshold)
	}
	between("ANOMALY_SPIKE_DELTA", int64(a.SpikeDelta), 1, maxRate)
	errs = append(errs, c.Detection.Validate(a))
	// Evicted state is swept every quarter of it.
	durBetween("DETECT_STATE_TTL", a.StateTTL, time.Second, forever)
	durBetween("DETECT_COMMIT_INTERVAL", a.CommitInterval, time.Millisecond, time.Minute)
	p := c.Persist
	// A batch of PERSIST_BATCH_SIZE rows is one transaction and one COPY.
	between("PERSIST_BATCH_SIZE", int64(p.BatchSize), 1, 100_000)
	durBetween("PERSIST_BATCH_TIMEOUT", p.BatchTimeout, 1, time.Minute)
	between("PERSIST_WRITERS", int64(p.Writers), 1, 64)
	between("PERSIST_MAX_IN_FLIGHT_PER_PARTITION", int64(p.MaxInFlightPerPartition), 1, 1_000_000)
	durBetween("PERSIST_COMMIT_INTERVAL", p.CommitInterval, time.Millisecond, time.Minute)
	// A group's progress is its commits: one committing less often than a
	// few times per STALL_AFTER would be reported stalled while healthy.
	for _, ci := range []struct {
		name  string
		every time.Duration
	}{{"PERSIST_COMMIT_INTERVAL", p.CommitInterval}, {"DETECT_COMMIT_INTERVAL", a.CommitInterval}} {
		if stall := c.Health.StallAfter; stall > 0 && ci.every > stall/4 {
			bad(ci.name, "%s must be at most a quarter of STALL_AFTER (%s): a group committing that seldom would look stalled", ci.every, stall)
		}
	}
	switch {
	case p.RetentionDays < 0 || int64(p.RetentionDays) > maxDays:
		bad("HEARTBEAT_RETENTION_DAYS", "must be 0 (keep everything) or a number of days up to %d, got %d", maxDays, p.RetentionDays)
	case p.RetentionDays > 0 && time.Duration(p.RetentionDays)*24*time.Hour < v.MaxEventAge:
		bad("HEARTBEAT_RETENTION_DAYS", "%d days is shorter than MAX_EVENT_AGE %s: valid readings would land in dropped partitions", p.RetentionDays, v.MaxEventAge)
	}
	if c.Retry.MaxRetries < 0 {
		bad("RETRY_MAX_RETRIES", "must be 0 or more, got %d", c.Retry.MaxRetries)
	}
	durBetween("RETRY_MAX_INTERVAL", c.Retry.MaxInterval, 1, maxRetryInterval)
	durBetween("RETRY_INITIAL_INTERVAL", c.Retry.InitialInterval, 1, forever)
	if c.Retry.InitialInterval > c.Retry.MaxInterval && c.Retry.MaxInterval > 0 {
		bad("RETRY_INITIAL_INTERVAL", "%s is longer than RETRY_MAX_INTERVAL %s", c.Retry.InitialInterval, c.Retry.MaxInterval)
	}
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
		return fmt.Errorf("%s=%s: %s (expected %s)", env, strconv.Quote(val), cause(f.Type, val, lastCause(rest)), kindOf(f.Type))
	}
	return err
}

// durationSyntax is a duration time.ParseDuration reads when it fits.
var durationSyntax = regexp.MustCompile(`^[-+]?(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+$`)

// cause says why val is not a value of type t: "invalid duration" is also
// time.ParseDuration's answer to a duration too long, which deserves
// saying; strconv's "value out of range" names the range.
func cause(t reflect.Type, val, cause string) string {
	switch {
	case t == reflect.TypeOf(time.Duration(0)) && durationSyntax.MatchString(strings.TrimSpace(val)):
		return fmt.Sprintf("out of range: the longest duration is %s (about 292 years)", time.Duration(math.MaxInt64))
	case strings.HasSuffix(cause, "value out of range") && t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		bits := t.Bits()
		return fmt.Sprintf("out of range %d..%d", -(int64(1) << (bits - 1)), int64(uint64(1)<<(bits-1)-1))
	case strings.HasSuffix(cause, "value out of range") && t.Kind() == reflect.Uint64:
		return fmt.Sprintf("out of range 0..%d", uint64(math.MaxUint64))
	}
	return cause
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

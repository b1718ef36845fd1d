package config_test

import (
	"context"
	"maps"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	hbsql "github.com/heartbeat/heartbeat/sql"

	"github.com/sethvargo/go-envconfig"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/messages/rules"
)

func load(env map[string]string) (config.Config, error) {
	return config.LoadConfig(context.Background(), envconfig.MapLookuper(env))
}

func TestConfigDefaults(t *testing.T) {
	c, err := load(nil)
	require.NoError(t, err)
	require.Equal(t, []string{"simulate", "persist", "detect"}, c.RouterHandlers)
	require.Empty(t, c.Kafka.BootstrapServers)
	require.Equal(t, "events.raw.v1", c.Kafka.TopicRaw)
	require.Equal(t, "cg.db-writer.v1", c.Kafka.GroupDB)
	require.Equal(t, "cg.anomaly.v1", c.Kafka.GroupAnomaly)
	require.Equal(t, int32(24), c.Kafka.PartitionsRaw)
	require.Equal(t, 30, c.Validation.HeartRateMin)
	require.Equal(t, 220, c.Validation.HeartRateMax)
	require.Equal(t, "127.0.0.1:8000", c.EffectiveMetricsAddr())
}

// TestDetectionDefaultsToEpisodes: with nothing set, the detector alerts
// once per episode; the per-reading rules are one setting away.
func TestDetectionDefaultsToEpisodes(t *testing.T) {
	c, err := load(map[string]string{})
	require.NoError(t, err)
	require.Equal(t, rules.ModeEpisode, c.Detection.Mode)
	require.Equal(t, rules.EpisodeParams{SustainedHigh: 120, SustainedLow: 40, SustainFor: 10 * time.Minute, Hysteresis: 5,
		ClearFor: time.Minute, SpikeDelta: 30, SpikeConfirm: 2, SignalLossAfter: 5 * time.Minute}, c.Detection.EpisodeParams(c.Anomaly))

	c, err = load(map[string]string{"DETECTION_MODE": "per_event"})
	require.NoError(t, err)
	require.Equal(t, rules.ModePerEvent, c.Detection.Mode)
}

func TestConfigErrorsNameTheVariable(t *testing.T) {
	cases := []struct {
		env  map[string]string
		want []string
	}{
		{map[string]string{"SIM_EVENTS_PER_SECOND": "abc"}, []string{`SIM_EVENTS_PER_SECOND="abc"`, "expected a number"}},
		{map[string]string{"POSTGRES_PORT": "54x"}, []string{`POSTGRES_PORT="54x"`, "whole number"}},
		{map[string]string{"PERSIST_BATCH_TIMEOUT": "5"}, []string{`PERSIST_BATCH_TIMEOUT="5"`, "duration"}},
		{map[string]string{"ROUTER_HANDLERS": "persist,detcet"}, []string{"ROUTER_HANDLERS", `"detcet"`, "simulate, persist, detect"}},
		{map[string]string{"ROUTER_HANDLERS": " , "}, []string{"ROUTER_HANDLERS", "empty"}},
		{map[string]string{"ROUTER_HANDLERS": "persist,detect, persist"}, []string{"ROUTER_HANDLERS", `"persist" is named twice in "persist,detect,persist"`}},
		{map[string]string{"HEART_RATE_MIN": "200", "HEART_RATE_MAX": "100"}, []string{"HEART_RATE_MIN", "HEART_RATE_MAX"}},
		{map[string]string{"SIM_INVALID_RATIO": "1.5"}, []string{"SIM_INVALID_RATIO", "between 0 and 1"}},
		{map[string]string{"KAFKA_BOOTSTRAP_SERVERS": "kafka"}, []string{"KAFKA_BOOTSTRAP_SERVERS", "host:port"}},
		{map[string]string{"METRICS_ADDR": "8000"}, []string{"METRICS_ADDR", "host:port"}},
		{map[string]string{"LOG_LEVEL": "verbose"}, []string{"LOG_LEVEL"}},
		{map[string]string{"DATABASE_URL": "mysql://x"}, []string{"DATABASE_URL"}},
		{map[string]string{"ANOMALY_LOW_THRESHOLD": "150"}, []string{"ANOMALY_LOW_THRESHOLD", "ANOMALY_HIGH_THRESHOLD"}},
		{map[string]string{"SIM_EVENTS_PER_SECOND": "NaN"}, []string{"SIM_EVENTS_PER_SECOND", "greater than 0"}},
		{map[string]string{"SIM_LATE_RATIO": "NaN"}, []string{"SIM_LATE_RATIO", "between 0 and 1"}},
		{map[string]string{"MAX_EVENT_AGE": "2562048h"}, []string{`MAX_EVENT_AGE="2562048h"`, "out of range", "292 years"}},
		{map[string]string{"KAFKA_PARTITIONS_RAW": "2147483648"}, []string{`KAFKA_PARTITIONS_RAW="2147483648"`, "out of range -2147483648..2147483647"}},
		{map[string]string{"KAFKA_PARTITIONS_RAW": "2147483647"}, []string{"KAFKA_PARTITIONS_RAW", "between 1 and 10000"}},
		{map[string]string{"HEARTBEAT_RETENTION_DAYS": "9223372036854775807"}, []string{"HEARTBEAT_RETENTION_DAYS", "up to 106751"}},
		{map[string]string{"KAFKA_TOPIC_INVALID": "events.raw.v1"}, []string{"KAFKA_TOPIC_INVALID", "also KAFKA_TOPIC_RAW"}},
		{map[string]string{"KAFKA_TOPIC_DLQ": "dlq topic"}, []string{"KAFKA_TOPIC_DLQ", "not a Kafka topic name"}},
		{map[string]string{"KAFKA_CONSUMER_GROUP_ANOMALY": "cg.db-writer.v1"}, []string{"KAFKA_CONSUMER_GROUP_ANOMALY", "own group"}},
		{map[string]string{"KAFKA_SASL_USERNAME": "u"}, []string{"KAFKA_SASL_USERNAME is set, but KAFKA_SECURITY_PROTOCOL=PLAINTEXT"}},
		{map[string]string{"KAFKA_TLS_INSECURE_SKIP_VERIFY": "true"}, []string{"KAFKA_TLS_INSECURE_SKIP_VERIFY is set"}},
		{map[string]string{"ANOMALY_SUSTAINED_LOW_THRESHOLD": "9223372036854775807"}, []string{"ANOMALY_SUSTAINED_LOW_THRESHOLD", "between 0 and 400"}},
		{map[string]string{"RETRY_INITIAL_INTERVAL": "10s"}, []string{"RETRY_INITIAL_INTERVAL", "longer than RETRY_MAX_INTERVAL"}},
		{map[string]string{"DETECT_STATE_TTL": "3ns"}, []string{"DETECT_STATE_TTL", "at least 1s"}},
		{map[string]string{"POSTGRES_DB": strings.Repeat("d", 64)}, []string{"POSTGRES_DB", "63 bytes"}},
		{map[string]string{"METRICS_ADDR": ":99999"}, []string{"METRICS_ADDR", "port number"}},
		{map[string]string{"STALL_AFTER": "5s"}, []string{"STALL_AFTER", "at least 15s", "session timeout"}},
		{map[string]string{"DETECT_COMMIT_INTERVAL": "31s"}, []string{"DETECT_COMMIT_INTERVAL", "31s must be at most a quarter of STALL_AFTER (2m0s)"}},
		{map[string]string{"PERSIST_COMMIT_INTERVAL": "10s", "STALL_AFTER": "30s"}, []string{"PERSIST_COMMIT_INTERVAL", "a quarter of STALL_AFTER (30s)"}},
		{map[string]string{"DETECT_COMMIT_INTERVAL": "0s"}, []string{"DETECT_COMMIT_INTERVAL", "must be at least 1ms, got 0s"}},
		{map[string]string{"UNHEALTHY_EXIT_AFTER": "-1m"}, []string{"UNHEALTHY_EXIT_AFTER", "0 (never exit)"}},
		{map[string]string{"KAFKA_GROUP_INSTANCE_ID": "persist 1"}, []string{`KAFKA_GROUP_INSTANCE_ID: "persist 1"`, "a-z, A-Z, 0-9"}},
		{map[string]string{"KAFKA_GROUP_INSTANCE_ID": ".."}, []string{"KAFKA_GROUP_INSTANCE_ID"}},
		{map[string]string{"KAFKA_GROUP_INSTANCE_ID": strings.Repeat("x", 250)}, []string{"KAFKA_GROUP_INSTANCE_ID"}},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.want, " "), func(t *testing.T) {
			_, err := load(c.env)
			require.Error(t, err)
			for _, w := range c.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

// An empty variable is an unset one: its default applies, rather than the
// type's zero (no retries, a heart rate of 0 valid).
func TestEmptyVariableTakesItsDefault(t *testing.T) {
	c, err := load(map[string]string{"RETRY_MAX_RETRIES": "", "HEART_RATE_MIN": "", "ROUTER_HANDLERS": "", "SHUTDOWN_TIMEOUT": "",
		"ANOMALY_SPIKE_CONFIRM_READINGS": ""})
	require.NoError(t, err)
	def, err := load(nil)
	require.NoError(t, err)
	require.Equal(t, def, c)
	require.Equal(t, 2, c.Detection.SpikeConfirm)
}

func TestMetricsAddrFollowsTheRole(t *testing.T) {
	for handlers, want := range map[string]string{
		"simulate": "127.0.0.1:8000", "persist,detect": "127.0.0.1:8001", "persist": "127.0.0.1:8001", "detect": "127.0.0.1:8002",
	} {
		c, err := load(map[string]string{"ROUTER_HANDLERS": handlers})
		require.NoError(t, err)
		require.Equal(t, want, c.EffectiveMetricsAddr(), handlers)
	}
	c, err := load(map[string]string{"METRICS_ADDR": ":9100"})
	require.NoError(t, err)
	require.Equal(t, ":9100", c.EffectiveMetricsAddr())
}

func TestConnStringAndRedaction(t *testing.T) {
	c, err := load(map[string]string{"POSTGRES_USER": "hb", "POSTGRES_PASSWORD": "p@ss word", "POSTGRES_HOST": "db"})
	require.NoError(t, err)
	dsn := c.Postgres.ConnString()
	require.Equal(t, "postgres://hb:p%40ss%20word@db:5432/heartbeat?sslmode=prefer", dsn)
	require.NotContains(t, hbsql.Redact(dsn), "p%40ss")
	for _, s := range []string{
		"cannot parse `postgres://hb:s3cret@db:5432/x`: bad",
		"host=db user=hb password=s3cret dbname=x",
		"host=db password='s3 cret' dbname=x",
	} {
		require.NotContains(t, hbsql.Redact(s), "s3", s)
	}
	c, err = load(map[string]string{"DATABASE_URL": "postgres://u:pw@h/d", "POSTGRES_HOST": "ignored"})
	require.NoError(t, err)
	require.Equal(t, "postgres://u:pw@h/d", c.Postgres.ConnString(), "DATABASE_URL wins")
}

// TestConfigurationReferenceDocumentsEveryVariable keeps
// docs/configuration.md true both ways: every variable Config reads (nested
// structs included) has a row with the default its tag gives, and every row
// names a variable Config reads.
func TestConfigurationReferenceDocumentsEveryVariable(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	require.NoError(t, err)
	documented := documentedVariables(t, string(doc))
	read := envVariables(reflect.TypeOf(config.Config{}))
	require.NotEmpty(t, read)

	for name, def := range read {
		t.Run(name, func(t *testing.T) {
			cell, ok := documented[name]
			require.True(t, ok, "docs/configuration.md has no row for %s", name)
			if def.set {
				require.True(t, strings.HasPrefix(cell, "`"+def.value+"`"),
					"the default of %s is %q (its env tag); docs/configuration.md says %q", name, def.value, cell)
			} else {
				require.True(t, strings.HasPrefix(cell, "*(empty"),
					"%s has no default (its env tag); docs/configuration.md should say *(empty…)*, says %q", name, cell)
			}
		})
	}
	for name := range documented {
		_, ok := read[name]
		require.True(t, ok, "docs/configuration.md has a row for %s, which Config does not read", name)
	}
}

// envDefault is a variable's default as its env tag gives it.
type envDefault struct {
	value string
	set   bool
}

// envVariables returns every variable the fields of t read, by their env
// tags (go-envconfig's syntax: "NAME, default=VALUE", where the default is
// the rest of the tag, commas included), walking nested structs.
func envVariables(t reflect.Type) map[string]envDefault {
	vars := map[string]envDefault{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("env")
		if tag == "" {
			if f.Type.Kind() == reflect.Struct {
				maps.Copy(vars, envVariables(f.Type))
			}
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		var d envDefault
		if _, v, ok := strings.Cut(opts, "default="); ok {
			d = envDefault{value: v, set: true}
		}
		vars[strings.TrimSpace(name)] = d
	}
	return vars
}

// documentedVariables returns the rows of the tables of doc whose first cell
// is a variable name in code, each with its second cell, the default.
func documentedVariables(t *testing.T, doc string) map[string]string {
	rows := map[string]string{}
	variable := regexp.MustCompile("^`([A-Z][A-Z0-9_]*)`$")
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(line, "|") {
			continue
		}
		// A cell may hold an escaped pipe (\|).
		cells := strings.Split(strings.ReplaceAll(strings.Trim(line, "|"), `\|`, "\x00"), "|")
		if len(cells) < 3 {
			continue
		}
		m := variable.FindStringSubmatch(strings.TrimSpace(cells[0]))
		if m == nil {
			continue
		}
		require.NotContains(t, rows, m[1], "docs/configuration.md has two rows for %s", m[1])
		rows[m[1]] = strings.ReplaceAll(strings.TrimSpace(cells[1]), "\x00", `\|`)
	}
	require.NotEmpty(t, rows, "docs/configuration.md has variable tables")
	return rows
}

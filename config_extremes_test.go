package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/big"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sethvargo/go-envconfig"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/app/telemetry/telemetrytest"
)

// extremes are the values a variable of type t is tried with: empty, 0,
// negative, the smallest positive, huge (the largest the type holds, and
// one past it), and malformed.
func extremes(t reflect.Type) []string {
	common := []string{"", "0", "-1", "1", "abc", "1 2"}
	switch {
	case t == reflect.TypeOf(time.Duration(0)):
		return append(common, "1ns", "-5s", "100000h", "2562047h", "2562048h", "5", "1e400s", "Inf")
	case t.Kind() == reflect.Int || t.Kind() == reflect.Int64:
		return append(common, "9223372036854775807", "9223372036854775808", "-9223372036854775808", "1e9", "1.5")
	case t.Kind() == reflect.Int32:
		return append(common, "2147483647", "2147483648", "-2147483648", "1e9", "1.5")
	case t.Kind() == reflect.Int16:
		return append(common, "32767", "32768", "-32768", "1.5")
	case t.Kind() == reflect.Uint64:
		return append(common, "18446744073709551615", "18446744073709551616", "1.5")
	case t.Kind() == reflect.Float64:
		return append(common, "1e-300", "1e308", "1e309", "-1e308", "NaN", "Inf", "-Inf", "0x1p-2")
	case t.Kind() == reflect.Bool:
		return append(common, "true", "maybe")
	case t.Kind() == reflect.Slice:
		return append(common, ",", "a,,b", strings.Repeat("x,", 5000))
	}
	return append(common, strings.Repeat("x", 300), strings.Repeat("y", 70000), "a\tb", "é", ":", "localhost:99999")
}

// bounds returns the smallest and the largest value of a numeric variable
// that the configuration accepts, searched from its default outwards (the
// values between are taken to be accepted too): the huge values a
// variable can really be given, which the start-up test then runs.
func bounds(t *testing.T, v configVariable) []string {
	t.Helper()
	accepts := func(value string) bool {
		_, err := config.LoadConfig(context.Background(), envconfig.MapLookuper(map[string]string{v.name: value}))
		return err == nil
	}
	if v.def == "" || !accepts(v.def) {
		return nil
	}
	var format func(*big.Int) string
	var lo, hi, def *big.Int
	switch {
	case v.typ == reflect.TypeOf(time.Duration(0)):
		d, err := time.ParseDuration(v.def)
		require.NoError(t, err)
		def, lo, hi = big.NewInt(int64(d)), big.NewInt(math.MinInt64), big.NewInt(math.MaxInt64)
		format = func(x *big.Int) string { return time.Duration(x.Int64()).String() }
	case v.typ.Kind() >= reflect.Int && v.typ.Kind() <= reflect.Int64:
		bits := v.typ.Bits()
		def, _ = new(big.Int).SetString(v.def, 10)
		hi = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(bits-1)), big.NewInt(1))
		lo = new(big.Int).Neg(new(big.Int).Lsh(big.NewInt(1), uint(bits-1)))
		format = func(x *big.Int) string { return x.String() }
	case v.typ.Kind() == reflect.Float64:
		// Positive float64s are ordered as their bits are.
		f, err := strconv.ParseFloat(v.def, 64)
		require.NoError(t, err)
		if f <= 0 {
			return nil
		}
		def, lo, hi = new(big.Int).SetUint64(math.Float64bits(f)), big.NewInt(1), new(big.Int).SetUint64(math.Float64bits(math.MaxFloat64))
		format = func(x *big.Int) string { return strconv.FormatFloat(math.Float64frombits(x.Uint64()), 'g', -1, 64) }
	default:
		return nil
	}
	require.NotNil(t, def, "%s: default %q", v.name, v.def)
	// The largest accepted in [def, hi], the smallest in [lo, def].
	ok := func(x *big.Int) bool { return accepts(format(x)) }
	largest, smallest := acceptedEnd(def, hi, true, ok), acceptedEnd(lo, def, false, ok)
	return []string{format(smallest), format(largest)}
}

// acceptedEnd bisects [a, b] for the largest value accepted (up: a is
// accepted) or the smallest (down: b is), the values between it and a (or
// b) taken to be accepted too.
func acceptedEnd(a, b *big.Int, up bool, accepts func(*big.Int) bool) *big.Int {
	a, b = new(big.Int).Set(a), new(big.Int).Set(b)
	end := new(big.Int).Set(b)
	if up {
		end.Set(a)
	}
	one := big.NewInt(1)
	for a.Cmp(b) <= 0 {
		mid := new(big.Int).Rsh(new(big.Int).Add(a, b), 1)
		ok := accepts(mid)
		if ok {
			end.Set(mid)
		}
		if ok == up { // the end lies above mid
			a.Add(mid, one)
		} else {
			b.Sub(mid, one)
		}
	}
	return end
}

// extremeCase is a variable set to one extreme value, alone.
type extremeCase struct {
	name, value string
	// text is set for a variable that is text (a name, a path, a list),
	// not a quantity.
	text bool
}

func (c extremeCase) String() string {
	v := c.value
	if len(v) > 24 {
		v = fmt.Sprintf("%s…(%d bytes)", v[:12], len(v))
	}
	return fmt.Sprintf("%s=%q", c.name, v)
}

// TestConfigExtremes sets each variable of config.Config, alone, to each of
// its extremes: the configuration either takes it or refuses it naming the
// variable. It returns (through acceptedExtremes) the values taken, which
// TestStartupAtExtremes starts the pipeline with.
func TestConfigExtremes(t *testing.T) {
	accepted := acceptedExtremes(t)
	require.NotEmpty(t, accepted)
	for _, c := range accepted {
		t.Log("accepted:", c)
	}
}

// acceptedExtremes checks every variable at every extreme at the
// configuration level and returns the cases the configuration accepts.
func acceptedExtremes(t *testing.T) []extremeCase {
	t.Helper()
	vars := configVariables()
	require.Greater(t, len(vars), 60, "every variable of config.Config")
	var accepted []extremeCase
	for _, v := range vars {
		for _, value := range append(extremes(v.typ), bounds(t, v)...) {
			k := v.typ.Kind()
			c := extremeCase{v.name, value, k == reflect.String || k == reflect.Slice || k == reflect.Bool}
			_, err := config.LoadConfig(context.Background(), envconfig.MapLookuper(map[string]string{v.name: value}))
			if err != nil {
				require.Contains(t, err.Error(), v.name, "%s: the error names the variable", c)
				require.NotContains(t, err.Error(), "Config", "%s: the error names the variable, not the Go field", c)
				continue
			}
			accepted = append(accepted, c)
		}
	}
	return accepted
}

// notStartedAlone are the accepted extremes the start-up test does not
// start the pipeline with, and why; the configuration test covers them.
var notStartedAlone = map[string]string{
	// A value names a database the test would create on the shared server
	// (and migrate, were it someone else's).
	"POSTGRES_DB": "names a database outside the test's scratch one",
	// Read by `heartbeat broker` only.
	"BROKER_ADDR":     "read by `heartbeat broker` only",
	"BROKER_DATA_DIR": "read by `heartbeat broker` only",
}

// TestStartupAtExtremes starts the pipeline — simulate, persist and detect,
// on a scratch database and the in-process broker — with each extreme the
// configuration accepts, one at a time: it either starts, consumes a
// reading with persist and with detect and stops cleanly, or fails
// start-up with an error naming the variable. Never a panic, never a hang.
func TestStartupAtExtremes(t *testing.T) {
	accepted := acceptedExtremes(t)
	dbURL, _ := testDatabase(t)
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	password, _ := u.User.Password()
	// Each start runs its own in-process broker (KAFKA_BOOTSTRAP_SERVERS
	// empty), so that the topics are created with the case's settings.
	// POSTGRES_* rather than DATABASE_URL, which would win over them.
	base := map[string]string{
		"POSTGRES_HOST": u.Hostname(), "POSTGRES_PORT": u.Port(),
		"POSTGRES_DB": strings.TrimPrefix(u.Path, "/"), "POSTGRES_USER": u.User.Username(), "POSTGRES_PASSWORD": password,
		"METRICS_ADDR": "127.0.0.1:0", "LOG_LEVEL": "warn", "STARTUP_TIMEOUT": "3s", "SIM_EVENTS_PER_SECOND": "20",
	}
	if mode := u.Query().Get("sslmode"); mode != "" {
		base["POSTGRES_SSLMODE"] = mode
	}
	started := map[string]string{} // configuration -> the case that started it
	// A few at a time: most of a start that cannot reach PostgreSQL is
	// waiting out STARTUP_TIMEOUT.
	slots := make(chan struct{}, 4)
	for _, c := range accepted {
		if why, skip := notStartedAlone[c.name]; skip {
			t.Logf("%s: not started (%s)", c, why)
			continue
		}
		// Of a text variable, the values that differ in kind: a short
		// one, the longest, whitespace, non-ASCII. A quantity, every one.
		if c.text && !slices.Contains([]string{"0", "a\tb", "é"}, c.value) && len(c.value) < 300 {
			continue
		}
		env := maps.Clone(base)
		env[c.name] = c.value
		if c.name == "METRICS_ADDR" && c.value == "" {
			continue // the role's fixed port: taken on a shared machine; the same as base otherwise
		}
		cfg, err := config.LoadConfig(context.Background(), envconfig.MapLookuper(env))
		if err != nil {
			require.Contains(t, err.Error(), c.name, "%s: the error names the variable", c)
			continue
		}
		key := fmt.Sprintf("%+v", cfg)
		if first, ok := started[key]; ok {
			t.Logf("%s: the configuration of %s", c, first)
			continue
		}
		started[key] = c.String()
		t.Run(c.String(), func(t *testing.T) {
			t.Parallel()
			slots <- struct{}{}
			defer func() { <-slots }()
			startAndStop(t, c, cfg)
		})
	}
}

// startAndStop runs the pipeline with cfg until persist and detect have
// each consumed a reading published for the purpose, then stops it.
func startAndStop(t *testing.T, c extremeCase, cfg config.Config) {
	var logs telemetrytest.LogBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	failed := func(err error) {
		t.Helper()
		require.Contains(t, err.Error(), c.name, "%s: start-up fails naming the variable", c)
		require.Empty(t, logs.Lines("panic"))
		t.Logf("refused at start-up: %v", err)
	}
	rp, err := runPipeline(cfg, log)
	if err != nil {
		failed(err)
		return
	}
	defer rp.cancel()

	brokers := cfg.Kafka.BootstrapServers
	if len(brokers) == 0 {
		brokers = rp.app.Kafka.Brokers
	}
	produce(t, brokers[0], cfg.Kafka.TopicRaw, []*record{validRecord("cust_extreme", 70, time.Now())})
	consumed := func(handler string) float64 {
		return testutil.ToFloat64(rp.app.Metrics.Consumed.WithLabelValues(handler))
	}
	deadline := time.After(60 * time.Second)
	for consumed(config.HandlerPersist) < 1 || consumed(config.HandlerDetect) < 1 {
		select {
		case err := <-rp.done:
			failed(fmt.Errorf("stopped before consuming: %w", err))
			return
		case <-deadline:
			t.Fatalf("%s: persist consumed %v, detect %v within 60 s; log:\n%s", c, consumed(config.HandlerPersist), consumed(config.HandlerDetect), strings.Join(logs.Lines(), "\n"))
		case <-time.After(20 * time.Millisecond):
		}
	}
	rp.stopWithin(t, min(cfg.ShutdownTimeout, time.Minute)+30*time.Second)
	require.Empty(t, logs.Lines("panic"), "%s", c)
}

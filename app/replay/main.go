package replay

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/app/kafka"
	"github.com/heartbeat/heartbeat/app/telemetry"
)

// Main is `heartbeat replay [flags] FILE.csv`. The brokers are
// KAFKA_BOOTSTRAP_SERVERS, or else BROKER_ADDR (the broker of `heartbeat
// broker`); the in-process broker that a plain `heartbeat` starts for
// itself is reachable only through the address it logs, given as
// KAFKA_BOOTSTRAP_SERVERS.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	speed := fs.Float64("speed", 0, "replay at this multiple of real time (1 = as recorded); 0 = as fast as possible")
	shift := fs.Bool("shift-to-now", false, "shift every timestamp by a whole number of hours so that the latest reading falls within the last hour")
	topic := fs.String("topic", "", "topic to publish to (default KAFKA_TOPIC_RAW)")
	workers := fs.Int("workers", 16, "publishing goroutines (one customer always uses the same one)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: heartbeat replay [--shift-to-now] [--speed N] [--topic T] FILE.csv")
		fmt.Fprintln(stderr, "FILE.csv: a header line customer_id,timestamp,heart_rate, then one reading a line (RFC 3339 timestamps).")
		fs.PrintDefaults()
	}
	// Flags may come before or after the file.
	var files []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		files = append(files, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(files) != 1 {
		fs.Usage()
		return fmt.Errorf("replay: want one CSV file, got %d", len(files))
	}
	if *speed < 0 || *workers < 1 {
		return errors.New("replay: --speed must be 0 or more and --workers at least 1")
	}
	cfg, err := config.LoadConfig(ctx, nil)
	if err != nil {
		return err
	}
	if *topic == "" {
		*topic = cfg.Kafka.TopicRaw
	}
	f, err := os.Open(files[0])
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	rec, err := ReadCSV(f)
	_ = f.Close()
	if err != nil {
		return fmt.Errorf("replay %s: %w", files[0], err)
	}
	now := time.Now()
	var offset time.Duration
	if *shift {
		offset = rec.ShiftToNow(now, cfg.Validation.MaxEventAge)
	}
	first, last := rec.Span()
	v := cfg.Validation
	for _, w := range Warnings(rec, offset, now, Limits{MinRate: v.HeartRateMin, MaxRate: v.HeartRateMax, MaxEventAge: v.MaxEventAge, MaxClockSkew: v.MaxClockSkew}) {
		fmt.Fprintln(stderr, "WARNING:", w)
	}
	if rec.Rounded > 0 {
		fmt.Fprintf(stderr, "note: %d rates had a fraction and were rounded to whole bpm\n", rec.Rounded)
	}

	brokers := cfg.Kafka.BootstrapServers
	if len(brokers) == 0 {
		brokers = []string{cfg.Broker.Addr}
	}
	log := telemetry.NewLogger(cfg.LogLevel)
	wlog := watermill.NewSlogLoggerWithLevelMapping(log, map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug})
	client, err := kafka.NewClient(brokers, cfg, log, wlog)
	if err != nil {
		return err
	}
	tctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err = kafka.EnsureTopics(tctx, brokers, client.Opts(), cfg.Kafka.ReplicationFactor, kafka.Topics(cfg.Kafka), log)
	cancel()
	if err != nil {
		return fmt.Errorf("replay: cannot reach Kafka at %s (KAFKA_BOOTSTRAP_SERVERS, or BROKER_ADDR when that is empty; "+
			"a plain `heartbeat` runs its broker in-process: give the address it logs as KAFKA_BOOTSTRAP_SERVERS): %w",
			strings.Join(brokers, ","), err)
	}
	pub, err := client.NewPublisher()
	if err != nil {
		return err
	}
	defer func() { _ = pub.Close() }()
	started := time.Now()
	sum, err := Publish(ctx, pub, rec, Options{Topic: *topic, Speed: *speed, Shift: offset, Workers: *workers})
	if err != nil {
		return fmt.Errorf("replay %s: published %d of %d readings: %w", files[0], sum.Published, len(rec.Rows), err)
	}
	fmt.Fprintf(stdout, "replayed %d readings of %d customer(s) from %s (%s .. %s", sum.Published, sum.Customers, files[0],
		first.Format(time.RFC3339), last.Format(time.RFC3339))
	if offset != 0 {
		fmt.Fprintf(stdout, ", shifted by %s", offset)
	}
	fmt.Fprintf(stdout, ") to %s on %s in %s\n", *topic, strings.Join(brokers, ","), time.Since(started).Round(time.Millisecond))
	if sum.Duplicates > 0 {
		fmt.Fprintf(stdout, "%d rows repeat a customer and timestamp: they share an event id and are stored once\n", sum.Duplicates)
	}
	return nil
}

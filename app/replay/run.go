package replay

import (
	"context"
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

// Load reads the recording in the CSV file name (see [ReadCSV]).
func Load(name string) (Recording, error) {
	f, err := os.Open(name)
	if err != nil {
		return Recording{}, fmt.Errorf("replay: %w", err)
	}
	defer f.Close()
	rec, err := ReadCSV(f)
	if err != nil {
		return Recording{}, fmt.Errorf("replay %s: %w", name, err)
	}
	return rec, nil
}

// Job is one `heartbeat replay`: a loaded recording and how to publish it.
type Job struct {
	// File names the recording in messages.
	File      string
	Recording Recording
	// ShiftToNow moves every timestamp by whole hours so that the latest
	// falls within the last hour.
	ShiftToNow bool
	// Topic empty: KAFKA_TOPIC_RAW.
	Topic string
	// Speed is the multiple of real time; 0 publishes as fast as possible.
	Speed   float64
	Workers int
}

// Run publishes j to the Kafka cluster of brokers with the client settings
// of cfg, creating the pipeline's topics when missing. Before publishing it
// warns on stderr about the readings the pipeline will refuse (cfg's
// validation limits); once done it prints a summary to stdout. This is
// `heartbeat replay` once app/cli has read its command line.
func Run(ctx context.Context, cfg config.Config, brokers []string, j Job, stdout, stderr io.Writer) error {
	if j.Topic == "" {
		j.Topic = cfg.Kafka.TopicRaw
	}
	rec := j.Recording
	now := time.Now()
	var offset time.Duration
	if j.ShiftToNow {
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
		return fmt.Errorf("replay: create the topics on %s: %w", strings.Join(brokers, ","), err)
	}
	pub, err := client.NewPublisher()
	if err != nil {
		return err
	}
	defer func() { _ = pub.Close() }()
	started := time.Now()
	sum, err := Publish(ctx, pub, rec, Options{Topic: j.Topic, Speed: j.Speed, Shift: offset, Workers: j.Workers})
	if err != nil {
		return fmt.Errorf("replay %s: published %d of %d readings: %w", j.File, sum.Published, len(rec.Rows), err)
	}
	fmt.Fprintf(stdout, "replayed %d readings of %d customer(s) from %s (%s .. %s", sum.Published, sum.Customers, j.File,
		first.Format(time.RFC3339), last.Format(time.RFC3339))
	if offset != 0 {
		fmt.Fprintf(stdout, ", shifted by %s", offset)
	}
	fmt.Fprintf(stdout, ") to %s on %s in %s\n", j.Topic, strings.Join(brokers, ","), time.Since(started).Round(time.Millisecond))
	if sum.Duplicates > 0 {
		fmt.Fprintf(stdout, "%d rows repeat a customer and timestamp: they share an event id and are stored once\n", sum.Duplicates)
	}
	return nil
}

package replay_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	wmmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/sethvargo/go-envconfig"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heartbeat/heartbeat/app/config"
	"github.com/heartbeat/heartbeat/app/replay"
	"github.com/heartbeat/heartbeat/messages"
)

const empatica = "../../testdata/empatica-e4-hr.csv"

func readFile(t *testing.T, name string) replay.Recording {
	t.Helper()
	f, err := os.Open(name)
	require.NoError(t, err)
	defer f.Close()
	rec, err := replay.ReadCSV(f)
	require.NoError(t, err)
	return rec
}

func TestReadCSVEmpatica(t *testing.T) {
	rec := readFile(t, empatica)
	require.Len(t, rec.Rows, 3651)
	require.Zero(t, rec.Rounded)
	first, last := rec.Span()
	require.Equal(t, time.Date(2023, 4, 5, 9, 23, 50, 0, time.UTC), first)
	require.Equal(t, time.Hour+50*time.Second, last.Sub(first))
	require.Equal(t, replay.Row{CustomerID: "e4_subject_01", Time: first, Rate: 90, Line: 2}, rec.Rows[0])
}

func TestReadCSV(t *testing.T) {
	tests := []struct {
		name, in string
		rows     []replay.Row
		rounded  int
		err      string
	}{
		{name: "columns in any order, extra ones ignored, BOM, blank lines",
			in: "\ufeffheart_rate,note,timestamp,customer_id\n72,x,2026-11-25T10:00:00+01:00,c1\n\n73,,2026-11-25T09:00:01.5Z,c2\n",
			rows: []replay.Row{
				{CustomerID: "c1", Time: time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC), Rate: 72, Line: 2},
				{CustomerID: "c2", Time: time.Date(2026, 11, 25, 9, 0, 1, 5e8, time.UTC), Rate: 73, Line: 4},
			}},
		{name: "fractional rates are rounded", in: "customer_id,timestamp,heart_rate\nc,2026-11-25T09:00:00Z,72.5\nc,2026-11-25T09:00:01Z,71.4\n",
			rows: []replay.Row{
				{CustomerID: "c", Time: time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC), Rate: 73, Line: 2},
				{CustomerID: "c", Time: time.Date(2026, 11, 25, 9, 0, 1, 0, time.UTC), Rate: 71, Line: 3},
			}, rounded: 2},
		{name: "missing column", in: "customer_id,time,heart_rate\n", err: "line 1: the header"},
		{name: "no readings", in: "customer_id,timestamp,heart_rate\n", err: "no readings"},
		{name: "empty file", in: "", err: "read header"},
		{name: "timestamp without a zone", in: "customer_id,timestamp,heart_rate\nc,2026-11-25 09:00:00,70\n", err: "line 2: timestamp"},
		{name: "rate not a number", in: "customer_id,timestamp,heart_rate\nc,2026-11-25T09:00:00Z,70\nc,2026-11-25T09:00:01Z,NaN\n", err: "line 3: heart_rate"},
		{name: "short line", in: "customer_id,timestamp,heart_rate\nc,2026-11-25T09:00:00Z\n", err: "line 2: 2 fields"},
		{name: "empty customer", in: "customer_id,timestamp,heart_rate\n ,2026-11-25T09:00:00Z,70\n", err: "line 2: empty customer_id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec, err := replay.ReadCSV(strings.NewReader(tc.in))
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.rows, rec.Rows)
			require.Equal(t, tc.rounded, rec.Rounded)
		})
	}
}

func TestEventID(t *testing.T) {
	at := time.Date(2023, 4, 5, 9, 23, 50, 0, time.UTC)
	id := replay.EventID("c", at)
	require.Equal(t, id, replay.EventID("c", at.In(time.FixedZone("x", 3600))), "the same instant")
	require.NotEqual(t, id, replay.EventID("d", at))
	require.NotEqual(t, id, replay.EventID("c", at.Add(time.Millisecond)))
	h, err := messages.DefaultLimits().Validate([]byte(`{"event_id":"`+id+`","customer_id":"c","timestamp":"2026-11-25T10:00:00Z","heart_rate":70}`),
		time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC))
	require.NoError(t, err, "a valid event id")
	require.Equal(t, id, h.EventID)
}

func TestShiftToNowAndWarnings(t *testing.T) {
	rec := readFile(t, empatica)
	now := time.Date(2026, 11, 25, 10, 0, 0, 300e6, time.UTC)
	limits := replay.Limits{MinRate: 30, MaxRate: 220, MaxEventAge: 24 * time.Hour, MaxClockSkew: 5 * time.Minute}

	ws := replay.Warnings(rec, 0, now, limits)
	text := strings.Join(ws, "\n")
	require.Contains(t, text, "3651 of 3651 readings are older than MAX_EVENT_AGE (24h0m0s)")
	require.Contains(t, text, "--shift-to-now")
	require.Contains(t, text, "MAX_EVENT_AGE=")
	require.Contains(t, text, "persist and detect")

	shift := rec.ShiftToNow(now, 24*time.Hour)
	first, last := rec.Span()
	require.Equal(t, time.Date(2026, 11, 25, 9, 24, 40, 0, time.UTC), last.Add(shift), "whole hours, within the hour before now")
	require.Zero(t, shift%time.Hour)
	require.Equal(t, shift, rec.ShiftToNow(now.Add(20*time.Minute), 24*time.Hour), "the same shift again until the hour is over")
	require.Empty(t, replay.Warnings(rec, shift, now, limits))

	// A recording nearly MAX_EVENT_AGE long is shifted by whole minutes.
	short := rec.ShiftToNow(now, last.Sub(first)+30*time.Minute)
	require.Zero(t, short%time.Minute)
	require.Equal(t, time.Date(2026, 11, 25, 9, 59, 40, 0, time.UTC), last.Add(short))
	// A recording in the future is shifted back.
	back := rec.ShiftToNow(first.Add(-48*time.Hour), 24*time.Hour)
	require.False(t, last.Add(back).After(first.Add(-48*time.Hour)))

	// A recording older than the longest MAX_EVENT_AGE can only be shifted.
	ancient, err := replay.ReadCSV(strings.NewReader("customer_id,timestamp,heart_rate\na,1700-01-01T00:00:00Z,70\n"))
	require.NoError(t, err)
	text = strings.Join(replay.Warnings(ancient, 0, now, limits), "\n")
	require.Contains(t, text, "MAX_EVENT_AGE cannot be raised that far (its longest is 2562047h, about 292 years)")
	require.Contains(t, text, "from 1700-01-01T00:00:00Z, more than 292 years ago")
	require.NotContains(t, text, "MAX_EVENT_AGE=-")
	// One from 2016 is told the value that takes it.
	text = strings.Join(replay.Warnings(readFile(t, empatica), -7*365*24*time.Hour, now, limits), "\n")
	require.Regexp(t, `e\.g\. MAX_EVENT_AGE=[0-9]{5}h\.`, text)

	limits.MinRate = 65
	require.Contains(t, strings.Join(replay.Warnings(rec, shift, now, limits), "\n"), "outside HEART_RATE_MIN..HEART_RATE_MAX (65..220)")
	require.Contains(t, strings.Join(replay.Warnings(rec, shift+time.Hour, now, replay.Limits{MaxRate: 220, MaxEventAge: 24 * time.Hour, MaxClockSkew: 5 * time.Minute}), "\n"),
		"in the future")
}

func TestPublish(t *testing.T) {
	rec, err := replay.ReadCSV(strings.NewReader("customer_id,timestamp,heart_rate\n" +
		"a,2026-11-25T09:00:00Z,70\nb,2026-11-25T09:00:00.5Z,80\na,2026-11-25T09:00:01Z,71\nb,2026-11-25T09:00:01.5Z,81\na,2026-11-25T09:00:01Z,71\n"))
	require.NoError(t, err)
	pubsub := gochannel.NewGoChannel(gochannel.Config{Persistent: true}, watermill.NopLogger{})
	defer pubsub.Close()
	msgs, err := pubsub.Subscribe(context.Background(), "raw")
	require.NoError(t, err)

	started := time.Now()
	sum, err := replay.Publish(context.Background(), pubsub, rec, replay.Options{Topic: "raw", Shift: time.Hour, Workers: 4, Speed: 2})
	require.NoError(t, err)
	require.GreaterOrEqual(t, time.Since(started), 700*time.Millisecond, "1.5 s of recording at twice real time")
	require.Equal(t, replay.Summary{Published: 5, Customers: 2, Duplicates: 1}, sum)

	got := map[string][]messages.Heartbeat{}
	corr := map[string]bool{}
	for range 5 {
		m := <-msgs
		m.Ack()
		h, err := messages.Decode(m.Payload)
		require.NoError(t, err)
		require.Equal(t, h.EventID, m.UUID)
		require.Equal(t, h.CustomerID, m.Metadata.Get(messages.KeyMetadata))
		c := wmmw.MessageCorrelationID(m)
		require.NotEmpty(t, c)
		require.False(t, corr[c], "a correlation id per message")
		corr[c] = true
		got[h.CustomerID] = append(got[h.CustomerID], h)
	}
	require.Len(t, got["a"], 3)
	require.Equal(t, []int{70, 71, 71}, []int{got["a"][0].HeartRate, got["a"][1].HeartRate, got["a"][2].HeartRate}, "a customer's readings in file order")
	require.Equal(t, time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC), got["a"][0].Timestamp, "shifted")
	require.Equal(t, replay.EventID("a", time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)), got["a"][0].EventID, "ids from the recorded time")
	require.Equal(t, got["a"][1].EventID, got["a"][2].EventID)
}

type failing struct{ n int }

func (f *failing) Publish(string, ...*message.Message) error {
	if f.n++; f.n > 2 {
		return context.DeadlineExceeded
	}
	return nil
}
func (f *failing) Close() error { return nil }

func TestPublishStopsOnError(t *testing.T) {
	rec := readFile(t, empatica)
	sum, err := replay.Publish(context.Background(), &failing{}, rec, replay.Options{Topic: "raw", Workers: 1})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "line 4")
	require.Equal(t, 2, sum.Published)
}

// TestRunPublishesToKafka publishes the Empatica recording to a real
// Kafka-protocol broker, as `heartbeat replay --shift-to-now FILE` does.
func TestRunPublishesToKafka(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	defer c.Close()
	cfg, err := config.LoadConfig(context.Background(), envconfig.MapLookuper(map[string]string{"LOG_LEVEL": "warn"}))
	require.NoError(t, err)
	rec, err := replay.Load(empatica)
	require.NoError(t, err)

	var out, errOut bytes.Buffer
	job := replay.Job{File: empatica, Recording: rec, ShiftToNow: true, Workers: 16}
	require.NoError(t, replay.Run(context.Background(), cfg, c.ListenAddrs(), job, &out, &errOut))
	require.Contains(t, out.String(), "replayed 3651 readings of 1 customer(s)")
	require.Empty(t, errOut.String(), "no warning once shifted")

	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("events.raw.v1"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < 3651 && ctx.Err() == nil {
		recs = append(recs, cl.PollFetches(ctx).Records()...)
	}
	require.Len(t, recs, 3651)
	partitions := map[int32]bool{}
	prev := time.Time{}
	for _, r := range recs {
		require.Equal(t, "e4_subject_01", string(r.Key))
		partitions[r.Partition] = true
		h, err := messages.DefaultLimits().Validate(r.Value, time.Now())
		require.NoError(t, err, "valid once shifted")
		require.True(t, h.Timestamp.After(prev), "in order")
		prev = h.Timestamp
	}
	require.Len(t, partitions, 1, "one customer, one partition")
	require.WithinDuration(t, time.Now().Add(-30*time.Minute), prev, 31*time.Minute, "the latest reading is within the last hour")

	// Unshifted, the 2023 recording is refused by validation: say so loudly.
	out.Reset()
	errOut.Reset()
	job.ShiftToNow = false
	require.NoError(t, replay.Run(context.Background(), cfg, c.ListenAddrs(), job, &out, &errOut))
	require.Contains(t, errOut.String(), "WARNING: 3651 of 3651 readings are older than MAX_EVENT_AGE")
	require.Contains(t, errOut.String(), "--shift-to-now")
}

func TestLoadNamesTheProblem(t *testing.T) {
	_, err := replay.Load(filepath.Join(t.TempDir(), "missing.csv"))
	require.ErrorContains(t, err, "no such file")
	bad := filepath.Join(t.TempDir(), "bad.csv")
	require.NoError(t, os.WriteFile(bad, []byte("customer_id,timestamp,heart_rate\nc,yesterday,70\n"), 0o600))
	_, err = replay.Load(bad)
	require.ErrorContains(t, err, "bad.csv: line 2")
}

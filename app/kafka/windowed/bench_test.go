package windowed_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heartbeat/heartbeat/app/kafka/windowed"
)

// BenchmarkSubscriber measures records delivered and acknowledged per second
// by a consumer that does nothing else. Records are produced beforehand, in
// chunks large enough that a run rarely needs a second one: the client keeps
// fetching while the timer is stopped, which would flatter the figure.
func BenchmarkSubscriber(b *testing.B) {
	c := newCluster(b)
	prod, err := kgo.NewClient(
		kgo.SeedBrokers(c.addrs...),
		kgo.DefaultProduceTopic(topic),
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.ProducerBatchMaxBytes(1<<20),
		kgo.MaxBufferedRecords(1<<20),
	)
	require.NoError(b, err)
	b.Cleanup(prod.Close)
	payload := []byte(`{"event_id":"0192f7c4-9d7a-7c2b-8f3e-2a1b3c4d5e6f","customer_id":"cust_00042","timestamp":"2026-11-25T10:00:00.123Z","heart_rate":72}`)
	const (
		chunk  = 1_500_000
		warmup = 200_000
	)
	produce := func() {
		for i := range chunk {
			key := []byte{byte(i), byte(i >> 8)}
			prod.Produce(context.Background(), &kgo.Record{Key: key, Value: payload}, nil)
		}
		require.NoError(b, prod.Flush(context.Background()))
	}
	produce()
	available := chunk

	_, ch := subscribe(b, c, "bench", func(cfg *windowed.Config) {
		cfg.CommitInterval = time.Second
		cfg.NackResendSleep = 100 * time.Millisecond
		cfg.ClientOpts = nil
	})
	// Warm up past the group join and the client's first, full fetch
	// buffers, so that the timing sees the steady state.
	receive(b, ch).Ack()
	for range warmup - 1 {
		(<-ch).Ack()
	}
	available -= warmup

	var n int
	for b.Loop() {
		if available == 0 {
			b.StopTimer()
			produce()
			available = chunk
			b.StartTimer()
		}
		msg := <-ch
		msg.Ack()
		available--
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
}

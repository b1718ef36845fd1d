// Package telemetrytest helps tests read what a process reports: its
// /healthz, its metrics, its log lines.
package telemetrytest

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heartbeat/heartbeat/app/telemetry"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// ServeHealth serves reg and health as a process does and returns the
// /healthz URL.
func ServeHealth(t *testing.T, reg *prometheus.Registry, health *telemetry.Health) string {
	t.Helper()
	ln, err := telemetry.ListenMetrics(FreeAddr(t))
	require.NoError(t, err)
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	serve := telemetry.Serve(ctx, ln, reg, health, slog.New(slog.DiscardHandler))
	done := make(chan error, 1)
	go func() { done <- serve() }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return "http://" + addr + "/healthz"
}

// GetHealthz answers the status and body of url.
func GetHealthz(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// WaitHealthz polls url until it answers code, and returns the body.
func WaitHealthz(t *testing.T, url string, code int, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, body := GetHealthz(t, url)
		if got == code {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz still %d (%q) after %s, want %d", got, body, timeout, code)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// FreeAddr is a free local TCP address.
func FreeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// Gauge returns the value of the series of name with labels in reg, and
// whether it exists.
func Gauge(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metrics
				}
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// LogBuffer is a goroutine-safe log destination tests read back.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Lines returns the log lines holding every one of parts.
func (b *LogBuffer) Lines(parts ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range strings.Split(b.buf.String(), "\n") {
		ok := l != ""
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

// String is everything logged.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

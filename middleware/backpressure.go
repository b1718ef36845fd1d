package middleware

import (
	"log/slog"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
)

// Backpressure waits out infrastructure outages. When the handler fails
// with a transient error ([IsTransient]) it tries again with exponential
// backoff, as long as it takes, so the message is neither retried into the
// poison queue nor acked: consumption of its partition pauses until the
// database or broker is back. It stops waiting when the message's context
// ends (shutdown), returning the error so the message is redelivered later.
// Place it inside Retry and PoisonQueue.
type Backpressure struct {
	InitialInterval time.Duration
	MaxInterval     time.Duration
	Logger          *slog.Logger
	// Failures counts transient failures, by handler.
	Failures *prometheus.CounterVec
	// Paused accumulates the length of outages, by handler: from the first
	// message to wait to the last to stop waiting.
	Paused *prometheus.CounterVec

	mu      sync.Mutex
	waiting map[string]int       // handler -> messages waiting
	since   map[string]time.Time // handler -> when its outage began
}

// Middleware implements message.HandlerMiddleware.
func (b *Backpressure) Middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		delay := b.InitialInterval
		handler := message.HandlerNameFromCtx(msg.Context())
		waiting := false
		for {
			out, err := h(msg)
			if err == nil || !IsTransient(err) || msg.Context().Err() != nil {
				if waiting {
					b.leave(handler, err)
				}
				return out, err
			}
			if !waiting {
				waiting = true
				b.enter(handler, err)
			}
			if b.Failures != nil {
				b.Failures.WithLabelValues(handler).Inc()
			}
			t := time.NewTimer(delay)
			select {
			case <-msg.Context().Done():
				t.Stop()
				b.leave(handler, err)
				return out, err
			case <-t.C:
			}
			delay = min(delay*2, b.MaxInterval)
		}
	}
}

// enter and leave track, per handler, the messages waiting out an outage:
// the first to start waiting logs the pause and starts the outage's clock,
// the last to stop logs the recovery and adds the outage's duration to
// Paused, so an outage gives two log lines and its length once, not once per
// message.
func (b *Backpressure) enter(handler string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.waiting == nil {
		b.waiting, b.since = map[string]int{}, map[string]time.Time{}
	}
	b.waiting[handler]++
	if b.waiting[handler] == 1 {
		b.since[handler] = time.Now()
		if b.Logger != nil {
			b.Logger.Warn("infrastructure unavailable, pausing consumption until it recovers", "handler", handler, "err", err)
		}
	}
}

func (b *Backpressure) leave(handler string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.waiting[handler]--
	if b.waiting[handler] > 0 {
		return
	}
	paused := time.Since(b.since[handler])
	if b.Paused != nil {
		b.Paused.WithLabelValues(handler).Add(paused.Seconds())
	}
	if b.Logger == nil {
		return
	}
	// Warn like the pause, so an operator who sees one sees the other.
	if err == nil {
		b.Logger.Warn("infrastructure recovered, consumption resumed", "handler", handler, "paused", paused.Round(time.Millisecond))
	} else {
		b.Logger.Warn("stopped waiting for infrastructure", "handler", handler, "paused", paused.Round(time.Millisecond), "err", err)
	}
}

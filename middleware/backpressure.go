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
	// Paused accumulates seconds spent waiting, by handler.
	Paused *prometheus.CounterVec

	mu      sync.Mutex
	waiting map[string]int // handler -> messages waiting
}

// Middleware implements message.HandlerMiddleware.
func (b *Backpressure) Middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		delay := b.InitialInterval
		handler := message.HandlerNameFromCtx(msg.Context())
		var waitingSince time.Time
		for {
			out, err := h(msg)
			if err == nil || !IsTransient(err) || msg.Context().Err() != nil {
				if !waitingSince.IsZero() {
					b.leave(handler, time.Since(waitingSince), err)
				}
				return out, err
			}
			if waitingSince.IsZero() {
				waitingSince = time.Now()
				b.enter(handler, err)
			}
			if b.Failures != nil {
				b.Failures.WithLabelValues(handler).Inc()
			}
			t := time.NewTimer(delay)
			select {
			case <-msg.Context().Done():
				t.Stop()
				b.leave(handler, time.Since(waitingSince), err)
				return out, err
			case <-t.C:
			}
			if b.Paused != nil {
				b.Paused.WithLabelValues(handler).Add(delay.Seconds())
			}
			delay = min(delay*2, b.MaxInterval)
		}
	}
}

// enter and leave log the first message of a handler to start waiting and
// the last to stop, so an outage gives two log lines, not one per message.
func (b *Backpressure) enter(handler string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.waiting == nil {
		b.waiting = map[string]int{}
	}
	b.waiting[handler]++
	if b.waiting[handler] == 1 && b.Logger != nil {
		b.Logger.Warn("infrastructure unavailable, pausing consumption until it recovers", "handler", handler, "err", err)
	}
}

func (b *Backpressure) leave(handler string, waited time.Duration, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.waiting[handler]--
	if b.waiting[handler] == 0 && b.Logger != nil {
		if err == nil {
			b.Logger.Info("infrastructure recovered, consumption resumed", "handler", handler, "paused", waited.Round(time.Millisecond))
		} else {
			b.Logger.Info("stopped waiting for infrastructure", "handler", handler, "paused", waited.Round(time.Millisecond), "err", err)
		}
	}
}

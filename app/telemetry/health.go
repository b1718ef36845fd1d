package telemetry

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// Health is the process's health: the checks that currently report a
// problem, each with its reason. /healthz answers 503 with the reasons
// while any does, 200 "ok" otherwise. The checks are the stall watchers
// (consumer groups without progress, an outbox not forwarding); each sets
// its reason when its condition starts and clears it when it ends.
type Health struct {
	mu      sync.Mutex
	reasons map[string]string // check -> reason
	// unhealthySince is when the process last went from healthy to not.
	unhealthySince time.Time
	now            func() time.Time
}

// NewHealth returns a healthy registry.
func NewHealth() *Health {
	return &Health{reasons: map[string]string{}, now: time.Now}
}

// Set records check's problem; an empty reason clears it.
func (h *Health) Set(check, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	was := len(h.reasons) > 0
	if reason == "" {
		delete(h.reasons, check)
	} else {
		h.reasons[check] = reason
	}
	switch is := len(h.reasons) > 0; {
	case is && !was:
		h.unhealthySince = h.now()
	case !is:
		h.unhealthySince = time.Time{}
	}
}

// Problems returns the reasons of the failing checks, ordered by check, and
// since when the process has been unhealthy without a break (zero when it
// is healthy).
func (h *Health) Problems() ([]string, time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.reasons))
	for _, check := range slices.Sorted(maps.Keys(h.reasons)) {
		out = append(out, h.reasons[check])
	}
	return out, h.unhealthySince
}

// ExitWhenUnhealthyFor returns an error once the process has been
// unhealthy without a break for d, checking every tick; nil when ctx ends
// first. Returned from a Runner, it stops the process with status 1, so that
// a supervisor with a restart policy (compose's `restart: unless-stopped`)
// starts it again: Docker marks a container whose health check fails as
// unhealthy, but restarts only one that exited.
func (h *Health) ExitWhenUnhealthyFor(ctx context.Context, d, tick time.Duration) error {
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		reasons, since := h.Problems()
		if !since.IsZero() && h.now().Sub(since) >= d {
			return fmt.Errorf("unhealthy for %s (UNHEALTHY_EXIT_AFTER %s), exiting so that the process is restarted: %s",
				h.now().Sub(since).Round(time.Second), d, strings.Join(reasons, "; "))
		}
	}
}

package config

import (
	"fmt"
	"time"
)

// HealthConfig bounds when a stall is reported and what the process does
// about it.
type HealthConfig struct {
	// StallAfter is how long a consumer group may have lag on a partition
	// without committing progress there, and an anomaly may wait in the
	// outbox unforwarded, before it is a stall: well above the pauses of a
	// healthy pipeline — a rebalance after a member died (the 10 s session
	// timeout plus a rejoin), a short broker or database outage waited
	// out.
	StallAfter time.Duration `env:"STALL_AFTER, default=2m"`
	// UnhealthyExitAfter: a process unhealthy for this long without a break
	// exits with status 1, for its supervisor to restart it; 0 never exits.
	UnhealthyExitAfter time.Duration `env:"UNHEALTHY_EXIT_AFTER, default=3m"`
}

// minStallAfter keeps STALL_AFTER above what a rebalance takes (the
// consumers' 10 s session timeout) and the 5 s progress polls.
const minStallAfter = 15 * time.Second

func (c HealthConfig) validate() []error {
	var errs []error
	if c.StallAfter < minStallAfter {
		errs = append(errs, fmt.Errorf("STALL_AFTER: must be at least %s (a rebalance takes up to the 10 s session timeout), got %s", minStallAfter, c.StallAfter))
	}
	if c.UnhealthyExitAfter < 0 {
		errs = append(errs, fmt.Errorf("UNHEALTHY_EXIT_AFTER: must be 0 (never exit) or a positive duration, got %s", c.UnhealthyExitAfter))
	}
	return errs
}

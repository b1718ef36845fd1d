package cli

import (
	"context"
	"flag"
	"fmt"
	"net/url"

	"github.com/heartbeat/heartbeat/app/telemetry"
)

var healthcheckUsage = usage{
	synopsis: `heartbeat healthcheck URL`,
	about: `
Gets URL — a heartbeat process's /healthz — and exits 0 when it answers
200 OK within 2 s, or 1 with the status and the body it gave (the
problems it reports, such as a stalled consumer group). The Compose
stack's health checks run it inside the containers, whose image has no
curl. It reads no configuration.`,
	examples: `
		heartbeat healthcheck http://127.0.0.1:8001/healthz`,
}

// runHealthcheck is `heartbeat healthcheck URL`.
func runHealthcheck(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	ops, err := e.parse("healthcheck", fs, healthcheckUsage, args)
	if err != nil {
		return err
	}
	if len(ops) != 1 {
		return withUsage{fmt.Errorf("healthcheck: want one URL, got %d arguments", len(ops)), healthcheckUsage, fs}
	}
	if u, err := url.Parse(ops[0]); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageError{"healthcheck", fmt.Errorf("%q is not an http:// URL (like http://127.0.0.1:8001/healthz)", ops[0])}
	}
	return telemetry.HealthCheck(ctx, ops[0])
}

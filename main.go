// Command heartbeat is the heart-rate monitoring pipeline and its tools, in
// one binary: `heartbeat` runs the pipeline, `heartbeat help` lists the
// other commands (app/cli, one file each). Configuration comes from the
// environment; see README.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/heartbeat/heartbeat/app"
	"github.com/heartbeat/heartbeat/app/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	app.FollowGoRun()
	app.TuneGC(os.Getenv)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr, newPipeline)
	stop()
	os.Exit(code)
}

package cli

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
)

// runHelp is `heartbeat help [COMMAND [SUBCOMMAND]]`, and `heartbeat -h`:
// the command list, or the usage of the command named, as its -h prints it.
func runHelp(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || isHelpFlag(args[0]) || args[0] == "help" {
		printCommands(e.stdout)
		return errHelp
	}
	c, ok := lookup(args[0])
	if !ok {
		return fmt.Errorf("help: unknown command %q: `heartbeat help` lists the commands", args[0])
	}
	// Every command prints its usage on -h before it reads anything else.
	return c.run(ctx, e, append(args[1:len(args):len(args)], "-h"))
}

func printCommands(w io.Writer) {
	fmt.Fprint(w, `heartbeat: real-time heart-rate monitoring — a simulator, Kafka topics, PostgreSQL
storage and anomaly detection, in one binary.

Usage:
  heartbeat [COMMAND] [flags] [arguments]

Commands:
`)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range commands() {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
	}
	_ = tw.Flush()
	fmt.Fprint(w, `
Without a command, heartbeat runs the pipeline (run). "heartbeat COMMAND -h"
or "heartbeat help COMMAND" prints a command's usage; "heartbeat dlq list -h"
a subcommand's. The configuration is the environment (see the README's
Configuration section): every command but healthcheck and help reads it
all, and stops with one line naming a variable whose value is wrong.
`)
}

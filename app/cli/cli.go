// Package cli is heartbeat's command line. [Main] takes the first argument
// as the command — run (the default), broker, dlq, replay, evaluate, bench,
// healthcheck, help — and hands the rest to it; each command is one file
// here. A command reads its flags first: -h, --help and `heartbeat help
// COMMAND` print its usage to stdout and exit 0 before any configuration is
// read, so that a bad variable cannot hide the usage. Then it reads the
// configuration (the environment, app/config) and calls the package that
// does the work: app, app/kafka, app/dlq, app/replay, app/evaluate,
// app/bench, app/dashbench, app/telemetry. An error ends the process with
// one line on stderr, "heartbeat: " and the cause, and status 1.
//
// The measurement tools — bench, bench -dashboards and evaluate — are
// commands of the service binary rather than programs of their own. The
// bench measures the pipeline by running this very executable as its child
// processes (app/bench starts os.Executable with ROUTER_HANDLERS set), so
// it measures the binary that is deployed, not a rebuild of it; a separate
// bench binary would have to be told where the service binary is, and could
// measure another version than its own. evaluate scores the rules with the
// detector's own engines and the environment's configuration, so that next
// to a deployment it scores what that deployment runs; bench -dashboards
// times the queries of the dashboards embedded in the binary. Their cost
// is size: without them the image's binary (go build -trimpath -ldflags="-s
// -w", linux/amd64) was 620 KB smaller, 23.4 MB instead of 24.0 MB, when
// this package was written. Nothing runs them but their command.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/heartbeat/heartbeat/app"
	hbsql "github.com/heartbeat/heartbeat/sql"
)

// Main runs the command args name (without the program name) and returns
// the process's exit status: 0, or 1 after the error on stderr — one line,
// and the command's usage after it when the command lacked its argument.
// assemble builds the pipeline of the run command (package main's
// newPipeline).
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, assemble app.Assemble) int {
	e := &env{stdout: stdout, stderr: stderr, assemble: assemble}
	err := e.dispatch(ctx, args)
	var stopped stoppedDuringStartup
	var shown withUsage
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case errors.As(err, &stopped):
		// Asked to stop (SIGINT/SIGTERM) before start-up finished: a stop,
		// not a failure.
		fmt.Fprintln(stderr, "heartbeat: stopped by a signal during start-up")
		return 0
	case errors.As(err, &shown):
		fmt.Fprintln(stderr, "heartbeat:", oneLine(shown.err.Error()))
		fmt.Fprintln(stderr)
		shown.usage.print(stderr, shown.flags)
		return 1
	}
	fmt.Fprintln(stderr, "heartbeat:", oneLine(hbsql.Redact(err.Error())))
	return 1
}

// env is what every command gets besides its arguments.
type env struct {
	stdout, stderr io.Writer
	assemble       app.Assemble
}

// command is one word of the command line.
type command struct {
	name string
	// summary is its line in the command list.
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

// commands lists the commands in the order `heartbeat help` shows them.
// A function, not a variable: help's run refers to it.
func commands() []command {
	return []command{
		{"run", "run the pipeline: the handlers ROUTER_HANDLERS selects (the default command)", runPipeline},
		{"broker", "run only the in-process Kafka broker, on BROKER_ADDR, for pipelines run apart", runBroker},
		{"dlq", "list the poison queue, or replay its messages once their cause is fixed", runDLQ},
		{"replay", "publish a CSV recording of readings to the raw topic", runReplay},
		{"evaluate", "score the detection rules on a labelled, simulated scenario", runEvaluate},
		{"bench", "measure the pipeline against its targets; -dashboards: the dashboards' queries", runBench},
		{"healthcheck", "probe a /healthz URL: the container health check", runHealthcheck},
		{"help", "list the commands, or print one's usage: heartbeat help COMMAND", runHelp},
	}
}

func lookup(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// dispatch runs the command args[0] names: run when there is none, help for
// -h and --help.
func (e *env) dispatch(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return runPipeline(ctx, e, nil)
	}
	name, rest := args[0], args[1:]
	if isHelpFlag(name) {
		name = "help"
	}
	c, ok := lookup(name)
	if !ok {
		return fmt.Errorf("unknown command %q: `heartbeat help` lists the commands", name)
	}
	return c.run(ctx, e, rest)
}

func isHelpFlag(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "--h":
		return true
	}
	return false
}

// errHelp ends a command that printed its usage because it was asked to:
// exit status 0.
var errHelp = errors.New("help printed")

// usageError is a mistake on the command line, printed with where the
// command's usage is.
type usageError struct {
	cmd string
	err error
}

func (e usageError) Error() string {
	return fmt.Sprintf("%s: %v (heartbeat %s -h prints its usage)", e.cmd, e.err, e.cmd)
}

// withUsage is an error printed with the command's whole usage after it:
// that of a command given without the argument it needs, whose user is
// likely not to know it yet.
type withUsage struct {
	err   error
	usage usage
	flags *flag.FlagSet
}

func (e withUsage) Error() string { return e.err.Error() }

// usage is a command's help text.
type usage struct {
	// synopsis lists the ways to call the command, one a line.
	synopsis string
	// about says what the command does.
	about string
	// environment lists the variables the command reads, one a line:
	// "NAME<tab>meaning".
	environment string
	// examples are command lines, one a line, with "# comment" lines.
	examples string
}

// print writes u with the flags of fs (nil: none).
func (u usage) print(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "Usage:")
	for _, l := range lines(u.synopsis) {
		fmt.Fprintf(w, "  %s\n", l)
	}
	fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(u.about))
	var flags [][2]string
	if fs != nil {
		fs.VisitAll(func(f *flag.Flag) {
			arg, text := flag.UnquoteUsage(f)
			name := "-" + f.Name
			if arg != "" {
				name += " " + arg
			}
			if def := f.DefValue; def != "" && def != "0" && def != "false" && def != "0s" {
				text += " (default" + unbroken + def + ")"
			}
			flags = append(flags, [2]string{name, text})
		})
	}
	if len(flags) > 0 {
		fmt.Fprintln(w, "\nFlags:")
		columns(w, flags)
	}
	if u.environment != "" {
		var vars [][2]string
		for _, l := range lines(u.environment) {
			name, text, _ := strings.Cut(l, "\t")
			vars = append(vars, [2]string{name, strings.TrimSpace(text)})
		}
		fmt.Fprintln(w, "\nEnvironment:")
		columns(w, vars)
	}
	if u.examples != "" {
		fmt.Fprintln(w, "\nExamples:")
		for _, l := range lines(u.examples) {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
}

// lines splits a text block of the usages into its lines, without the
// tabs that indent them in the source (the spaces after are kept: they
// align a synopsis's continuation).
func lines(block string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(block), "\n") {
		out = append(out, strings.TrimRight(strings.TrimLeft(l, "\t"), " "))
	}
	return out
}

// Layout of the usages' two-column sections: a name longer than
// nameWidth has its text on the next line, and the text wraps at width.
const (
	nameWidth = 22
	width     = 80
)

// columns writes name and text pairs as two aligned columns.
func columns(w io.Writer, rows [][2]string) {
	col := 0
	for _, r := range rows {
		if n := utf8.RuneCountInString(r[0]); n <= nameWidth {
			col = max(col, n)
		}
	}
	indent := strings.Repeat(" ", 2+col+2)
	for _, r := range rows {
		name := r[0]
		if utf8.RuneCountInString(name) > col {
			fmt.Fprintf(w, "  %s\n%s", name, indent)
		} else {
			fmt.Fprintf(w, "  %s%s", name, strings.Repeat(" ", col-utf8.RuneCountInString(name)+2))
		}
		fmt.Fprintln(w, wrap(r[1], len(indent), width))
	}
}

// unbroken is a space wrap does not break a line at.
const unbroken = "\x00"

// wrap breaks text into lines of at most width columns, the lines after the
// first indented by indent spaces (the first is preceded by as many).
func wrap(text string, indent, width int) string {
	var b strings.Builder
	n := indent
	for i, word := range strings.Fields(text) {
		wl := utf8.RuneCountInString(word)
		switch {
		case i == 0:
		case n+1+wl > width:
			b.WriteString("\n" + strings.Repeat(" ", indent))
			n = indent
		default:
			b.WriteByte(' ')
			n++
		}
		b.WriteString(strings.ReplaceAll(word, unbroken, " "))
		n += wl
	}
	return b.String()
}

// parse reads args with fs, flags and operands in any order (`replay
// FILE.csv -speed 2`; after "--" everything is an operand), and returns the
// operands. -h or --help prints u with fs's flags to stdout and returns
// errHelp.
func (e *env) parse(cmd string, fs *flag.FlagSet, u usage, args []string) ([]string, error) {
	fs.SetOutput(io.Discard) // errors are returned, the usage printed here
	fs.Usage = func() {}
	var operands []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				u.print(e.stdout, fs)
				return nil, errHelp
			}
			return nil, usageError{cmd, err}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return operands, nil
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(operands, rest...), nil
		}
		operands = append(operands, rest[0])
		args = rest[1:]
	}
}

// noOperands refuses the operands of a command that takes none.
func noOperands(cmd string, operands []string) error {
	if len(operands) > 0 {
		return usageError{cmd, fmt.Errorf("unexpected argument %q: the command takes flags only", strings.Join(operands, " "))}
	}
	return nil
}

// oneLine joins a multi-line error (pgx lists each connection attempt on its
// own line; the configuration, each variable in error) into one line,
// dropping repeated lines.
func oneLine(msg string) string {
	var parts []string
	seen := map[string]bool{}
	for _, l := range strings.Split(msg, "\n") {
		if l = strings.TrimSpace(l); l != "" && !seen[l] {
			seen[l] = true
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}

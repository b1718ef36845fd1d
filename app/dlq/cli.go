package dlq

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Usage is the help text of `heartbeat dlq`.
const Usage = `Usage:
  heartbeat dlq list [--json]
  heartbeat dlq replay [--handler NAME] [--reason-contains TEXT] [--since DURATION]
                       [--id UUID] [--partition N [--offset N]]
                       [--from-start] [--dry-run] [--json]

list    prints every message in the poison queue (from its start to its current
        end; it does not wait for more): its DLQ topic/partition/offset, original
        topic, handler, age, correlation id, message id and reason.
replay  republishes the selected messages to their original topic, with the
        same payload, key, message id and correlation id, without the poison
        headers and with replayed_from=<dlq topic>/<partition>/<offset>.
        Every filter given must match; with none, every message is replayed.
        Progress is committed in consumer group heartbeat.dlq-replay, so a
        second run replays nothing again. Messages a filter did not select are
        passed as well: to select among them later, add --from-start.

Flags of replay:
  --handler NAME          poisoned by this handler (persist, detect)
  --reason-contains TEXT  reason contains TEXT (case-sensitive)
  --since DURATION        poisoned at most DURATION ago (e.g. 30m, 2h, 72h)
  --id UUID               this message id (_watermill_message_uuid)
  --partition N           in this DLQ partition
  --offset N              at this offset of --partition
  --from-start            read from the start of the poison queue, not from
                          where the last replay stopped
  --dry-run               print what would be replayed; publish and commit nothing
  --json                  one JSON object per line, then a summary object
`

// Main runs `heartbeat dlq ARGS...` (args are the words after "dlq") against
// the brokers, with the poison queue dlqTopic (empty: DefaultTopic). clientOpts
// are added to the franz-go clients' options. Output goes to stdout; `-h`
// prints Usage. Errors name the flag at fault.
func Main(ctx context.Context, brokers []string, dlqTopic string, clientOpts []kgo.Opt, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("dlq: missing command: list or replay (heartbeat dlq -h for help)")
	}
	opts := Options{Brokers: brokers, Topic: dlqTopic, ClientOpts: clientOpts}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("dlq "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned; help goes to stdout
	fs.BoolVar(&opts.JSON, "json", false, "")
	var filter Filter
	switch cmd {
	case "-h", "-help", "--help", "help":
		_, err := io.WriteString(stdout, Usage)
		return err
	case "list":
	case "replay":
		fs.StringVar(&filter.Handler, "handler", "", "")
		fs.StringVar(&filter.ReasonContains, "reason-contains", "", "")
		fs.StringVar(&filter.ID, "id", "", "")
		fs.Func("since", "", func(s string) error {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				return errors.New("want a positive duration such as 30m, 2h or 72h")
			}
			filter.Since = d
			return nil
		})
		fs.Func("partition", "", func(s string) error {
			n, err := strconv.ParseInt(s, 10, 32)
			if err != nil || n < 0 {
				return errors.New("want a partition number (0, 1, ...)")
			}
			p := int32(n)
			filter.Partition = &p
			return nil
		})
		fs.Func("offset", "", func(s string) error {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n < 0 {
				return errors.New("want an offset (0, 1, ...)")
			}
			filter.Offset = &n
			return nil
		})
		fs.BoolVar(&opts.FromStart, "from-start", false, "")
		fs.BoolVar(&opts.DryRun, "dry-run", false, "")
	default:
		return fmt.Errorf("dlq: unknown command %q: want list or replay (heartbeat dlq -h for help)", cmd)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			_, err = io.WriteString(stdout, Usage)
			return err
		}
		return fmt.Errorf("dlq %s: %w (heartbeat dlq -h for help)", cmd, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("dlq %s: unexpected argument %q: every option is a flag (heartbeat dlq -h for help)",
			cmd, strings.Join(fs.Args(), " "))
	}
	if cmd == "list" {
		return List(ctx, opts, stdout)
	}
	if filter.Offset != nil && filter.Partition == nil {
		return errors.New("dlq replay: flag --offset needs --partition: an offset is only meaningful within one partition")
	}
	for name, v := range map[string]string{"handler": filter.Handler, "reason-contains": filter.ReasonContains, "id": filter.ID} {
		if isSet(fs, name) && strings.TrimSpace(v) == "" {
			return fmt.Errorf("dlq replay: flag --%s is empty: leave it out to select every message", name)
		}
	}
	_, err := Replay(ctx, opts, filter, stdout)
	return err
}

func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

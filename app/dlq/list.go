package dlq

import (
	"context"
	"fmt"
	"io"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// List writes every poisoned message in the topic, from its start to the end
// offsets found when List starts, to w: an aligned table with a count, or
// with opts.JSON one Entry as a JSON object per line (the reason in full).
// It does not wait for more messages.
func List(ctx context.Context, opts Options, w io.Writer) error {
	opts, err := opts.withDefaults()
	if err != nil {
		return err
	}
	cl, err := newClient(opts)
	if err != nil {
		return err
	}
	defer cl.Close()
	start, end, err := bounds(ctx, kadm.NewClient(cl), opts.Topic)
	if err != nil {
		return err
	}
	now := opts.Now()
	p := &printer{w: w, json: opts.JSON}
	n := 0
	err = read(ctx, opts, start, end, func(rs []*kgo.Record) error {
		for _, r := range rs {
			n++
			if err := p.add(newEntry(r, now)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := p.flush(); err != nil || opts.JSON {
		return err
	}
	if n == 0 {
		_, err = fmt.Fprintf(w, "no poisoned messages in %s\n", opts.Topic)
		return err
	}
	_, err = fmt.Fprintf(w, "%d poisoned %s in %s\n", n, plural(n, "message", "messages"), opts.Topic)
	return err
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

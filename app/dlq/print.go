package dlq

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
)

// printer writes entries as JSON lines as they come, or as a table, sorted by
// partition and offset, when flushed (aligning columns needs every row).
type printer struct {
	w    io.Writer
	json bool
	rows []Entry
}

func (p *printer) add(e Entry) error {
	if p.json {
		return json.NewEncoder(p.w).Encode(e)
	}
	p.rows = append(p.rows, e)
	return nil
}

func (p *printer) flush() error {
	if p.json || len(p.rows) == 0 {
		return nil
	}
	slices.SortFunc(p.rows, func(a, b Entry) int {
		return cmp.Or(cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	})
	tw := tabwriter.NewWriter(p.w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DLQ\tTOPIC\tHANDLER\tAGE\tCORRELATION ID\tMESSAGE ID\tREASON")
	for _, e := range p.rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", oneLine(e.Coordinates(), 0), oneLine(e.Topic, 0),
			oneLine(e.Handler, 0), shortAge(e.Age), oneLine(e.CorrelationID, 0), oneLine(e.MessageID, 0),
			oneLine(e.Reason, maxReason))
	}
	p.rows = nil
	return tw.Flush()
}

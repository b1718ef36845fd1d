package dlq

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

// Filter selects the poisoned messages to replay. Every condition that is set
// must match; the zero Filter selects everything.
type Filter struct {
	// Handler is the handler that poisoned the message (handler_poisoned).
	Handler string
	// ReasonContains is a substring of reason_poisoned (case-sensitive).
	ReasonContains string
	// Since selects messages poisoned at most this long ago.
	Since time.Duration
	// ID is the Watermill message UUID (_watermill_message_uuid).
	ID string
	// Partition and Offset select one DLQ partition, or one record of it.
	Partition *int32
	Offset    *int64
}

// Validate reports a filter that can never be meant.
func (f Filter) Validate() error {
	switch {
	case f.Since < 0:
		return errors.New("since must be positive")
	case f.Offset != nil && f.Partition == nil:
		return errors.New("offset needs partition: an offset is only meaningful within one partition")
	case f.Partition != nil && *f.Partition < 0:
		return errors.New("partition must not be negative")
	case f.Offset != nil && *f.Offset < 0:
		return errors.New("offset must not be negative")
	}
	return nil
}

// Match reports whether e is selected.
func (f Filter) Match(e Entry) bool {
	return (f.Handler == "" || e.Handler == f.Handler) &&
		(f.ReasonContains == "" || strings.Contains(e.Reason, f.ReasonContains)) &&
		(f.Since == 0 || e.Age <= f.Since) &&
		(f.ID == "" || e.MessageID == f.ID) &&
		(f.Partition == nil || e.Partition == *f.Partition) &&
		(f.Offset == nil || e.Offset == *f.Offset)
}

// String describes the filter for the summary line.
func (f Filter) String() string {
	var parts []string
	add := func(name, v string) { parts = append(parts, name+"="+v) }
	if f.Handler != "" {
		add("handler", f.Handler)
	}
	if f.ReasonContains != "" {
		add("reason-contains", strconv.Quote(f.ReasonContains))
	}
	if f.Since != 0 {
		add("since", f.Since.String())
	}
	if f.ID != "" {
		add("id", f.ID)
	}
	if f.Partition != nil {
		add("partition", strconv.Itoa(int(*f.Partition)))
	}
	if f.Offset != nil {
		add("offset", strconv.FormatInt(*f.Offset, 10))
	}
	if len(parts) == 0 {
		return "all"
	}
	return strings.Join(parts, " ")
}

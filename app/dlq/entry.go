package dlq

import (
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	wmmw "github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ReplayedFromHeader names, on a replayed message, the DLQ record it came
// from: "<dlq topic>/<partition>/<offset>".
const ReplayedFromHeader = "replayed_from"

// poisonHeaders are the headers Watermill's PoisonQueue adds; replay removes
// them so that a replayed message looks like the original.
var poisonHeaders = map[string]bool{
	wmmw.ReasonForPoisonedKey:  true,
	wmmw.PoisonedTopicKey:      true,
	wmmw.PoisonedHandlerKey:    true,
	wmmw.PoisonedSubscriberKey: true,
	ReplayedFromHeader:         true, // replaced by the new one
}

// Entry is one poisoned message, as List prints it.
type Entry struct {
	DLQTopic  string    `json:"dlq_topic"`
	Partition int32     `json:"partition"`
	Offset    int64     `json:"offset"`
	Timestamp time.Time `json:"timestamp"`
	// Age is how long ago the message was poisoned (now − record timestamp).
	Age           time.Duration `json:"-"`
	AgeSeconds    float64       `json:"age_seconds"`
	Topic         string        `json:"topic"`
	Handler       string        `json:"handler"`
	Subscriber    string        `json:"subscriber,omitempty"`
	Reason        string        `json:"reason"`
	CorrelationID string        `json:"correlation_id"`
	MessageID     string        `json:"message_id"`
	Key           string        `json:"key,omitempty"`
	// ReplayedFrom is set when the message had already been replayed once
	// and was poisoned again.
	ReplayedFrom string `json:"replayed_from,omitempty"`
}

// Coordinates returns "<dlq topic>/<partition>/<offset>", the value of the
// replayed_from header.
func (e Entry) Coordinates() string {
	return fmt.Sprintf("%s/%d/%d", e.DLQTopic, e.Partition, e.Offset)
}

func newEntry(r *kgo.Record, now time.Time) Entry {
	e := Entry{
		DLQTopic: r.Topic, Partition: r.Partition, Offset: r.Offset,
		Timestamp: r.Timestamp, Key: string(r.Key),
	}
	e.Age = max(now.Sub(r.Timestamp), 0)
	e.AgeSeconds = e.Age.Seconds()
	for _, h := range r.Headers {
		v := string(h.Value)
		switch h.Key {
		case wmmw.PoisonedTopicKey:
			e.Topic = v
		case wmmw.PoisonedHandlerKey:
			e.Handler = v
		case wmmw.PoisonedSubscriberKey:
			e.Subscriber = v
		case wmmw.ReasonForPoisonedKey:
			e.Reason = v
		case wmmw.CorrelationIDMetadataKey:
			e.CorrelationID = v
		case kafka.UUIDHeaderKey:
			e.MessageID = v
		case ReplayedFromHeader:
			e.ReplayedFrom = v
		}
	}
	return e
}

// replayRecord is the record to publish for r: same key, value and headers,
// without the poison headers, with replayed_from.
func replayRecord(r *kgo.Record, e Entry) *kgo.Record {
	headers := make([]kgo.RecordHeader, 0, len(r.Headers)+1)
	for _, h := range r.Headers {
		if !poisonHeaders[h.Key] {
			headers = append(headers, h)
		}
	}
	headers = append(headers, kgo.RecordHeader{Key: ReplayedFromHeader, Value: []byte(e.Coordinates())})
	return &kgo.Record{Topic: e.Topic, Key: r.Key, Value: r.Value, Headers: headers}
}

// maxReason is how many characters of a reason the table shows.
const maxReason = 120

// oneLine collapses every run of white space and control characters into
// one space, so that a header value cannot break the table, and cuts it to
// at most limit runes (limit 0: no cut).
func oneLine(s string, limit int) string {
	s = strings.Join(strings.FieldsFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r)
	}), " ")
	if limit > 0 {
		if r := []rune(s); len(r) > limit {
			s = string(r[:limit-1]) + "…"
		}
	}
	if s == "" {
		return "-"
	}
	return s
}

// shortAge prints an age the way an operator reads it: 42s, 12m5s, 3h12m, 5d3h.
func shortAge(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
	}
}

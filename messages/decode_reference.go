package messages

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// This file is the reference decoder: the original implementation of
// [Decode] on top of encoding/json, kept unchanged. It defines the behaviour
// (the Heartbeat and the *ValidationError returned for every input); the
// fast decoder in decode_fast.go hands it every input it does not decide
// itself, and FuzzDecodeMatchesReference holds the two equal.

// decodeSlow is Decode as first written: json.Valid, then a json.Decoder
// walking the top-level members. About 6 µs and 66 allocations a typical
// event, which is why it is no longer the common path.
func decodeSlow(payload []byte) (Heartbeat, error) {
	var h Heartbeat
	if len(bytes.TrimSpace(payload)) == 0 {
		return h, schemaErr("payload", "is empty")
	}
	if !json.Valid(payload) {
		return h, schemaErr("payload", "is not valid JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return h, schemaErr("payload", "is not valid JSON")
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return h, schemaErr("payload", fmt.Sprintf("is a JSON %s, not an object", jsonKind(tok)))
	}
	var seen [4]bool
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return h, schemaErr("payload", "is not valid JSON")
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return h, schemaErr(fieldName(key), "value is not valid JSON")
		}
		idx := fieldIndex(key)
		if idx < 0 {
			continue // unknown fields are ignored
		}
		if seen[idx] {
			return h, schemaErr(key, "appears more than once")
		}
		seen[idx] = true
		if err := h.setField(idx, raw); err != nil {
			return h, err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return h, schemaErr("payload", "is not valid JSON")
	}
	for i, ok := range seen {
		if !ok {
			return h, schemaErr(fields[i], "is missing")
		}
	}
	return h, nil
}

var fields = [4]string{"event_id", "customer_id", "timestamp", "heart_rate"}

func fieldIndex(key string) int {
	for i, f := range fields {
		if f == key {
			return i
		}
	}
	return -1
}

func fieldName(key string) string {
	if fieldIndex(key) < 0 {
		return "payload"
	}
	return key
}

func (h *Heartbeat) setField(idx int, raw json.RawMessage) error {
	name := fields[idx]
	if idx == 3 {
		return h.setHeartRate(raw)
	}
	var s string
	if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return schemaErr(name, fmt.Sprintf("must be a string, got %s", rawKind(raw)))
	}
	switch idx {
	case 0:
		id, err := uuid.Parse(s)
		if err != nil || len(s) != 36 {
			return schemaErr(name, fmt.Sprintf("%s is not a UUID (8-4-4-4-12 hex digits)", quoteShort(s)))
		}
		h.EventID = id.String()
	case 1:
		if strings.TrimSpace(s) == "" {
			return schemaErr(name, "is blank")
		}
		if n := utf8.RuneCountInString(s); n > MaxCustomerIDLen {
			return schemaErr(name, fmt.Sprintf("is %d characters long, the limit is %d", n, MaxCustomerIDLen))
		}
		for _, r := range s {
			if r == utf8.RuneError || !unicode.IsPrint(r) {
				return schemaErr(name, fmt.Sprintf("contains the control, unprintable or invalid character %U", r))
			}
		}
		h.CustomerID = s
	case 2:
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil || !strictRFC3339(s) {
			return schemaErr(name, fmt.Sprintf("%s is not an RFC 3339 time with a zone (like 2026-11-25T10:00:00Z)", quoteShort(s)))
		}
		h.Timestamp = t
	}
	return nil
}

func (h *Heartbeat) setHeartRate(raw json.RawMessage) error {
	if raw[0] != '-' && (raw[0] < '0' || raw[0] > '9') {
		return schemaErr("heart_rate", fmt.Sprintf("must be an integer, got %s", rawKind(raw)))
	}
	if bytes.ContainsAny(raw, ".eE") {
		return schemaErr("heart_rate", fmt.Sprintf("must be an integer, got %s", quoteShort(string(raw))))
	}
	n, err := strconv.ParseInt(string(raw), 10, 32)
	if errors.Is(err, strconv.ErrRange) {
		return &ValidationError{Class: ClassDomain, Field: "heart_rate",
			Reason: fmt.Sprintf("%s is far outside any heart rate", quoteShort(string(raw)))}
	}
	if err != nil {
		return schemaErr("heart_rate", fmt.Sprintf("must be an integer, got %s", quoteShort(string(raw))))
	}
	h.HeartRate = int(n)
	return nil
}

func schemaErr(field, reason string) *ValidationError {
	return &ValidationError{Class: ClassSchema, Field: field, Reason: reason}
}

func jsonKind(tok json.Token) string {
	switch tok.(type) {
	case json.Delim:
		return "array"
	case string:
		return "string"
	case json.Number:
		return "number"
	case bool:
		return "boolean"
	case nil:
		return "null"
	}
	return "value"
}

func rawKind(raw json.RawMessage) string {
	switch raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// quoteShort quotes s for an error reason, cut to a readable length.
func quoteShort(s string) string {
	const limit = 64
	if len(s) > limit {
		cut := limit
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + fmt.Sprintf("… (%d bytes)", len(s))
	}
	return strconv.Quote(s)
}

// strictRFC3339 checks what time.Parse lets through (go.dev/issue/54580):
// two-digit fields, a '.' before the fraction, a zone offset hour below 24.
func strictRFC3339(s string) bool {
	if len(s) < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' || s[16] != ':' {
		return false
	}
	rest := s[19:]
	if rest[0] == '.' {
		i := 1
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 1 {
			return false
		}
		rest = rest[i:]
	}
	switch {
	case rest == "Z" || rest == "z":
		return true
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
		return rest[1] < '2' || rest[1] == '2' && rest[2] < '4'
	}
	return false
}

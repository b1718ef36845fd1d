package messages

import "github.com/google/uuid"

// This file decodes the four fields in the form producers write them (see
// Heartbeat.Marshal): plain ASCII strings without escapes, a 36-character UUID,
// a UTC timestamp and a small integer, straight from the payload bytes.
// Each decoder accepts only values on which the reference's setField would
// succeed, stores what setField would store, and otherwise reports false
// so that setField itself decides, error text included.

// setFieldFast stores the value raw (valid JSON, as the scanner found it)
// of field idx and reports true, or reports false and leaves h unchanged.
func (h *Heartbeat) setFieldFast(idx int, raw []byte) bool {
	switch idx {
	case 0:
		return h.setEventIDFast(raw)
	case 1:
		return h.setCustomerIDFast(raw)
	case 2:
		return h.setTimestampFast(raw)
	}
	return h.setHeartRateFast(raw)
}

// plainString returns the contents of raw when it is a JSON string whose
// bytes are its value: no escapes, and only printable ASCII (' ' to '~', so
// no DEL), which encoding/json's unquoting leaves as it is.
func plainString(raw []byte) ([]byte, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return nil, false
	}
	s := raw[1 : len(raw)-1]
	for _, c := range s {
		if c < ' ' || c > '~' || c == '\\' {
			return nil, false
		}
	}
	return s, true
}

// setEventIDFast takes a 36-character UUID in any case and stores its
// lower-case form, as uuid.Parse and UUID.String do in setField.
func (h *Heartbeat) setEventIDFast(raw []byte) bool {
	s, ok := plainString(raw)
	if !ok || len(s) != 36 {
		return false
	}
	id, err := uuid.ParseBytes(s) // the same checks as uuid.Parse for 36 bytes
	if err != nil {
		return false
	}
	h.EventID = id.String()
	return true
}

// setCustomerIDFast takes 1..MaxCustomerIDLen printable ASCII characters,
// not all spaces: there every byte is one printable character, and the only
// ASCII whitespace a plain string can hold is the space.
func (h *Heartbeat) setCustomerIDFast(raw []byte) bool {
	s, ok := plainString(raw)
	if !ok || len(s) > MaxCustomerIDLen {
		return false
	}
	blank := true
	for _, c := range s {
		blank = blank && c == ' '
	}
	if blank {
		return false
	}
	h.CustomerID = string(s)
	return true
}

// setTimestampFast takes the UTC form 2006-01-02T15:04:05[.fraction]Z.
func (h *Heartbeat) setTimestampFast(raw []byte) bool {
	s, ok := plainString(raw)
	if !ok {
		return false
	}
	t, ok := parseUTCTimestamp(s)
	if !ok {
		return false
	}
	h.Timestamp = t
	return true
}

// setHeartRateFast takes an integer of at most nine digits, which always
// fits the int32 range setHeartRate enforces. raw is a JSON number, so it
// has no leading zeros; "-0" is 0, as strconv.ParseInt makes it.
func (h *Heartbeat) setHeartRateFast(raw []byte) bool {
	digits := raw
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 || len(digits) > 9 {
		return false
	}
	n := 0
	for _, c := range digits {
		if !isDigit(c) {
			return false
		}
		n = n*10 + int(c-'0')
	}
	if raw[0] == '-' {
		n = -n
	}
	h.HeartRate = n
	return true
}

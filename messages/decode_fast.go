package messages

import (
	"bytes"
	"encoding/json"
	"errors"
)

// This file is the fast decoder behind [Decode]. It replaces encoding/json
// (json.Valid, then json.Decoder.Token, then json.Unmarshal of each value)
// with one pass of the scanner in scan.go over the payload bytes, and
// decodes the field values producers actually write (decode_fields.go)
// straight from those bytes. It answers a syntax error itself, as the
// reference does; everything else unusual it leaves to the reference: a
// top-level value that is not an object, or nesting deeper than the scanner
// follows, goes to decodeSlow whole, and a value of a known field that is
// not in the everyday form goes to the reference's own setField. So each
// answer is the reference's answer.

// errUndecided is decodeFast's way of saying "ask decodeSlow"; it never
// leaves the package.
var errUndecided = errors.New("messages: left to the reference decoder")

// member is one top-level member with a known key, its value as raw JSON.
type member struct {
	idx int
	raw []byte
}

// decodeFast decodes payload as decodeSlow does, or returns errUndecided.
//
// In the reference a syntax error anywhere in the payload outranks every
// field error, since json.Valid runs first. So decodeFast scans the whole
// object, noting the known members, and only then decodes them in document
// order, stopping at the first failure as the reference does (the partly
// filled Heartbeat it returns with an error is the reference's too).
func decodeFast(payload []byte) (Heartbeat, error) {
	var h Heartbeat
	known, n, end := scanMembers(payload)
	switch end {
	case scanSyntaxError:
		return notJSON(payload)
	case scanTooDeep, scanNotObject:
		return h, errUndecided
	}
	var seen [len(fields)]bool
	for _, m := range known[:n] {
		if seen[m.idx] {
			return h, schemaErr(fields[m.idx], "appears more than once")
		}
		seen[m.idx] = true
		if !h.setFieldFast(m.idx, m.raw) {
			if err := h.setField(m.idx, m.raw); err != nil {
				return h, err
			}
		}
	}
	for i, ok := range seen {
		if !ok {
			return h, schemaErr(fields[i], "is missing")
		}
	}
	return h, nil
}

// scanNotObject is scanMembers' result for a payload that is JSON but not
// an object; the reference names what it is instead.
const scanNotObject = -3

// scanMembers scans the whole payload as one JSON object and returns its
// members with known keys, in document order, up to and including the first
// repeated one (decoding stops there, so later ones never matter). end is
// len(payload), or a negative scan result.
func scanMembers(payload []byte) (known [len(fields) + 1]member, n, end int) {
	var counted [len(fields)]bool
	repeated := false
	i := skipSpace(payload, 0)
	if i == len(payload) || payload[i] != '{' {
		if end = scanValue(payload, i, 0); end < 0 {
			return known, 0, end
		}
		if skipSpace(payload, end) != len(payload) {
			return known, 0, scanSyntaxError // trailing data
		}
		return known, 0, scanNotObject
	}
	i = skipSpace(payload, i+1)
	if i < len(payload) && payload[i] == '}' {
		i++
	} else {
		for {
			if i >= len(payload) || payload[i] != '"' {
				return known, n, scanSyntaxError
			}
			keyEnd, flags := scanString(payload, i)
			if keyEnd < 0 {
				return known, n, keyEnd
			}
			idx := knownKey(payload[i:keyEnd], flags)
			if i = skipSpace(payload, keyEnd); i >= len(payload) || payload[i] != ':' {
				return known, n, scanSyntaxError
			}
			start := skipSpace(payload, i+1)
			if i = scanValue(payload, start, 1); i < 0 {
				return known, n, i
			}
			if idx >= 0 && !repeated {
				known[n] = member{idx: idx, raw: payload[start:i]}
				n++
				repeated = counted[idx]
				counted[idx] = true
			}
			if i = skipSpace(payload, i); i >= len(payload) {
				return known, n, scanSyntaxError
			}
			if payload[i] == '}' {
				i++
				break
			}
			if payload[i] != ',' {
				return known, n, scanSyntaxError
			}
			i = skipSpace(payload, i+1)
		}
	}
	if skipSpace(payload, i) != len(payload) {
		return known, n, scanSyntaxError // trailing data
	}
	return known, n, len(payload)
}

// notJSON is the reference's answer for a payload json.Valid refuses: it
// is "empty" when bytes.TrimSpace, which knows more whitespace than JSON
// (\v, U+0085, U+00A0...), leaves nothing.
func notJSON(payload []byte) (Heartbeat, error) {
	if len(bytes.TrimSpace(payload)) == 0 {
		return Heartbeat{}, schemaErr("payload", "is empty")
	}
	return Heartbeat{}, schemaErr("payload", "is not valid JSON")
}

// knownKey returns the index in fields of the member key quoted (a scanned
// JSON string, quotes included), or -1. A key with escapes, like
// "heart\u005frate", is unquoted by encoding/json as the reference does; a
// key without escapes is its own bytes, and since the field names are ASCII,
// non-ASCII bytes (valid or not) can never match one.
func knownKey(quoted []byte, flags stringFlags) int {
	if flags&hasEscape != 0 {
		var key string
		if json.Unmarshal(quoted, &key) != nil {
			return -1 // not reached: the scanner accepted the string
		}
		return fieldIndex(key)
	}
	name := quoted[1 : len(quoted)-1]
	for i, f := range fields {
		if string(name) == f {
			return i
		}
	}
	return -1
}

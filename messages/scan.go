package messages

// This file is the JSON syntax scanner of the fast decoder: functions that
// step over one piece of JSON in a payload and report where it ends, or
// one of the negative results below when they cannot.
//
// It follows the grammar encoding/json's own scanner checks (json.Valid),
// byte for byte: scanSyntaxError means json.Valid refuses the payload too,
// and the fast decoder answers "not valid JSON" without asking it. The one
// deliberate gap is nesting deeper than maxScanDepth, reported as
// scanTooDeep rather than checked against encoding/json's limit of 10000;
// that sends the payload to decodeSlow.

// Negative results of the scan functions.
const (
	scanSyntaxError = -1 // not JSON, whatever follows
	scanTooDeep     = -2 // nested deeper than maxScanDepth
)

// maxScanDepth is how deeply the scanner follows nested objects and arrays,
// counting the top-level object as 1. Events nest at most a level or two;
// deeper payloads are left to encoding/json, which knows its own limit.
const maxScanDepth = 64

// isSpace reports whether c is whitespace in JSON's sense (RFC 8259), which
// is narrower than Unicode's or bytes.TrimSpace's.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r'
}

// skipSpace returns the index of the first non-whitespace byte of p at or
// after i, or len(p).
func skipSpace(p []byte, i int) int {
	for i < len(p) && isSpace(p[i]) {
		i++
	}
	return i
}

// stringFlags says what a scanned JSON string holds beyond plain ASCII text.
type stringFlags uint8

const (
	// hasEscape: a backslash escape, so the bytes are not the value.
	hasEscape stringFlags = 1 << iota
	// hasNonASCII: bytes of 0x80 and above, which encoding/json checks
	// as UTF-8 when it decodes the string (invalid bytes become U+FFFD).
	hasNonASCII
)

// scanString steps over the JSON string starting with the quote at p[i] and
// returns the index just past its closing quote.
func scanString(p []byte, i int) (end int, flags stringFlags) {
	for i++; i < len(p); i++ {
		c := p[i]
		if !stringSpecial[c] {
			continue // most bytes of most strings: one table look-up each
		}
		switch {
		case c == '"':
			return i + 1, flags
		case c == '\\':
			flags |= hasEscape
			i++
			if i == len(p) {
				return scanSyntaxError, flags
			}
			switch p[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(p)-i <= 4 || !isHex(p[i+1]) || !isHex(p[i+2]) || !isHex(p[i+3]) || !isHex(p[i+4]) {
					return scanSyntaxError, flags
				}
				i += 4
			default:
				return scanSyntaxError, flags
			}
		case c < 0x20:
			return scanSyntaxError, flags // control characters must be escaped
		default:
			flags |= hasNonASCII
		}
	}
	return scanSyntaxError, flags
}

// stringSpecial marks the bytes scanString must look at: the quote, the
// backslash, control characters and bytes of 0x80 and above.
var stringSpecial = func() (t [256]bool) {
	for c := range t {
		t[c] = c < 0x20 || c == '"' || c == '\\' || c >= 0x80
	}
	return t
}()

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// scanNumber steps over the JSON number starting at p[i]:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func scanNumber(p []byte, i int) int {
	if i < len(p) && p[i] == '-' {
		i++
	}
	switch {
	case i < len(p) && p[i] == '0':
		i++
	case i < len(p) && '1' <= p[i] && p[i] <= '9':
		i = skipDigits(p, i)
	default:
		return scanSyntaxError
	}
	if i < len(p) && p[i] == '.' {
		if i+1 >= len(p) || !isDigit(p[i+1]) {
			return scanSyntaxError
		}
		i = skipDigits(p, i+1)
	}
	if i < len(p) && (p[i] == 'e' || p[i] == 'E') {
		i++
		if i < len(p) && (p[i] == '+' || p[i] == '-') {
			i++
		}
		if i >= len(p) || !isDigit(p[i]) {
			return scanSyntaxError
		}
		i = skipDigits(p, i)
	}
	return i
}

func skipDigits(p []byte, i int) int {
	for i < len(p) && isDigit(p[i]) {
		i++
	}
	return i
}

// scanLiteral steps over word (true, false or null) at p[i].
func scanLiteral(p []byte, i int, word string) int {
	if len(p)-i < len(word) || string(p[i:i+len(word)]) != word {
		return scanSyntaxError
	}
	return i + len(word)
}

// scanValue steps over the JSON value starting at p[i], which sits inside
// depth levels of objects and arrays.
func scanValue(p []byte, i, depth int) int {
	if i >= len(p) {
		return scanSyntaxError
	}
	switch c := p[i]; {
	case c == '"':
		end, _ := scanString(p, i)
		return end
	case c == '{':
		return scanObject(p, i, depth+1)
	case c == '[':
		return scanArray(p, i, depth+1)
	case c == 't':
		return scanLiteral(p, i, "true")
	case c == 'f':
		return scanLiteral(p, i, "false")
	case c == 'n':
		return scanLiteral(p, i, "null")
	case c == '-' || isDigit(c):
		return scanNumber(p, i)
	}
	return scanSyntaxError
}

// scanObject steps over the object whose brace is at p[i]; depth counts
// this object.
func scanObject(p []byte, i, depth int) int {
	if depth > maxScanDepth {
		return scanTooDeep
	}
	i = skipSpace(p, i+1)
	if i < len(p) && p[i] == '}' {
		return i + 1
	}
	for {
		if i >= len(p) || p[i] != '"' {
			return scanSyntaxError
		}
		if i, _ = scanString(p, i); i < 0 {
			return i
		}
		if i = skipSpace(p, i); i >= len(p) || p[i] != ':' {
			return scanSyntaxError
		}
		if i = scanValue(p, skipSpace(p, i+1), depth); i < 0 {
			return i
		}
		if i = skipSpace(p, i); i >= len(p) {
			return scanSyntaxError
		}
		switch p[i] {
		case ',':
			i = skipSpace(p, i+1)
		case '}':
			return i + 1
		default:
			return scanSyntaxError
		}
	}
}

// scanArray steps over the array whose bracket is at p[i]; depth counts
// this array.
func scanArray(p []byte, i, depth int) int {
	if depth > maxScanDepth {
		return scanTooDeep
	}
	i = skipSpace(p, i+1)
	if i < len(p) && p[i] == ']' {
		return i + 1
	}
	for {
		if i = scanValue(p, i, depth); i < 0 {
			return i
		}
		if i = skipSpace(p, i); i >= len(p) {
			return scanSyntaxError
		}
		switch p[i] {
		case ',':
			i = skipSpace(p, i+1)
		case ']':
			return i + 1
		default:
			return scanSyntaxError
		}
	}
}

package messages

import "time"

// parseUTCTimestamp parses the timestamp form producers write,
// 2006-01-02T15:04:05[.fraction]Z with 1 to 9 fraction digits, without
// making a string of the bytes (time.Parse takes a string; converting the
// payload bytes would cost an allocation per event).
//
// It accepts only strings that time.Parse(time.RFC3339Nano, s) and
// strictRFC3339 both accept, and returns the Time time.Parse returns: it
// applies the checks of the time package's RFC 3339 fast path (parseRFC3339
// in time/format_rfc3339.go) and builds the result with the same time.Date
// call. Anything else, such as a zone offset, reports false.
func parseUTCTimestamp(s []byte) (time.Time, bool) {
	const layout = "2006-01-02T15:04:05"
	if len(s) < len(layout+"Z") || s[len(s)-1] != 'Z' ||
		s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return time.Time{}, false
	}
	year, ok1 := decimal(s[0:4], 0, 9999)
	month, ok2 := decimal(s[5:7], 1, 12)
	day, ok3 := decimal(s[8:10], 1, 31)
	hour, ok4 := decimal(s[11:13], 0, 23)
	minute, ok5 := decimal(s[14:16], 0, 59)
	sec, ok6 := decimal(s[17:19], 0, 59)
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 || day > daysIn(month, year) {
		return time.Time{}, false
	}
	nsec := 0
	if frac := s[len(layout) : len(s)-1]; len(frac) > 0 {
		// '.' and 1..9 digits; longer fractions are truncated by time.Parse.
		if len(frac) < 2 || len(frac) > 10 || frac[0] != '.' {
			return time.Time{}, false
		}
		var ok bool
		if nsec, ok = decimal(frac[1:], 0, 999_999_999); !ok {
			return time.Time{}, false
		}
		for range 10 - len(frac) {
			nsec *= 10
		}
	}
	return time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC), true
}

// decimal parses s, all ASCII digits, as a number in [lo, hi].
func decimal(s []byte, lo, hi int) (int, bool) {
	n := 0
	for _, c := range s {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, lo <= n && n <= hi
}

// daysIn is the number of days in month of year, leap years as in the
// proleptic Gregorian calendar the time package uses.
func daysIn(month, year int) int {
	switch {
	case month == 2 && year%4 == 0 && (year%100 != 0 || year%400 == 0):
		return 29
	case month == 2:
		return 28
	case month == 4 || month == 6 || month == 9 || month == 11:
		return 30
	}
	return 31
}

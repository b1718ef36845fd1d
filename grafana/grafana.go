// Package grafana holds the dashboards' provisioning (datasources/,
// dashboards/, provisioning/) and the Go code that reads them as Grafana
// does: the PostgreSQL datasource's macro engine and the Prometheus
// datasource's built-in variables, so that tests and the dashboard bench run
// the panels' queries exactly as Grafana would send them.
package grafana

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// PanelWidthPx is the panel width Grafana divides a range by for
// $__interval (its default max data points for a time series).
const PanelWidthPx = 1000

// TimeRange is a dashboard's time range.
type TimeRange struct{ From, To time.Time }

// ParseTime reads a dashboard time like "now" or "now-1h".
func ParseTime(s string, now time.Time) (time.Time, error) {
	if s == "now" {
		return now, nil
	}
	if rest, ok := strings.CutPrefix(s, "now-"); ok {
		d, err := ParseInterval(rest)
		return now.Add(-d), err
	}
	return time.Time{}, fmt.Errorf("time %q: only now and now-<interval> are supported", s)
}

// ParseInterval follows gtime.ParseInterval: Go durations plus d, w,
// M (30 days) and y.
func ParseInterval(s string) (time.Duration, error) {
	if m := regexp.MustCompile(`^(\d+)(d|w|M|y)$`).FindStringSubmatch(s); m != nil {
		n, _ := strconv.Atoi(m[1])
		day := 24 * time.Hour
		return time.Duration(n) * map[string]time.Duration{"d": day, "w": 7 * day, "M": 30 * day, "y": 365 * day}[m[2]], nil
	}
	return time.ParseDuration(s)
}

// roundInterval is Grafana's rangeutil.roundInterval: the "nice" interval
// for a raw one.
func roundInterval(d time.Duration) time.Duration {
	ms := d.Milliseconds()
	steps := []struct{ below, to int64 }{
		{15, 10}, {35, 20}, {75, 50}, {150, 100}, {350, 200}, {750, 500}, {1500, 1000}, {3500, 2000},
		{7500, 5000}, {12500, 10000}, {17500, 15000}, {25000, 20000}, {45000, 30000}, {90000, 60000},
		{210000, 120000}, {450000, 300000}, {750000, 600000}, {1050000, 900000}, {1500000, 1200000},
		{2700000, 1800000}, {5400000, 3600000}, {9000000, 7200000}, {16200000, 10800000},
		{24300000, 21600000}, {64800000, 43200000}, {129600000, 86400000}, {604800000, 604800000},
	}
	for _, s := range steps {
		if ms < s.below {
			return time.Duration(s.to) * time.Millisecond
		}
	}
	return 365 * 24 * time.Hour
}

// Interval is $__interval for a range: range / width, rounded, never
// below the datasource's (or panel's) minimum interval.
func Interval(tr TimeRange, minInterval time.Duration) time.Duration {
	return max(roundInterval(tr.To.Sub(tr.From)/PanelWidthPx), minInterval)
}

// FormatInterval is gtime.FormatInterval / rangeutil.secondsToHms: the
// largest whole unit only.
func FormatInterval(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d >= 365*day:
		return fmt.Sprintf("%dy", d/(365*day))
	case d >= day:
		return fmt.Sprintf("%dd", d/day)
	case d >= time.Hour:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d >= time.Minute:
		return fmt.Sprintf("%dm", d/time.Minute)
	case d >= time.Second:
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%dms", d.Milliseconds())
}

var sqlMacro = regexp.MustCompile(`\$([_a-zA-Z0-9]+)\(([^\)]*)\)`)

// ExpandSQL expands a rawSql the way Grafana's PostgreSQL datasource does:
// first sqleng.Interpolate ($__interval, $__interval_ms, $__unixEpochFrom(),
// $__unixEpochTo()), then postgresMacroEngine.Interpolate (timescaledb off).
func ExpandSQL(sql string, tr TimeRange, interval time.Duration) (string, error) {
	sql = strings.ReplaceAll(sql, "$__interval_ms", strconv.FormatInt(interval.Milliseconds(), 10))
	sql = strings.ReplaceAll(sql, "$__interval", FormatInterval(interval))
	sql = strings.ReplaceAll(sql, "$__unixEpochFrom()", strconv.FormatInt(tr.From.UTC().Unix(), 10))
	sql = strings.ReplaceAll(sql, "$__unixEpochTo()", strconv.FormatInt(tr.To.UTC().Unix(), 10))

	var macroErr error
	original := sql
	out := sqlMacro.ReplaceAllStringFunc(sql, func(match string) string {
		g := sqlMacro.FindStringSubmatch(match)
		name := g[1]
		// Pre-5.3 compatibility kept by Grafana: $__timeGroup directly followed
		// by a comma is the aliased form.
		if name == "__timeGroup" {
			if i := strings.Index(original, match); i >= 0 && len(original) > i+len(match) && original[i+len(match)] == ',' {
				name = "__timeGroupAlias"
			}
		}
		args := strings.Split(g[2], ",")
		for i := range args {
			args[i] = strings.Trim(args[i], " ")
		}
		res, err := evaluateSQLMacro(tr, name, args)
		if err != nil && macroErr == nil {
			macroErr = err
			return "macro_error()"
		}
		return res
	})
	if macroErr != nil {
		return "", macroErr
	}
	return out, nil
}

func evaluateSQLMacro(tr TimeRange, name string, args []string) (string, error) {
	rfc := func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
	needColumn := func() error {
		if len(args) == 0 || args[0] == "" {
			return fmt.Errorf("missing time column argument for macro %v", name)
		}
		return nil
	}
	groupInterval := func() (time.Duration, error) {
		if len(args) < 2 {
			return 0, fmt.Errorf("macro %v needs time column and interval and optional fill value", name)
		}
		d, err := ParseInterval(strings.Trim(args[1], `'`))
		if err != nil {
			return 0, fmt.Errorf("error parsing interval %v", args[1])
		}
		if len(args) == 3 { // fill mode: NULL, previous or a number
			if f := args[2]; f != "NULL" && f != "previous" {
				if _, err := strconv.ParseFloat(f, 64); err != nil {
					return 0, fmt.Errorf("error parsing fill value %v", f)
				}
			}
		}
		return d, nil
	}
	switch name {
	case "__time":
		if err := needColumn(); err != nil {
			return "", err
		}
		return fmt.Sprintf(`%s AS "time"`, args[0]), nil
	case "__timeEpoch":
		if err := needColumn(); err != nil {
			return "", err
		}
		return fmt.Sprintf(`extract(epoch from %s) as "time"`, args[0]), nil
	case "__timeFilter":
		if err := needColumn(); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s BETWEEN '%s' AND '%s'", args[0], rfc(tr.From), rfc(tr.To)), nil
	case "__timeFrom":
		return fmt.Sprintf("'%s'", rfc(tr.From)), nil
	case "__timeTo":
		return fmt.Sprintf("'%s'", rfc(tr.To)), nil
	case "__timeGroup", "__timeGroupAlias":
		d, err := groupInterval()
		if err != nil {
			return "", err
		}
		s := fmt.Sprintf("floor(extract(epoch from %s)/%v)*%v", args[0], d.Seconds(), d.Seconds())
		if name == "__timeGroupAlias" {
			s += ` AS "time"`
		}
		return s, nil
	case "__unixEpochFilter":
		if err := needColumn(); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s >= %d AND %s <= %d", args[0], tr.From.UTC().Unix(), args[0], tr.To.UTC().Unix()), nil
	case "__unixEpochNanoFilter":
		if err := needColumn(); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s >= %d AND %s <= %d", args[0], tr.From.UTC().UnixNano(), args[0], tr.To.UTC().UnixNano()), nil
	case "__unixEpochNanoFrom":
		return strconv.FormatInt(tr.From.UTC().UnixNano(), 10), nil
	case "__unixEpochNanoTo":
		return strconv.FormatInt(tr.To.UTC().UnixNano(), 10), nil
	case "__unixEpochGroup", "__unixEpochGroupAlias":
		d, err := groupInterval()
		if err != nil {
			return "", err
		}
		s := fmt.Sprintf("floor((%s)/%v)*%v", args[0], d.Seconds(), d.Seconds())
		if name == "__unixEpochGroupAlias" {
			s += ` AS "time"`
		}
		return s, nil
	}
	return "", fmt.Errorf("unknown macro %q", name)
}

// ExpandPromQL substitutes the built-in variables Grafana's Prometheus
// datasource sets: $__interval / $__interval_ms (range / width, at least the
// datasource's timeInterval), $__rate_interval = max($__interval + scrape
// interval, 4 × scrape interval), and $__range, $__range_s, $__range_ms.
func ExpandPromQL(expr string, tr TimeRange, scrape time.Duration) (string, error) {
	interval := Interval(tr, scrape)
	rate := max(interval+scrape, 4*scrape)
	rng := int64(tr.To.Sub(tr.From).Seconds())
	vars := []struct{ name, value string }{ // longest names first
		{"__rate_interval", fmt.Sprintf("%ds", int64(rate.Seconds()))},
		{"__interval_ms", strconv.FormatInt(interval.Milliseconds(), 10)},
		{"__interval", FormatInterval(interval)},
		{"__range_ms", strconv.FormatInt(rng*1000, 10)},
		{"__range_s", strconv.FormatInt(rng, 10)},
		{"__range", fmt.Sprintf("%ds", rng)},
	}
	for _, v := range vars {
		expr = strings.ReplaceAll(expr, "${"+v.name+"}", v.value)
		expr = strings.ReplaceAll(expr, "$"+v.name, v.value)
	}
	if m := regexp.MustCompile(`\$\{?\w+`).FindString(expr); m != "" {
		return "", fmt.Errorf("variable %s is not one Grafana defines here", m)
	}
	return expr, nil
}

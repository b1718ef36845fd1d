package app

import "runtime/debug"

// DefaultGCPercent is the collector's target the process runs with when
// GOGC is not set: the heap may grow to 1.75 times what was live after the
// last collection, not Go's default 2 times. Measured by `heartbeat bench
// -phases memory` (persist and detect in one process, 100,000 customers all
// met): peak RSS 293–304 MB at GOGC=100, 263–267 MB at 75, at the same
// throughput. GOGC or GOMEMLIMIT, when set, decide as the Go runtime
// documents.
const DefaultGCPercent = 75

// TuneGC sets DefaultGCPercent unless the environment (getenv) sets GOGC,
// and reports whether it did.
func TuneGC(getenv func(string) string) bool {
	if getenv("GOGC") != "" {
		return false
	}
	debug.SetGCPercent(DefaultGCPercent)
	return true
}

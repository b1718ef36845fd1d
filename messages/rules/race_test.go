//go:build race

package rules_test

// raceEnabled: the race detector slows the engine tenfold; the property
// tests then run fewer seeds.
const raceEnabled = true

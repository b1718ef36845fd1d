//go:build race

package evaluate_test

// raceEnabled: the race detector slows the engines tenfold, so the targets
// are asserted on a smaller scenario of the same seed.
const raceEnabled = true

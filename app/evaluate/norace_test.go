//go:build !race

package evaluate_test

const raceEnabled = false

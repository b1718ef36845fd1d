package sql

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// seenMinutes forgets everything when it would hold more than its bound:
// the customers it forgot are written again, never skipped wrongly.
func TestSeenMinutesStartsAgainPastItsBound(t *testing.T) {
	m0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	m1 := m0.Add(time.Minute)
	s := newSeenMinutes(2)
	s.remember([]string{"a", "b"}, []time.Time{m1, m0})
	s.remember([]string{"a"}, []time.Time{m0}) // an older minute committed later
	latest := map[string]time.Time{"a": m1, "b": m1}
	s.drop(latest)
	require.Equal(t, map[string]time.Time{"b": m1}, latest, "a's minute is stored, b's is not")

	s.remember([]string{"c"}, []time.Time{m0}) // the third customer: a and b are forgotten
	latest = map[string]time.Time{"a": m0, "b": m0, "c": m0}
	s.drop(latest)
	require.Equal(t, map[string]time.Time{"a": m0, "b": m0}, latest)
}

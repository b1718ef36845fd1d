package app

import (
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTuneGC(t *testing.T) {
	before := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(before) })

	env := map[string]string{}
	require.True(t, TuneGC(func(k string) string { return env[k] }))
	require.Equal(t, DefaultGCPercent, debug.SetGCPercent(100), "GOGC unset: the service's default")

	env["GOGC"] = "200"
	require.False(t, TuneGC(func(k string) string { return env[k] }))
	require.Equal(t, 100, debug.SetGCPercent(100), "GOGC set: the runtime's reading of it stands")
}

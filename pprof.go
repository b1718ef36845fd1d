//go:build pprof

package main

import (
	"log/slog"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof on http.DefaultServeMux
	"os"
)

// Built with -tags pprof, the binary serves net/http/pprof on PPROF_ADDR
// (for `go run -tags pprof . bench -profile DIR`, which sets it for each
// child). Never in a production build: the profiles show everything.
func init() {
	addr := os.Getenv("PPROF_ADDR")
	if addr == "" {
		return
	}
	go func() {
		if err := http.ListenAndServe(addr, nil); err != nil {
			slog.Warn("pprof server stopped", "addr", addr, "err", err)
		}
	}()
}

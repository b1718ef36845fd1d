package telemetry

import (
	"context"
	"log/slog"
	"os"

	"github.com/ThreeDotsLabs/watermill"
)

// watermillLogger adapts slog for Watermill like watermill.SlogLoggerAdapter,
// but checks the level before building the fields: Watermill logs several
// Trace lines per message, and building their attributes only to drop them
// cost a tenth of the detector's CPU. Watermill's Info (handler start and
// stop chatter) is logged at debug.
type watermillLogger struct {
	l      *slog.Logger
	fields watermill.LogFields
}

// NewWatermillLogger returns Watermill's logger writing to l.
func NewWatermillLogger(l *slog.Logger) watermill.LoggerAdapter { return watermillLogger{l: l} }

const levelTrace = slog.LevelDebug - 4

func (w watermillLogger) log(level slog.Level, msg string, err error, fields watermill.LogFields) {
	if !w.l.Enabled(context.Background(), level) {
		return
	}
	attrs := make([]any, 0, 2*(len(w.fields)+len(fields))+2)
	for k, v := range w.fields {
		attrs = append(attrs, k, v)
	}
	for k, v := range fields {
		attrs = append(attrs, k, v)
	}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	w.l.Log(context.Background(), level, msg, attrs...)
}

func (w watermillLogger) Error(msg string, err error, fields watermill.LogFields) {
	w.log(slog.LevelError, msg, err, fields)
}
func (w watermillLogger) Info(msg string, fields watermill.LogFields) {
	w.log(slog.LevelDebug, msg, nil, fields)
}
func (w watermillLogger) Debug(msg string, fields watermill.LogFields) {
	w.log(slog.LevelDebug, msg, nil, fields)
}
func (w watermillLogger) Trace(msg string, fields watermill.LogFields) {
	w.log(levelTrace, msg, nil, fields)
}
func (w watermillLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return watermillLogger{l: w.l, fields: w.fields.Add(fields)}
}

// NewLogger returns the process logger at level (debug, info, warn, error).
func NewLogger(level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

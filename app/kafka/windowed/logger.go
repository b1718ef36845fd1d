package windowed

import (
	"github.com/ThreeDotsLabs/watermill"
	"github.com/twmb/franz-go/pkg/kgo"
)

// kgoLogger routes the client's warnings and errors to the Watermill logger.
type kgoLogger struct{ l watermill.LoggerAdapter }

func (kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	fields := make(watermill.LogFields, len(keyvals)/2)
	for i := 0; i+1 < len(keyvals); i += 2 {
		if key, ok := keyvals[i].(string); ok {
			fields[key] = keyvals[i+1]
		}
	}
	if level == kgo.LogLevelError {
		k.l.Error("kafka client: "+msg, nil, fields)
		return
	}
	k.l.Info("kafka client: "+msg, fields)
}

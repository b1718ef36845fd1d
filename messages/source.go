package messages

import "context"

type sourceKey struct{}

// WithSource records in ctx where a consumed message was read from.
func WithSource(ctx context.Context, s Source) context.Context {
	return context.WithValue(ctx, sourceKey{}, s)
}

// SourceFromContext returns where the message of ctx was read from.
func SourceFromContext(ctx context.Context) (Source, bool) {
	s, ok := ctx.Value(sourceKey{}).(Source)
	return s, ok
}

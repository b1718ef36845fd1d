package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/heartbeat/heartbeat/messages"
	"github.com/heartbeat/heartbeat/middleware"
)

// TestIsTransient: what decides between waiting out an outage and poisoning
// a message.
func TestIsTransient(t *testing.T) {
	cases := []struct {
		name      string
		err       error
		transient bool
	}{
		{"nil", nil, false},
		{"plain error", errors.New("boom"), false},
		{"validation error", &messages.ValidationError{Class: messages.ClassSchema, Field: "x", Reason: "y"}, false},
		{"context canceled (shutdown)", fmt.Errorf("persist: %w", context.Canceled), true},
		{"deadline", context.DeadlineExceeded, true},
		{"marked", middleware.MarkTransient(errors.New("x")), true},
		{"connection refused", fmt.Errorf("dial: %w", syscall.ECONNREFUSED), true},
		{"net.OpError", &net.OpError{Op: "dial", Err: errors.New("no route")}, true},
		{"admin shutdown 57P01", &pgconn.PgError{Code: "57P01"}, true},
		{"cannot connect now 57P03", &pgconn.PgError{Code: "57P03"}, true},
		{"connection failure 08006", &pgconn.PgError{Code: "08006"}, true},
		{"too many connections 53300", &pgconn.PgError{Code: "53300"}, true},
		{"serialization 40001", &pgconn.PgError{Code: "40001"}, true},
		{"deadlock 40P01", fmt.Errorf("batch: %w", &pgconn.PgError{Code: "40P01"}), true},
		{"unique violation 23505", &pgconn.PgError{Code: "23505"}, false},
		{"value too long 22001", &pgconn.PgError{Code: "22001"}, false},
		{"invalid text 22P02", &pgconn.PgError{Code: "22P02"}, false},
		{"kafka out of brokers", fmt.Errorf("publish: %w", sarama.ErrOutOfBrokers), true},
		{"kafka not leader", sarama.ErrNotLeaderForPartition, true},
		{"kafka message too large", sarama.ErrMessageSizeTooLarge, false},
		{"closed pool", errors.New("closed pool"), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.transient, middleware.IsTransient(c.err))
		})
	}
}

package middleware

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/IBM/sarama"
	"github.com/jackc/pgx/v5/pgconn"
)

// transientError marks an error as caused by the infrastructure.
type transientError struct{ err error }

func (e transientError) Error() string { return e.err.Error() }
func (e transientError) Unwrap() error { return e.err }

// MarkTransient marks err as an infrastructure failure that must be waited
// out, never poisoned.
func MarkTransient(err error) error {
	if err == nil {
		return nil
	}
	return transientError{err}
}

// IsTransient reports whether err comes from the infrastructure (database or
// broker unreachable, shutting down, overloaded, a serialisation conflict,
// the process stopping) rather than from the message. Transient failures
// are waited out and the message is redelivered; only the others may reach
// the poison queue, so an outage never floods it.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	var te transientError
	if errors.As(err, &te) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			strings.HasPrefix(pgErr.Code, "53"), // insufficient resources
			strings.HasPrefix(pgErr.Code, "57"), // operator intervention: shutdown, cannot connect now
			strings.HasPrefix(pgErr.Code, "58"), // system error
			pgErr.Code == "40001", pgErr.Code == "40P01", pgErr.Code == "55P03":
			return true
		}
		return false
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) || pgconn.Timeout(err) || pgconn.SafeToRetry(err) {
		return true
	}
	var kerr sarama.KError
	if errors.As(err, &kerr) {
		return kerr != sarama.ErrMessageSizeTooLarge && kerr != sarama.ErrInvalidMessage &&
			kerr != sarama.ErrInvalidTopic && kerr != sarama.ErrMessageSetSizeTooLarge
	}
	if errors.Is(err, sarama.ErrOutOfBrokers) || errors.Is(err, sarama.ErrClosedClient) ||
		errors.Is(err, sarama.ErrNotConnected) || errors.Is(err, sarama.ErrShuttingDown) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return true
	}
	// pgx reports a closed pool or connection with plain errors.
	msg := err.Error()
	return strings.Contains(msg, "conn closed") || strings.Contains(msg, "closed pool")
}

package sql

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

var (
	urlPassword = regexp.MustCompile(`(://[^:/@\s]*:)[^@\s]*@`)
	kvPassword  = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)
	notUpYet    = regexp.MustCompile(`connection refused|no such host|i/o timeout|the database system is starting up`)
)

// Redact hides passwords in a connection string, or in an error text that
// quotes one, so that neither logs nor error messages print credentials.
func Redact(s string) string {
	s = urlPassword.ReplaceAllString(s, "${1}xxxxx@")
	return kvPassword.ReplaceAllString(s, "${1}xxxxx")
}

// OpenOptions say which database Open connects to.
type OpenOptions struct {
	ConnString string
	MaxConns   int32
	// Timeout bounds the wait for a server that is not reachable yet.
	Timeout time.Duration
	// Settings names the configuration an operator should check when the
	// database cannot be opened (it prefixes Open's errors).
	Settings string
	Log      *slog.Logger
}

// Open creates the database if needed, connects a pool and applies the
// migrations. It keeps trying for Timeout while the server is not
// reachable (it may be starting beside us). Its errors never show a
// password.
func Open(ctx context.Context, o OpenOptions) (*pgxpool.Pool, error) {
	log, timeout := o.Log, o.Timeout
	fail := func(what string, err error) error {
		return fmt.Errorf("%s: %s: %s", o.Settings, what, Redact(err.Error()))
	}
	cfg, err := pgxpool.ParseConfig(o.ConnString)
	if err != nil {
		return nil, fail("not a valid connection string", err)
	}
	cfg.MaxConns = o.MaxConns
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	cfg.ConnConfig.RuntimeParams["application_name"] = "heartbeat"
	where := fmt.Sprintf("PostgreSQL at %s:%d as user %s", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.User)

	// Each attempt ends at the deadline too: a host that does not answer
	// (or a name that does not resolve) must not hold start-up past it.
	deadline := time.Now().Add(timeout)
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithDeadline(ctx, deadline)
		err = EnsureDatabase(actx, cfg.ConnConfig)
		cancel()
		if err == nil || !time.Now().Before(deadline) || ctx.Err() != nil || !retryableConnect(err) {
			break
		}
		log.Warn("database not reachable yet, retrying", "attempt", attempt, "err", Redact(err.Error()))
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	if err != nil {
		if retryableConnect(err) && ctx.Err() == nil {
			where += fmt.Sprintf(" within STARTUP_TIMEOUT (%s)", timeout)
		}
		return nil, fail("cannot reach "+where+" to create database "+strconv.Quote(cfg.ConnConfig.Database), err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fail("cannot connect to "+where, err)
	}
	applied, err := Migrate(ctx, pool)
	if err != nil {
		pool.Close()
		return nil, fail("cannot migrate database "+strconv.Quote(cfg.ConnConfig.Database), err)
	}
	if len(applied) > 0 {
		log.Info("migrations applied", "versions", applied, "database", cfg.ConnConfig.Database)
	}
	return pool, nil
}

// retryableConnect: the server is not (yet) up, as opposed to refusing us.
func retryableConnect(err error) bool {
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	var pgErr interface{ SQLState() string }
	if errors.As(err, &pgErr) {
		s := pgErr.SQLState()
		return s == "57P03" || strings.HasPrefix(s, "08") // cannot connect now (starting up), connection exception
	}
	msg := err.Error()
	return notUpYet.MatchString(msg)
}

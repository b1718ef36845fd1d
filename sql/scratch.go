package sql

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
)

// Scratch is a database of its own on a PostgreSQL server, for tests and
// benchmarks: created empty under a random name, dropped by Drop.
type Scratch struct {
	Name string
	// URL is its connection string: the server's, naming it.
	URL   string
	admin *pgx.ConnConfig
}

// CreateScratch creates the database prefix+<random hex> on the server of
// serverURL (a connection string naming any database), connecting to the
// server's maintenance database "postgres" to do so. A server it cannot
// reach is a *pgconn.ConnectError in the error chain.
func CreateScratch(ctx context.Context, serverURL, prefix string) (*Scratch, error) {
	var b [6]byte
	_, _ = rand.Read(b[:])
	s := &Scratch{Name: prefix + hex.EncodeToString(b[:])}
	admin, err := pgx.ParseConfig(WithDatabase(serverURL, "postgres"))
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", err)
	}
	s.admin = admin
	conn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL at %s:%d as %s: %w", admin.Host, admin.Port, admin.User, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// CREATE DATABASE takes no parameters: the name is quoted as an identifier.
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{s.Name}.Sanitize()); err != nil {
		return nil, fmt.Errorf("create database %s: %w", s.Name, err)
	}
	s.URL = WithDatabase(serverURL, s.Name)
	return s, nil
}

// Drop drops the database, disconnecting the sessions left on it. Close
// the pools on it first.
func (s *Scratch) Drop(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, s.admin)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{s.Name}.Sanitize()+" WITH (FORCE)")
	return err
}

// WithDatabase returns the connection string s naming database name.
func WithDatabase(s, name string) string {
	if u, err := url.Parse(s); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + name
		return u.String()
	}
	// key=value form: a later setting wins.
	return s + " dbname=" + name
}

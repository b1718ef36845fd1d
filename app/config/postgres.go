package config

import (
	"net"
	"net/url"
	"strconv"
)

// ConnString is DATABASE_URL, or a URL built from the POSTGRES_* variables.
func (p PostgresConfig) ConnString() string {
	if p.DatabaseURL != "" {
		return p.DatabaseURL
	}
	u := url.URL{
		Scheme:   "postgres",
		Host:     net.JoinHostPort(p.Host, strconv.Itoa(p.Port)),
		Path:     "/" + p.DB,
		RawQuery: url.Values{"sslmode": {p.SSLMode}}.Encode(),
	}
	if p.Password != "" {
		u.User = url.UserPassword(p.User, p.Password)
	} else {
		u.User = url.User(p.User)
	}
	return u.String()
}

// Variables names the settings an operator should check for a database error.
func (p PostgresConfig) Variables() string {
	if p.DatabaseURL != "" {
		return "DATABASE_URL"
	}
	return "POSTGRES_HOST/POSTGRES_PORT/POSTGRES_DB/POSTGRES_USER/POSTGRES_PASSWORD"
}

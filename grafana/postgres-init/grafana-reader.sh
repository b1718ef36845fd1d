#!/bin/sh
# Creates the read-only role that Grafana's PostgreSQL datasource logs in as
# (GRAFANA_DB_USER / GRAFANA_DB_PASSWORD from .env). Grafana runs whatever SQL
# a dashboard editor types, so it must not hold the pipeline's own role.
#
# The postgres image runs this once, on a fresh data volume, before the
# pipeline has created its tables: the default privileges make every table
# that POSTGRES_USER creates later readable by the reader, and nothing more.
# Re-running it is harmless. dashboards_test.go runs it against a scratch
# database and executes every panel query as the role it creates.
set -eu
: "${POSTGRES_USER:?}" "${POSTGRES_DB:?}"
: "${GRAFANA_DB_USER:?set GRAFANA_DB_USER in .env}"
: "${GRAFANA_DB_PASSWORD:?set GRAFANA_DB_PASSWORD in .env}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet \
	--username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
	--set reader="$GRAFANA_DB_USER" --set password="$GRAFANA_DB_PASSWORD" \
	--set owner="$POSTGRES_USER" --set db="$POSTGRES_DB" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'reader')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'reader') \gexec
SELECT format('ALTER ROLE %I PASSWORD %L', :'reader', :'password') \gexec
ALTER ROLE :"reader" SET default_transaction_read_only = on;
-- A dashboard left open on a huge range must not hold the database.
ALTER ROLE :"reader" SET statement_timeout = '30s';
GRANT CONNECT ON DATABASE :"db" TO :"reader";
GRANT USAGE ON SCHEMA public TO :"reader";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"reader";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES TO :"reader";
SQL

#!/usr/bin/env bash
# Starts, stops or reports the local stack: PostgreSQL, Redis and an S3-compatible endpoint, all on
# loopback, all keeping their data under .local/ of the checkout. Idempotent.
# Usage: infra/services.sh up|down|status
set -euo pipefail
source "$(dirname "$0")/env.sh"

PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
PG_DATA="$LODE_STATE/postgres/data"
PG_SOCK="$LODE_STATE/postgres/run"
REDIS_DIR="$LODE_STATE/redis"
S3_DIR="$LODE_STATE/s3"

as_postgres() {
  # initdb and postgres refuse to run as root; run them as the `postgres` system user.
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 what=$2
  for _ in $(seq 1 100); do port_open "$port" && return 0; sleep 0.1; done
  echo "$what did not start on 127.0.0.1:$port" >&2
  return 1
}

pg_up() {
  mkdir -p "$LODE_STATE/postgres"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    chown postgres: "$LODE_STATE/postgres"
    # The postgres user must be able to reach its data folder through the checkout's parents.
    if ! runuser -u postgres -- test -x "$LODE_STATE/postgres"; then
      echo "The postgres user cannot reach $LODE_STATE/postgres; put the checkout under a folder" \
           "others can traverse, or set LODE_STATE" >&2
      exit 1
    fi
  fi
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    as_postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth-local=peer \
      --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
  fi
  as_postgres mkdir -p "$PG_SOCK"
  if ! as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$LODE_STATE/postgres/server.log" -w -s start \
      -o "-c listen_addresses=127.0.0.1 -p $LODE_PG_PORT -c unix_socket_directories=$PG_SOCK -c fsync=${LODE_PG_FSYNC:-off} -c max_connections=300"
  fi
  # Three roles: lode_owner owns the schema and runs migrations; lode_app is what the platform
  # connects as (it does not own the tables, so row-level security applies to it); lode_system
  # bypasses row-level security for the few platform tasks that span tenants.
  as_postgres "$PG_BIN/psql" -q -h "$PG_SOCK" -p "$LODE_PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lode_owner') THEN
    CREATE ROLE lode_owner LOGIN CREATEDB PASSWORD 'lode_owner';
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lode_app') THEN
    CREATE ROLE lode_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD 'lode_app';
  END IF;
  -- Platform maintenance that spans tenants (the job reconciler, metrics) and nothing else.
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lode_system') THEN
    CREATE ROLE lode_system LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE BYPASSRLS PASSWORD 'lode_system';
  END IF;
END
$$;
SELECT 'CREATE DATABASE lode OWNER lode_owner'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'lode') \gexec
SQL
}

pg_down() {
  if [ -f "$PG_DATA/PG_VERSION" ] && as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -s stop
  fi
}

redis_up() {
  mkdir -p "$REDIS_DIR"
  port_open "$LODE_REDIS_PORT" && return 0
  redis-server --bind 127.0.0.1 --port "$LODE_REDIS_PORT" --daemonize yes --save '' \
    --appendonly no --dir "$REDIS_DIR" --pidfile "$REDIS_DIR/redis.pid" \
    --logfile "$REDIS_DIR/redis.log" >/dev/null
  wait_port "$LODE_REDIS_PORT" Redis
}

redis_down() {
  if port_open "$LODE_REDIS_PORT"; then
    redis-cli -h 127.0.0.1 -p "$LODE_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  fi
}

s3_up() {
  mkdir -p "$S3_DIR/data"
  if ! port_open "$LODE_S3_PORT"; then
    # s3rver speaks the S3 HTTP API (SigV4, multipart, presigned URLs that expire) and keeps
    # objects on disk under .local/s3/data. Its fixed credentials are S3RVER / S3RVER.
    nohup "$LODE_ROOT/node_modules/.bin/s3rver" -d "$S3_DIR/data" -a 127.0.0.1 -p "$LODE_S3_PORT" \
      --no-vhost-buckets -s >"$S3_DIR/server.log" 2>&1 </dev/null &
    echo $! > "$S3_DIR/server.pid"
    wait_port "$LODE_S3_PORT" "The S3 endpoint"
  fi
}

s3_down() {
  if [ -f "$S3_DIR/server.pid" ]; then
    kill "$(cat "$S3_DIR/server.pid")" 2>/dev/null || true
    rm -f "$S3_DIR/server.pid"
  fi
}

status() {
  for pair in "PostgreSQL:$LODE_PG_PORT" "Redis:$LODE_REDIS_PORT" "S3:$LODE_S3_PORT"; do
    if port_open "${pair#*:}"; then echo "${pair%%:*} up on 127.0.0.1:${pair#*:}"; else echo "${pair%%:*} down"; fi
  done
}

case "${1:-}" in
  up) pg_up; redis_up; s3_up; status ;;
  down) s3_down; redis_down; pg_down; echo "local services stopped" ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac

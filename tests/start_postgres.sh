#!/usr/bin/env bash
# Starts a private PostgreSQL server on loopback for tests/test_sweep.py and
# prints the line that tells the tests where it is:
#
#   eval "$(bash tests/start_postgres.sh)"
#
# Idempotent and quick on reruns: installs the Debian `postgresql` package
# only if no server binaries are found (as root), initialises its data
# directory once, starts the server unless it runs, creates the database
# unless it exists. The server trusts every connection from 127.0.0.1, so
# it is for tests only. Stop it with:
#   runuser -u postgres -- pg_ctl -D /tmp/bigml_jax_postgres/data stop
# Everything but the export line goes to stderr.
set -euo pipefail

PORT="${BIGML_TEST_POSTGRES_PORT:-54329}"
ROOT="${BIGML_TEST_POSTGRES_DIR:-/tmp/bigml_jax_postgres}"
DB=bigml_test

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
BIN="$(find_bin)"
if [ -z "$BIN" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "error: PostgreSQL is not installed; run as root, or apt-get install -y postgresql" >&2
    exit 1
  fi
  echo "installing postgresql (apt-get)" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  BIN="$(find_bin)"
fi

# The server refuses to run as root: as root, it runs as `postgres`.
if [ "$(id -u)" = 0 ]; then
  AS=(runuser -u postgres --)
  OWNER=postgres
else
  AS=()
  OWNER="$(id -un)"
fi

mkdir -p "$ROOT"
chown "$OWNER" "$ROOT"
if [ ! -f "$ROOT/data/PG_VERSION" ]; then
  echo "initialising $ROOT/data" >&2
  "${AS[@]}" "$BIN/initdb" -D "$ROOT/data" -U postgres -A trust \
    --no-sync >&2
fi
if ! "${AS[@]}" "$BIN/pg_ctl" -D "$ROOT/data" status >/dev/null 2>&1; then
  echo "starting PostgreSQL on 127.0.0.1:$PORT" >&2
  "${AS[@]}" "$BIN/pg_ctl" -D "$ROOT/data" -l "$ROOT/server.log" -w \
    -o "-p $PORT -k $ROOT -c listen_addresses=127.0.0.1 -c fsync=off" \
    start >&2
fi
if ! "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1; then
  "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DB" >&2
fi
echo "export BIGML_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$PORT/$DB"

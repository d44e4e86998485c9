#!/usr/bin/env bash
# A PostgreSQL server for the cluster's persistence tests and demos: installs Debian's package when
# it is missing (as root), starts a private server on 127.0.0.1 (port $CLUSTERDISTILL_PG_PORT,
# default 54329, data in $CLUSTERDISTILL_PG_DIR) and prints its connection string on stdout.
# Idempotent: a server already answering on the port is reused.
set -euo pipefail
port=${CLUSTERDISTILL_PG_PORT:-54329}
dir=${CLUSTERDISTILL_PG_DIR:-/tmp/clusterdistill-pg}
conn="Host=127.0.0.1;Port=$port;Username=postgres;Database=clusterdistill;Pooling=true;Timeout=15"

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/pg_ctl" ]; then
  if [ "$(id -u)" != 0 ]; then echo "postgres.sh: PostgreSQL is not installed and this is not root; apt-get install postgresql" >&2; exit 1; fi
  echo "[postgres] installing postgresql from Debian packages" >&2
  # package lists fetched in the last hour (scripts/python-torch.sh, say) are used as they are
  [ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -60 2>/dev/null | head -1)" ] || apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi

# the server refuses to run as root: use the package's postgres user when we are root
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if ! "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
  if [ ! -f "$dir/PG_VERSION" ]; then
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    as_pg "$bin/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  as_pg "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -c listen_addresses=127.0.0.1 -k /tmp -c fsync=off -c max_connections=200" start >&2
fi
"$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='clusterdistill'" | grep -q 1 \
  || "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres clusterdistill
echo "$conn"

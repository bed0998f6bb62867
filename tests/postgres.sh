#!/usr/bin/env bash
# A private, throwaway PostgreSQL server for the test suite, on 127.0.0.1 and a free port.
#   tests/postgres.sh start   prints the server's URL (postgres://tollgate@127.0.0.1:PORT) and
#                             its folder, e.g. `read -r url dir < <(tests/postgres.sh start)`
#   tests/postgres.sh stop DIR
# Uses Debian's postgresql binaries (/usr/lib/postgresql/*/bin). As root, the server runs as the
# `postgres` user, since PostgreSQL refuses to run as root.
set -euo pipefail

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bin" ] || [ ! -x "$bin/postgres" ]; then
  echo "PostgreSQL is not installed: apt-get install postgresql (Debian's package)" >&2
  exit 1
fi
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
  start)
    dir=$(mktemp -d /tmp/tollgate-pg.XXXXXX)
    chmod 755 "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_owner "$bin/initdb" -D "$dir/data" -U tollgate --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 || {
      cat "$dir/initdb.log" >&2
      exit 1
    }
    # Durability is not under test here (the gateway is what gets killed), so fsync is off.
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=300" start >/dev/null || {
      cat "$dir/server.log" >&2
      exit 1
    }
    echo "postgres://tollgate@127.0.0.1:$port $dir"
    ;;
  stop)
    dir=${2:?the folder printed by start}
    as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start | stop DIR" >&2
    exit 2
    ;;
esac

# Sourced by scripts: start a temporary PostgreSQL cluster from the system's
# server binaries (as the `postgres` user when run as root, since PostgreSQL
# refuses root), export DATABASE_URL for it, and stop and remove it on exit.
# Sets: pgbin, pg_dir, port, DATABASE_URL, pg_temp_stop. Usage: . scripts/pg-temp.sh
# PG_TEMP_SETTINGS: more server settings, as "-c name=value ...". 
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$pgbin/initdb" ] || pgbin=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")
[ -x "$pgbin/initdb" ] || { echo "PostgreSQL server binaries not found; install the postgresql package" >&2; exit 1; }

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_dir=$(mktemp -d /tmp/lectern-pg-XXXXXX)
chmod 755 "$pg_dir"
if [ "$(id -u)" = 0 ]; then chown postgres "$pg_dir"; fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null \
  || echo $((20000 + RANDOM % 20000)))
as_pg "$pgbin/initdb" -D "$pg_dir/data" -U lectern -A trust -E UTF8 --locale=C >/dev/null
as_pg "$pgbin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w \
  -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=200 ${PG_TEMP_SETTINGS:-}" start >/dev/null
# Stops and removes the cluster: the exit trap's, and a script that sets an
# exit trap of its own calls it from there.
pg_temp_stop() { as_pg "$pgbin/pg_ctl" -D "$pg_dir/data" -m fast stop >/dev/null; rm -rf "$pg_dir"; }
trap pg_temp_stop EXIT
export DATABASE_URL="postgres://lectern@127.0.0.1:$port/postgres"

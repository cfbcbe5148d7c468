#!/usr/bin/env bash
# Runs a private PostgreSQL cluster on 127.0.0.1 for Qyzar's tests.
#
# Uses Debian's postgresql package (installed if absent) but never the
# system's own cluster: initdb creates ours under the cache dir, on its own
# port, so it cannot clash with anything else on the machine.
#
# Usage: deploy/pg-server.sh [start|stop|status|env]   (default: start)
# Environment:
#   QYZAR_CACHE     cache root (default ~/.cache/qyzar); the cluster lives in $QYZAR_CACHE/pg
#   QYZAR_PG_DIR    cluster root instead of $QYZAR_CACHE/pg
#   QYZAR_PG_PORT   TCP port on 127.0.0.1 (default 15432: below Linux's
#                   ephemeral range, 32768-60999, so a client socket of a load
#                   test cannot be holding it when the server starts; 55432,
#                   the earlier default, was once, and the start failed with
#                   "Address already in use")
set -euo pipefail

QYZAR_CACHE="${QYZAR_CACHE:-$HOME/.cache/qyzar}"
PG_HOST="127.0.0.1"
PG_PORT="${QYZAR_PG_PORT:-15432}"
PG_USER="qyzar"
PG_DB="qyzar_test"

log() { printf 'pg-server: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

IS_ROOT=0
[[ $(id -u) -eq 0 ]] && IS_ROOT=1

apt_install() {
	local sudo=()
	((IS_ROOT)) || sudo=(sudo)
	# Updating the package lists is slow: only when the plain install fails.
	if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; then
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
	fi
}

# Newest installed server version's bin dir (Debian puts it off PATH).
find_pg_bin() {
	local postgres
	postgres="$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' 2>/dev/null | sort -V | tail -n1)"
	[[ -n $postgres ]] && dirname "$postgres"
}

ensure_pg_installed() {
	if ! PG_BIN="$(find_pg_bin)"; then
		log "PostgreSQL server not found; installing Debian's postgresql"
		apt_install postgresql
		PG_BIN="$(find_pg_bin)" || die "no /usr/lib/postgresql/*/bin/postgres after install"
	fi
}

# PostgreSQL refuses to run as root: as root, run it as the postgres user.
run_pg() {
	if ((IS_ROOT)); then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# Where the cluster lives. As root, $HOME is usually /root (mode 700), which
# the postgres user cannot enter: fall back to a directory it can reach.
choose_pg_dir() {
	PG_DIR="${QYZAR_PG_DIR:-$QYZAR_CACHE/pg}"
	if ((IS_ROOT)) && [[ -z ${QYZAR_PG_DIR:-} ]]; then
		mkdir -p "$PG_DIR"
		if ! runuser -u postgres -- test -x "$PG_DIR"; then
			rmdir "$PG_DIR" 2>/dev/null || true
			PG_DIR="/var/tmp/qyzar-pg"
		fi
	fi
	PG_DATA="$PG_DIR/data"
	PG_RUN="$PG_DIR/run" # unix socket dir: keeps clear of /var/run/postgresql
	PG_LOG="$PG_DIR/postgres.log"
}

ensure_pg_user() {
	((IS_ROOT)) || return 0
	if ! id postgres >/dev/null 2>&1; then
		log "creating the postgres system user"
		useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
	fi
}

pg_ready() {
	"$PG_BIN/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT" -d postgres -U postgres -t 2
}

psql_admin() {
	"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres "$@"
}

init_cluster() {
	mkdir -p "$PG_DIR" "$PG_RUN"
	((IS_ROOT)) && chown postgres:postgres "$PG_DIR" "$PG_RUN"
	if [[ -f $PG_DATA/PG_VERSION ]]; then
		return 0
	fi
	log "initdb into $PG_DATA"
	rm -rf "$PG_DATA" # a half-made data dir from an interrupted initdb
	# trust auth: loopback-only throwaway test cluster. --no-locale: sorting
	# and messages do not depend on the machine's locale.
	run_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --no-locale >"$PG_DIR/initdb.log" 2>&1 ||
		{
			cat "$PG_DIR/initdb.log" >&2
			die "initdb failed"
		}
}

start_cluster() {
	log "starting PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on $PG_HOST:$PG_PORT (data $PG_DATA)"
	# fsync/full_page_writes/synchronous_commit off: test data only, never for real data.
	local opts="-c listen_addresses=$PG_HOST -c port=$PG_PORT -c unix_socket_directories='$PG_RUN'"
	opts+=" -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c max_connections=200"
	if ! run_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 -o "$opts" start >/dev/null; then
		tail -n 30 "$PG_LOG" >&2 || true
		die "pg_ctl start failed (log: $PG_LOG)"
	fi
}

ensure_role_and_db() {
	# Superuser so tests can CREATE DATABASE per test.
	if [[ "$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'")" != 1 ]]; then
		psql_admin -c "CREATE ROLE $PG_USER LOGIN SUPERUSER"
	fi
	if [[ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]]; then
		psql_admin -c "CREATE DATABASE $PG_DB OWNER $PG_USER"
	fi
}

cluster_running() {
	[[ -f $PG_DATA/PG_VERSION ]] && run_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

url() {
	printf 'postgres://%s@%s:%s/%s\n' "$PG_USER" "$PG_HOST" "$PG_PORT" "$PG_DB"
}

cmd_start() {
	ensure_pg_installed
	ensure_pg_user
	choose_pg_dir
	# runuser keeps our cwd; the postgres user may not be allowed into it.
	cd /
	if pg_ready; then
		log "already answering on $PG_HOST:$PG_PORT"
	else
		init_cluster
		if cluster_running; then
			log "cluster in $PG_DATA is running but not answering on $PG_HOST:$PG_PORT (another port?); restarting it"
			run_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null
		fi
		start_cluster
		local i
		for i in $(seq 1 30); do
			pg_ready && break
			((i == 30)) && die "no answer on $PG_HOST:$PG_PORT (log: $PG_LOG)"
			sleep 1
		done
	fi
	ensure_role_and_db
	url
}

cmd_stop() {
	ensure_pg_installed
	choose_pg_dir
	cd /
	if ! cluster_running; then
		log "not running ($PG_DATA)"
		return 0
	fi
	run_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null
	log "stopped"
}

cmd_status() {
	ensure_pg_installed
	choose_pg_dir
	cd /
	if pg_ready; then
		echo "running: $(url) (data $PG_DATA)"
		return 0
	fi
	echo "stopped (data $PG_DATA)"
	return 3
}

cmd_env() {
	printf 'export QYZAR_TEST_PG_URL=%s\n' "$(url)"
}

case "${1:-start}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
*)
	echo "usage: $0 [start|stop|status|env]" >&2
	exit 2
	;;
esac

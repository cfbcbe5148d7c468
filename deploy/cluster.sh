#!/usr/bin/env bash
# The production topology on one machine, with real processes on loopback:
#
#   3 Cassandra 5.0 nodes (ScyllaDB's protocol) on 127.0.0.1, .2 and .3,
#     CQL port 9142, one cluster, the engines' keyspace at RF=3
#   3 engines (`qyzar engine`): public 127.0.0.1:18081-18083, internal
#     18091-18093; they heartbeat to admin and advertise their internal URL,
#     so admin pushes to them without a static list
#   admin (`qyzar admin`) on PostgreSQL (deploy/pg-server.sh, database
#     qyzar_cluster) on 127.0.0.1:18080
#   nginx from Debian as the one base URL, http://127.0.0.1:18000, with
#     deploy/nginx/qyzar.conf (engine routes to the engines, the rest to admin)
#
# Usage: deploy/cluster.sh up|down|status|env
#   up      starts what is not running (idempotent); the first start of the
#           three Cassandra nodes takes a few minutes (they join one by one)
#   down    stops everything it started (data is kept for the next up)
#   status  one line per process: up or down
#   env     prints `export` lines: the base URL, admin's and the engines' URLs
#   scale-test  `up`, then deploy/scale_test.py: under load through nginx it
#           kills a Cassandra node and an engine, changes a setting, restarts
#           them, and checks that no acknowledged session or login attempt
#           is lost and that every engine converges on the newest config
#
# Environment:
#   QYZAR_CACHE    cache root (default ~/.cache/qyzar); state in $QYZAR_CACHE/cluster
#   QYZAR_BIN      the qyzar binary (default ${CARGO_TARGET_DIR:-target}/release/qyzar,
#                  built with `cargo build --release --bin qyzar` when missing)
#   QYZAR_CLUSTER_CQL_HEAP  heap per Cassandra node (default 768M)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"
QYZAR_CACHE="${QYZAR_CACHE:-$HOME/.cache/qyzar}"
STATE="$QYZAR_CACHE/cluster"
BIN="${QYZAR_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/qyzar}"
CQL_PORT=9142
CQL_HOSTS=(127.0.0.1 127.0.0.2 127.0.0.3)
SEEDS="127.0.0.1:$((CQL_PORT + 1))"
CQL_NODES="$(printf '%s:'"$CQL_PORT"',' "${CQL_HOSTS[@]}")"
CQL_NODES="${CQL_NODES%,}"
ADMIN_ADDR=127.0.0.1:18080
BASE_URL=http://127.0.0.1:18000
ENGINES=(1 2 3)
KEYSPACE=qyzar_cluster

log() { printf 'cluster: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

mkdir -p "$STATE"

# Secrets made once for this machine's cluster (never printed).
secret() {
	local f="$STATE/$1"
	[[ -s $f ]] || python3 -c "import secrets,sys; sys.stdout.write($2)" >"$f"
	chmod 600 "$f"
	cat "$f"
}
push_key() { secret push.key '"qz_pk_" + secrets.token_urlsafe(32)'; }
report_key() { secret report.key '"qz_rk_" + secrets.token_urlsafe(32)'; }
master_key() { secret master.key '__import__("base64").b64encode(secrets.token_bytes(32)).decode()'; }

# One token per node, spread over Murmur3's range; system tables fsynced
# (no test-only unsafe mode: this is the topology a scale test kills nodes of).
declare -A TOKEN=([127.0.0.1]=-3074457345618258603 [127.0.0.2]=0 [127.0.0.3]=3074457345618258602)
cql() { env QYZAR_CQL_HOST="$1" QYZAR_CQL_PORT="$CQL_PORT" QYZAR_CQL_SEEDS="$SEEDS" \
	QYZAR_CQL_CLUSTER=qyzar-cluster QYZAR_CQL_HEAP="${QYZAR_CLUSTER_CQL_HEAP:-768M}" \
	QYZAR_CQL_TOKEN="${TOKEN[$1]}" QYZAR_CQL_UNSAFE_SYSTEM=0 \
	deploy/cql-server.sh "$2"; }

alive() { [[ -f $STATE/$1.pid ]] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

# Starts `name` (VAR=value … command …) in the background with a clean
# environment, its log and pidfile, unless it is running.
spawn() {
	local name=$1
	shift
	if alive "$name"; then
		return 0
	fi
	nohup env -i PATH="$PATH" HOME="$HOME" RUST_LOG="${RUST_LOG:-info}" "$@" \
		>"$STATE/$name.log" 2>&1 &
	echo $! >"$STATE/$name.pid"
}

wait_http() {
	local url=$1 what=$2
	for _ in $(seq 1 150); do
		curl -fs -o /dev/null "$url" && return 0
		sleep 0.2
	done
	die "$what did not answer $url within 30 s (log: $STATE)"
}

pg_url() {
	eval "$(deploy/pg-server.sh env)"
	printf '%s\n' "${QYZAR_TEST_PG_URL%/*}/qyzar_cluster"
}

up() {
	[[ -x $BIN ]] || {
		log "building $BIN"
		cargo build --release --bin qyzar >&2
	}
	command -v nginx >/dev/null || {
		log "installing nginx (Debian)"
		local sudo=()
		[[ $(id -u) -eq 0 ]] || sudo=(sudo)
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx >&2 ||
			{ "${sudo[@]}" apt-get update >&2 && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx >&2; }
	}
	# Nodes join one at a time: Cassandra refuses concurrent bootstraps.
	local h
	for h in "${CQL_HOSTS[@]}"; do
		log "Cassandra on $h:$CQL_PORT"
		cql "$h" start >/dev/null
	done

	deploy/pg-server.sh start >/dev/null
	eval "$(deploy/pg-server.sh env)"
	psql "$QYZAR_TEST_PG_URL" -tAc "SELECT 1 FROM pg_database WHERE datname = 'qyzar_cluster'" | grep -q 1 ||
		psql "$QYZAR_TEST_PG_URL" -qc "CREATE DATABASE qyzar_cluster" >&2

	local pk rk mk
	pk="$(push_key)"
	rk="$(report_key)"
	mk="$(master_key)"
	spawn admin \
		QYZAR_ADMIN_ADDR="$ADMIN_ADDR" \
		QYZAR_DATABASE_URL="$(pg_url)" \
		QYZAR_MASTER_KEY="$mk" \
		QYZAR_ENGINE_PUSH_KEY="$pk" \
		QYZAR_ADMIN_ENGINE_REPORT_KEY="$rk" \
		QYZAR_PUBLIC_URL="$BASE_URL" \
		QYZAR_ENGINE_PUBLIC_URL="$BASE_URL" \
		QYZAR_ADMIN_TRUSTED_PROXIES=127.0.0.1/32 \
		QYZAR_ADMIN_CQL_NODES="$CQL_NODES" \
		QYZAR_ADMIN_CQL_KEYSPACE="$KEYSPACE" \
		QYZAR_OUTBOX_DIR="$STATE/outbox" \
		"$BIN" admin
	local n
	for n in "${ENGINES[@]}"; do
		spawn "engine-$n" \
			QYZAR_ENGINE_ID="engine-$n" \
			QYZAR_ENGINE_ADDR="127.0.0.1:1808$n" \
			QYZAR_ENGINE_INTERNAL_ADDR="127.0.0.1:1809$n" \
			QYZAR_ENGINE_ADVERTISE_URL="http://127.0.0.1:1809$n" \
			QYZAR_ENGINE_ADMIN_URL="http://$ADMIN_ADDR" \
			QYZAR_ENGINE_PUSH_KEY="$pk" \
			QYZAR_ADMIN_ENGINE_REPORT_KEY="$rk" \
			QYZAR_ENGINE_CQL_NODES="$CQL_NODES" \
			QYZAR_ENGINE_CQL_KEYSPACE="$KEYSPACE" \
			QYZAR_ENGINE_CQL_RF=3 \
			QYZAR_ENGINE_SNAPSHOT_PATH="$STATE/engine-$n.qzs" \
			QYZAR_ENGINE_TRUSTED_PROXIES=127.0.0.1/32 \
			"$BIN" engine
		# The first engine creates the keyspace and tables; the others
		# start once it answers, so schema creation never races.
		[[ $n != 1 ]] || wait_http "http://127.0.0.1:18081/ping" "engine-1"
	done
	wait_http "http://$ADMIN_ADDR/ping" "admin"

	mkdir -p "$STATE/nginx"
	{
		echo "upstream qyzar_engine {"
		for n in "${ENGINES[@]}"; do echo "    server 127.0.0.1:1808$n max_fails=1 fail_timeout=2s;"; done
		echo "    keepalive 64;"
		echo "    keepalive_timeout 5s;"
		echo "}"
		echo "upstream qyzar_admin {"
		echo "    server $ADMIN_ADDR;"
		echo "    keepalive 16;"
		echo "    keepalive_timeout 5s;"
		echo "}"
	} >"$STATE/nginx/upstreams.conf"
	sed -e 's/listen 8000;/listen 127.0.0.1:18000;/' deploy/nginx/qyzar.conf >"$STATE/nginx/qyzar.conf"
	cat >"$STATE/nginx/nginx.conf" <<EOF
# Generated by deploy/cluster.sh.
worker_processes 1;
pid $STATE/nginx/nginx.pid;
error_log $STATE/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $STATE/nginx/tmp;
    proxy_temp_path $STATE/nginx/tmp;
    include $STATE/nginx/upstreams.conf;
    include $STATE/nginx/qyzar.conf;
}
EOF
	mkdir -p "$STATE/nginx/tmp"
	if [[ -f $STATE/nginx/nginx.pid ]] && kill -0 "$(cat "$STATE/nginx/nginx.pid")" 2>/dev/null; then
		nginx -p "$STATE/nginx" -c "$STATE/nginx/nginx.conf" -s reload
	else
		nginx -p "$STATE/nginx" -c "$STATE/nginx/nginx.conf"
	fi
	wait_http "$BASE_URL/ping" "nginx"
	log "up: $BASE_URL (admin $ADMIN_ADDR, engines 18081-18083, CQL $CQL_NODES)"
}

down() {
	if [[ -f $STATE/nginx/nginx.pid ]] && kill -0 "$(cat "$STATE/nginx/nginx.pid")" 2>/dev/null; then
		nginx -p "$STATE/nginx" -c "$STATE/nginx/nginx.conf" -s quit || true
	fi
	local name pid
	for name in engine-1 engine-2 engine-3 admin; do
		if alive "$name"; then
			pid="$(cat "$STATE/$name.pid")"
			kill "$pid" 2>/dev/null || true
			for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		fi
		rm -f "$STATE/$name.pid"
	done
	local h
	for h in "${CQL_HOSTS[@]}"; do cql "$h" stop >/dev/null 2>&1 || true; done
	log "down"
}

status() {
	local h name
	for h in "${CQL_HOSTS[@]}"; do
		if python3 deploy/cql_ping.py --timeout 2 "$h" "$CQL_PORT" >/dev/null 2>&1; then
			echo "cassandra $h:$CQL_PORT up"
		else
			echo "cassandra $h:$CQL_PORT down"
		fi
	done
	for name in admin engine-1 engine-2 engine-3; do
		if alive "$name"; then echo "$name up"; else echo "$name down"; fi
	done
	if curl -fs -o /dev/null "$BASE_URL/ping"; then echo "nginx $BASE_URL up"; else echo "nginx $BASE_URL down"; fi
}

case "${1:-status}" in
up) up ;;
scale-test)
	up
	QYZAR_CLUSTER_URL=$BASE_URL QYZAR_CLUSTER_ADMIN=http://$ADMIN_ADDR \
		QYZAR_CLUSTER_ENGINES=http://127.0.0.1:18081,http://127.0.0.1:18082,http://127.0.0.1:18083 \
		QYZAR_CLUSTER_STATE="$STATE" \
		QYZAR_CASS_NODE3_DIR="$QYZAR_CACHE/cassandra-5.0.8/node-qyzar-cluster-127.0.0.3-$CQL_PORT" \
		python3 deploy/scale_test.py
	;;
down) down ;;
status) status ;;
env)
	echo "export QYZAR_CLUSTER_URL=$BASE_URL"
	echo "export QYZAR_CLUSTER_ADMIN=http://$ADMIN_ADDR"
	echo "export QYZAR_CLUSTER_ENGINES=http://127.0.0.1:18081,http://127.0.0.1:18082,http://127.0.0.1:18083"
	echo "export QYZAR_CLUSTER_CQL_NODES=$CQL_NODES"
	;;
*)
	echo "usage: $0 up|down|status|env|scale-test" >&2
	exit 2
	;;
esac

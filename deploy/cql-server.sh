#!/usr/bin/env bash
# Runs a real Apache Cassandra (CQL server) on 127.0.0.1 for Qyzar's tests.
#
# ScyllaDB cannot be installed on our machines and there is no Docker, so the
# tests talk to Apache Cassandra, which speaks the same CQL native protocol.
# Everything comes from Maven Central (cassandra-all + its runtime deps) and
# runs on OpenJDK 17 (Cassandra 5.0 supports Java 11/17 only: never Java 25).
#
# Measured on the reference machine (Debian 12, 2 cores, 24 GiB, OpenJDK 17):
#   first run, resolving 100 jars (67 MB) with an empty ~/.m2: 8 s
#   launch -> CQL answers: 8-13 s (fresh storage or warm; more while cargo
#   builds on the other core); stop: ~6 s
#   RSS: 1.4-1.55 GiB (1 GiB heap); idle CPU ~0 once started
#
# Usage: deploy/cql-server.sh [start|stop|status|env]   (default: start)
# Environment:
#   QYZAR_CACHE              cache root (default ~/.cache/qyzar)
#   QYZAR_CQL_PORT           CQL port (default 9042)
#   QYZAR_CQL_STORAGE_PORT   inter-node port, loopback only (default 7000;
#                            QYZAR_CQL_PORT+1 when the CQL port is overridden)
#   QYZAR_CQL_START_TIMEOUT  seconds to wait for CQL (default 180)
#   QYZAR_CQL_HOST           loopback address to bind (default 127.0.0.1)
#   QYZAR_CQL_SEEDS          seed list host:storage_port,... (default this
#                            node alone); deploy/cluster.sh joins three nodes
#   QYZAR_CQL_CLUSTER        cluster_name (default qyzar-test)
#   QYZAR_CQL_HEAP           JVM heap (default 1G)
#   QYZAR_CQL_TOKEN          this node's token (default 0; distinct per cluster node)
#   QYZAR_JAVA17             path of a Java 17 `java` binary, if not the Debian one
set -euo pipefail

CASSANDRA_VERSION="5.0.8"
# Maven 3.8's default dependency plugin is old; pin a known-good one.
DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

QYZAR_CACHE="${QYZAR_CACHE:-$HOME/.cache/qyzar}"
CQL_HOST="${QYZAR_CQL_HOST:-127.0.0.1}" # not "localhost": it may resolve to ::1
[[ $CQL_HOST == 127.* ]] || { echo "cql-server: QYZAR_CQL_HOST must be a loopback address" >&2; exit 1; }
CLUSTER_NAME="${QYZAR_CQL_CLUSTER:-qyzar-test}"
HEAP="${QYZAR_CQL_HEAP:-1G}"
CQL_PORT="${QYZAR_CQL_PORT:-9042}"
# A second node (overridden CQL port) must not collide on the inter-node port.
if [[ $CQL_PORT == 9042 ]]; then
	STORAGE_PORT="${QYZAR_CQL_STORAGE_PORT:-7000}"
else
	STORAGE_PORT="${QYZAR_CQL_STORAGE_PORT:-$((CQL_PORT + 1))}"
fi
START_TIMEOUT="${QYZAR_CQL_START_TIMEOUT:-180}"

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CASS_HOME="$QYZAR_CACHE/cassandra-$CASSANDRA_VERSION"
LIB_DIR="$CASS_HOME/lib"
LIB_MARKER="$LIB_DIR/.complete"
# One node directory per CQL port (and cluster and host, when not the
# defaults), so an overridden port or a cluster node gets its own state.
if [[ $CQL_HOST == 127.0.0.1 && $CLUSTER_NAME == qyzar-test ]]; then
	NODE_DIR="$CASS_HOME/node-$CQL_PORT"
else
	NODE_DIR="$CASS_HOME/node-$CLUSTER_NAME-$CQL_HOST-$CQL_PORT"
fi
SEEDS="${QYZAR_CQL_SEEDS:-$CQL_HOST:$STORAGE_PORT}"
CONF_DIR="$NODE_DIR/conf"
STORAGE_DIR="$NODE_DIR/storage" # kept across restarts: tests use fresh keyspaces
LOG_DIR="$NODE_DIR/logs"
PID_FILE="$NODE_DIR/cassandra.pid"
LOCK_FILE="$NODE_DIR/.lock"

log() { printf 'cql-server: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# apt-get as root, or through sudo; update the lists only if the install fails.
apt_install() {
	local sudo=()
	[[ $(id -u) -eq 0 ]] || sudo=(sudo)
	if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; then
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
	fi
}

is_java17() {
	[[ -x $1 ]] && "$1" -version 2>&1 | head -n1 | grep -q '"17\.'
}

# Cassandra 5.0 refuses newer JDKs (and this machine also has a Temurin 25):
# pick a Java 17 explicitly, never whatever `java` is first on PATH.
find_java17() {
	local candidate
	for candidate in "${QYZAR_JAVA17:-}" /usr/lib/jvm/java-17-openjdk-amd64/bin/java \
		/usr/lib/jvm/*-17-*/bin/java /usr/lib/jvm/*17*/bin/java "$(command -v java || true)"; do
		if [[ -n $candidate ]] && is_java17 "$candidate"; then
			printf '%s\n' "$candidate"
			return 0
		fi
	done
	return 1
}

ensure_java17() {
	if ! JAVA="$(find_java17)"; then
		log "no Java 17 found; installing openjdk-17-jre-headless"
		apt_install openjdk-17-jre-headless
		JAVA="$(find_java17)" || die "still no Java 17 after install"
	fi
	JAVA_HOME_17="$(dirname "$(dirname "$(readlink -f "$JAVA")")")"
}

python_bin() {
	command -v python3 || die "python3 is needed for deploy/cql_ping.py"
}

# Resolve cassandra-all and its runtime dependencies into $LIB_DIR, once.
ensure_jars() {
	if [[ -f $LIB_MARKER ]] && [[ "$(cat "$LIB_MARKER")" == "$CASSANDRA_VERSION" ]]; then
		return 0
	fi
	command -v mvn >/dev/null || {
		log "mvn not found; installing maven"
		apt_install maven
	}
	local resolve_dir="$CASS_HOME/resolve" started=$SECONDS
	local tmp_lib="$LIB_DIR.partial"
	mkdir -p "$resolve_dir"
	rm -rf "$tmp_lib"
	cat >"$resolve_dir/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by deploy/cql-server.sh: only used to download Cassandra's jars. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.qyzar.deploy</groupId>
  <artifactId>cassandra-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>$CASSANDRA_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
	log "resolving cassandra-all:$CASSANDRA_VERSION from Maven Central into $LIB_DIR (first run only)"
	if ! JAVA_HOME="$JAVA_HOME_17" mvn -B -ntp -q -f "$resolve_dir/pom.xml" \
		"$DEP_PLUGIN:copy-dependencies" -DincludeScope=runtime \
		-DoutputDirectory="$tmp_lib" >"$resolve_dir/mvn.log" 2>&1; then
		tail -n 40 "$resolve_dir/mvn.log" >&2
		die "maven could not resolve cassandra-all:$CASSANDRA_VERSION (log: $resolve_dir/mvn.log)"
	fi
	compgen -G "$tmp_lib/cassandra-all-*.jar" >/dev/null || die "cassandra-all jar missing after resolution"
	rm -rf "$LIB_DIR"
	mv "$tmp_lib" "$LIB_DIR"
	# Written last: a lib dir without it is incomplete and gets resolved again.
	printf '%s\n' "$CASSANDRA_VERSION" >"$LIB_MARKER"
	log "resolved $(find "$LIB_DIR" -name '*.jar' | wc -l) jars in $((SECONDS - started))s"
}

# Regenerated on every start so port changes apply. Cassandra rejects unknown
# keys, so only keys Cassandra 5.0 knows belong here.
write_config() {
	mkdir -p "$CONF_DIR" "$STORAGE_DIR" "$LOG_DIR"
	cat >"$CONF_DIR/cassandra.yaml" <<EOF
# Generated by deploy/cql-server.sh: test server (one node, or one of deploy/cluster.sh's three), loopback only.
cluster_name: $CLUSTER_NAME
num_tokens: 1
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
# commitlog_sync is required; unsafesystem and periodic sync are test-only speedups.
commitlog_sync: periodic
commitlog_sync_period: 10000ms
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "$SEEDS"
listen_address: $CQL_HOST
rpc_address: $CQL_HOST
storage_port: $STORAGE_PORT
native_transport_port: $CQL_PORT
start_native_transport: true
# Tests drop and truncate a lot: no snapshot on each.
auto_snapshot: false
EOF
	# Cassandra ships no logback config and logback's default is DEBUG to the
	# console: log INFO and up to a rolling file instead.
	cat >"$CONF_DIR/logback.xml" <<EOF
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.rolling.RollingFileAppender">
    <file>$LOG_DIR/system.log</file>
    <rollingPolicy class="ch.qos.logback.core.rolling.FixedWindowRollingPolicy">
      <fileNamePattern>$LOG_DIR/system.log.%i</fileNamePattern>
      <minIndex>1</minIndex>
      <maxIndex>3</maxIndex>
    </rollingPolicy>
    <triggeringPolicy class="ch.qos.logback.core.rolling.SizeBasedTriggeringPolicy">
      <maxFileSize>20MB</maxFileSize>
    </triggeringPolicy>
    <encoder>
      <pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern>
    </encoder>
  </appender>
  <root level="INFO">
    <appender-ref ref="FILE"/>
  </root>
</configuration>
EOF
}

# Prints the pid if our pidfile names a live Cassandra, else cleans up.
running_pid() {
	[[ -f $PID_FILE ]] || return 1
	local pid
	pid="$(cat "$PID_FILE" 2>/dev/null || true)"
	if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
		grep -q CassandraDaemon "/proc/$pid/cmdline" 2>/dev/null; then
		printf '%s\n' "$pid"
		return 0
	fi
	rm -f "$PID_FILE" # stale: the process is gone (or the pid was reused)
	return 1
}

ping_cql() {
	"$(python_bin)" "$DEPLOY_DIR/cql_ping.py" --timeout 3 "$CQL_HOST" "$CQL_PORT"
}

show_logs() {
	local f
	for f in "$LOG_DIR/stdout.log" "$LOG_DIR/system.log"; do
		if [[ -s $f ]]; then
			log "---- last lines of $f ----"
			tail -n 30 "$f" >&2
		fi
	done
}

launch() {
	local jamm=()
	local agent
	# jamm measures object sizes for memtable accounting; optional in 5.0 but
	# gives accurate numbers when present.
	for agent in "$LIB_DIR"/jamm-*.jar; do
		[[ -f $agent ]] && jamm=("-javaagent:$agent")
	done
	local jvm_opts=(
		"-Xms$HEAP" "-Xmx$HEAP" -Xss256k -XX:+UseG1GC -XX:+ParallelRefProcEnabled
		-XX:+ExitOnOutOfMemoryError # die loudly rather than limp on
		-Djava.net.preferIPv4Stack=true
		"${jamm[@]}"
		# Module flags from Cassandra 5.0's conf/jvm17-server.options.
		-Djdk.attach.allowAttachSelf=true
		--add-exports java.base/jdk.internal.misc=ALL-UNNAMED
		--add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
		--add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
		--add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
		--add-exports java.sql/java.sql=ALL-UNNAMED
		--add-exports java.base/java.lang.ref=ALL-UNNAMED
		--add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
		--add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
		--add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
		--add-opens java.base/java.lang.module=ALL-UNNAMED
		--add-opens java.base/jdk.internal.loader=ALL-UNNAMED
		--add-opens java.base/jdk.internal.ref=ALL-UNNAMED
		--add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
		--add-opens java.base/jdk.internal.math=ALL-UNNAMED
		--add-opens java.base/jdk.internal.module=ALL-UNNAMED
		--add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
		--add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
		--add-opens java.base/sun.nio.ch=ALL-UNNAMED
		--add-opens java.base/java.io=ALL-UNNAMED
		--add-opens java.base/java.lang.reflect=ALL-UNNAMED
		--add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
		--add-opens java.base/java.lang=ALL-UNNAMED
		--add-opens java.base/java.util=ALL-UNNAMED
		-Dio.netty.tryReflectionSetAccessible=true
		-Dio.netty.allocator.useCacheForAllThreads=true
		-Dio.netty.allocator.maxOrder=11
		# Cassandra's own settings.
		"-Dcassandra.config=file://$CONF_DIR/cassandra.yaml" # must be a URL
		-Dcassandra-foreground=yes # otherwise it closes stdout/stderr
		"-Dcassandra.storagedir=$STORAGE_DIR" # data, commitlog, hints, saved_caches, cdc_raw
		"-Dcassandra.logdir=$LOG_DIR"
		"-Dcassandra-pidfile=$PID_FILE"
		"-Dlogback.configurationFile=$CONF_DIR/logback.xml"
		# Single node: do not wait for a ring that will never grow (a
		# cluster node, deploy/cluster.sh, brings a token of its own).
		-Dcassandra.skip_wait_for_gossip_to_settle=0
		-Dcassandra.ring_delay_ms=5000
		"-Dcassandra.initial_token=${QYZAR_CQL_TOKEN:-0}"
	)
	# No fsync of system tables: a test-only speedup. It also skips flushing
	# the schema after DDL, so a keyspace created just before a crash is lost
	# on restart; the crash test turns it off with QYZAR_CQL_UNSAFE_SYSTEM=0.
	if [ "${QYZAR_CQL_UNSAFE_SYSTEM:-1}" = 1 ]; then
		jvm_opts+=(-Dcassandra.unsafesystem=true)
	fi
	: >"$LOG_DIR/stdout.log"
	# nohup + closed stdin: survives the calling shell. fd 9 (the start lock)
	# is closed so the server does not hold the lock for its whole life.
	nohup "$JAVA" "${jvm_opts[@]}" -cp "$LIB_DIR/*" org.apache.cassandra.service.CassandraDaemon \
		</dev/null >>"$LOG_DIR/stdout.log" 2>&1 9>&- &
	printf '%s\n' "$!" >"$PID_FILE"
	log "launched Cassandra $CASSANDRA_VERSION (pid $!) with $JAVA; logs in $LOG_DIR"
}

wait_ready() {
	local pid=$1 started=$SECONDS next_note=$((SECONDS + 10)) version
	while true; do
		if version="$(ping_cql 2>/dev/null)"; then
			local rss_kib
			rss_kib="$(ps -o rss= -p "$pid" 2>/dev/null | tr -d ' ' || true)"
			log "ready: Cassandra $version on $CQL_HOST:$CQL_PORT after $((SECONDS - started))s (pid $pid, RSS $((${rss_kib:-0} / 1024)) MiB)"
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			show_logs
			rm -f "$PID_FILE"
			die "Cassandra (pid $pid) exited during startup"
		fi
		if ((SECONDS - started >= START_TIMEOUT)); then
			show_logs
			die "no CQL answer on $CQL_HOST:$CQL_PORT after ${START_TIMEOUT}s (pid $pid left running; 'deploy/cql-server.sh stop' to kill it)"
		fi
		if ((SECONDS >= next_note)); then
			log "waiting for CQL on $CQL_HOST:$CQL_PORT ($((SECONDS - started))s)"
			next_note=$((SECONDS + 10))
		fi
		sleep 1
	done
}

cmd_start() {
	mkdir -p "$NODE_DIR"
	# Serialise concurrent starts (e.g. two test runs) so only one launches.
	exec 9>"$LOCK_FILE"
	flock 9
	local pid version
	if pid="$(running_pid)"; then
		# Ours is up or still starting: just wait for it.
		wait_ready "$pid"
	elif version="$(ping_cql 2>/dev/null)"; then
		log "a CQL server we did not start (Cassandra $version) already answers on $CQL_HOST:$CQL_PORT; using it"
	else
		ensure_java17
		ensure_jars
		write_config
		launch
		wait_ready "$(cat "$PID_FILE")"
	fi
	printf '%s:%s\n' "$CQL_HOST" "$CQL_PORT"
}

cmd_stop() {
	local pid
	if ! pid="$(running_pid)"; then
		log "not running (no live pid in $PID_FILE)"
		return 0
	fi
	log "stopping Cassandra (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	local deadline=$((SECONDS + 60))
	while kill -0 "$pid" 2>/dev/null; do
		if ((SECONDS >= deadline)); then
			log "still alive after 60s; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			sleep 1
			break
		fi
		sleep 0.5
	done
	rm -f "$PID_FILE"
	log "stopped"
}

cmd_status() {
	local pid version
	if pid="$(running_pid)"; then
		if version="$(ping_cql 2>/dev/null)"; then
			local rss_kib
			rss_kib="$(ps -o rss= -p "$pid" | tr -d ' ')"
			echo "running: Cassandra $version on $CQL_HOST:$CQL_PORT (pid $pid, RSS $((rss_kib / 1024)) MiB)"
			return 0
		fi
		echo "starting or unresponsive: pid $pid, no CQL answer on $CQL_HOST:$CQL_PORT (logs: $LOG_DIR)"
		return 1
	fi
	if version="$(ping_cql 2>/dev/null)"; then
		echo "running (not started by this script): Cassandra $version on $CQL_HOST:$CQL_PORT"
		return 0
	fi
	echo "stopped"
	return 3
}

cmd_env() {
	printf 'export QYZAR_TEST_CQL_NODE=%s:%s\n' "$CQL_HOST" "$CQL_PORT"
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

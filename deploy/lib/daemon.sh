# shellcheck shell=bash
# Pidfile daemons for the test-server scripts (smtp-sink.sh, stripe-mock.sh).
# Sourced, not run. The caller defines PIDFILE, LOG, log(), die() and
# answering() (true once the server answers its protocol).

# Prints the pid in $PIDFILE when that process is alive.
our_pid() {
	[[ -f $PIDFILE ]] || return 1
	local pid
	pid="$(cat "$PIDFILE")"
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && printf '%s\n' "$pid"
}

# Waits until the daemon just started answers: up to TRIES checks INTERVAL
# seconds apart; dies with the log's tail if the process exits meanwhile.
# Usage: wait_until_answering NAME TRIES INTERVAL
wait_until_answering() {
	local name=$1 tries=$2 interval=$3 _
	for _ in $(seq 1 "$tries"); do
		answering && return 0
		if ! our_pid >/dev/null; then
			tail -n 20 "$LOG" >&2 || true
			die "$name exited (log: $LOG)"
		fi
		sleep "$interval"
	done
	die "$name did not answer within $tries checks ${interval}s apart (log: $LOG)"
}

# Stops the daemon in $PIDFILE: TERM, up to 5 s, then KILL.
stop_daemon() {
	local pid _
	if ! pid="$(our_pid)"; then
		log "not running"
		rm -f "$PIDFILE"
		return 0
	fi
	kill "$pid"
	for _ in $(seq 1 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
	rm -f "$PIDFILE"
	log "stopped"
}

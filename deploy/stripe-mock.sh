#!/usr/bin/env bash
# Runs stripe-mock (Stripe's official API mock, a Go program) on 127.0.0.1
# for the admin's billing tests. Installed once with `go install` from the
# Go module proxy into $QYZAR_CACHE/go/bin, pinned, so a re-run never
# reaches the network.
#
# Usage: deploy/stripe-mock.sh [start|stop|status|env]   (default: start)
# Environment:
#   QYZAR_CACHE             cache root (default ~/.cache/qyzar)
#   QYZAR_STRIPE_MOCK_PORT  HTTP port on 127.0.0.1 (default 12111)
set -euo pipefail

QYZAR_CACHE="${QYZAR_CACHE:-$HOME/.cache/qyzar}"
STRIPE_MOCK_VERSION="v0.203.0"
GOBIN_DIR="$QYZAR_CACHE/go/bin"
BIN="$GOBIN_DIR/stripe-mock"
STAMP="$GOBIN_DIR/.stripe-mock-$STRIPE_MOCK_VERSION"
RUN_DIR="$QYZAR_CACHE/stripe-mock"
HOST="127.0.0.1"
PORT="${QYZAR_STRIPE_MOCK_PORT:-12111}"
PIDFILE="$RUN_DIR/stripe-mock-$PORT.pid"
LOG="$RUN_DIR/stripe-mock-$PORT.log"

log() { printf 'stripe-mock: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
# shellcheck source-path=SCRIPTDIR source=lib/daemon.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/daemon.sh"

find_go() {
	if command -v go >/dev/null; then
		command -v go
	elif [[ -x /usr/local/go/bin/go ]]; then
		echo /usr/local/go/bin/go
	else
		die "no Go toolchain (go, /usr/local/go/bin/go) to install stripe-mock with"
	fi
}

ensure_binary() {
	[[ -x $BIN && -f $STAMP ]] && return 0
	local go
	go="$(find_go)"
	mkdir -p "$GOBIN_DIR"
	log "installing github.com/stripe/stripe-mock@$STRIPE_MOCK_VERSION into $GOBIN_DIR"
	GOBIN="$GOBIN_DIR" "$go" install "github.com/stripe/stripe-mock@$STRIPE_MOCK_VERSION" ||
		die "go install stripe-mock failed"
	rm -f "$GOBIN_DIR"/.stripe-mock-*
	touch "$STAMP"
}

# True when stripe-mock answers on HOST:PORT (any HTTP answer: it wants a
# key on every route, so an unauthenticated probe gets 401).
answering() {
	python3 - "$HOST" "$PORT" <<'PY' 2>/dev/null
import http.client, sys
try:
    c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=2)
    c.request("GET", "/v1/customers", headers={"Authorization": "Bearer sk_test_probe"})
    sys.exit(0 if c.getresponse().status == 200 else 1)
except OSError:
    sys.exit(1)
PY
}

cmd_start() {
	ensure_binary
	mkdir -p "$RUN_DIR"
	if answering; then
		log "already answering on $HOST:$PORT"
		return 0
	fi
	log "starting stripe-mock $STRIPE_MOCK_VERSION on $HOST:$PORT (log $LOG)"
	nohup "$BIN" -http-addr "$HOST:$PORT" >"$LOG" 2>&1 </dev/null &
	echo $! >"$PIDFILE"
	wait_until_answering stripe-mock 100 0.1
}

cmd_stop() { stop_daemon; }

cmd_status() {
	if answering; then
		echo "running: $HOST:$PORT"
		return 0
	fi
	echo "stopped"
	return 3
}

cmd_env() {
	printf 'export QYZAR_TEST_STRIPE_MOCK=http://%s:%s\n' "$HOST" "$PORT"
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

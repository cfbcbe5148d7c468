#!/usr/bin/env bash
# Runs a local SMTP sink for Qyzar's tests: aiosmtpd (from PyPI, installed
# into a private venv) on 127.0.0.1, writing every message it receives into
# a maildir, so a test can send real SMTP and read the mail back.
#
# Usage: deploy/smtp-sink.sh [start|stop|status|env]   (default: start)
# Environment:
#   QYZAR_CACHE      cache root (default ~/.cache/qyzar); the venv is $QYZAR_CACHE/smtp-venv
#   QYZAR_SMTP_PORT  TCP port on 127.0.0.1 (default 2525)
#   QYZAR_SMTP_DIR   maildir messages land in (default $QYZAR_CACHE/smtp-sink/maildir;
#                    each message is a file under new/)
set -euo pipefail

QYZAR_CACHE="${QYZAR_CACHE:-$HOME/.cache/qyzar}"
AIOSMTPD_VERSION="1.4.6"
VENV="$QYZAR_CACHE/smtp-venv"
SINK_DIR="$QYZAR_CACHE/smtp-sink"
MAILDIR="${QYZAR_SMTP_DIR:-$SINK_DIR/maildir}"
HOST="127.0.0.1"
PORT="${QYZAR_SMTP_PORT:-2525}"
PIDFILE="$SINK_DIR/aiosmtpd-$PORT.pid"
LOG="$SINK_DIR/aiosmtpd-$PORT.log"

log() { printf 'smtp-sink: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
# shellcheck source-path=SCRIPTDIR source=lib/daemon.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/daemon.sh"

apt_install() {
	local sudo=()
	[[ $(id -u) -eq 0 ]] || sudo=(sudo)
	if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; then
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
	fi
}

# The venv with aiosmtpd, made once and reused (pinned version, so a re-run
# never reaches PyPI).
ensure_venv() {
	if [[ -x $VENV/bin/python ]] && "$VENV/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
		return 0
	fi
	command -v python3 >/dev/null || apt_install python3
	rm -rf "$VENV"
	if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
		log "python3 cannot make a venv; installing Debian's python3-venv"
		rm -rf "$VENV"
		apt_install python3-venv
		python3 -m venv "$VENV"
	fi
	log "installing aiosmtpd $AIOSMTPD_VERSION into $VENV"
	"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "aiosmtpd==$AIOSMTPD_VERSION" ||
		die "pip could not install aiosmtpd"
}

# True when an SMTP server greets on HOST:PORT (a 220 banner).
answering() {
	local py=python3
	[[ -x $VENV/bin/python ]] && py="$VENV/bin/python"
	"$py" - "$HOST" "$PORT" <<'PY' 2>/dev/null
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as s:
        s.settimeout(2)
        sys.exit(0 if s.recv(64).startswith(b"220") else 1)
except OSError:
    sys.exit(1)
PY
}

cmd_start() {
	ensure_venv
	# A maildir needs its three folders; aiosmtpd only makes them for a new path.
	mkdir -p "$SINK_DIR" "$MAILDIR/new" "$MAILDIR/cur" "$MAILDIR/tmp"
	if answering; then
		log "already answering on $HOST:$PORT (maildir $MAILDIR)"
		return 0
	fi
	# Tests use unique addresses, so old mail is never read again: keep the
	# maildir from growing run after run.
	find "$MAILDIR" -type f -mmin +1440 -delete 2>/dev/null || true
	log "starting aiosmtpd on $HOST:$PORT (maildir $MAILDIR, log $LOG)"
	# -n: stay root rather than switching to nobody (who could not write the maildir).
	nohup "$VENV/bin/python" -m aiosmtpd -n -l "$HOST:$PORT" -c aiosmtpd.handlers.Mailbox "$MAILDIR" \
		>"$LOG" 2>&1 </dev/null &
	echo $! >"$PIDFILE"
	wait_until_answering aiosmtpd 50 0.2
}

cmd_stop() { stop_daemon; }

cmd_status() {
	if answering; then
		echo "running: $HOST:$PORT (maildir $MAILDIR)"
		return 0
	fi
	echo "stopped"
	return 3
}

cmd_env() {
	printf 'export QYZAR_TEST_SMTP=%s:%s QYZAR_TEST_SMTP_DIR=%s\n' "$HOST" "$PORT" "$MAILDIR"
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

#!/usr/bin/env bash
# Runs schemathesis (property-based API testing from PyPI, installed into a
# private venv) against both OpenAPI documents, on a fresh `qyzar dev`:
# engine/openapi.yaml against the engine, admin/openapi.yaml against the
# admin. Fails on any server error (5xx) or any answer the document does
# not describe (status, content type, headers, body schema), and prints
# schemathesis's summary of each run.
#
# Usage: deploy/schemathesis.sh
# Environment:
#   QYZAR_CACHE         cache root (default ~/.cache/qyzar); the venv is $QYZAR_CACHE/schemathesis-venv
#   QYZAR_BIN           the qyzar binary (default $CARGO_TARGET_DIR/debug/qyzar, built by
#                       `cargo build --bin qyzar` when missing)
#   QYZAR_ST_EXAMPLES   most generated cases per operation in the fuzzing phase (default 25)
#   QYZAR_ST_SEED       generation seed (default 1, so a run is repeatable)
#   QYZAR_ST_KEEP       set to 1 to keep the temp dir (qyzar log, reports) afterwards
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"
QYZAR_CACHE="${QYZAR_CACHE:-$HOME/.cache/qyzar}"
SCHEMATHESIS_VERSION="4.32.5"
VENV="$QYZAR_CACHE/schemathesis-venv"
EXAMPLES="${QYZAR_ST_EXAMPLES:-25}"
SEED="${QYZAR_ST_SEED:-1}"
# The checks that make the run fail: no 5xx, and every answer as documented.
CHECKS="${QYZAR_ST_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance}"

log() { printf 'schemathesis: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# The venv with schemathesis, made once and reused (pinned version, so a
# re-run never reaches PyPI).
ensure_venv() {
	if [[ -x $VENV/bin/st ]] && [[ $("$VENV/bin/st" --version 2>/dev/null) == *" $SCHEMATHESIS_VERSION" ]]; then
		return 0
	fi
	command -v python3 >/dev/null || die "python3 is needed (apt-get install python3 python3-venv)"
	rm -rf "$VENV"
	python3 -m venv "$VENV" || die "python3 cannot make a venv (apt-get install python3-venv)"
	log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
	"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" ||
		die "pip could not install schemathesis"
}

# The debug binary `cargo test` already built; built here when missing.
find_bin() {
	if [[ -n ${QYZAR_BIN:-} ]]; then
		[[ -x $QYZAR_BIN ]] || die "QYZAR_BIN=$QYZAR_BIN is not an executable"
		printf '%s\n' "$QYZAR_BIN"
		return
	fi
	local bin="${CARGO_TARGET_DIR:-$root/target}/debug/qyzar"
	if [[ ! -x $bin ]]; then
		log "building $bin"
		cargo build --quiet --bin qyzar >&2 || die "cargo build --bin qyzar failed"
	fi
	printf '%s\n' "$bin"
}

# Three free loopback ports (engine public, engine internal, admin).
free_ports() {
	python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
}

# The server log's last lines, with the dev credentials `qyzar dev` prints
# masked (a CI log is no place for them, even throwaway ones).
log_tail() { tail -n 30 "$work/qyzar.log" | sed -E 's/(qz_[a-z0-9]+_|dev-)[A-Za-z0-9_-]{8,}/\1…/g' >&2; }

# True once GET URL answers 200.
answers() { python3 -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" 2>/dev/null; }

ensure_venv
bin="$(find_bin)"
work="$(mktemp -d "${TMPDIR:-/tmp}/qyzar-schemathesis.XXXXXX")"
qyzar_pid=""
cleanup() {
	if [[ -n $qyzar_pid ]] && kill -0 "$qyzar_pid" 2>/dev/null; then
		kill "$qyzar_pid" 2>/dev/null || true
		for _ in $(seq 1 50); do
			kill -0 "$qyzar_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$qyzar_pid" 2>/dev/null || true
	fi
	if [[ ${QYZAR_ST_KEEP:-} == 1 ]]; then
		log "kept $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT

read -r engine_port internal_port admin_port <<<"$(free_ports)"
engine_url="http://127.0.0.1:$engine_port"
admin_url="http://127.0.0.1:$admin_port"
push_key="$(python3 -c 'import secrets; print("qz_pk_" + secrets.token_urlsafe(32))')"

# A clean environment: nothing from the caller's QYZAR_* or STRIPE_* leaks
# in (so billing is not configured, mail goes to the outbox dir, storage is
# embedded), and everything lives in the temp dir.
log "starting qyzar dev ($bin) in $work: engine $engine_url, admin $admin_url"
(
	cd "$work"
	exec env -i PATH="$PATH" HOME="$HOME" RUST_LOG="${RUST_LOG:-warn}" \
		QYZAR_ENGINE_ADDR="127.0.0.1:$engine_port" \
		QYZAR_ENGINE_INTERNAL_ADDR="127.0.0.1:$internal_port" \
		QYZAR_ADMIN_ADDR="127.0.0.1:$admin_port" \
		QYZAR_ENGINE_PUSH_KEY="$push_key" \
		"$bin" dev >"$work/qyzar.log" 2>&1
) &
qyzar_pid=$!

for _ in $(seq 1 300); do
	[[ -f $work/.qyzar/dev.json ]] && answers "$engine_url/ping" && answers "$admin_url/ping" && break
	kill -0 "$qyzar_pid" 2>/dev/null || {
		log_tail
		die "qyzar dev exited"
	}
	sleep 0.2
done
[[ -f $work/.qyzar/dev.json ]] || die "qyzar dev did not seed its project within 60 s (log: $work/qyzar.log)"

# PYTHONDONTWRITEBYTECODE: importing the hooks leaves no __pycache__ in deploy/.
export QYZAR_ENGINE_PUSH_KEY="$push_key" QYZAR_ST_FIXTURES="$work/fixtures.json" QYZAR_ST_SEED="$SEED" PYTHONDONTWRITEBYTECODE=1
"$VENV/bin/python" deploy/schemathesis_hooks.py prepare "$work/.qyzar/dev.json" "$QYZAR_ST_FIXTURES"

# One document against one service. The examples and coverage phases walk
# every documented value and boundary; fuzzing adds up to EXAMPLES random
# cases per operation. No stateful phase: the documents declare no links.
# One worker: Hypothesis describes strategies with `ast.parse`, which is not
# thread-safe on some CPython 3.11 releases (a spurious "AST constructor
# recursion depth mismatch" error), and the server is the bottleneck anyway.
run() {
	local service=$1 url=$2
	(
		cd "$work"
		QYZAR_ST_SERVICE="$service" PYTHONPATH="$root/deploy" SCHEMATHESIS_HOOKS=schemathesis_hooks \
			"$VENV/bin/st" run "$root/$service/openapi.yaml" \
			--url "$url" \
			--checks "$CHECKS" \
			--phases examples,coverage,fuzzing \
			--max-examples "$EXAMPLES" \
			--seed "$SEED" \
			--workers 1 \
			--generation-database none \
			--request-timeout 15 \
			--suppress-health-check all \
			--no-color \
			--report junit,har --report-dir "$work/report-$service"
	) >"$work/$service.out" 2>&1
}

# The two runs go side by side (two processes: each is mostly Python
# generating cases), each printed whole once both are done. They do not
# disturb each other: the admin run changes only its own project.
status=0
started=$SECONDS
log "running engine/openapi.yaml against $engine_url and admin/openapi.yaml against $admin_url"
run engine "$engine_url" &
engine_job=$!
run admin "$admin_url" &
admin_job=$!
wait "$engine_job" || status=1
wait "$admin_job" || status=1
for service in engine admin; do
	log "── $service/openapi.yaml"
	cat "$work/$service.out"
done

# A panic in a background task need not show as a 5xx: read the log too.
if grep -n "panicked at" "$work/qyzar.log" >&2; then
	log "qyzar panicked during the run (above)"
	status=1
fi
if ! kill -0 "$qyzar_pid" 2>/dev/null; then
	log "qyzar dev died during the run"
	log_tail
	status=1
fi
log "both documents checked in $((SECONDS - started))s: $([[ $status == 0 ]] && echo passed || echo FAILED)"
exit "$status"

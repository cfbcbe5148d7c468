#!/usr/bin/env bash
# The dashboard's browser test: a fresh `qyzar dev` on loopback in a temp
# dir, driven by headless Debian Chromium through playwright-core
# (deploy/ui-test/run.js): register, verify the email from dev's outbox,
# sign in, turn on 2FA, sign in again through the 2FA challenge, create a
# project, see the API's validation error at a settings field, save a valid
# change, reveal the secret with TOTP, create and invalidate an origin
# token, open billing. Every page's CSP header and console are checked and a
# screenshot of each is written to ${CARGO_TARGET_DIR:-target}/ui-screenshots/.
#
# Usage: deploy/ui-test.sh
#
#   QYZAR_CACHE     cache root (default ~/.cache/qyzar); playwright-core is
#                   installed once into $QYZAR_CACHE/ui-test (pinned in
#                   deploy/ui-test/package.json, nothing in the repo)
#   QYZAR_BIN       the qyzar binary (default $CARGO_TARGET_DIR/debug/qyzar,
#                   built by `cargo build --bin qyzar` when missing)
#   QYZAR_UI_KEEP   set to 1 to keep the temp dir (qyzar log) afterwards
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"
QYZAR_CACHE="${QYZAR_CACHE:-$HOME/.cache/qyzar}"
NODE_DIR="$QYZAR_CACHE/ui-test"
SHOTS="${CARGO_TARGET_DIR:-$root/target}/ui-screenshots"

log() { printf 'ui-test: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

command -v node >/dev/null || die "node is needed (apt-get install nodejs npm)"
command -v npm >/dev/null || die "npm is needed (apt-get install npm)"

# playwright-core at the pinned version, installed once (it downloads no
# browser: run.js points it at Debian's chromium).
want="$(node -p 'require(process.argv[1]).dependencies["playwright-core"]' "$root/deploy/ui-test/package.json")"
have="$(node -p 'try { require(process.argv[1]).version } catch (e) { "" }' "$NODE_DIR/node_modules/playwright-core/package.json" 2>/dev/null || true)"
if [[ $have != "$want" ]]; then
	log "installing playwright-core $want into $NODE_DIR"
	mkdir -p "$NODE_DIR"
	cp "$root/deploy/ui-test/package.json" "$NODE_DIR/package.json"
	(cd "$NODE_DIR" && npm install --no-audit --no-fund --loglevel=error >&2) || die "npm install failed"
fi

chromium="$(deploy/chromium.sh)"

bin="${QYZAR_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/qyzar}"
if [[ ! -x $bin ]]; then
	log "building $bin"
	cargo build --quiet --bin qyzar >&2 || die "cargo build --bin qyzar failed"
fi

read -r engine_port internal_port admin_port <<<"$(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
)"
admin_url="http://127.0.0.1:$admin_port"
push_key="$(python3 -c 'import secrets; print("qz_pk_" + secrets.token_urlsafe(32))')"

work="$(mktemp -d "${TMPDIR:-/tmp}/qyzar-ui-test.XXXXXX")"
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
	if [[ ${QYZAR_UI_KEEP:-} == 1 ]]; then
		log "kept $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT

# A clean environment, as for schemathesis: no Stripe (billing is "not
# configured"), mail into the outbox folder, embedded storage.
# The server log's last lines, with the dev credentials `qyzar dev` prints
# cut short (as schemathesis.sh does).
log_tail() { tail -n 30 "$work/qyzar.log" | sed -E 's/(qz_[a-z0-9]+_|dev-)[A-Za-z0-9_-]{8,}/\1…/g' >&2; }

log "starting qyzar dev ($bin) in $work: admin $admin_url"
(
	cd "$work"
	exec env -i PATH="$PATH" HOME="$HOME" RUST_LOG="${RUST_LOG:-warn}" \
		QYZAR_ENGINE_ADDR="127.0.0.1:$engine_port" \
		QYZAR_ENGINE_INTERNAL_ADDR="127.0.0.1:$internal_port" \
		QYZAR_ADMIN_ADDR="127.0.0.1:$admin_port" \
		QYZAR_ENGINE_TRAFFIC_SECONDS=1 \
		QYZAR_ADMIN_CLUSTER_REFRESH_SECONDS=2 \
		QYZAR_ENGINE_PUSH_KEY="$push_key" \
		"$bin" dev >"$work/qyzar.log" 2>&1
) &
qyzar_pid=$!

for _ in $(seq 1 300); do
	[[ -f $work/.qyzar/dev.json ]] && curl -fs "$admin_url/ping" >/dev/null 2>&1 && break
	kill -0 "$qyzar_pid" 2>/dev/null || {
		log_tail
		die "qyzar dev exited"
	}
	sleep 0.2
done
[[ -f $work/.qyzar/dev.json ]] || die "qyzar dev did not start within 60 s (log: $work/qyzar.log)"
outbox="$(node -p 'require(process.argv[1]).outboxDir' "$work/.qyzar/dev.json")"
[[ $outbox == /* ]] || outbox="$work/$outbox"

# The dev project gets realistic traffic (people, a bot farm, credential
# stuffing) for the analytics pages the test opens as the dev account.
log "sending demo traffic to the dev project"
(cd "$work" && "$bin" demo-traffic --people 30 >"$work/demo.log" 2>&1) || {
	cat "$work/demo.log" >&2
	die "qyzar demo-traffic failed"
}

rm -rf "$SHOTS"
mkdir -p "$SHOTS"
status=0
QYZAR_DEV_JSON="$work/.qyzar/dev.json" \
	QYZAR_PLAYWRIGHT_CORE="$NODE_DIR/node_modules/playwright-core" \
	QYZAR_CHROMIUM="$chromium" \
	QYZAR_ADMIN_URL="$admin_url" \
	QYZAR_OUTBOX="$outbox" \
	QYZAR_SCREENSHOTS="$SHOTS" \
	node "$root/deploy/ui-test/run.js" || status=$?
if [[ $status != 0 ]]; then
	log "the browser test failed; the server log ends:"
	log_tail
fi

if grep -q "panicked at" "$work/qyzar.log"; then
	log_tail
	log "qyzar panicked during the run (above)"
	status=1
fi
log "screenshots in $SHOTS"
exit "$status"

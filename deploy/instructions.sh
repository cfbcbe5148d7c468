#!/usr/bin/env bash
# Instructions per request, counted, not timed: the engine's user-space
# work on one hot route under valgrind's callgrind, for A/B comparisons of
# changes too small for wrk to see on a noisy machine (BENCHMARKS.md,
# "Instructions per request"). Installs valgrind (Debian) if missing.
#
#   deploy/instructions.sh ROUTE [N]    ROUTE: sv | mint | verify | verify-uncached | rl | ato | ato-spread | hello
#   QYZAR_BIN=path/to/qyzar deploy/instructions.sh sv   # another build
#   QYZAR_CALLGRIND_OUT=file ...        # keep the profile (callgrind_annotate)
#
# `ato-spread` is anti-ATO over 2 000 identifiers (a quarter of the attempts
# failed, a new client address each): 2 200 warm-up requests first, so each
# identifier's profile is cached and journalled, then N more. With one
# connection every attempt is its own group commit, so the journal thread's
# per-commit work weighs more than under load; compare builds with it.
#
# `verify-uncached` verifies a token never seen before on every request
# (N + 200 tokens minted first), with the token cache held to 1 MiB so that
# it is full: the miss path of `engine-compare`'s uncached scenario, on one
# project. Once full, a project whose tokens are not verified again has
# about one miss in sixteen cached (`engine/src/budget/admission.rs`), so
# the count is mostly of misses that are verified and answered only.
#
# `qyzar dev` runs under callgrind; after 200 warm-up requests the counters
# are zeroed, N requests (default 3000) go over one keep-alive connection,
# and the counters are dumped. Prints two figures per request: every thread
# of the process, and the engine's connection tasks alone (the request
# path without the runtime's idle loop and background tasks, the steadier
# of the two). `hello` measures the shared strict hello-world instead.
# Under valgrind the CPU features differ (no SHA extensions, no AVX-512):
# compare builds with each other, not with hardware counters.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
route=${1:?usage: deploy/instructions.sh ROUTE [N]}
n=${2:-3000}
warmup=200
client="$PWD/deploy/instructions_client.py"
if ! command -v valgrind >/dev/null; then
	if [ "$(id -u)" = 0 ]; then apt-get install -y valgrind >/dev/null; else sudo apt-get install -y valgrind >/dev/null; fi
fi
work=$(mktemp -d)
vg=""
cleanup() { # qyzar stops on SIGINT; the hello-world ignores it, so kill what is left after 10 s
	if [ -n "$vg" ]; then
		kill -INT "$vg" 2>/dev/null
		for _ in $(seq 50); do kill -0 "$vg" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$vg" 2>/dev/null
		wait "$vg" 2>/dev/null
	fi
	rm -rf "$work"
}
trap cleanup EXIT
count() { # PATH URL-HOST PORT : warm up, zero, measure, dump
	QZ_BODY="$body" python3 "$client" "$2" "$3" "$1" "$warmup"
	callgrind_control -z "$vg" >/dev/null
	QZ_START=$warmup QZ_BODY="$body" python3 "$client" "$2" "$3" "$1" "$n"
	callgrind_control -d "$vg" >/dev/null
}
per_request() { # FILE [FUNCTION] : instructions per request, all or under FUNCTION
	if [ -z "${2:-}" ]; then
		awk -v n="$n" '/^totals:/ {s += $2} END {printf "%d", s / n}' "$1"
	else
		callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null |
			awk -v n="$n" -v f="$2" 'index($0, f) {gsub(",", "", $1); printf "%d", $1 / n; exit}'
	fi
}
if [ "$route" = hello ]; then
	perf="${QYZAR_PERF_DIR:-../shared/perf}"
	(cd "$perf/hello-baseline" && cargo build --release --quiet)
	hello=$(cd "$perf/hello-baseline" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/hello-baseline
	valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$hello" 127.0.0.1:18181 >"$work/hello.log" 2>&1 &
	vg=$!
	for _ in $(seq 100); do sleep 0.2; curl -s -o /dev/null http://127.0.0.1:18181/ && break; done
	body='{"projectId":"prj_AzAAMTIuCZ93-PKD30KXNw","sessionId":"ses_znIaVdPb6J1bQ0gj-I4evw","sessionToken":"st_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}'
	count / 127.0.0.1 18181
	sleep 1
	out=$(ls "$work"/cg.out.* | tail -1)
	echo "hello: $(per_request "$out") instructions per request"
	[ -n "${QYZAR_CALLGRIND_OUT:-}" ] && cp "$out" "$QYZAR_CALLGRIND_OUT"
	exit 0
fi
bin=${QYZAR_BIN:-}
if [ -z "$bin" ]; then
	cargo build --release --bin qyzar
	bin="${CARGO_TARGET_DIR:-target}/release/qyzar"
fi
bin=$(realpath "$bin")
cd "$work"
[ "$route" = verify-uncached ] && export QYZAR_ENGINE_TOKEN_CACHE_MIB=1
valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$bin" dev >"$work/dev.log" 2>&1 &
vg=$!
for _ in $(seq 600); do
	sleep 0.5
	[ -f .qyzar/dev.json ] && curl -sf http://127.0.0.1:8080/ping >/dev/null && break
done
field() { python3 -c "import json; print(json.load(open('.qyzar/dev.json'))['$1'])"; }
engine=$(field engineUrl); project=$(field projectId); secret=$(field projectSecret)
hostport=${engine#http://}
host=${hostport%:*}
port=${hostport##*:}
entropy='{"userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36","languages":["en-US"],"timezone":"Europe/Berlin","screen":{"width":1920,"height":1080,"colorDepth":24,"pixelRatio":1},"hardwareConcurrency":8,"platform":"Linux x86_64","canvasHash":"c4a1f0","webglVendor":"Google Inc.","webglRenderer":"ANGLE","audioHash":"a91b","fonts":["Arial"],"touchPoints":0,"webdriver":false,"cookiesEnabled":true}'
connect=$(curl -s -XPOST -H "Origin: $(field origin)" -H 'Content-Type: application/json' \
	-d "{\"projectId\":\"$project\",\"originToken\":\"$(field originToken)\",\"entropy\":$entropy}" "$engine/connect")
sid=$(echo "$connect" | python3 -c 'import json,sys; print(json.load(sys.stdin)["sessionId"])')
stok=$(echo "$connect" | python3 -c 'import json,sys; print(json.load(sys.stdin)["sessionToken"])')
token=$(curl -s -XPOST -H "Authorization: Bearer $secret" -H 'Content-Type: application/json' \
	-d "{\"projectId\":\"$project\"}" "$engine/projects/client/token" |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["clientToken"])')
case $route in
sv) path=/projects/client/session-verify body="{\"projectId\":\"$project\",\"sessionId\":\"$sid\",\"sessionToken\":\"$stok\"}" ;;
mint) path=/projects/client/token body="{\"projectId\":\"$project\"}" ;;
verify) path=/projects/client/token-verify body="{\"projectId\":\"$project\",\"clientToken\":\"$token\"}" ;;
verify-uncached)
	path=/projects/client/token-verify body="{\"projectId\":\"$project\",\"clientToken\":\"%TOKEN%\"}"
	QZ_SECRET=$secret python3 - "$host" "$port" "$project" $((n + warmup)) >"$work/tokens" <<'PY'
import http.client, json, os, sys
conn = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]))
for k in range(int(sys.argv[4])):
    body = json.dumps({"projectId": sys.argv[3], "metadata": {"identifier": f"user{k}@example.com", "plan": "pro"}})
    conn.request("POST", "/projects/client/token", body=body,
                 headers={"Content-Type": "application/json", "Authorization": "Bearer " + os.environ["QZ_SECRET"]})
    print(json.loads(conn.getresponse().read())["clientToken"])
PY
	export QZ_TOKENS="$work/tokens" ;;
rl) path=/projects/client/rate-limit-check body="{\"projectId\":\"$project\",\"ip\":\"%IP%\",\"metadata\":{\"email\":\"u%N%@example.com\"}}" ;;
ato) path=/projects/client/ato-login-attempt body="{\"projectId\":\"$project\",\"identifier\":\"perf@example.com\",\"success\":true,\"ip\":\"203.0.113.9\",\"sessionId\":\"$sid\",\"sessionToken\":\"$stok\"}" ;;
ato-spread) path=/projects/client/ato-login-attempt body="{\"projectId\":\"$project\",\"identifier\":\"user%N%@example.com\",\"success\":%S%,\"ip\":\"%IP%\"}" warmup=2200 && export QZ_KEYS=2000 ;;
*) echo "unknown route $route (sv | mint | verify | verify-uncached | rl | ato | ato-spread | hello)" >&2; exit 2 ;;
esac
QZ_SECRET=$secret count "$path" "$host" "$port"
sleep 1
out=$(ls "$work"/cg.out.* | tail -1)
echo "$route: $(per_request "$out") instructions per request, $(per_request "$out" 'qyzar_engine::server::serve::{{closure}}::{{closure}}') in the engine's connection tasks ($(basename "$bin"), $n requests)"
case $route in ato*) echo "$route: $(per_request "$out" 'ato_writer::AtoWriter::journal_ato') in the anti-ATO journal's group commits (its thread's loop is inlined)" ;; esac
[ -n "${QYZAR_CALLGRIND_OUT:-}" ] && cp "$out" "$QYZAR_CALLGRIND_OUT"
exit 0

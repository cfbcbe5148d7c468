#!/usr/bin/env bash
# The project's test command (README and CI call this): starts the real
# backends the tests talk to, runs the whole workspace's tests, then
# schemathesis against both OpenAPI documents (deploy/schemathesis.sh) and
# the dashboard's browser test (deploy/ui-test.sh). Fails when any fails.
#
#   deploy/test.sh [extra cargo test args...]   e.g. deploy/test.sh -- --nocapture
#
# Servers are left running afterwards so re-runs start instantly; stop them
# with `deploy/cql-server.sh stop`, `deploy/pg-server.sh stop`,
# `deploy/smtp-sink.sh stop` and `deploy/stripe-mock.sh stop`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
started=$SECONDS

# Cassandra takes the longest to come up: start it in the background first,
# bring PostgreSQL up meanwhile, then wait for Cassandra.
cql_log="$(mktemp)"
trap 'rm -f "$cql_log"' EXIT
deploy/cql-server.sh start >"$cql_log" 2>&1 &
cql_job=$!
deploy/pg-server.sh start >/dev/null
deploy/smtp-sink.sh start # admin mail through real SMTP (aiosmtpd)
deploy/stripe-mock.sh start # admin billing against Stripe's API mock
QYZAR_TEST_CHROMIUM="$(deploy/chromium.sh)"; export QYZAR_TEST_CHROMIUM # connect.js browser test
QYZAR_TEST_GEOIP_DB="$(deploy/mmdb-fixture.sh)"; export QYZAR_TEST_GEOIP_DB # engine GeoIP tests
if ! wait "$cql_job"; then
	cat "$cql_log" >&2
	echo "deploy/test.sh: the CQL server did not start" >&2
	exit 1
fi
cat "$cql_log" >&2
echo "deploy/test.sh: backends up after $((SECONDS - started))s" >&2

eval "$(deploy/pg-server.sh env)"
eval "$(deploy/smtp-sink.sh env)"
export QYZAR_TEST_SMTP QYZAR_TEST_SMTP_DIR
eval "$(deploy/stripe-mock.sh env)"
eval "$(deploy/cql-server.sh env)"
export QYZAR_TEST_PG_URL QYZAR_TEST_CQL_NODE
# A port the CQL-kill test (engine/tests/api/cql_kill.rs) may start, SIGKILL,
# restart and stop its own Cassandra node on (~1.5 GiB while it runs). Never
# the shared node's port: other tests use that one concurrently.
export QYZAR_TEST_CQL_KILLABLE_PORT="${QYZAR_TEST_CQL_KILLABLE_PORT:-9142}"
# Tests must fail, not skip, when a backend they need is unreachable.
export QYZAR_TEST_REQUIRE_BACKENDS=1

# Per-test keyspaces (qz_test_*, qz_eng_*) are dropped by the tests that
# finish; a crashed or killed run can leave some behind. Sweep them so the
# node's schema does not grow from run to run.
cql_host=${QYZAR_TEST_CQL_NODE%:*}
cql_port=${QYZAR_TEST_CQL_NODE##*:}
python3 deploy/cql_ping.py "$cql_host" "$cql_port" --drop-keyspaces-with-prefix qz_eng_ >&2 || true
python3 deploy/cql_ping.py "$cql_host" "$cql_port" --drop-keyspaces-with-prefix qz_test_ >&2 || true

python3 deploy/check-manifests.py || { rc=$?; echo "deploy/test.sh: check-manifests exited $rc" >&2; exit "$rc"; } # deploy/ manifests vs. the code
status=0
cargo test --workspace --all-targets "$@" || status=$?
echo "deploy/test.sh: cargo test exited $status after $((SECONDS - started))s" >&2

# Both OpenAPI documents against a running `qyzar dev` (the debug binary
# cargo test just built): no 5xx, no answer the documents do not describe.
st_status=0
deploy/schemathesis.sh || st_status=$?
echo "deploy/test.sh: schemathesis exited $st_status" >&2

# The dashboard in headless Chromium against its own `qyzar dev` (the same
# debug binary): every page, CSP and console checked, screenshots kept in
# ${CARGO_TARGET_DIR:-target}/ui-screenshots/.
ui_status=0
deploy/ui-test.sh || ui_status=$?
echo "deploy/test.sh: ui-test exited $ui_status" >&2

echo "deploy/test.sh: total $((SECONDS - started))s" >&2
if [[ $status != 0 ]]; then exit "$status"; fi
if [[ $st_status != 0 ]]; then exit "$st_status"; fi
exit "$ui_status"

#!/usr/bin/env bash
# The engine-speed judgement (issue 14, BENCHMARKS.md): installs wrk if
# missing (Debian package), builds the release binary and runs the shared
# instrument, ../shared/perf/engine_ratios.py, against this checkout.
#
#   deploy/perf-ratios.sh [engine_ratios.py args...]
#   e.g. deploy/perf-ratios.sh --only ato-login-attempt,ato-login-attempt-spread --rounds 5
#   QYZAR_ENGINE_CQL_NODES=127.0.0.1:9042 deploy/perf-ratios.sh ...   # the engine over CQL
#
# Not part of the test command: it measures, it does not assert.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v wrk >/dev/null; then
	if [ "$(id -u)" = 0 ]; then apt-get install -y wrk >/dev/null; else sudo apt-get install -y wrk >/dev/null; fi
fi
perf="${QYZAR_PERF_DIR:-../shared/perf}"
[ -f "$perf/engine_ratios.py" ] || { echo "perf-ratios: no $perf/engine_ratios.py (set QYZAR_PERF_DIR)" >&2; exit 1; }
cargo build --release --bin qyzar
exec python3 "$perf/engine_ratios.py" . "$@"

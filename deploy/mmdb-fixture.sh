#!/usr/bin/env bash
# Makes the small MaxMind-format City database the engine's GeoIP tests
# read (engine/tests/api/geo.rs) and prints its path. There is no real
# GeoLite2 file to download here, so deploy/mmdb_fixture.py writes one
# with PyPI's `mmdb-writer`, installed in a private venv.
#
# Idempotent: the venv is made once, and the file is rewritten only when it
# is missing or older than the script that writes it.
#
# Usage: deploy/mmdb-fixture.sh [OUT.mmdb]
#   default OUT: ${QYZAR_CACHE:-~/.cache/qyzar}/mmdb/geolite2-city-test.mmdb
#   (named apart from the older Country-shaped fixture, which other
#   checkouts sharing the cache may still expect)
set -euo pipefail

log() { printf 'mmdb-fixture: %s\n' "$*" >&2; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${QYZAR_CACHE:-$HOME/.cache/qyzar}"
venv="$cache/mmdb-venv"
writer_version="0.2.7" # mmdb-writer; pinned so the fixture's bytes stay the same
out="${1:-$cache/mmdb/geolite2-city-test.mmdb}"
script="$here/mmdb_fixture.py"

if ! "$venv/bin/python" -c 'import mmdb_writer' >/dev/null 2>&1 ||
	[[ "$("$venv/bin/python" -m pip show mmdb-writer 2>/dev/null | sed -n 's/^Version: //p')" != "$writer_version" ]]; then
	if [[ ! -x "$venv/bin/python" ]]; then
		log "creating the venv $venv"
		mkdir -p "$cache"
		if ! python3 -m venv "$venv" >&2; then
			# Debian's python3 needs python3-venv for ensurepip.
			rm -rf "$venv"
			sudo=()
			[[ $(id -u) -eq 0 ]] || sudo=(sudo)
			"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv >&2
			python3 -m venv "$venv" >&2
		fi
	fi
	log "installing mmdb-writer==$writer_version"
	"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "mmdb-writer==$writer_version" >&2
fi

if [[ ! -s "$out" || "$script" -nt "$out" ]]; then
	mkdir -p "$(dirname "$out")"
	"$venv/bin/python" "$script" "$out"
	log "wrote $out"
fi
echo "$out"

#!/usr/bin/env bash
# Makes sure Debian's headless-capable Chromium is installed, for the
# browser test of connect.js (engine/tests/api/browser.rs), and prints its
# path. Idempotent: when `chromium` is already on PATH it only prints it.
#
# Usage: deploy/chromium.sh
set -euo pipefail

log() { printf 'chromium: %s\n' "$*" >&2; }

if ! command -v chromium >/dev/null 2>&1; then
	sudo=()
	[[ $(id -u) -eq 0 ]] || sudo=(sudo)
	log "installing Debian's chromium package"
	# Updating the package lists is slow: only when the plain install fails.
	if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >&2; then
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update >&2
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >&2
	fi
fi
path="$(command -v chromium)" || {
	log "error: chromium is not on PATH after the install"
	exit 1
}
echo "$path"

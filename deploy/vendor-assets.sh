#!/usr/bin/env bash
# Refreshes the dashboard's vendored front-end files (admin/assets/vendor/)
# from the npm registry and rewrites admin/assets/vendor/manifest.json with
# each file's package, version, sha256 and tarball URL. The admin embeds
# these files (admin/src/ui/assets.rs) and a unit test checks every embedded
# file against the manifest, so `cargo run` needs no npm and a changed file
# cannot slip in unnoticed.
#
# Usage: deploy/vendor-assets.sh            fetch the pinned versions below
#        HTMX=2.0.9 deploy/vendor-assets.sh  another version (then commit)
#
# Each tarball's integrity (the registry's sha512 `dist.integrity`) is
# checked before a file is taken out of it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
HTMX="${HTMX:-2.0.11}"
UPLOT="${UPLOT:-1.6.32}"
out=admin/assets/vendor
# package|version|path inside the tarball|vendored file name
files=(
	"htmx.org|$HTMX|package/dist/htmx.min.js|htmx-$HTMX.min.js"
	"uplot|$UPLOT|package/dist/uPlot.iife.min.js|uPlot-$UPLOT.iife.min.js"
	"uplot|$UPLOT|package/dist/uPlot.min.css|uPlot-$UPLOT.min.css"
)

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"
rm -f "$out"/*.js "$out"/*.css

entries=()
for f in "${files[@]}"; do
	IFS='|' read -r pkg ver inner name <<<"$f"
	url="$(npm view "$pkg@$ver" dist.tarball)"
	integrity="$(npm view "$pkg@$ver" dist.integrity)"
	tgz="$tmp/$pkg-$ver.tgz"
	[[ -f $tgz ]] || curl -fsSL "$url" -o "$tgz"
	got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
	if [[ $got != "$integrity" ]]; then
		echo "vendor-assets: $pkg@$ver tarball integrity mismatch ($got != $integrity)" >&2
		exit 1
	fi
	tar -xzf "$tgz" -C "$tmp" "$inner"
	cp "$tmp/$inner" "$out/$name"
	sum="$(sha256sum "$out/$name" | cut -d' ' -f1)"
	entries+=("$(printf '    {"package": "%s", "version": "%s", "file": "%s", "sha256": "%s", "tarball": "%s"}' "$pkg" "$ver" "$name" "$sum" "$url")")
	echo "vendor-assets: $name $sum" >&2
done

{
	echo '{'
	echo '  "files": ['
	for i in "${!entries[@]}"; do
		sep=','
		[[ $i -eq $((${#entries[@]} - 1)) ]] && sep=''
		echo "${entries[$i]}$sep"
	done
	echo '  ]'
	echo '}'
} >"$out/manifest.json"
echo "vendor-assets: wrote $out/manifest.json; update admin/src/ui/assets.rs if a file name changed" >&2

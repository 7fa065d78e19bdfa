#!/usr/bin/env bash
# scripts/fuzz.sh: run every native fuzz target of the module for FUZZTIME
# each (default 30s). CI runs it briefly (FUZZTIME=5s); run it longer on
# demand: FUZZTIME=10m bash scripts/fuzz.sh. A failing input is written to
# the package's testdata/fuzz, where it stays as a regression test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
fuzztime=${FUZZTIME:-30s}
# List first, so that a package that does not compile fails the script
# instead of silently dropping its targets.
list=$(go test -list '^Fuzz' ./...)
found=0
while read -r pkg names; do
	for name in $names; do
		found=1
		echo "==> $pkg $name ($fuzztime)"
		go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg"
	done
done < <(awk '/^Fuzz/ { names = names " " $1; next } /^ok / { if (names != "") print $2 names; names = "" }' <<<"$list")
if ((!found)); then
	echo "no fuzz targets found" >&2
	exit 1
fi

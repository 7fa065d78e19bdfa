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
		# Go's fuzzer can end a run that found nothing with "context deadline
		# exceeded" when -fuzztime expires while it coordinates its workers
		# (golang/go#56238): such a run, with no failing input written, is
		# run once more; a real finding fails at once.
		if ! out=$(go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" 2>&1); then
			echo "$out"
			if grep -q 'context deadline exceeded' <<<"$out" && ! grep -q 'Failing input written' <<<"$out"; then
				echo "==> $pkg $name: the fuzzer timed out stopping, with no finding; once more"
				go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg"
			else
				exit 1
			fi
		else
			echo "$out"
		fi
	done
done < <(awk '/^Fuzz/ { names = names " " $1; next } /^ok / { if (names != "") print $2 names; names = "" }' <<<"$list")
if ((!found)); then
	echo "no fuzz targets found" >&2
	exit 1
fi

#!/usr/bin/env bash
# scripts/fuzz.sh: run every native fuzz target of the module for FUZZTIME
# each (default 30s). CI runs it briefly (FUZZTIME=5s); run it longer on
# demand: FUZZTIME=10m bash scripts/fuzz.sh. A failing input is written to
# the package's testdata/fuzz, where it stays as a regression test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
fuzztime=${FUZZTIME:-30s}
# The targets are found in the sources (a `func FuzzX(` in a _test.go
# file), not with `go test -list`, which builds every package's test binary
# without -race only to list them (about 5 minutes of a CI run); a package
# that does not compile fails its own fuzz run below.
list=$({ grep -rHoP '^func \KFuzz\w+(?=\()' --include='*_test.go' --exclude-dir=testdata --exclude-dir=.git --exclude-dir=vendor . || true; } |
	awk -F: '{ dir = $1; sub(/\/[^\/]*$/, "", dir); names[dir] = names[dir] " " $2 } END { for (d in names) print d names[d] }' | sort)
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
done <<<"$list"
if ((!found)); then
	echo "no fuzz targets found" >&2
	exit 1
fi

#!/usr/bin/env bash
# scripts/test.sh: THE test command of the project (make test and CI run it).
#
#   1. scripts/services.sh      Redis and PostgreSQL answer on loopback
#      scripts/clients.sh       Node, PHP and their Redis clients, for the producer packages' tests
#   2. go vet ./...
#   3. gofmt check              fails listing the files gofmt would change
#   4. go test -race -count=1 -timeout 20m ./...
#
# Arguments, if any, replace ./... in step 4 (e.g. scripts/test.sh -run TestX ./counters).
# NUDGE_REDIS_PORT / NUDGE_PG_PORT (see scripts/services.sh) also point the tests
# at those ports through NUDGE_TEST_REDIS_ADDR / NUDGE_TEST_DATABASE_URL, unless
# those are set already.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

step "services"
scripts/services.sh

step "clients"
scripts/clients.sh

if [[ -n ${NUDGE_REDIS_PORT:-} && -z ${NUDGE_TEST_REDIS_ADDR:-} ]]; then
	export NUDGE_TEST_REDIS_ADDR=127.0.0.1:$NUDGE_REDIS_PORT
fi
if [[ -n ${NUDGE_PG_PORT:-} && -z ${NUDGE_TEST_DATABASE_URL:-} ]]; then
	export NUDGE_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$NUDGE_PG_PORT/postgres?sslmode=disable"
fi

step "go vet ./..."
go vet ./...

step "gofmt check"
mapfile -t unformatted < <(
	find . -name '*.go' -not -path './.git/*' -not -path './vendor/*' -not -path '*/testdata/*' -print0 |
		xargs -0 -r gofmt -l
)
if ((${#unformatted[@]})); then
	echo "gofmt would change these files (run: gofmt -w <file>):" >&2
	printf '  %s\n' "${unformatted[@]}" >&2
	exit 1
fi
echo "ok"

pkgs=("$@")
((${#pkgs[@]})) || pkgs=(./...)
step "go test -race -count=1 -timeout 20m ${pkgs[*]}"
go test -race -count=1 -timeout 20m "${pkgs[@]}"

#!/usr/bin/env bash
# scripts/clients.sh: install what the tests of the producer packages need
# (clients/clients_test.go runs them), on a fresh Debian 12 machine as on a
# developer's: Node.js with npm, PHP with phpredis and Predis, from Debian's
# packages when absent (apt-get, with sudo when not root); then node-redis
# and ioredis from npm into clients/node/node_modules, exactly as
# clients/node/package-lock.json pins them (npm ci), when they are not
# there yet. Anything already installed is used as it is.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'clients: %s\n' "$*"; }
die() { printf 'clients: ERROR: %s\n' "$*" >&2; exit 1; }

missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v php >/dev/null 2>&1 || missing+=(php-cli)
if ! command -v php >/dev/null 2>&1 || ! php -m 2>/dev/null | grep -qx redis; then missing+=(php-redis); fi
[[ -f /usr/share/php/Predis/Autoloader.php ]] || missing+=(php-nrk-predis)

if ((${#missing[@]})); then
	SUDO=()
	if [[ $(id -u) -ne 0 ]]; then
		command -v sudo >/dev/null 2>&1 || die "need ${missing[*]} but not root and no sudo: install them yourself (apt-get install ${missing[*]})"
		SUDO=(sudo)
	fi
	command -v apt-get >/dev/null 2>&1 || die "need ${missing[*]} but apt-get is absent: install them yourself"
	say "apt-get update"
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	say "installing ${missing[*]}"
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

lock=clients/node/package-lock.json
stamp=clients/node/node_modules/.package-lock.json
if [[ ! -f $stamp || $lock -nt $stamp ]]; then
	say "npm ci (clients/node: node-redis, ioredis)"
	(cd clients/node && npm ci --no-audit --no-fund --loglevel=error)
fi
say "ready: node $(node --version), $(php -r 'echo "php ", PHP_VERSION, ", phpredis ", phpversion("redis");'), predis $(sed -n "s/.*VERSION = '\(.*\)'.*/\1/p" /usr/share/php/Predis/Client.php 2>/dev/null || echo '?')"

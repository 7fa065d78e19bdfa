#!/usr/bin/env bash
# scripts/services.sh: make sure Redis and PostgreSQL answer on loopback for the
# tests and the demo, on a fresh Debian 12 machine as on a developer's machine.
#
# Usage:
#   scripts/services.sh [start] [--chromium]   ensure both services answer (default)
#   scripts/services.sh stop                   stop only what this script started
#   scripts/services.sh status                 say what answers, change nothing
#
# start: a server that already answers on the expected address is reused as it
# is. Otherwise missing Debian packages are installed (apt-get, with sudo when
# not root) and a server is started without touching anyone's data:
#   - Redis: a private redis-server (no persistence) with its dir, log and pid
#     file under the state dir;
#   - PostgreSQL: a Debian cluster on that port that is down is started with
#     pg_ctlcluster; if there is none, a private data directory is made with
#     initdb (as the postgres user when we are root) with trust auth on
#     loopback, its socket in that directory, and started with pg_ctl.
# --chromium also installs Debian's chromium and chromium-driver when
# /usr/bin/chromium is absent (for browser tests).
#
# Environment:
#   NUDGE_REDIS_PORT   Redis port on 127.0.0.1 (default 6379)
#   NUDGE_PG_PORT      PostgreSQL port on 127.0.0.1 (default 5432)
#   NUDGE_STATE_DIR    private state dir (default $HOME/.cache/nudge, or
#                      /tmp/nudge-$UID without HOME). As root the private
#                      PostgreSQL data lives in /var/tmp/nudge-pg/<port>
#                      instead, owned by the postgres user.
#   NUDGE_SERVICES_TIMEOUT  seconds to wait for both to answer (default 30)
#
# Tests reach the servers through NUDGE_TEST_REDIS_ADDR and
# NUDGE_TEST_DATABASE_URL; scripts/test.sh derives them from the ports above.
set -euo pipefail

REDIS_PORT=${NUDGE_REDIS_PORT:-6379}
PG_PORT=${NUDGE_PG_PORT:-5432}
TIMEOUT=${NUDGE_SERVICES_TIMEOUT:-30}
if [[ -n ${NUDGE_STATE_DIR:-} ]]; then
	STATE_DIR=$NUDGE_STATE_DIR
elif [[ -n ${HOME:-} ]]; then
	STATE_DIR=$HOME/.cache/nudge
else
	STATE_DIR=/tmp/nudge-$(id -u)
fi
PG_URL="postgres://postgres@127.0.0.1:${PG_PORT}/postgres?sslmode=disable"

for p in "$REDIS_PORT" "$PG_PORT"; do
	[[ $p =~ ^[0-9]+$ ]] || { echo "services: bad port '$p'" >&2; exit 2; }
done

say() { printf 'services: %s\n' "$*"; }
die() { printf 'services: ERROR: %s\n' "$*" >&2; exit 1; }
is_root() { [[ $(id -u) -eq 0 ]]; }

# ---------------------------------------------------------------- probes

# redis_up: something answers PING on 127.0.0.1:REDIS_PORT.
redis_up() {
	if command -v redis-cli >/dev/null 2>&1; then
		[[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
	else
		# No client yet: speak the protocol by hand (in a subshell, so a
		# refused connection cannot end the script).
		local reply
		reply=$({ exec 8<>"/dev/tcp/127.0.0.1/$REDIS_PORT" && printf 'PING\r\n' >&8 &&
			IFS= read -r -t 2 line <&8 && printf '%s' "$line"; } 2>/dev/null) || true
		[[ $reply == "+PONG"* ]]
	fi
}

# pg_up: a PostgreSQL server accepts connections on 127.0.0.1:PG_PORT.
pg_up() {
	if command -v pg_isready >/dev/null 2>&1; then
		pg_isready -q -h 127.0.0.1 -p "$PG_PORT" -t 2 >/dev/null 2>&1
	else
		# No client yet: an open port is the best we can tell.
		(exec 8<>"/dev/tcp/127.0.0.1/$PG_PORT") 2>/dev/null
	fi
}

# pid_alive PID NAME: PID runs and its command line mentions NAME.
pid_alive() {
	[[ $1 =~ ^[0-9]+$ ]] && kill -0 "$1" 2>/dev/null &&
		tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q -- "$2"
}

# ---------------------------------------------------------------- installs

SUDO=()
APT_UPDATED=0
apt_install() {
	if ! is_root; then
		command -v sudo >/dev/null 2>&1 ||
			die "need to install $* but not root and no sudo: install them yourself (apt-get install $*)"
		SUDO=(sudo)
	fi
	command -v apt-get >/dev/null 2>&1 || die "need $* but apt-get is absent: install them yourself"
	if [[ $APT_UPDATED -eq 0 ]]; then
		say "apt-get update"
		"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq 9>&-
		APT_UPDATED=1
	fi
	say "installing $*"
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 9>&-
}

pg_bindir() {
	local d
	d=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
	if [[ -n $d && -x $d/initdb ]]; then
		echo "$d"
	elif command -v pg_config >/dev/null 2>&1 && [[ -x $(pg_config --bindir)/initdb ]]; then
		pg_config --bindir
	fi
}

# ---------------------------------------------------------------- redis

redis_pidfile() { echo "$STATE_DIR/redis-$REDIS_PORT.pid"; }

start_redis() {
	if redis_up; then
		local pid
		pid=$(cat "$(redis_pidfile)" 2>/dev/null || true)
		if [[ -n $pid ]] && pid_alive "$pid" redis-server; then
			say "Redis 127.0.0.1:$REDIS_PORT answers (private instance started earlier, pid $pid)"
		else
			say "Redis 127.0.0.1:$REDIS_PORT answers: reusing it"
		fi
		return
	fi
	if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
		apt_install redis-server redis-tools
		# The package may have started its own server on the default port.
		if redis_up; then
			say "Redis 127.0.0.1:$REDIS_PORT answers after install: reusing it"
			return
		fi
	fi
	local dir=$STATE_DIR/redis-$REDIS_PORT
	mkdir -p "$dir"
	[[ -f $dir/redis.log ]] && mv -f "$dir/redis.log" "$dir/redis.log.1"
	say "starting a private Redis on 127.0.0.1:$REDIS_PORT (dir $dir, no persistence)"
	redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" \
		--save "" --appendonly no --dir "$dir" \
		--logfile "$dir/redis.log" --pidfile "$(redis_pidfile)" >/dev/null 9>&-
	STARTED_REDIS=1
}

# ---------------------------------------------------------------- postgres

# Runs a command as the owner of private PostgreSQL data: the postgres user
# when we are root (PostgreSQL refuses to run as root), else ourselves.
as_pg() {
	if ! is_root; then
		"$@"
	elif command -v runuser >/dev/null 2>&1; then
		runuser -u postgres -- "$@"
	else
		su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
	fi
}

pg_home() {
	if is_root; then echo "/var/tmp/nudge-pg/$PG_PORT"; else echo "$STATE_DIR/pg-$PG_PORT"; fi
}
pg_pidfile() { echo "$STATE_DIR/postgres-$PG_PORT.pid"; }
pg_howfile() { echo "$STATE_DIR/postgres-$PG_PORT.how"; }

# The Debian cluster ("<ver> <name> <status>") configured for PG_PORT, if any.
pg_cluster_on_port() {
	command -v pg_lsclusters >/dev/null 2>&1 || return 0
	pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p { print $1, $2, $4, $6; exit }'
}

# Runs a command as root for a Debian cluster: directly, or through sudo.
as_root() {
	if is_root || ! command -v sudo >/dev/null 2>&1; then "$@"; else sudo "$@"; fi
}

# Lets the role postgres in over loopback TCP without a password. Only used on
# a cluster that this very run created by installing the postgresql package
# (Debian's default pg_hba.conf asks for a password on TCP).
pg_trust_loopback() {
	local hba=/etc/postgresql/$1/$2/pg_hba.conf
	as_root test -f "$hba" || return 0
	as_root grep -q '# nudge: trust loopback' "$hba" && return 0
	say "fresh cluster $1/$2: trusting role postgres on loopback in $hba"
	local tmp
	tmp=$(mktemp)
	{
		echo '# nudge: trust loopback (added by scripts/services.sh for the tests)'
		echo 'host all postgres 127.0.0.1/32 trust'
		echo 'host all postgres ::1/128 trust'
		as_root cat "$hba"
	} >"$tmp"
	as_root tee "$hba" <"$tmp" >/dev/null # keeps owner and mode
	rm -f "$tmp"
}

record_pg() { # record_pg HOW PID
	echo "$1" >"$(pg_howfile)"
	echo "$2" >"$(pg_pidfile)"
}

start_postgres() {
	if pg_up; then
		local pid
		pid=$(cat "$(pg_pidfile)" 2>/dev/null || true)
		if [[ -n $pid ]] && pid_alive "$pid" postgres; then
			say "PostgreSQL 127.0.0.1:$PG_PORT answers (started earlier by this script, pid $pid)"
		else
			say "PostgreSQL 127.0.0.1:$PG_PORT answers: reusing it"
		fi
		return
	fi
	# fresh=1: the server package was absent, so a Debian cluster found below
	# was made by this install and holds nobody's data.
	local fresh=0
	[[ -n $(pg_bindir) ]] || fresh=1
	if ((fresh)) || ! command -v pg_isready >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
		apt_install postgresql postgresql-client
	fi
	local bindir
	bindir=$(pg_bindir)
	[[ -n $bindir ]] || die "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"

	local cluster ver name status datadir
	cluster=$(pg_cluster_on_port)
	if [[ -n $cluster ]]; then
		read -r ver name status datadir <<<"$cluster"
		if ((fresh)); then
			pg_trust_loopback "$ver" "$name"
			if [[ $status == online* ]]; then
				as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" reload 9>&-
			fi
		fi
		if pg_up; then
			say "PostgreSQL 127.0.0.1:$PG_PORT answers after install: reusing it"
			return
		fi
		if [[ $status == down* ]]; then
			say "starting Debian cluster $ver/$name on port $PG_PORT"
			as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start 9>&-
			record_pg "cluster $ver $name" "$(as_root head -n 1 "$datadir/postmaster.pid" 2>/dev/null || true)"
			STARTED_PG=1
			return
		fi
		# Online but not answering on 127.0.0.1: a private server would
		# collide with it on the port, so say so.
		die "Debian cluster $ver/$name is $status on port $PG_PORT but 127.0.0.1:$PG_PORT does not answer (check listen_addresses in /etc/postgresql/$ver/$name/postgresql.conf)"
	fi

	start_private_postgres "$bindir"
}

start_private_postgres() {
	local bindir=$1 home data log major
	home=$(pg_home)
	data=$home/data
	log=$home/postgres.log
	major=$(basename "$(dirname "$bindir")")

	if is_root; then
		id postgres >/dev/null 2>&1 || die "user postgres does not exist (install the postgresql package)"
		install -d -o postgres -g postgres -m 0700 /var/tmp/nudge-pg "$home"
	else
		mkdir -p "$home"
		chmod 0700 "$home"
	fi

	if [[ -f $data/PG_VERSION && $(cat "$data/PG_VERSION") != "$major" ]]; then
		say "private data dir $data is from PostgreSQL $(cat "$data/PG_VERSION"), not $major: recreating it"
		rm -rf "$data"
	fi
	if [[ ! -f $data/PG_VERSION ]]; then
		say "creating a private PostgreSQL $major data dir $data (initdb)"
		rm -rf "$data"
		as_pg "$bindir/initdb" -D "$data" -U postgres -A trust -E UTF8 --no-locale >"$home/initdb.log" 2>&1 ||
			{ cat "$home/initdb.log" >&2; die "initdb failed"; }
		# Throwaway test data: durability off, loopback only, socket kept private.
		as_pg sh -c "cat >>'$data/postgresql.conf'" <<EOF

# nudge: private test instance made by scripts/services.sh
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$data'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
	fi
	say "starting private PostgreSQL on 127.0.0.1:$PG_PORT (data $data, log $log)"
	as_pg "$bindir/pg_ctl" -D "$data" -l "$log" -w -t "$TIMEOUT" start >/dev/null 9>&- ||
		{ tail -n 20 "$log" >&2 || true; die "pg_ctl start failed (log: $log)"; }
	record_pg "private $bindir $data" "$(head -n 1 "$data/postmaster.pid")"
	STARTED_PG=1
}

# ---------------------------------------------------------------- wait

wait_ready() {
	local deadline=$((SECONDS + TIMEOUT)) r=0 p=0
	while ((SECONDS < deadline)); do
		redis_up && r=1 || r=0
		pg_up && p=1 || p=0
		((r && p)) && return 0
		# A private Redis that gave up (port taken, bad dir...) will not come back.
		if ((STARTED_REDIS && !r)) && grep -qE 'aborting|Fatal|FATAL' "$STATE_DIR/redis-$REDIS_PORT/redis.log" 2>/dev/null; then
			break
		fi
		sleep 0.2
	done
	if ((!r)); then
		tail -n 20 "$STATE_DIR/redis-$REDIS_PORT/redis.log" >&2 2>/dev/null || true
		echo "services: ERROR: Redis does not answer on 127.0.0.1:$REDIS_PORT" >&2
	fi
	((p)) || echo "services: ERROR: PostgreSQL does not answer on 127.0.0.1:$PG_PORT" >&2
	exit 1
}

# The tests log in as postgres over TCP without a password.
check_pg_login() {
	command -v psql >/dev/null 2>&1 || { say "psql absent: not checking the login of role postgres"; return; }
	local out
	if out=$(psql -X -q -w -At -d "$PG_URL" -c 'select 1' 2>&1); then
		return
	fi
	if [[ -n ${NUDGE_TEST_DATABASE_URL:-} ]]; then
		say "warning: $PG_URL refuses a password-less login ($out); the tests use NUDGE_TEST_DATABASE_URL"
		return
	fi
	die "PostgreSQL on 127.0.0.1:$PG_PORT answers but the tests cannot log in as $PG_URL: $out
  Fix: allow role postgres over loopback with trust (a line 'host all postgres 127.0.0.1/32 trust' at the top of pg_hba.conf, then reload),
  or point the tests elsewhere with NUDGE_TEST_DATABASE_URL, or use another port (NUDGE_PG_PORT=5442) to get a private server."
}

# ---------------------------------------------------------------- commands

lock_state() {
	mkdir -p "$STATE_DIR"
	if command -v flock >/dev/null 2>&1; then
		# Servers started below must not inherit fd 9 (they would hold the
		# lock for their whole life): each start closes it with 9>&-.
		exec 9>"$STATE_DIR/.lock"
		flock -w 120 9 || die "another scripts/services.sh holds $STATE_DIR/.lock"
	fi
}

cmd_start() {
	local chromium=$1
	lock_state
	STARTED_REDIS=0 STARTED_PG=0
	start_redis
	start_postgres
	wait_ready
	check_pg_login
	if [[ $chromium -eq 1 ]]; then
		if [[ -x /usr/bin/chromium ]]; then
			say "chromium present: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
		else
			apt_install chromium chromium-driver
		fi
	fi
	local started=""
	((STARTED_REDIS)) && started+=" Redis"
	((STARTED_PG)) && started+=" PostgreSQL"
	say "ready: Redis 127.0.0.1:$REDIS_PORT, PostgreSQL $PG_URL${started:+ (started:$started; 'scripts/services.sh stop' stops them)}"
}

cmd_stop() {
	lock_state
	local stopped=0 f pid
	for f in "$STATE_DIR"/redis-*.pid; do
		[[ -f $f ]] || continue
		pid=$(cat "$f")
		local port=${f##*/redis-}
		port=${port%.pid}
		if pid_alive "$pid" redis-server; then
			say "stopping private Redis on 127.0.0.1:$port (pid $pid)"
			kill -TERM "$pid"
			local deadline=$((SECONDS + TIMEOUT))
			while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
			kill -0 "$pid" 2>/dev/null && die "Redis pid $pid did not stop"
			stopped=1
		fi
		rm -f "$f"
	done
	for f in "$STATE_DIR"/postgres-*.pid; do
		[[ -f $f ]] || continue
		pid=$(cat "$f")
		local how=${f%.pid}.how kind a b
		read -r kind a b <"$how" || true
		if pid_alive "$pid" postgres; then
			case $kind in
			private)
				say "stopping private PostgreSQL (data $b, pid $pid)"
				as_pg "$a/pg_ctl" -D "$b" -m fast -w stop >/dev/null
				;;
			cluster)
				say "stopping Debian cluster $a/$b (pid $pid), which was down before"
				as_root pg_ctlcluster --skip-systemctl-redirect "$a" "$b" stop
				;;
			*) say "unknown record $how: leaving pid $pid alone" ;;
			esac
			stopped=1
		fi
		rm -f "$f" "$how"
	done
	((stopped)) || say "nothing started by this script runs (state dir $STATE_DIR)"
}

cmd_status() {
	if redis_up; then say "Redis 127.0.0.1:$REDIS_PORT: answers"; else say "Redis 127.0.0.1:$REDIS_PORT: down"; fi
	if pg_up; then say "PostgreSQL 127.0.0.1:$PG_PORT: answers"; else say "PostgreSQL 127.0.0.1:$PG_PORT: down"; fi
	local f
	for f in "$STATE_DIR"/redis-*.pid "$STATE_DIR"/postgres-*.pid; do
		[[ -f $f ]] && say "started by this script: ${f##*/} = $(cat "$f")"
	done
	return 0
}

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

main() {
	local cmd=start chromium=0
	while (($#)); do
		case $1 in
		start | stop | status) cmd=$1 ;;
		--chromium) chromium=1 ;;
		-h | --help) usage; exit 0 ;;
		*) usage >&2; die "unknown argument '$1'" ;;
		esac
		shift
	done
	case $cmd in
	start) cmd_start "$chromium" ;;
	stop) cmd_stop ;;
	status) cmd_status ;;
	esac
}

main "$@"

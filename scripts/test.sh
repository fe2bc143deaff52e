#!/usr/bin/env bash
# The test command, for people and for CI (.ci/run calls exactly this):
#
#   ./scripts/test.sh                 # everything
#   ./scripts/test.sh -run Cluster    # extra flags go to `go test`
#
# 1. makes sure what the integration tests use is there, starting or
#    installing it when it is not, and failing loudly when it cannot:
#    Redis and RabbitMQ on 127.0.0.1 (unless PARLEY_TEST_REDIS_URL /
#    PARLEY_TEST_AMQP_URL point elsewhere), nginx and Chromium from Debian;
# 2. checks formatting, vets (with and without the integration tag);
# 3. runs every test with the race detector and the integration tag, which
#    turns on the tests that use the real services.
# Each step prints its time, and a summary comes at the end.
#
# Starting services and installing packages needs root (or password-less
# sudo). Works the same with CI=true on a clean clone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian's daemons and tools live in sbin, which a normal user's PATH lacks.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# ---------------------------------------------------------------- helpers

timings=()
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

die() {
	printf '\n*** scripts/test.sh: %s\n' "$*" >&2
	exit 1
}

# step NAME COMMAND...: runs one step, timed; a failing step ends the run.
step() {
	local name=$1 start rc=0
	shift
	printf '\n==> %s\n' "$name"
	start=$(now)
	"$@" || rc=$?
	timings+=("$(printf '%-34s %8s  %s' "$name" "$(elapsed "$start")" "$([ $rc -eq 0 ] && echo ok || echo FAILED)")")
	if [ $rc -ne 0 ]; then
		printf '<== %s FAILED (exit %d) after %s\n' "$name" "$rc" "$(elapsed "$start")" >&2
		exit $rc
	fi
	printf '<== %s ok (%s)\n' "$name" "$(elapsed "$start")"
}

summary() {
	local rc=$?
	if [ ${#timings[@]} -gt 0 ]; then
		printf '\n---- scripts/test.sh: %s after %s\n' "$([ $rc -eq 0 ] && echo PASS || echo FAIL)" "$(elapsed "$run_start")"
		printf '  %s\n' "${timings[@]}"
	fi
}
run_start=$(now)
trap summary EXIT

# as_root COMMAND...: runs a command as root, directly or through sudo.
as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
		sudo -n "$@"
	else
		die "need root (or password-less sudo) to run: $*"
	fi
}

# wait_until SECONDS COMMAND...: polls COMMAND every half second until it
# succeeds; fails after SECONDS.
wait_until() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		[ $SECONDS -lt $deadline ] || return 1
		sleep 0.5
	done
}

# tcp_open PORT: whether something accepts connections on 127.0.0.1:PORT.
tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------- services

ensure_packages() {
	local missing=()
	command -v nginx >/dev/null 2>&1 || missing+=(nginx)
	command -v chromium >/dev/null 2>&1 || missing+=(chromium)
	# Debian's nodejs package installs both node and nodejs; the browser
	# client's logic is tested with node's built-in test runner.
	command -v node >/dev/null 2>&1 || missing+=(nodejs)
	if [ ${#missing[@]} -eq 0 ]; then
		echo "nginx: $(command -v nginx) ($(nginx -v 2>&1)); chromium: $(command -v chromium); node: $(node --version)"
		return
	fi
	command -v apt-get >/dev/null 2>&1 ||
		die "${missing[*]} missing and there is no apt-get: install them by hand"
	echo "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# The package lists of a fresh machine may be missing or stale.
	if ! as_root apt-get install -y "${missing[@]}"; then
		echo "apt-get install failed; updating the package lists and trying again"
		as_root apt-get update || die "apt-get update failed"
		as_root apt-get install -y "${missing[@]}" || die "apt-get install -y ${missing[*]} failed"
	fi
	for cmd in "${missing[@]}"; do
		command -v "$cmd" >/dev/null 2>&1 || die "$cmd is still not in PATH after installing it"
	done
}

redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }

ensure_redis() {
	if [ -n "${PARLEY_TEST_REDIS_URL:-}" ]; then
		echo "PARLEY_TEST_REDIS_URL is set: the tests use that Redis, not starting a local one"
		return
	fi
	command -v redis-cli >/dev/null 2>&1 || die "redis-cli not found: apt-get install -y redis-server"
	if redis_up; then
		echo "Redis answers on 127.0.0.1:6379"
		return
	fi
	command -v redis-server >/dev/null 2>&1 ||
		die "Redis is not running on 127.0.0.1:6379 and redis-server is not installed: apt-get install -y redis-server"
	echo "Redis is not running; starting it"
	as_root mkdir -p /var/lib/redis /var/log/redis || die "cannot create /var/lib/redis and /var/log/redis"
	as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
		--dir /var/lib/redis --logfile /var/log/redis/ci.log ||
		die "redis-server failed to start; see /var/log/redis/ci.log"
	if ! wait_until 30 redis_up; then
		tail -n 20 /var/log/redis/ci.log >&2 || true
		die "Redis did not answer PING within 30s (log above: /var/log/redis/ci.log)"
	fi
	echo "Redis started"
}

rabbitmq_up() {
	# await_startup fails at once when no node runs, and waits while one boots.
	timeout 40 rabbitmqctl -q await_startup --timeout 30 >/dev/null 2>&1 && tcp_open 5672
}

ensure_rabbitmq() {
	if [ -n "${PARLEY_TEST_AMQP_URL:-}" ]; then
		echo "PARLEY_TEST_AMQP_URL is set: the tests use that RabbitMQ, not starting a local one"
		return
	fi
	command -v rabbitmqctl >/dev/null 2>&1 || die "rabbitmqctl not found: apt-get install -y rabbitmq-server"
	if rabbitmq_up; then
		echo "RabbitMQ answers on 127.0.0.1:5672"
		return
	fi
	command -v rabbitmq-server >/dev/null 2>&1 ||
		die "RabbitMQ is not running and rabbitmq-server is not installed: apt-get install -y rabbitmq-server"
	echo "RabbitMQ is not running; starting it"
	as_root rabbitmq-server -detached || die "rabbitmq-server -detached failed; see /var/log/rabbitmq/"
	# Until the Erlang node is up, await_startup cannot reach it and fails at
	# once: poll it.
	if ! wait_until 150 rabbitmq_up; then
		tail -n 30 /var/log/rabbitmq/*.log >&2 2>/dev/null || true
		die "RabbitMQ did not finish starting within 150s (logs in /var/log/rabbitmq/)"
	fi
	echo "RabbitMQ started"
}

# ---------------------------------------------------------------- Go

check_gofmt() {
	local files
	# As the go command does, skip testdata and directories starting with "."
	# or "_".
	files=$(find . \( -name testdata -o -name '.?*' -o -name '_*' \) -prune -o -name '*.go' -print0 |
		xargs -0 -r gofmt -l) || return 1
	if [ -n "$files" ]; then
		echo "not gofmt'ed (run gofmt -w on them):" >&2
		echo "$files" >&2
		return 1
	fi
}

# ---------------------------------------------------------------- run

# Sourced (to try a helper by hand): define the functions, run nothing.
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0


echo "scripts/test.sh in $(pwd) ($(go version)${CI:+, CI=$CI})"
step "packages (nginx, chromium)" ensure_packages
step "redis" ensure_redis
step "rabbitmq" ensure_rabbitmq
step "go mod download" go mod download
step "gofmt" check_gofmt
step "go vet" go vet ./...
step "go vet -tags integration" go vet -tags integration ./...
step "go test -race -tags integration" go test -race -count=1 -timeout 20m -tags integration "$@" ./...
step "browser client logic (node --test)" node --test web/test/
# Short fuzz runs: the seeds are committed in the fuzz targets; each run
# looks a little further and fails on any input that breaks a property.
step "fuzz client frames" go test -run '^$' -fuzz '^FuzzDecodeRequest$' -fuzztime 10s ./internal/protocol
step "fuzz names and ids" go test -run '^$' -fuzz '^FuzzRoomAndIDs$' -fuzztime 5s ./internal/protocol

# ---------------------------------------------------------------- later steps
# Add further steps here, each through `step` so that it is timed and fails
# the run.

# Fault tests (docs/reliability.md): they cut RabbitMQ's connections, stop
# it, set off its memory alarm, stop a private Redis, kill and restart
# gateways. RabbitMQ's faults are felt by everyone on the node, so they run
# last, one at a time (-p 1), once every other test is done.
step "fault tests (serial)" go test -race -count=1 -p 1 -timeout 15m -tags 'integration faults' ./internal/faults/
# ---------------------------------------------------------------- end

#!/usr/bin/env bash
# Runs Parley's load benchmarks on this machine (docs/benchmarks.md): for
# every run of every workload, a fresh cluster of 2 gateways on the local
# RabbitMQ and Redis (in a namespace of its own, deleted afterwards), and
# cmd/parley-bench against the gateways directly, not through nginx, so that
# the load balancer's CPU and latency are not part of what is measured.
#
#   ./scripts/bench.sh                  # W1 W2 W3 W4 IDLE, 3 runs each
#   ./scripts/bench.sh W1 W3            # some workloads
#   REPEAT=1 ./scripts/bench.sh W2 IDLE
#   ./scripts/bench.sh ramp-W1          # raise W1's rate until p99 > 100ms or a loss
#   PROFILE=1 ./scripts/bench.sh W1     # also perf-record the gateways during run 1
#   ./scripts/bench.sh W1 -- -duration 10s -quiet   # flags after -- go to parley-bench
#
# Environment: REPEAT (runs per workload, default 3), GATEWAYS (default 2),
# WAIT_QUIET (longest wait for the shared machine to calm down before each
# run, default 120s; 0 to not wait), MAX_OTHER (cores of other processes'
# work past which a run or ramp step is not counted and is run again; unset:
# count every run), OUT (results directory, default a new one under /tmp).
# PARLEY_* variables are passed on to the gateways.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

REPEAT=${REPEAT:-3}
GATEWAYS=${GATEWAYS:-2}
WAIT_QUIET=${WAIT_QUIET:-120s}
OUT=${OUT:-$(mktemp -d /tmp/parley-bench-XXXXXX)}
mkdir -p "$OUT"

workloads=()
extra=()
while (($#)); do
	if [[ $1 == -- ]]; then
		shift
		extra=("$@")
		break
	fi
	workloads+=("$1")
	shift
done
((${#workloads[@]})) || workloads=(W1 W2 W3 W4 IDLE)

fail() {
	echo "bench.sh: $*" >&2
	exit 1
}

# The services must run; this script never starts or stops them (they are
# shared): scripts/test.sh does.
(exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null || fail "RabbitMQ is not listening on 127.0.0.1:5672 (scripts/test.sh starts it)"
[[ $(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null) == PONG ]] || fail "Redis is not answering on 127.0.0.1:6379 (scripts/test.sh starts it)"

# File descriptors: the generator holds one per client and each gateway one
# per client it serves (IDLE: 10,000 clients). parley-bench raises its soft
# limit to the hard one and its gateways inherit it; a hard limit below what
# the largest workload needs is raised here when we may (root), or fails.
need=16384
hard=$(ulimit -Hn)
if [[ $hard != unlimited && $hard -lt $need ]]; then
	ulimit -Hn "$need" 2>/dev/null || fail "ulimit -Hn is $hard; IDLE needs $need descriptors: raise it (as root: ulimit -Hn $need)"
fi
ulimit -n "$(ulimit -Hn)"

echo "== machine"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $(nproc)"
echo "memory: $(free -m | awk '/^Mem:/ {print $2 " MB"}')"
echo "kernel: $(uname -r)"
go version
echo "redis: $(redis-cli INFO server | tr -d '\r' | awk -F: '/^redis_version/ {print $2}')"
echo "rabbitmq: $(rabbitmqctl version 2>/dev/null || echo unknown)"
echo "nofile: soft $(ulimit -n), hard $(ulimit -Hn)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- 2>/dev/null || echo ' (with uncommitted changes)')"
echo "results: $OUT"

go build -o "$OUT/parley" ./cmd/parley
go build -o "$OUT/parley-bench" ./cmd/parley-bench

for w in "${workloads[@]}"; do
	args=(-cluster "$GATEWAYS" -binary "$OUT/parley" -repeat "$REPEAT" -json "$OUT/results.jsonl")
	if [[ $WAIT_QUIET != 0 ]]; then
		args+=(-wait-quiet "$WAIT_QUIET")
	fi
	if [[ -n ${MAX_OTHER:-} ]]; then
		args+=(-max-other "$MAX_OTHER")
	fi
	case $w in
	ramp-*) args+=(-workload "${w#ramp-}" -ramp -duration 10s) ;;
	*) args+=(-workload "$w") ;;
	esac
	if [[ ${PROFILE:-} == 1 && $w != IDLE ]]; then
		args+=(-perf "$OUT/$w.perf.data")
	fi
	echo
	echo "== $w: parley-bench ${args[*]} ${extra[*]}"
	"$OUT/parley-bench" "${args[@]}" "${extra[@]}" 2>&1 | tee "$OUT/$w.log"
	if [[ -f $OUT/$w.perf.data ]]; then
		perf report -i "$OUT/$w.perf.data" --no-children --sort symbol --stdio -g none 2>/dev/null |
			grep '%' | head -40 >"$OUT/$w.perf-self.txt" || true
		perf report -i "$OUT/$w.perf.data" --children --sort symbol --stdio -g none 2>/dev/null |
			grep '%' | head -80 >"$OUT/$w.perf-children.txt" || true
		echo "perf profile: $OUT/$w.perf.data (top: $OUT/$w.perf-self.txt, $OUT/$w.perf-children.txt)"
	fi
done
echo
echo "results: $OUT/results.jsonl"

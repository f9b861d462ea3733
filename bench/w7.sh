#!/bin/bash
# W7 of workloads.md: loopback TCP echo, the anchor's fixed client (1 connection,
# 100,000 messages of 64 bytes, ping-pong then 64 in flight), against our
# examples/echo_server.rs and the raw epoll echo server (and C tevent's when
# libtevent is installed), in one sitting, servers alternating.
#
# Usage: bench/w7.sh [--reps N] [--callgrind]   (default 3 runs per server)
#   --callgrind  also count each server's user-space instructions per message in the
#                pipelined mode (valgrind; the noise-free figure: wall ratios vary
#                by 20% between sittings on shared machines)
# Environment: ANCHORS=DIR  the tevent-c anchor folder (as for compare.sh)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
REPS=3
CALLGRIND=0
while [ $# -gt 0 ]; do
	case "$1" in
	--reps) REPS=${2:?--reps needs a number}; shift ;;
	--callgrind) CALLGRIND=1 ;;
	-h | --help) sed -n '2,8p' "$0"; exit 0 ;;
	*) echo "unknown argument: $1" >&2; exit 2 ;;
	esac
	shift
done

if [ -z "${ANCHORS:-}" ]; then
	for d in "$ROOT/../shared/anchors/tevent-c" /work/shared/anchors/tevent-c; do
		if [ -f "$d/echo_client.c" ]; then ANCHORS=$d; break; fi
	done
fi
[ -f "${ANCHORS:-}/echo_client.c" ] || { echo "tevent-c anchor not found (set ANCHORS=DIR)" >&2; exit 1; }

OUT=$ROOT/target/bench-w7
rm -rf "$OUT"
cp -r "$ANCHORS" "$OUT"
chmod -R u+w "$OUT" # cp -r keeps shared/'s read-only modes
make -s -C "$OUT" echo_client echo_epoll >&2
SERVERS="ours epoll"
if pkg-config --exists tevent talloc 2>/dev/null && make -s -C "$OUT" echo_tevent >&2; then
	SERVERS="$SERVERS tevent"
fi

cargo build -q --release --example echo_server >&2
OURS=$ROOT/target/release/examples/echo_server

declare -A RUNS
for rep in $(seq "$REPS"); do
	for s in $SERVERS; do
		case $s in
		ours) bin=$OURS ;; epoll) bin=$OUT/echo_epoll ;; tevent) bin=$OUT/echo_tevent ;;
		esac
		# run_w7.sh starts SERVER PORT, runs both client modes, stops it with SIGTERM
		# and checks that it exits 0.
		out=$("$OUT/run_w7.sh" "$bin" 2>/dev/null)
		for mode in pingpong pipelined; do
			ns=$(echo "$out" | awk -v m="W7-$mode" '$1 == m { print $2 }')
			[ -n "$ns" ] || { echo "$s: no W7-$mode result (rep $rep)" >&2; exit 1; }
			RUNS[$s|$mode]="${RUNS[$s|$mode]:-} $ns"
		done
	done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo "| server | W7 mode | median ns/msg | runs | / raw epoll |"
echo "|---|---|---:|---|---:|"
for mode in pingpong pipelined; do
	base=$(echo "${RUNS[epoll|$mode]}" | median)
	for s in $SERVERS; do
		m=$(echo "${RUNS[$s|$mode]}" | median)
		echo "| $s | $mode | $m |${RUNS[$s|$mode]} | $(awk -v a="$m" -v b="$base" 'BEGIN { printf "%.2f", a / b }') |"
	done
done

if [ "$CALLGRIND" = 1 ]; then
	echo
	echo "| server | W7 pipelined: user-space instructions per message (callgrind) |"
	echo "|---|---:|"
	for s in $SERVERS; do
		case $s in
		ours) bin=$OURS ;; epoll) bin=$OUT/echo_epoll ;; tevent) bin=$OUT/echo_tevent ;;
		esac
		port=$((20000 + RANDOM % 20000))
		cg=$OUT/callgrind.$s.out
		valgrind --tool=callgrind --callgrind-out-file="$cg" "$bin" "$port" >/dev/null 2>&1 &
		pid=$!
		for _ in $(seq 200); do # valgrind starts slowly
			(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
			sleep 0.05
		done
		"$OUT/echo_client" 127.0.0.1 "$port" pipelined >/dev/null
		kill -TERM "$pid"
		wait "$pid" || true
		# The whole run (start-up and accept included) over the 100,000 messages.
		total=$(callgrind_annotate "$cg" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
		echo "| $s | $(awk -v t="$total" 'BEGIN { printf "%.0f", t / 100000 }') |"
	done
fi

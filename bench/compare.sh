#!/bin/bash
# Compare the tevent crate with Samba's C tevent (the anchor in shared/anchors/tevent-c)
# on W1-W6 of workloads.md, in one sitting: wall time (median of --reps runs, each
# workload in its own process, C and ours alternating) and callgrind instructions per
# op (user space only, deterministic) at the reduced N of the anchor's callgrind.sh.
#
# Usage: bench/compare.sh [--full] [--reps N] [--no-callgrind]
#   --full          also run W3-100000 for wall time (once: C tevent needs 2-4 min for it)
#   --reps N        wall-time runs per program and workload (default 3)
#   --no-callgrind  skip the instruction counts
# Environment: ANCHORS=DIR  the tevent-c anchor folder (default: ../shared/anchors/tevent-c
#              beside the repository, else /work/shared/anchors/tevent-c)
#
# Everything it builds and writes goes under target/bench-compare/: the anchor's copy,
# raw.txt (every result line), callgrind/*.out (for callgrind_annotate).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

FULL=0
REPS=3
CALLGRIND=1
while [ $# -gt 0 ]; do
	case "$1" in
	--full) FULL=1 ;;
	--reps) REPS=${2:?--reps needs a number}; shift ;;
	--reps=*) REPS=${1#--reps=} ;;
	--no-callgrind) CALLGRIND=0 ;;
	-h | --help) sed -n '2,16p' "$0"; exit 0 ;;
	*) echo "unknown argument: $1" >&2; exit 2 ;;
	esac
	shift
done

OUT=$ROOT/target/bench-compare
mkdir -p "$OUT/callgrind"
RAW=$OUT/raw.txt
: >"$RAW"
log() { echo "$*" >&2; }

# --- (a) the C anchor -------------------------------------------------------------------
if [ -z "${ANCHORS:-}" ]; then
	for d in "$ROOT/../shared/anchors/tevent-c" /work/shared/anchors/tevent-c; do
		if [ -f "$d/bench_tevent.c" ]; then ANCHORS=$d; break; fi
	done
fi
[ -f "${ANCHORS:-}/bench_tevent.c" ] || { echo "tevent-c anchor not found (set ANCHORS=DIR)" >&2; exit 1; }

if ! pkg-config --exists tevent talloc 2>/dev/null || ! command -v valgrind >/dev/null ||
	! command -v cc >/dev/null || ! command -v make >/dev/null; then
	log "== installing libtevent-dev libtalloc-dev pkg-config valgrind"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >&2
	apt-get install -y -q libtevent-dev libtalloc-dev pkg-config valgrind make gcc >&2
fi

log "== building the C anchor in $OUT/tevent-c"
rm -rf "$OUT/tevent-c"
cp -r "$ANCHORS" "$OUT/tevent-c"
chmod -R u+w "$OUT/tevent-c" # cp -r keeps shared/'s read-only modes
make -s -B -C "$OUT/tevent-c" bench_tevent floor_epoll >&2
CBENCH=$OUT/tevent-c/bench_tevent
FLOOR=$OUT/tevent-c/floor_epoll

# --- (b) our bench ----------------------------------------------------------------------
log "== building tevent/benches/workloads.rs"
OURS=$(cargo bench -p tevent --bench workloads --no-run --message-format=json 2>/dev/null |
	grep '"kind":\["bench"\]' | grep '"name":"workloads"' |
	grep -o '"executable":"[^"]*"' | cut -d'"' -f4 | tail -n 1 || true)
if [ -z "$OURS" ] || [ ! -x "$OURS" ]; then
	cargo bench -p tevent --bench workloads --no-run >&2 # show the error, or build
	OURS=$(ls -t "$ROOT"/target/release/deps/workloads-* | grep -v '\.d$' | head -n 1)
fi
log "   $OURS"

# --- (c) wall time ----------------------------------------------------------------------
declare -A NS IR ALLOCS
IDS="W1 W2 W3-1000 W3-10000 W4 W5 W6"

# wall KEY ID BACKEND PROGRAM: one run; appends ns/op to NS[KEY|ID] (and allocs/op).
# BACKEND goes to TEVENT_BACKEND (our bench reads it; the C programs ignore it).
wall() {
	local key=$1 id=$2 be=$3 prog=$4 out ns
	out=$(TEVENT_BACKEND=$be "$prog" "$id")
	printf '## %s\n%s\n' "$key" "$out" >>"$RAW"
	ns=$(awk -v id="$id" '$1 == id && $3 == "ns/op" { print $2 }' <<<"$out")
	[ -n "$ns" ] || { echo "no result for $id from $prog" >&2; exit 1; }
	NS[$key|$id]="${NS[$key|$id]:-} $ns"
	local a
	a=$(awk -v id="$id" '$2 == "allocs/op" && $3 == id { print $4 }' <<<"$out")
	[ -z "$a" ] || ALLOCS[$key|$id]=$a
}

median() { # VALUES... -> median (empty if none)
	printf '%s\n' "$@" | sed '/^$/d' | sort -g | awk '{ v[NR] = $1 }
		END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}

log "== wall time: $REPS runs each (C and ours alternate)"
for rep in $(seq "$REPS"); do
	for id in $IDS; do
		wall c "$id" - "$CBENCH"
		wall ours "$id" epoll "$OURS"
	done
	for id in W1 W4; do
		wall polling "$id" polling "$OURS"
		wall floor "$id" - "$FLOOR"
	done
done
if [ "$FULL" = 1 ]; then
	log "== wall time: W3-100000 (once each; C tevent takes 2-4 minutes)"
	wall c W3-100000 - "$CBENCH"
	wall ours W3-100000 epoll "$OURS"
	IDS="$IDS W3-100000"
fi

# --- (d) callgrind ----------------------------------------------------------------------
# ir KEY ID OPS PATTERN BACKEND PROGRAM: Ir per op inside the workload function.
# (The environment is set outside valgrind: valgrind does not follow an exec by `env`.)
ir() {
	local key=$1 id=$2 ops=$3 pat=$4 be=$5 prog=$6 n
	n=$(TEVENT_BACKEND=$be valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind/$key.$id.out" \
		--toggle-collect="$pat" "$prog" "$id" "$ops" 2>&1 >/dev/null | awk '/Collected :/ { print $NF }')
	[ -n "$n" ] || { echo "callgrind failed for $key $id" >&2; exit 1; }
	IR[$key|$id]=$(awk -v n="$n" -v ops="$ops" 'BEGIN { printf "%.1f", n / ops }')
}

if [ "$CALLGRIND" = 1 ]; then
	log "== callgrind (instructions per op, reduced N)"
	for spec in W1:100000:1 W2:20000:2 W3-1000:1000:3 W3-10000:10000:3 W4:20000:4 W5:100000:5 W6:20000:6; do
		IFS=: read -r id ops w <<<"$spec"
		ir c "$id" "$ops" "w$w" - "$CBENCH"
		ir ours "$id" "$ops" "*workload_w$w*" epoll "$OURS"
	done
	for spec in W1:100000:1 W4:20000:4; do
		IFS=: read -r id ops w <<<"$spec"
		ir polling "$id" "$ops" "*workload_w$w*" polling "$OURS"
		ir floor "$id" "$ops" "w$w" - "$FLOOR"
	done
fi

# --- table ------------------------------------------------------------------------------
ratio() {
	awk -v a="${1:-}" -v b="${2:-}" 'BEGIN {
		if (a == "" || b == "" || b == 0) print "-"
		else if (a / b >= 0.1) printf "%.2f\n", a / b
		else printf "%.2g\n", a / b
	}'
}
med() { local m; m=$(median ${NS[$1]:-}); echo "${m:--}"; }

echo "# $(date -u +%FT%TZ) $(uname -m) $(nproc) CPUs; C tevent $(pkg-config --modversion tevent);" \
	"ours: $(basename "$OURS"); wall = median of $REPS runs (W3-100000: 1); instr = callgrind"
echo
echo "| workload | C instr/op | ours instr/op | ours/C | C ns/op | ours ns/op | ours/C | ours allocs/op |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for id in $IDS; do
	ci=${IR[c|$id]:--} oi=${IR[ours|$id]:--} cn=$(med "c|$id") on=$(med "ours|$id")
	echo "| $id | $ci | $oi | $(ratio "${IR[ours|$id]:-}" "${IR[c|$id]:-}") | $cn | $on |" \
		"$(ratio "${on#-}" "${cn#-}") | ${ALLOCS[ours|$id]:--} |"
done
echo
echo "| program (backend) | workload | instr/op | ns/op | ns/op runs |"
echo "|---|---|---:|---:|---|"
for id in W1 W4; do
	for key in c ours polling floor; do
		case $key in
		c) name="C tevent (epoll)" ;; ours) name="ours (epoll)" ;;
		polling) name="ours (polling)" ;; floor) name="floor_epoll" ;;
		esac
		echo "| $name | $id | ${IR[$key|$id]:--} | $(med "$key|$id") |${NS[$key|$id]:-} |"
	done
done
log "== raw lines: $RAW; callgrind files: $OUT/callgrind/ (callgrind_annotate FILE)"

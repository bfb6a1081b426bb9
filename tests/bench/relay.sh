#!/usr/bin/env bash
# Throughput benchmark: relaygate vs the raw ceiling and Postfix as a relay, on loopback,
# with Postfix's smtp-source (load) and smtp-sink (the upstream), using the harness in
# ../shared/bench. Results go to docs/benchmarks.md by hand (copy the summary tables).
#
# The ceiling (smtp-source straight into smtp-sink) and relaygate are measured in
# rounds, cell by cell: for each round and each (mode, sessions) cell, one ceiling run,
# then one relaygate run (and one of --compare), back to back. This machine's speed
# drifts by up to ±20 % within minutes; a share of the ceiling taken from two runs
# seconds apart is what the gateway costs, not what the machine did meanwhile. The
# summary gives each cell's median over rounds of those paired shares.
#
# Usage: tests/bench/relay.sh [-n COUNT] [-c CONCURRENCY_LIST] [--runs ROUNDS]
#                             [--warmup N] [--compare BIN] [--no-postfix] [--outdir DIR]
#   --compare BIN also measures another relaygate binary (e.g. a build of an older commit)
#                 in the same rounds, labelled relaygate-compare, to check for regressions.
#   --no-postfix  skips the Postfix baseline (slow, and far below the others).
# Needs root (Postfix baseline), Debian's postfix package (smtp-source, smtp-sink).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=20000; C=10,50; RUNS=3; WARMUP=1000; COMPARE=; POSTFIX=1; OUT=
while [ $# -gt 0 ]; do
  case "$1" in
    -n) N="$2"; shift 2;;
    -c) C="$2"; shift 2;;
    --runs) RUNS="$2"; shift 2;;
    --warmup) WARMUP="$2"; shift 2;;
    --compare) COMPARE="$2"; shift 2;;
    --no-postfix) POSTFIX=0; shift;;
    --outdir) OUT="$2"; shift 2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
SHARED="${SHARED:-../shared/bench}"
[ -x "$SHARED/relay_bench.sh" ] || { echo "harness not found at $SHARED" >&2; exit 1; }
command -v smtp-source >/dev/null || { echo "install Debian's postfix package (smtp-source, smtp-sink)" >&2; exit 1; }
[ -n "$OUT" ] || OUT="$(mktemp -d /tmp/relaygate-relay.XXXXXX)"
mkdir -p "$OUT"

cargo build --release -q
BIN=./target/release/relaygate

# One run of one cell: label, mode, sessions, round, then relay_bench.sh's target options.
cell() {
  local label="$1" mode="$2" conc="$3" round="$4"; shift 4
  rm -rf /tmp/relaygate-bench && mkdir -p /tmp/relaygate-bench
  "$SHARED/relay_bench.sh" "$@" -n "$N" -c "$conc" -l 1024 --modes "$mode" --runs 1 \
    --warmup "$WARMUP" --label "$label" --outdir "$OUT/$label.$mode.$conc.$round" \
    | grep -E "^${label:0:14} " || true
}

for round in $(seq 1 "$RUNS"); do
  for mode in single multi; do
    for conc in ${C//,/ }; do
      echo "== round $round, $mode, $conc sessions"
      cell ceiling "$mode" "$conc" "$round" --direct
      cell relaygate "$mode" "$conc" "$round" --port 30026 \
        --start-cmd "RUST_LOG=warn $BIN serve -c tests/bench/relay.toml"
      if [ -n "$COMPARE" ]; then
        cell relaygate-compare "$mode" "$conc" "$round" --port 30026 \
          --start-cmd "RUST_LOG=warn $COMPARE serve -c tests/bench/relay.toml"
      fi
    done
  done
done

if [ "$POSTFIX" = 1 ]; then
  echo "== postfix"
  "$SHARED/postfix_baseline.sh" -n "$N" -c "$C" --modes single,multi --runs "$RUNS" \
    --warmup "$WARMUP" --only-e2e --outdir "$OUT/postfix" | tee "$OUT/postfix.txt"
fi

echo "== summary (runs in $OUT)"
python3 tests/bench/relay_summary.py "$OUT"

#!/usr/bin/env bash
# Throughput benchmark: relaygate vs Postfix as a relay, on loopback, with Postfix's
# smtp-source (load) and smtp-sink (the upstream), using the harness in ../shared/bench.
# Results go to docs/benchmarks.md by hand (copy the summary tables).
#
# Usage: tests/bench/relay.sh [-n COUNT] [-c CONCURRENCY_LIST] [--runs K] [--compare BIN]
#   --compare BIN also measures another relaygate binary (e.g. a build of an older commit)
#                 in the same run, labelled relaygate-compare, to check for regressions.
# Needs root (Postfix baseline), Debian's postfix package (smtp-source, smtp-sink).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=20000; C=10,50; RUNS=3; WARMUP=1000; COMPARE=
while [ $# -gt 0 ]; do
  case "$1" in
    -n) N="$2"; shift 2;;
    -c) C="$2"; shift 2;;
    --runs) RUNS="$2"; shift 2;;
    --warmup) WARMUP="$2"; shift 2;;
    --compare) COMPARE="$2"; shift 2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
SHARED="${SHARED:-../shared/bench}"
[ -x "$SHARED/relay_bench.sh" ] || { echo "harness not found at $SHARED" >&2; exit 1; }
command -v smtp-source >/dev/null || { echo "install Debian's postfix package (smtp-source, smtp-sink)" >&2; exit 1; }

cargo build --release -q
rm -rf /tmp/relaygate-bench && mkdir -p /tmp/relaygate-bench

echo "== relaygate"
"$SHARED/relay_bench.sh" --port 30026 \
  --start-cmd "RUST_LOG=warn ./target/release/relaygate serve -c tests/bench/relay.toml" \
  -n "$N" -c "$C" -l 1024 --modes single,multi --runs "$RUNS" --warmup "$WARMUP" --label relaygate

if [ -n "$COMPARE" ]; then
  echo "== relaygate-compare ($COMPARE)"
  rm -rf /tmp/relaygate-bench && mkdir -p /tmp/relaygate-bench
  "$SHARED/relay_bench.sh" --port 30026 \
    --start-cmd "RUST_LOG=warn $COMPARE serve -c tests/bench/relay.toml" \
    -n "$N" -c "$C" -l 1024 --modes single,multi --runs "$RUNS" --warmup "$WARMUP" --label relaygate-compare
fi

echo "== postfix"
"$SHARED/postfix_baseline.sh" -n "$N" -c "$C" --modes single,multi --runs "$RUNS" --warmup "$WARMUP"

echo "== raw ceiling"
"$SHARED/relay_bench.sh" --direct -n "$N" -c "$C" -l 1024 --modes single,multi --runs "$RUNS"

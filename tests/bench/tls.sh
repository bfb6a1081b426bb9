#!/usr/bin/env bash
# TLS relay matrix (issue 17): relaygate with STARTTLS from the client and/or to the
# smarthost, against plaintext, with our own load tool (Postfix's smtp-source and
# smtp-sink cannot do TLS). Loopback only; needs python3.
#
# Usage: tests/bench/tls.sh [RELAYGATE_BIN] [-n N] [-c C] [-l BYTES] [--runs K]
#                           [--warmup N] [--modes single,multi] [--ceiling] [--outdir DIR] ...
#   RELAYGATE_BIN defaults to ${CARGO_TARGET_DIR:-target}/release/relaygate; the load tool
#   is ${CARGO_TARGET_DIR:-target}/release/examples/tls_bench (--tls-bench to override).
#   Build both first:
#     cargo build --release && cargo build --release --example tls_bench
#   `tests/bench/tls.py -h` lists every option. Defaults: -n 10000 -c 10 -l 1024,
#   3 runs per cell after a 500-message warm-up, each run waiting up to 120 s for an
#   idle machine (--quiet-wait 0 turns that off).
set -euo pipefail
exec python3 "$(dirname "$0")/tls.py" "$@"

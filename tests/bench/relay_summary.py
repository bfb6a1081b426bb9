#!/usr/bin/env python3
"""Summary of a tests/bench/relay.sh run: one Markdown table row per label and cell.

Reads every results.jsonl under the run's directory (one JSON line per run, written by
../shared/bench/relay_bench.sh). relay.sh keeps each cell's run of each round in
LABEL.MODE.SESSIONS.ROUND/; Postfix's runs are in postfix/ (no rounds).

Per row: e2e msg/s median [min..max]; the share of the ceiling, as the median [min..max]
over rounds of (this run / the ceiling run of the same cell and round), for Postfix
against the ceiling's median; the gateway's CPU per message; and that CPU over what the
load tools (smtp-source + smtp-sink) spent per message in the paired ceiling run, a
figure that does not move with the machine's speed.

Usage: tests/bench/relay_summary.py RUN_DIR
"""

import glob
import json
import os
import re
import statistics
import sys

CELL_DIR = re.compile(r"^(?P<label>.+)\.(?P<mode>single|multi)\.(?P<conc>\d+)\.(?P<round>\d+)$")


def load(run_dir):
    rows = []
    for path in glob.glob(os.path.join(run_dir, "**", "results.jsonl"), recursive=True):
        m = CELL_DIR.match(os.path.basename(os.path.dirname(path)))
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                r = json.loads(line)
                if not r.get("ok", False):
                    continue
                r["round"] = int(m.group("round")) if m else None
                rows.append(r)
    return rows


def spread(vals, fmt):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    m = statistics.median(vals)
    if len(vals) == 1:
        return fmt % m
    return (fmt + " [" + fmt + ".." + fmt + "]") % (m, min(vals), max(vals))


def tools_us(r):
    return ((r.get("src_cpu_s") or 0) + (r.get("sink_cpu_s") or 0)) / r["n"] * 1e6


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    rows = load(sys.argv[1])
    ceiling = {}
    for r in rows:
        if r["label"] == "ceiling":
            ceiling[(r["per_session"], r["c"], r["round"])] = r
    labels = sorted({r["label"] for r in rows}, key=lambda l: (l == "ceiling", l))
    print("| label | mode | sessions | rounds | e2e msg/s | share of the ceiling "
          "| gateway CPU µs/msg | gateway CPU / load tools' CPU |")
    print("|---|---|---|---|---|---|---|---|")
    for label in labels:
        cells = sorted({(r["per_session"], r["c"]) for r in rows if r["label"] == label},
                       key=lambda k: (k[0] != "single", k[1]))
        for mode, conc in cells:
            runs = [r for r in rows if r["label"] == label
                    and r["per_session"] == mode and r["c"] == conc]
            shares, norm = [], []
            ceil_all = [c["e2e_mps"] for (m, k, _), c in ceiling.items()
                        if m == mode and k == conc]
            for r in runs:
                c = ceiling.get((mode, conc, r["round"]))
                if label == "ceiling":
                    continue
                if c is not None:
                    shares.append(100.0 * r["e2e_mps"] / c["e2e_mps"])
                    if r.get("gw_cpu_us_per_msg") is not None:
                        norm.append(r["gw_cpu_us_per_msg"] / tools_us(c))
                elif ceil_all:
                    shares.append(100.0 * r["e2e_mps"] / statistics.median(ceil_all))
            if label == "ceiling":
                cpu = spread([tools_us(r) for r in runs], "%.0f") + " (load tools)"
            else:
                cpu = spread([r.get("gw_cpu_us_per_msg") for r in runs], "%.0f")
            print("| %s | %s | %d | %d | %s | %s | %s | %s |" % (
                label, mode, conc, len(runs),
                spread([r["e2e_mps"] for r in runs], "%.0f"),
                spread(shares, "%.1f %%") if shares else "",
                cpu,
                spread(norm, "%.2f") if norm else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Backlog benchmark (issue 11): a provider outage, then the drain.

1. relaygate relays everything to a smarthost on 127.0.0.1:30038 that is down;
   smtp-source submits N x 1 KiB messages (accept msg/s).
2. Once every message has had its first (failed) attempt: RSS with the backlog queued.
3. Restart: time from start to ready (replay of the whole spool), RSS after replay.
4. smtp-sink comes up on 30038, `relaygate queue retry --all`: drain msg/s, and the
   peak RSS while draining (sampled every 50 ms, and the kernel's VmHWM).

Usage: tests/bench/backlog.py [-n 100000] [--sessions 20] [--keep]
Needs Debian's postfix package (smtp-source, smtp-sink). Loopback only; every wait has
a deadline; it stops what it started.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORK = "/tmp/relaygate-backlog"
SUBMIT, ADMIN, SINK = 30036, 30037, 30038
BIN = os.environ.get("RELAYGATE_BIN") or os.path.join(ROOT, "target", "release", "relaygate")

CONFIG = f"""hostname = "bench.relaygate.test"
data_dir = "{WORK}/data"

[submission]
listen = ["127.0.0.1:{SUBMIT}"]
max_connections = 1000

[admin]
listen = "127.0.0.1:{ADMIN}"

[queue]
first_retry = "1h"
max_attempts = 20
max_concurrency = 100
max_per_destination = 50

[transports.sink]
kind = "smtp"
host = "127.0.0.1"
port = {SINK}
no_starttls = true

[[routes]]
transport = "sink"
"""


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def listening(port):
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def health():
    with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/healthz", timeout=10) as r:
        return json.load(r)


def wait(what, check, limit):
    end = time.monotonic() + limit
    while True:
        v = check()
        if v:
            return v
        if time.monotonic() > end:
            sys.exit(f"timed out ({limit}s) waiting for {what}")
        time.sleep(0.05)


def start(log):
    ready = os.path.join(WORK, "data", "ready.json")
    if os.path.exists(ready):
        os.remove(ready)
    t0 = time.monotonic()
    p = subprocess.Popen(
        [BIN, "serve", "-c", os.path.join(WORK, "relay.toml")],
        stdout=log,
        stderr=log,
        env={**os.environ, "RUST_LOG": "warn"},
    )
    wait("ready.json", lambda: os.path.exists(ready) or p.poll() is not None, 600)
    if p.poll() is not None:
        sys.exit("relaygate exited at start; see " + log.name)
    return p, time.monotonic() - t0


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def queue_state():
    q = health()["queue"]
    return q["messages"], q["pending_recipients"], q["inflight_recipients"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    a = ap.parse_args()
    for tool in ("smtp-source", "smtp-sink"):
        if not shutil.which(tool):
            sys.exit("install Debian's postfix package (smtp-source, smtp-sink)")
    subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    with open(os.path.join(WORK, "relay.toml"), "w") as f:
        f.write(CONFIG)
    log = open(os.path.join(WORK, "relaygate.log"), "ab")
    sink = None
    gw, _ = start(log)
    try:
        base = rss_kib(gw.pid)
        t0 = time.monotonic()
        subprocess.run(
            ["smtp-source", "-s", str(a.sessions), "-l", "1024", "-m", str(a.n), "-d",
             "-f", "app@src.test", "-t", "user@dst.test", f"127.0.0.1:{SUBMIT}"],
            check=True, timeout=3600,
        )
        accept = a.n / (time.monotonic() - t0)
        wait("the first attempt of every message",
             lambda: (lambda m, p, i: m >= a.n and i == 0 and p >= a.n)(*queue_state()), 1800)
        time.sleep(1)  # let the allocator settle before reading RSS (a measurement, not a sync)
        queued = rss_kib(gw.pid)
        stop(gw)

        gw, replay = start(log)
        m, _, _ = queue_state()
        assert m >= a.n, f"only {m} messages after restart"
        after_replay = rss_kib(gw.pid)
        replay_hwm = rss_kib(gw.pid, "VmHWM")

        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        sink = subprocess.Popen(["smtp-sink", *user, "-m", "1024", f"127.0.0.1:{SINK}", "1024"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait("smtp-sink listening", lambda: listening(SINK) or sink.poll() is not None, 10)
        if sink.poll() is not None:
            sys.exit("smtp-sink exited at start")
        t0 = time.monotonic()
        subprocess.run([BIN, "queue", "retry", "--all", "--admin", f"http://127.0.0.1:{ADMIN}"],
                       check=True, stdout=subprocess.DEVNULL)
        peak = after_replay
        end = time.monotonic() + 3600
        # RSS every 50 ms; the queue size (which walks the whole queue) twice a second,
        # so that the measurement does not slow the drain down.
        tick = 0
        while True:
            peak = max(peak, rss_kib(gw.pid))
            if tick % 10 == 0:
                m, _, _ = queue_state()
                if m == 0:
                    break
            if time.monotonic() > end:
                sys.exit("drain did not finish within an hour")
            tick += 1
            time.sleep(0.05)
        drain = a.n / (time.monotonic() - t0)
        hwm = rss_kib(gw.pid, "VmHWM")
        stop(gw)
    finally:
        for p in (gw, sink):
            if p and p.poll() is None:
                p.kill()
                p.wait()
        if not a.keep:
            shutil.rmtree(WORK, ignore_errors=True)

    r = {
        "messages": a.n,
        "accept_msg_s": round(accept),
        "rss_base_mib": round(base / 1024, 1),
        "rss_queued_mib": round(queued / 1024, 1),
        "queued_bytes_per_msg": round((queued - base) * 1024 / a.n),
        "replay_s": round(replay, 2),
        "rss_after_replay_mib": round(after_replay / 1024, 1),
        "replay_hwm_mib": round(replay_hwm / 1024, 1),
        "drain_msg_s": round(drain),
        "drain_peak_rss_mib": round(peak / 1024, 1),
        "drain_peak_over_queued_mib": round((peak - after_replay) / 1024, 1),
        "process_hwm_mib": round(hwm / 1024, 1),
    }
    print(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()

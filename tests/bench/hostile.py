#!/usr/bin/env python3
"""Hostile-load benchmark (issue 12): 1,000 hostile connections for 60 s while a
legitimate application submits 1,000 messages.

The hostile clients come from 127.0.0.2-127.0.0.21 (not trusted), in four patterns,
250 connections each (a closed one is opened again):
  - pipeliner: writes NOOPs without ever reading, each write ending mid-line;
  - dribbler: one byte every 5 s;
  - junk: NOOP after NOOP, reading the replies (421 after max_junk_commands);
  - guesser: AUTH PLAIN with wrong passwords for the account "app".
The application submits from 127.0.0.1 (trusted) over one connection. Reported: every
legitimate message accepted or not, its accept latency (p50/p99/max), the gateway's
peak RSS, and panics in its log.

Usage: tests/bench/hostile.py [--seconds 60] [--messages 1000] [--conns 1000]
Needs Debian's postfix package (smtp-sink). Loopback only; bounded in time and count.
"""

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORK = "/tmp/relaygate-hostile"
SUBMIT, ADMIN, SINK = 30056, 30057, 30058
BIN = os.path.join(ROOT, "target", "release", "relaygate")

CONFIG = f"""hostname = "bench.relaygate.test"
data_dir = "{WORK}/data"

[submission]
listen = ["127.0.0.1:{SUBMIT}"]
trusted_networks = ["127.0.0.1/32"]

[admin]
listen = "127.0.0.1:{ADMIN}"

[transports.sink]
kind = "smtp"
host = "127.0.0.1"
port = {SINK}
no_starttls = true

[[routes]]
transport = "sink"

[accounts.app]
password_file = "{WORK}/app.password"
allowed_senders = ["@app.test"]
"""

stats = {"pipeliner": 0, "dribbler": 0, "junk": 0, "guesser": 0}


async def open_from(n):
    return await asyncio.open_connection(
        "127.0.0.1", SUBMIT, local_addr=(f"127.0.0.{2 + n % 20}", 0))


async def pipeliner(n, until):
    chunk = b"OP\r\n" + b"NOOP\r\n" * 1000 + b"NO"
    while time.monotonic() < until:
        try:
            _, w = await open_from(n)
            stats["pipeliner"] += 1
            w.write(b"NO")
            while time.monotonic() < until:
                w.write(chunk)
                await asyncio.wait_for(w.drain(), timeout=max(0.1, until - time.monotonic()))
        except (OSError, asyncio.TimeoutError):
            await asyncio.sleep(0.5)


async def dribbler(n, until):
    while time.monotonic() < until:
        try:
            _, w = await open_from(n)
            stats["dribbler"] += 1
            while time.monotonic() < until:
                w.write(b"N")
                await w.drain()
                await asyncio.sleep(5)
        except OSError:
            await asyncio.sleep(0.5)


async def junk(n, until):
    while time.monotonic() < until:
        try:
            r, w = await open_from(n)
            stats["junk"] += 1
            await r.readline()
            while time.monotonic() < until:
                w.write(b"NOOP\r\n")
                await w.drain()
                line = await asyncio.wait_for(r.readline(), timeout=30)
                if not line or line.startswith(b"421"):
                    break
        except (OSError, asyncio.TimeoutError):
            await asyncio.sleep(0.5)


async def guesser(n, until):
    wrong = base64.b64encode(b"\0app\0wrong-guess").decode()
    while time.monotonic() < until:
        try:
            r, w = await open_from(n)
            stats["guesser"] += 1
            await r.readline()
            w.write(b"EHLO guesser.test\r\n")
            await w.drain()
            while True:
                line = await asyncio.wait_for(r.readline(), timeout=30)
                if not line or line[3:4] == b" ":
                    break
            while time.monotonic() < until:
                w.write(f"AUTH PLAIN {wrong}\r\n".encode())
                await w.drain()
                line = await asyncio.wait_for(r.readline(), timeout=60)
                if not line or line.startswith(b"421"):
                    break
        except (OSError, asyncio.TimeoutError):
            await asyncio.sleep(0.5)


async def reply(r):
    last = b""
    while True:
        line = await asyncio.wait_for(r.readline(), timeout=60)
        if not line:
            raise OSError("closed")
        last = line
        if line[3:4] != b"-":
            return int(line[:3]), last


async def legit(count, latencies, failures):
    r, w = await asyncio.open_connection("127.0.0.1", SUBMIT, local_addr=("127.0.0.1", 0))
    await reply(r)
    w.write(b"EHLO app.test\r\n")
    await w.drain()
    await reply(r)
    for i in range(count):
        body = (f"From: <app@app.test>\r\nTo: <user@dst.test>\r\nSubject: legit {i}\r\n"
                f"Message-ID: <legit-{i}@app.test>\r\n\r\nhello {i}\r\n.\r\n").encode()
        t0 = time.monotonic()
        w.write(b"MAIL FROM:<app@app.test>\r\nRCPT TO:<user@dst.test>\r\nDATA\r\n")
        await w.drain()
        codes = [(await reply(r))[0] for _ in range(3)]
        w.write(body)
        await w.drain()
        code, line = await reply(r)
        latencies.append(time.monotonic() - t0)
        if codes != [250, 250, 354] or code != 250:
            failures.append((i, codes, code, line))
    w.write(b"QUIT\r\n")
    await w.drain()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def main_async(a, pid):
    until = time.monotonic() + a.seconds
    kinds = [pipeliner, dribbler, junk, guesser]
    tasks = [asyncio.create_task(kinds[n % 4](n, until)) for n in range(a.conns)]
    peak = [rss_kib(pid)]

    async def sample():
        while time.monotonic() < until + 5:
            peak[0] = max(peak[0], rss_kib(pid))
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    await asyncio.sleep(2)  # let the hostile connections pile up first (load pacing)
    latencies, failures = [], []
    t0 = time.monotonic()
    await asyncio.wait_for(legit(a.messages, latencies, failures), timeout=a.seconds + 120)
    legit_s = time.monotonic() - t0
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    sampler.cancel()
    return latencies, failures, legit_s, peak[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--conns", type=int, default=1000)
    a = ap.parse_args()
    if not shutil.which("smtp-sink"):
        sys.exit("install Debian's postfix package (smtp-sink)")
    subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    with open(os.path.join(WORK, "app.password"), "w") as f:
        f.write("the-right-password\n")
    with open(os.path.join(WORK, "relay.toml"), "w") as f:
        f.write(CONFIG)
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    sink = subprocess.Popen(["smtp-sink", *user, f"127.0.0.1:{SINK}", "1024"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = open(os.path.join(WORK, "relaygate.log"), "wb")
    gw = subprocess.Popen([BIN, "serve", "-c", os.path.join(WORK, "relay.toml")],
                          stdout=log, stderr=log, env={**os.environ, "RUST_LOG": "warn"})
    try:
        ready = os.path.join(WORK, "data", "ready.json")
        end = time.monotonic() + 30
        while not os.path.exists(ready):
            if time.monotonic() > end or gw.poll() is not None:
                sys.exit("relaygate did not start")
            time.sleep(0.05)
        base = rss_kib(gw.pid)
        latencies, failures, legit_s, peak = asyncio.run(main_async(a, gw.pid))
    finally:
        for p in (gw, sink):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    p.kill()
        log.close()
    with open(os.path.join(WORK, "relaygate.log"), "rb") as f:
        panics = f.read().count(b"panicked")
    lat = sorted(latencies)
    pct = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 2)
    print(json.dumps({
        "hostile_connections": a.conns,
        "hostile_seconds": a.seconds,
        "hostile_connects": stats,
        "legit_messages": a.messages,
        "legit_accepted": len(latencies) - len(failures),
        "legit_failures": failures[:5],
        "legit_seconds": round(legit_s, 1),
        "accept_latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
        "rss_base_mib": round(base / 1024, 1),
        "rss_peak_mib": round(peak / 1024, 1),
        "panics": panics,
    }, indent=1))
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()

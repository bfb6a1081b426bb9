#!/usr/bin/env python3
"""Time to failover (issue 14): how long a message accepted by relaygate takes to reach
a backup smarthost when the primary smarthost cannot take it.

The clock starts when the client reads the gateway's 250 after DATA (one message
submitted with smtplib from 127.0.0.1, a trusted network, so without AUTH; the client
runs in a child process so that its clock is not held up by this one) and stops when
the backup SMTP sink has read the final "." of that message (CLOCK_MONOTONIC in both).
The gateway may start delivering before the client has read its 250, so a run can come
out slightly negative. Four failure modes of the primary smarthost transport:

  closed  nothing listens on the primary's port (a port bound, noted and closed)
  421     the primary greets with "421 4.3.2 Service not available" and closes
  454     the primary answers MAIL FROM with Amazon SES's throttling reply
          "454 Throttling failure: Maximum sending rate exceeded."
  535     the primary offers AUTH PLAIN LOGIN and answers AUTH with
          "535 5.7.8 Username and Password not accepted"

The primary and the backup are fake SMTP servers in this script (asyncio, standard
library only). Every run starts a fresh gateway (`relaygate serve -c CONFIG`, its own
temp dir, data_dir, and submission and admin ports picked by binding port 0), so no run
sees state a previous one left (circuit breaker, 535 memory, idle connections).

after (default, --binary): the route is `transport = "primary"` with
    `fallback = ["backup"]`. The queue keeps the default first retry (7m30s), so a
    delivery within the run's 60 s deadline was made by the first attempt. Each scenario
    runs --runs times; the table gives the median, the maximum and the minimum.
before (--before BIN, a build without `fallback`): failover by routes, a first route
    `minimum_attempts = 1` to the backup, then a route to the primary. The second
    attempt is minutes away, so the script does not wait for it: it waits for the first
    attempt to fail, reads the recipient's `next_attempt` from `GET /api/queue`, and
    reports how long after acceptance the failover attempt is scheduled (one run per
    scenario; a single sample of the retry jitter).

Usage:
  python3 tests/bench/failover.py [--binary PATH] [--before PATH] [--runs N]
      [--scenarios closed,421,454,535]

--binary defaults to /tmp/rg-after. Prints progress on stderr and a markdown table on
stdout. Loopback only; every wait has a deadline (gateway start 30 s, each run 60 s,
gateway stop 20 s), and the script stops the processes it started.
"""

import argparse
import asyncio
import datetime
import json
import os
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

SCENARIOS = ("closed", "421", "454", "535")
GREETING_421 = "421 4.3.2 Service not available"
THROTTLE_454 = "454 Throttling failure: Maximum sending rate exceeded."
AUTH_535 = "535 5.7.8 Username and Password not accepted"
SENDER = "app@src.test"
RCPT = "user@dst.test"

START_DEADLINE = 30.0   # gateway accepting connections
RUN_DEADLINE = 60.0     # submission to arrival at the backup (after) / first attempt (before)
STOP_DEADLINE = 20.0    # gateway exit after SIGTERM
SMTP_TIMEOUT = 30.0     # each smtplib socket operation


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    """A port nothing listens on: bound to port 0, noted, closed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- fake servers

class FakeSmtp:
    """A fake SMTP server on 127.0.0.1. `mode` is "backup" (a sink that takes every
    message and notes when it arrived) or one of the primary's failure modes."""

    def __init__(self, mode):
        self.mode = mode
        self.connections = 0
        self.commands = []          # every command line received, in order
        self.arrivals = []          # (time.monotonic() at the final ".", message bytes)
        self.arrived = asyncio.Event()
        self.server = None
        self.port = None

    async def start(self):
        self.server = await asyncio.start_server(self.session, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self):
        if self.server:
            self.server.close()
            try:
                await asyncio.wait_for(self.server.wait_closed(), 5)
            except (asyncio.TimeoutError, Exception):
                pass

    async def session(self, reader, writer):
        self.connections += 1
        try:
            await asyncio.wait_for(self.dialogue(reader, writer), RUN_DEADLINE)
        except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def dialogue(self, reader, writer):
        async def reply(text):
            writer.write(text.encode() + b"\r\n")
            await writer.drain()

        if self.mode == "421":
            await reply(GREETING_421)
            return
        name = f"{self.mode}.fake.test"
        await reply(f"220 {name} ESMTP fake")
        while True:
            line = await reader.readline()
            if not line:
                return
            cmd = line.decode("latin-1").rstrip("\r\n")
            self.commands.append(cmd)
            verb = cmd.split(" ", 1)[0].upper()
            if verb == "EHLO":
                caps = [name, "8BITMIME", "SIZE 52428800"]
                if self.mode == "535":
                    caps.append("AUTH PLAIN LOGIN")
                await reply("\r\n".join(f"250-{c}" for c in caps[:-1]) + f"\r\n250 {caps[-1]}")
            elif verb == "HELO":
                await reply(f"250 {name}")
            elif verb == "AUTH":
                await reply(AUTH_535 if self.mode == "535" else "503 5.5.1 AUTH not offered")
            elif verb == "MAIL":
                if self.mode == "454":
                    await reply(THROTTLE_454)
                elif self.mode == "535":
                    await reply("530 5.7.0 Authentication required")
                else:
                    await reply("250 2.1.0 Ok")
            elif verb == "RCPT":
                await reply("250 2.1.5 Ok" if self.mode == "backup" else "503 5.5.1 MAIL first")
            elif verb == "DATA":
                if self.mode != "backup":
                    await reply("503 5.5.1 RCPT first")
                    continue
                await reply("354 End data with <CR><LF>.<CR><LF>")
                data = bytearray()
                while True:
                    l = await reader.readline()
                    if not l:
                        return
                    if l in (b".\r\n", b".\n"):
                        break
                    data += l
                self.arrivals.append((time.monotonic(), bytes(data)))
                self.arrived.set()
                await reply("250 2.0.0 Ok: queued")
            elif verb in ("RSET", "NOOP"):
                await reply("250 2.0.0 Ok")
            elif verb == "QUIT":
                await reply("221 2.0.0 Bye")
                return
            else:
                await reply("502 5.5.2 Command not recognized")


# --------------------------------------------------------------------------- the gateway

def toml_str(s):
    return json.dumps(s)  # a JSON string is a valid TOML basic string


def primary_toml(scenario, port, password_file):
    t = (f'[transports.primary]\nkind = "smtp"\nhost = "127.0.0.1"\nport = {port}\n'
         f'no_starttls = true\n')
    if scenario == "535":
        t += (f'username = "bench"\npassword_file = {toml_str(password_file)}\n'
              f'mechanisms = ["PLAIN", "LOGIN"]\n')
    return t


def config_text(mode, scenario, tmp, sub_port, admin_port, primary_port, backup_port):
    password_file = os.path.join(tmp, "primary-password")
    with open(password_file, "w") as f:
        f.write("not-the-password\n")
    s = f"""hostname = "gw.bench.test"
data_dir = {toml_str(os.path.join(tmp, "data"))}

[submission]
listen = ["127.0.0.1:{sub_port}"]
trusted_networks = ["127.0.0.0/8", "::1/128"]

[admin]
listen = "127.0.0.1:{admin_port}"

[queue]
first_retry = "7m30s"
max_attempts = 8

{primary_toml(scenario, primary_port, password_file)}
[transports.backup]
kind = "smtp"
host = "127.0.0.1"
port = {backup_port}
no_starttls = true

"""
    if mode == "after":
        s += '[[routes]]\ntransport = "primary"\nfallback = ["backup"]\n'
    else:
        # The first match wins: attempt 1 (0 attempts done) skips the first route and
        # takes the primary; from attempt 2 on the first route sends to the backup.
        s += ('[[routes]]\nminimum_attempts = 1\ntransport = "backup"\n\n'
              '[[routes]]\ntransport = "primary"\n')
    return s


class Gateway:
    def __init__(self, binary, config, tmp, sub_port, admin_port):
        self.binary, self.tmp = binary, tmp
        self.sub_port, self.admin_port = sub_port, admin_port
        self.config_path = os.path.join(tmp, "relaygate.toml")
        with open(self.config_path, "w") as f:
            f.write(config)
        self.out = open(os.path.join(tmp, "relaygate.log"), "wb")
        self.proc = subprocess.Popen(
            [binary, "serve", "-c", self.config_path],
            cwd=tmp, stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.out,
        )

    def log_tail(self, lines=40):
        try:
            with open(os.path.join(self.tmp, "relaygate.log"), "rb") as f:
                return b"".join(f.readlines()[-lines:]).decode("utf-8", "replace")
        except OSError:
            return ""

    async def wait_ready(self):
        end = time.monotonic() + START_DEADLINE
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"relaygate exited with {self.proc.returncode} at start:\n"
                                   + self.log_tail())
            if all(await asyncio.gather(*(accepting(p) for p in (self.sub_port, self.admin_port)))):
                return
            if time.monotonic() > end:
                raise RuntimeError(f"relaygate not accepting within {START_DEADLINE:.0f} s:\n"
                                   + self.log_tail())
            await asyncio.sleep(0.05)

    def api(self, path):
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.read().decode()

    async def api_async(self, path):
        return await asyncio.wait_for(asyncio.to_thread(self.api, path), 15)

    async def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            end = time.monotonic() + STOP_DEADLINE
            while self.proc.poll() is None and time.monotonic() < end:
                await asyncio.sleep(0.05)
            if self.proc.poll() is None:
                log(f"  relaygate (pid {self.proc.pid}) ignored SIGTERM for "
                    f"{STOP_DEADLINE:.0f} s; killing it")
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.out.close()


async def accepting(port):
    try:
        _, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
        w.close()
        return True
    except (OSError, asyncio.TimeoutError):
        return False


def submit(port, token):
    """One message through the submission port; returns (monotonic, wall) time of the
    250 after DATA. Blocking (smtplib): runs in a child process."""
    msg = (f"From: <{SENDER}>\r\nTo: <{RCPT}>\r\nSubject: failover {token}\r\n"
           f"Message-ID: <{token}@src.test>\r\n\r\nfailover benchmark {token}\r\n")
    with smtplib.SMTP("127.0.0.1", port, local_hostname="app.test", timeout=SMTP_TIMEOUT) as s:
        s.ehlo()
        code, resp = s.mail(SENDER)
        if code != 250:
            raise RuntimeError(f"MAIL: {code} {resp!r}")
        code, resp = s.rcpt(RCPT)
        if code != 250:
            raise RuntimeError(f"RCPT: {code} {resp!r}")
        code, resp = s.data(msg.encode())
        t_mono, t_wall = time.monotonic(), time.time()
        if code != 250:
            raise RuntimeError(f"DATA: {code} {resp!r}")
        return t_mono, t_wall


async def submit_in_child(port, token):
    """`submit` in a child process (this script with --submit-one), so that the client's
    clock reading and the backup sink's do not wait for each other on one interpreter
    lock. CLOCK_MONOTONIC is the same for every process of the machine."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, os.path.abspath(__file__), "--submit-one", str(port), token,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_DEADLINE)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"submission did not finish within {RUN_DEADLINE:.0f} s")
    if proc.returncode != 0:
        raise RuntimeError(f"submission failed: {err.decode(errors='replace').strip()}")
    v = json.loads(out)
    return v["monotonic"], v["wall"]


def parse_rfc3339(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


# --------------------------------------------------------------------------- one run

async def one_run(mode, binary, scenario, token):
    """Returns a dict with the run's figures (mode "after": `seconds`; mode "before":
    `scheduled`, seconds from acceptance to the next attempt)."""
    tmp = tempfile.mkdtemp(prefix=f"rg-failover-{scenario}-")
    backup = await FakeSmtp("backup").start()
    primary = None
    gw = None
    try:
        if scenario == "closed":
            primary_port = free_port()
        else:
            primary = await FakeSmtp(scenario).start()
            primary_port = primary.port
        sub_port, admin_port = free_port(), free_port()
        cfg = config_text(mode, scenario, tmp, sub_port, admin_port, primary_port, backup.port)
        gw = Gateway(binary, cfg, tmp, sub_port, admin_port)
        await gw.wait_ready()

        end = time.monotonic() + RUN_DEADLINE
        t_acc, t_acc_wall = await submit_in_child(sub_port, token)
        r = {"primary_connections": primary.connections if primary else 0}

        if mode == "after":
            while not any(token.encode() in m for _, m in backup.arrivals):
                left = end - time.monotonic()
                if left <= 0:
                    q = await gw.api_async("/api/queue")
                    raise RuntimeError(
                        f"{scenario}: not at the backup within {RUN_DEADLINE:.0f} s of "
                        f"submission; primary saw {primary.commands if primary else '-'}; "
                        f"queue: {q}\n{gw.log_tail()}")
                backup.arrived.clear()
                try:
                    await asyncio.wait_for(backup.arrived.wait(), min(left, 1.0))
                except asyncio.TimeoutError:
                    pass
            t_arr = next(t for t, m in backup.arrivals if token.encode() in m)
            r["seconds"] = t_arr - t_acc
            r["primary_connections"] = primary.connections if primary else 0
            # A check, not part of the figure: the gateway counts the fallback once the
            # backup's 250 is in, a moment after the sink noted the arrival.
            r["fallback_counted"] = False
            counted_by = time.monotonic() + 5
            while not r["fallback_counted"] and time.monotonic() < counted_by:
                try:
                    metrics = await gw.api_async("/metrics")
                except Exception as e:  # the figure stands without the counter
                    r["fallback_counted"] = f"? ({e})"
                    break
                r["fallback_counted"] = any(
                    l.startswith("relaygate_fallback_total{") and 'from="primary"' in l
                    and 'to="backup"' in l and not l.endswith(" 0")
                    for l in metrics.splitlines())
                if not r["fallback_counted"]:
                    await asyncio.sleep(0.05)
        else:
            # Wait for the first attempt to be recorded (a reply noted for the recipient).
            while True:
                q = json.loads(await gw.api_async("/api/queue"))
                msgs = q.get("messages", [])
                rc = msgs[0]["rcpts"][0] if msgs and msgs[0].get("rcpts") else None
                if rc and rc.get("last_reply") and rc.get("next_attempt"):
                    break
                if not msgs and any(token.encode() in m for _, m in backup.arrivals):
                    rc = None
                    break
                if time.monotonic() > end:
                    raise RuntimeError(f"{scenario}: no first attempt recorded within "
                                       f"{RUN_DEADLINE:.0f} s: {q}\n{gw.log_tail()}")
                await asyncio.sleep(0.1)
            if rc is None:
                t_arr = next(t for t, m in backup.arrivals if token.encode() in m)
                r["scheduled"] = t_arr - t_acc
                r["note"] = "delivered through the backup in the first attempt"
            else:
                nxt = parse_rfc3339(rc["next_attempt"])
                r["scheduled"] = nxt - t_acc_wall
                r["scheduled_from_received"] = nxt - parse_rfc3339(msgs[0]["received"])
                r["attempts"] = rc.get("attempts")
                r["first_attempt"] = {k: rc.get(k) for k in
                                      ("transport", "last_reply", "last_reason", "status")}
                r["primary_connections"] = primary.connections if primary else 0
                r["backup_messages"] = len(backup.arrivals)
        return r
    finally:
        if gw:
            await gw.stop()
        for s in (primary, backup):
            if s:
                await s.close()
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- main

def fmt_s(x):
    if abs(x) < 1:
        return f"{x * 1000:.1f} ms"
    if x < 120:
        return f"{x:.2f} s"
    return f"{x:.0f} s ({int(x // 60)}m{int(x % 60):02d}s)"


async def main_async(a):
    scenarios = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    for s in scenarios:
        if s not in SCENARIOS:
            sys.exit(f"unknown scenario {s!r}; known: {', '.join(SCENARIOS)}")
    before, after = {}, {}
    failures = []
    if a.before:
        for sc in scenarios:
            token = f"before-{sc}-{os.getpid()}"
            try:
                r = await one_run("before", a.before, sc, token)
                before[sc] = r
                log(f"before {sc}: next attempt +{r['scheduled']:.1f} s after acceptance "
                    f"{json.dumps({k: v for k, v in r.items() if k != 'scheduled'})}")
            except Exception as e:
                failures.append(f"before {sc}: {e}")
                log(f"before {sc}: FAILED: {e}")
    for sc in scenarios:
        after[sc] = []
        for i in range(a.runs):
            token = f"after-{sc}-{i}-{os.getpid()}"
            try:
                r = await one_run("after", a.binary, sc, token)
                after[sc].append(r)
                log(f"after {sc} run {i + 1}/{a.runs}: {r['seconds'] * 1000:.1f} ms "
                    f"(primary connections {r['primary_connections']}, "
                    f"fallback counted {r['fallback_counted']})")
            except Exception as e:
                failures.append(f"after {sc} run {i + 1}: {e}")
                log(f"after {sc} run {i + 1}: FAILED: {e}")

    print()
    print("| primary fails with | before: failover attempt scheduled "
          "| after: median | after: max | after: min | after: runs |")
    print("|---|---|---|---|---|---|")
    for sc in scenarios:
        b = before.get(sc)
        if not a.before:
            bcell = "–"
        elif b is None:
            bcell = "failed"
        elif "note" in b:
            bcell = f"{fmt_s(b['scheduled'])} ({b['note']})"
        else:
            bcell = f"+{fmt_s(b['scheduled'])} after acceptance"
        xs = [r["seconds"] for r in after[sc]]
        med = fmt_s(statistics.median(xs)) if xs else "–"
        mx = fmt_s(max(xs)) if xs else "–"
        mn = fmt_s(min(xs)) if xs else "–"
        print(f"| {sc} | {bcell} | {med} | {mx} | {mn} | {len(xs)} of {a.runs} |")
    if failures:
        print()
        print("Failed runs:")
        for f in failures:
            print(f"- {f.splitlines()[0]}")
    return 1 if failures else 0


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--submit-one":  # the child of submit_in_child
        t_mono, t_wall = submit(int(sys.argv[2]), sys.argv[3])
        print(json.dumps({"monotonic": t_mono, "wall": t_wall}))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default="/tmp/rg-after",
                    help="relaygate with route fallback (default /tmp/rg-after)")
    ap.add_argument("--before", metavar="PATH",
                    help="a build without fallback: measure its minimum_attempts failover")
    ap.add_argument("--runs", type=int, default=5, help="runs per scenario (after mode)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help="comma-separated subset of " + ",".join(SCENARIOS))
    a = ap.parse_args()
    if a.runs < 1:
        sys.exit("--runs must be at least 1")
    for b in filter(None, (a.binary, a.before)):
        if not os.access(b, os.X_OK):
            sys.exit(f"not an executable: {b}")
    # Each run is bounded (start + run + stop deadlines); bound the whole as well.
    runs = len(SCENARIOS) * (a.runs + (1 if a.before else 0))
    total = runs * (START_DEADLINE + RUN_DEADLINE + STOP_DEADLINE + 30)
    try:
        rc = asyncio.run(asyncio.wait_for(main_async(a), total))
    except asyncio.TimeoutError:
        sys.exit(f"the whole benchmark exceeded its {total:.0f} s bound")
    sys.exit(rc)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""TLS relay matrix (issue 17): relaygate relaying with and without TLS on each side.

    tls_bench source --[plain|STARTTLS]--> relaygate --[plain|STARTTLS]--> tls_bench sink

Cells: client {plain, starttls} x upstream {plain, starttls} x mode {single, multi}.
For each cell a fresh sink and a fresh gateway (config written to a temp dir, spool in
it) are started, a warm-up is sent, then --runs timed runs. Per run: e2e msg/s (t0 =
just before the source is spawned, end = the sink's delivered counter reaching
baseline + N) and the gateway's CPU seconds (utime+stime of its process tree from
/proc, as ../shared/bench/bench_lib.py does). One JSON line per run, then a table:
median [min..max] msg/s, gateway CPU us/msg, and each cell's median over the
plain/plain median of the same mode (issue 17's goal: >= 0.50). With --ceiling, the
source also runs straight into the sink ("direct" rows, ratio against plain/direct):
what the load tools themselves allow on this machine.

Loopback only; every process started here runs in its own session and is stopped
(process group) at the end of its cell and on exit; every run is bounded by --timeout.
Usage: tests/bench/tls.sh [RELAYGATE_BIN] [options]  (tls.py -h for the options).
"""
import argparse, json, os, signal, socket, statistics, subprocess, sys, tempfile, time

HZ = os.sysconf("SC_CLK_TCK")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


# ---------------------------------------------------------------- /proc (as bench_lib.py)
def _stat_fields(pid):
    with open("/proc/%d/stat" % pid, "rb") as f:
        data = f.read()
    return data[data.rindex(b")") + 2:].split()


def proc_cpu(pid):
    """utime+stime+cutime+cstime of pid, seconds (0 if gone)."""
    try:
        r = _stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return 0.0
    return sum(int(x) for x in r[11:15]) / HZ


def tree_cpu(root):
    """CPU seconds of root and its live descendants (reaped ones are in cutime)."""
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                kids.setdefault(int(_stat_fields(int(d))[1]), []).append(int(d))
            except Exception:
                pass
    tot, stack = 0.0, [root]
    while stack:
        p = stack.pop()
        tot += proc_cpu(p)
        stack.extend(kids.get(p, []))
    return tot


def sys_busy():
    """(busy excluding steal) seconds summed over all CPUs."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / HZ


def wait_idle(max_s, threshold):
    t_end = time.monotonic() + max_s
    while True:
        b0 = sys_busy(); time.sleep(1.0); busy = sys_busy() - b0
        if busy < threshold:
            return "idle busy_cpus=%.2f" % busy
        if time.monotonic() >= t_end:
            return "NOT-IDLE busy_cpus=%.2f" % busy


# ---------------------------------------------------------------- processes
STARTED = []   # Popen objects, each the leader of its own session


def start(cmd, log, env=None):
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True, env=env)
    STARTED.append(p)
    return p


def stop(p, grace=10.0):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    if p in STARTED:
        STARTED.remove(p)


def stop_all():
    for p in list(STARTED):
        stop(p, 5.0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listen(port, timeout, proc):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def sink_counts(path):
    """(delivered, connections, tls handshakes, resumed) from the sink's count file."""
    try:
        with open(path) as f:
            v = [int(x) for x in f.read().split()]
        return tuple(v) if len(v) == 4 else (0, 0, 0, 0)
    except (FileNotFoundError, ValueError):
        return (0, 0, 0, 0)


# ---------------------------------------------------------------- one cell
GW_CONFIG = """hostname = "bench.relaygate.test"
data_dir = "{data}"

[submission]
listen = ["127.0.0.1:{port}"]
{client_tls}
[admin]
listen = "127.0.0.1:0"

[queue]
max_concurrency = 100
max_per_destination = 50
{tls}
[transports.sink]
kind = "smtp"
host = "127.0.0.1"
port = {sink_port}
{upstream}
[[routes]]
transport = "sink"
"""


def gateway_config(cell_dir, port, sink_port, certs, client, upstream):
    client_tls = ""
    if client == "starttls":
        client_tls = 'tls_cert = "%s"\ntls_key = "%s"\n' % (
            os.path.join(certs, "cert.pem"), os.path.join(certs, "key.pem"))
    tls = up = ""
    if upstream == "plain":
        up = "no_starttls = true\n"
    else:
        tls = '\n[tls]\nextra_ca_file = "%s"\n' % os.path.join(certs, "ca.pem")
    return GW_CONFIG.format(data=os.path.join(cell_dir, "data"), port=port, sink_port=sink_port,
                            client_tls=client_tls, tls=tls, upstream=up)


def source_cmd(a, port, client, mode, n, certs):
    return [a.tls_bench, "source", "--connect", "127.0.0.1:%d" % port,
            "--tls", "none" if client == "plain" else "starttls",
            "-n", str(n), "-c", str(a.c), "-l", str(a.l), "--mode", mode,
            "--ca", os.path.join(certs, "ca.pem"), "--timeout", str(a.timeout)]


def one_run(a, cmd, count_file, n, gw_pid, sink_pid, label):
    """Spawns the source, waits for it and for the sink to count n more; one result."""
    base = sink_counts(count_file)
    want = base[0] + n
    gw0 = tree_cpu(gw_pid) if gw_pid else 0.0
    sk0 = proc_cpu(sink_pid)
    t0 = time.monotonic()
    deadline = t0 + a.timeout + 5
    src = subprocess.Popen(cmd,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL, start_new_session=True)
    STARTED.append(src)
    t_acc = t_e2e = None
    rc = ru = None
    timed_out = False
    while True:
        if rc is None:
            pid, status, r = os.wait4(src.pid, os.WNOHANG)
            if pid == src.pid:
                t_acc, rc, ru = time.monotonic(), os.waitstatus_to_exitcode(status), r
                src.returncode = rc
        if t_e2e is None and sink_counts(count_file)[0] >= want:
            t_e2e = time.monotonic()
        if rc is not None and (t_e2e is not None or rc != 0):
            break
        if time.monotonic() > deadline:
            timed_out = True
            break
        time.sleep(a.poll)
    gw1 = tree_cpu(gw_pid) if gw_pid else 0.0
    sk1 = proc_cpu(sink_pid)
    out, err = src.communicate() if rc is not None else (b"", b"")
    stop(src, 1.0)
    after = sink_counts(count_file)
    try:
        srcj = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        srcj = {}
    if err.strip():
        sys.stderr.write(err.decode(errors="replace"))
    res = {
        "label": label, "n": n, "c": a.c, "l": a.l,
        "src_rc": rc, "timed_out": timed_out,
        "accept_s": round(t_acc - t0, 4) if t_acc else None,
        "e2e_s": round(t_e2e - t0, 4) if t_e2e else None,
        "e2e_mps": round(n / (t_e2e - t0), 1) if t_e2e else None,
        "delivered": after[0] - base[0],
        "src_accept_mps": srcj.get("msg_per_s"),
        "src_failed": srcj.get("failed"),
        "client_tls_handshakes": srcj.get("tls_handshakes"),
        "client_tls_resumed": srcj.get("resumed"),
        "upstream_connections": after[1] - base[1],
        "upstream_tls_handshakes": after[2] - base[2],
        "upstream_tls_resumed": after[3] - base[3],
        "src_cpu_s": round(ru.ru_utime + ru.ru_stime, 3) if ru else None,
        "sink_cpu_s": round(sk1 - sk0, 3),
        "gw_cpu_s": round(gw1 - gw0, 3) if gw_pid else None,
        "gw_cpu_us_per_msg": round(1e6 * (gw1 - gw0) / n, 1) if gw_pid else None,
    }
    res["ok"] = rc == 0 and not timed_out and t_e2e is not None
    return res


def run_cell(a, tmp, certs, client, upstream, mode, results):
    cell = "%s/%s/%s" % (client, upstream, mode)
    cell_dir = os.path.join(tmp, cell.replace("/", "-"))
    os.makedirs(cell_dir)
    count_file = os.path.join(cell_dir, "sink.count")
    sink_port = free_port()
    # Without a gateway ("direct", the tools' ceiling) the sink speaks the client's TLS.
    side = client if upstream == "direct" else upstream
    sink = start([a.tls_bench, "sink",
                  "--listen", "127.0.0.1:%d" % sink_port,
                  "--tls", "none" if side == "plain" else "starttls",
                  "--cert-dir", certs, "--count-file", count_file],
                 open(os.path.join(cell_dir, "sink.log"), "wb"))
    gw = None
    try:
        if not wait_listen(sink_port, 30, sink):
            raise RuntimeError("sink did not start (%s/sink.log)" % cell_dir)
        if upstream == "direct":
            port, gw_pid = sink_port, None
        else:
            port = free_port()
            conf = os.path.join(cell_dir, "relaygate.toml")
            with open(conf, "w") as f:
                f.write(gateway_config(cell_dir, port, sink_port, certs, client, upstream))
            env = dict(os.environ, RUST_LOG=a.rust_log)
            gw = start([a.relaygate, "serve", "-c", conf],
                       open(os.path.join(cell_dir, "gateway.log"), "wb"), env=env)
            if not wait_listen(port, 30, gw):
                raise RuntimeError("gateway did not start (%s/gateway.log)" % cell_dir)
            gw_pid = gw.pid
        if a.warmup > 0:
            w = one_run(a, source_cmd(a, port, client, mode, a.warmup, certs), count_file,
                        a.warmup, gw_pid, sink.pid, cell + " warmup")
            if not w["ok"]:
                print("# warm-up FAILED: %s" % json.dumps(w), file=sys.stderr, flush=True)
        for i in range(a.runs):
            idle = wait_idle(a.quiet_wait, a.quiet_threshold) if a.quiet_wait > 0 else "not-checked"
            r = one_run(a, source_cmd(a, port, client, mode, a.n, certs), count_file,
                        a.n, gw_pid, sink.pid, cell)
            r.update(client=client, upstream=upstream, mode=mode, run=i + 1, idle_before=idle)
            results.append(r)
            line = json.dumps(r)
            print(line, flush=True)
            with open(os.path.join(tmp, "results.jsonl"), "a") as f:
                f.write(line + "\n")
            if not r["ok"]:
                print("# run FAILED: %s (logs in %s)" % (cell, cell_dir), file=sys.stderr, flush=True)
    finally:
        if gw:
            stop(gw)
        stop(sink)


# ---------------------------------------------------------------- table
def med(vals, fmt="%.0f"):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-", None
    m = statistics.median(vals)
    if len(vals) == 1:
        return fmt % m, m
    return (fmt + " [" + fmt + ".." + fmt + "]") % (m, min(vals), max(vals)), m


def table(results, cells):
    rows, base = [], {}
    for client, upstream, mode in cells:
        g = [r for r in results if (r["client"], r["upstream"], r["mode"]) == (client, upstream, mode)]
        ok = [r for r in g if r["ok"]]
        mps, m = med([r["e2e_mps"] for r in ok])
        cpu, _ = med([r["gw_cpu_us_per_msg"] for r in ok])
        res = "%s/%s" % (sum(r["client_tls_resumed"] or 0 for r in ok),
                         sum(r["client_tls_handshakes"] or 0 for r in ok))
        ures = "%s/%s/%s" % (sum(r["upstream_tls_resumed"] for r in ok),
                             sum(r["upstream_tls_handshakes"] for r in ok),
                             sum(r["upstream_connections"] for r in ok))
        runs = "%d%s" % (len(ok), ("/%d FAIL" % len(g)) if len(ok) != len(g) else "")
        rows.append([client, upstream, mode, runs, mps, m, cpu, res, ures])
        if client == "plain" and upstream in ("plain", "direct"):
            base[(upstream == "direct", mode)] = m
    print("%-8s %-8s %-6s %-5s %-26s %-18s %-6s %-14s %s" % (
        "client", "upstream", "mode", "runs", "e2e msg/s med [min..max]", "gw CPU us/msg",
        "ratio", "client resumed", "upstream resumed/handshakes/conns"))
    for client, upstream, mode, runs, mps, m, cpu, res, ures in rows:
        b = base.get((upstream == "direct", mode))
        ratio = "%.2f" % (m / b) if (m and b) else "-"
        if upstream == "direct":
            cpu = "-"
        print("%-8s %-8s %-6s %-5s %-26s %-18s %-6s %-14s %s" % (
            client, upstream, mode, runs, mps, cpu, ratio, res, ures))


# ---------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tdir = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    ap.add_argument("relaygate", nargs="?", default=os.path.join(tdir, "release", "relaygate"))
    ap.add_argument("--tls-bench", default=os.path.join(tdir, "release", "examples", "tls_bench"),
                    help="the tls_bench example binary (default: %(default)s)")
    ap.add_argument("-n", type=int, default=10000, help="messages per run (default %(default)s)")
    ap.add_argument("-c", type=int, default=10, help="concurrent client sessions (default %(default)s)")
    ap.add_argument("-l", type=int, default=1024, help="body bytes (default %(default)s)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=500, help="untimed messages before each cell's runs")
    ap.add_argument("--modes", default="single,multi")
    ap.add_argument("--clients", default="plain,starttls")
    ap.add_argument("--upstreams", default="plain,starttls")
    ap.add_argument("--ceiling", action="store_true",
                    help="also source -> sink without the gateway (upstream 'direct'), the tools' own ceiling")
    ap.add_argument("--timeout", type=float, default=300, help="bound per run, seconds")
    ap.add_argument("--poll", type=float, default=0.005)
    ap.add_argument("--quiet-wait", type=float, default=120,
                    help="wait up to S s for an idle machine before each run (0 = off)")
    ap.add_argument("--quiet-threshold", type=float, default=0.15, help="idle = fewer busy CPUs than this")
    ap.add_argument("--rust-log", default="warn", help="RUST_LOG of the gateway")
    ap.add_argument("--outdir", help="keep configs, logs and results.jsonl here (default: a temp dir)")
    a = ap.parse_args()
    for b in (a.relaygate, a.tls_bench):
        if not os.access(b, os.X_OK):
            sys.exit("not found: %s (cargo build --release; cargo build --release --example tls_bench)" % b)
    a.relaygate, a.tls_bench = os.path.abspath(a.relaygate), os.path.abspath(a.tls_bench)

    def on_signal(sig, _frame):
        raise SystemExit(128 + sig)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    tmp = os.path.abspath(a.outdir) if a.outdir else tempfile.mkdtemp(prefix="relaygate-tls-")
    os.makedirs(tmp, exist_ok=True)
    certs = os.path.join(tmp, "certs")
    cells = [(c, u, m) for m in a.modes.split(",") for c in a.clients.split(",")
             for u in a.upstreams.split(",")]
    if a.ceiling:
        cells += [(c, "direct", m) for m in a.modes.split(",") for c in a.clients.split(",")]
    print("# tls matrix %s host=%s cpus=%d relaygate=%s N=%d c=%d l=%d runs=%d warmup=%d outdir=%s" % (
        time.strftime("%Y-%m-%dT%H:%M:%S"), socket.gethostname(), os.cpu_count(), a.relaygate,
        a.n, a.c, a.l, a.runs, a.warmup, tmp), flush=True)
    results = []
    try:
        for client, upstream, mode in cells:
            try:
                run_cell(a, tmp, certs, client, upstream, mode, results)
            except RuntimeError as e:
                print("# cell %s/%s/%s FAILED: %s" % (client, upstream, mode, e), file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("# interrupted", file=sys.stderr)
    finally:
        stop_all()
    print()
    table(results, cells)
    print("# results: %s/results.jsonl" % tmp)
    return 0 if results and all(r["ok"] for r in results) and len(results) == len(cells) * a.runs else 1


if __name__ == "__main__":
    sys.exit(main())

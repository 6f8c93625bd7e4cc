#!/usr/bin/env python3
"""modemgate benchmarks against the release binary (see BENCHMARKS.md for the figures and commands).

    cargo build --release && cp target/release/modemgate /tmp/modemgate-bench   # once
    bench/bench.py http     # single POSTs with wrk, 64 keep-alive connections; 202s vs rows stored
    bench/bench.py campaign # the same, each POST to another debtor with an Idempotency-Key and a reference
    bench/bench.py batch    # POST /v1/messages/batch, 1,000 per request, with wrk (CONNECTIONS, default 4)
    bench/bench.py drain    # 400 messages through 4 simulated modems at 0.5 s per send
    bench/bench.py latency  # one message at a time to an idle simulated modem: POST → PDU at the modem
    bench/bench.py wal      # light steady traffic through 4 simulated modems: how big the -wal file grows
    bench/bench.py reload   # SIGHUP while one of 4 busy modems is in a 20 s send: how long the others stall
    bench/bench.py pace     # a modem's pace across a rate change at reload and across a restart
    bench/bench.py restart  # fill 1,000,000 queued, restart: time to /healthz and /readyz, VmRSS

MODEMGATE_BIN picks the binary (default /tmp/modemgate-bench, else target/release/modemgate). Storage is a
fresh directory on local disk under BENCH_DIR (default /var/tmp/modemgate-bench), not tmpfs, so fsync
costs what it costs on the box. WAL_LIMIT_MB sets `[storage] wal_limit_mb` (default: the daemon's), to
compare limits on one build. Standard library only; wrk (`apt-get install -y wrk`) for http/batch.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "bench-token"


def binary():
    for path in (os.environ.get("MODEMGATE_BIN"), "/tmp/modemgate-bench",
                 os.path.join(REPO, "target/release/modemgate")):
        if path and os.path.exists(path):
            return path
    sys.exit("no release binary: cargo build --release, or set MODEMGATE_BIN")


def workdir(name):
    base = os.environ.get("BENCH_DIR", "/var/tmp/modemgate-bench")
    path = os.path.join(base, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load():
    return open("/proc/loadavg").read().split()[0:3]


def write_config(path, port, modems="", body_limit=2 * 1024 * 1024):
    # WAL_LIMIT_MB: `[storage] wal_limit_mb`, to compare limits on one build (default: the daemon's).
    limit = os.environ.get("WAL_LIMIT_MB")
    wal_limit = f"wal_limit_mb = {limit}" if limit else ""
    config = f"""
[server]
listen = "127.0.0.1:{port}"
default_region = "US"
body_limit = {body_limit}
[storage]
path = "{path}/bench.db"
{wal_limit}
[[api_keys]]
name = "bench"
token = "{TOKEN}"
scopes = ["send", "read", "admin"]
[quiet_hours]
enabled = false
[logging]
level = "warn"
{modems}
"""
    config_path = os.path.join(path, "modemgate.toml")
    with open(config_path, "w") as f:
        f.write(config)
    return config_path


class Daemon:
    """`modemgate serve` as a child; `ready_s` is spawn → /healthz answering."""

    def __init__(self, config, port, log):
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.started = time.monotonic()
        self.proc = subprocess.Popen([binary(), "serve", "--config", config],
                                     stdout=subprocess.DEVNULL, stderr=open(log, "a"))
        self.healthz_s = self.wait("/healthz")
        self.readyz_s = self.wait("/readyz")

    def wait(self, path, deadline=120):
        while True:
            try:
                get(self.base + path)
                return time.monotonic() - self.started
            except (urllib.error.URLError, ConnectionError):
                if self.proc.poll() is not None:
                    sys.exit(f"modemgate serve exited with {self.proc.returncode}")
                if time.monotonic() - self.started > deadline:
                    sys.exit(f"{path} did not answer within {deadline} s")
                time.sleep(0.005)

    def rss_mb(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_s(self):
        """User + system CPU seconds the daemon has used so far."""
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def request(url, body=None, method=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {TOKEN}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=120) as response:
        return json.loads(response.read() or b"null")


def get(url):
    return request(url)


def rows(path):
    with sqlite3.connect(os.path.join(path, "bench.db")) as db:
        return db.execute("SELECT count(*) FROM messages").fetchone()[0]


def need(tool):
    """Stop before a daemon is started for a bench that cannot run (it would be left running)."""
    if shutil.which(tool) is None:
        sys.exit(f"{tool} is not installed (apt-get install -y {tool}, as root; see BENCHMARKS.md)")


def wrk(script, port, connections, seconds, path):
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
           os.path.join(REPO, "bench", script), f"http://127.0.0.1:{port}{path}"]
    print("$", " ".join(cmd), flush=True)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    print(out)
    result = next(line for line in out.splitlines() if line.startswith("RESULT"))
    fields = dict(kv.split("=") for kv in result.split()[1:])
    rps = next(float(line.split()[1]) for line in out.splitlines() if line.startswith("Requests/sec"))
    return fields, rps


def bench_http(script="post.lua", name="http"):
    need("wrk")
    path, port = workdir(name), free_port()
    daemon = Daemon(write_config(path, port), port, os.path.join(path, "serve.log"))
    before, cpu = load(), daemon.cpu_s()
    fields, rps = wrk(script, port, 64, int(os.environ.get("SECONDS_", "15")), "/v1/messages")
    cpu = daemon.cpu_s() - cpu
    daemon.stop()
    stored = rows(path)
    accepted = int(fields["accepted"])
    print(f"HTTP single ({script}): {rps:.0f} req/s, p50 {fields['p50_ms']} ms, p99 {fields['p99_ms']} ms, "
          f"202s {accepted}, other {fields['other']}, rows stored {stored} "
          f"(≥ 202s: {stored >= accepted}; the excess is requests in flight when wrk stopped), "
          f"daemon CPU {cpu * 1e6 / max(accepted, 1):.0f} µs per request, load {before} → {load()}")


def bench_batch():
    need("wrk")
    path, port = workdir("batch"), free_port()
    daemon = Daemon(write_config(path, port), port, os.path.join(path, "serve.log"))
    before, cpu = load(), daemon.cpu_s()
    fields, rps = wrk("batch.lua", port, int(os.environ.get("CONNECTIONS", "4")), int(os.environ.get("SECONDS_", "15")), "/v1/messages/batch")
    cpu = daemon.cpu_s() - cpu
    daemon.stop()
    stored = rows(path)
    print(f"HTTP batch: {rps:.1f} batches/s = {rps * 1000:.0f} messages/s, p50 {fields['p50_ms']} ms, "
          f"p99 {fields['p99_ms']} ms, batches answered 200 {fields['batches']}, rows stored {stored}, "
          f"daemon CPU {cpu * 1e6 / max(stored, 1):.1f} µs per message, load {before} → {load()}")


class Sims:
    """`modemgate simulate` as a child: its device paths and control API."""

    def __init__(self, path, modems, send_delay):
        self.proc = subprocess.Popen([binary(), "simulate", "--modems", str(modems), "--dir",
                                      os.path.join(path, "sims"), "--send-delay", str(send_delay),
                                      "--send-jitter", "0", "--report-delay", "1", "--control", "127.0.0.1:0"],
                                     stdout=subprocess.PIPE, stderr=open(os.path.join(path, "sim.log"), "w"),
                                     text=True)
        self.devices = [self.proc.stdout.readline().strip() for _ in range(modems)]
        self.control = self.proc.stdout.readline().strip().removeprefix("control ")

    def sends(self, index):
        return get(f"{self.control}/modems/{index}/sends")

    def config(self, rate):
        return "".join(f'[[modems]]\nid = "m{i}"\ndevice = "{device}"\nrate = "{rate}"\n'
                       for i, device in enumerate(self.devices))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


@contextlib.contextmanager
def with_modems(name, modems, send_delay, rate):
    """A fresh bench directory, `modems` simulated modems answering after `send_delay` s, and the daemon
    with them at `rate`, once every modem is `ready` (so initialisation is not counted as sending time).
    Yields (simulators, daemon, directory); the bench stops the daemon, the simulators stop here."""
    path, port = workdir(name), free_port()
    sims = Sims(path, modems, send_delay)
    try:
        daemon = Daemon(write_config(path, port, sims.config(rate)), port, os.path.join(path, "serve.log"))
        while sum(m["state"] == "ready" for m in get(daemon.base + "/v1/modems")["modems"]) < modems:
            time.sleep(0.05)
        yield sims, daemon, path
    finally:
        sims.stop()


def bench_drain():
    with with_modems("drain", 4, 0.5, "600/min") as (sims, daemon, _):
        before = load()
        messages = [{"to": f"+1415890{i:04d}", "text": f"drain {i}"} for i in range(400)]
        accepted_at = time.monotonic()
        answer = request(daemon.base + "/v1/messages/batch", {"messages": messages})
        assert all(r["http_status"] == 202 for r in answer["results"]), answer
        while True:
            sent = sum(len(sims.sends(i)) for i in range(4))
            if sent >= 400:
                break
            time.sleep(0.01)
        elapsed = time.monotonic() - accepted_at
        per_modem = [len(sims.sends(i)) for i in range(4)]
        daemon.stop()
        print(f"Drain: 400 through 4 modems at 0.5 s/send in {elapsed:.2f} s (ideal 50 s), utilisation "
              f"{50 / elapsed:.3f}, per modem {per_modem}, load {before} → {load()}")


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def bench_latency():
    """What the gateway adds to a send: one message at a time to an idle modem that answers at once
    (`--send-delay 0`), timed on the daemon's own clock from its `accepted` event to its `sent` event
    (both in `GET /v1/messages/{id}`), which spans the dispatcher's hand-out, the fsync'd `submitting` record,
    the AT+CMGS exchange and the fsync'd `sent` record; and the POST's round trip on the client."""
    count = int(os.environ.get("COUNT", "200"))
    with with_modems("latency", 1, 0, "100/s") as (sims, daemon, _):
        before = load()
        posts, sends = [], []
        for i in range(count):
            started = time.monotonic()
            message = request(daemon.base + "/v1/messages", {"to": f"+1415890{i:04d}", "text": f"latency {i}"})
            posts.append(time.monotonic() - started)
            while True:
                detail = get(f"{daemon.base}/v1/messages/{message['id']}")
                at = {e["kind"]: e["at"] for e in detail["events"]}
                if "sent" in at:
                    break
                time.sleep(0.002)
            accepted, sent = (datetime.fromisoformat(at[k].replace("Z", "+00:00")) for k in ("accepted", "sent"))
            sends.append((sent - accepted).total_seconds())
        daemon.stop()
        assert len(sims.sends(0)) == count
        ms = lambda v: f"{v * 1000:.1f} ms"
        print(f"Latency over {count} sends: POST round trip p50 {ms(percentile(posts, 50))}, p99 "
              f"{ms(percentile(posts, 99))}; accepted → sent (daemon clock) p50 {ms(percentile(sends, 50))}, "
              f"p99 {ms(percentile(sends, 99))}, max {ms(max(sends))}; load {before} → {load()}")


def bench_wal():
    """The `-wal` file under light, steady traffic (5 POSTs a second through 4 modems at 0.3 s per send),
    sampled every second: what a start after a crash would have to read, and what it takes on disk. With
    BURST=N, a campaign (`campaign.lua`, 64 connections) runs for N s first, and the samples show how soon
    after it the file is given back."""
    seconds = int(os.environ.get("SECONDS_", "60"))
    burst = int(os.environ.get("BURST", "0"))
    with with_modems("wal", 4, 0.3, "120/min") as (_, daemon, path):
        wal = os.path.join(path, "bench.db-wal")
        size = lambda: os.path.getsize(wal) if os.path.exists(wal) else 0
        before, peak, sent, given_back = load(), 0, 0, None
        if burst:
            need("wrk")
            wrk("campaign.lua", daemon.port, 64, burst, "/v1/messages")
            print(f"after the {burst}-s campaign: -wal file {size() / 1e6:.1f} MB", flush=True)
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            for _ in range(5):
                request(daemon.base + "/v1/messages", {"to": f"+1415890{sent % 2000:04d}", "text": f"wal {sent}"})
                sent += 1
            time.sleep(1)
            peak = max(peak, size())
            if burst and given_back is None and size() <= 8.4e6:
                given_back = time.monotonic() - started
                print(f"-wal file {size() / 1e6:.1f} MB {given_back:.0f} s after the campaign", flush=True)
        end = size()
        daemon.stop()
        print(f"WAL: {sent} messages in {seconds} s through 4 modems, peak -wal file {peak / 1e6:.1f} MB "
              f"(after any campaign), at the end {end / 1e6:.1f} MB, load {before} → {load()}")


def bench_reload():
    """How long a configuration reload holds up sending: a backlog through 4 modems at 0.5 s per send, one
    of them (m0) slowed to 20 s per send, and a SIGHUP (the config unchanged) once the others are in their
    stride. Samples m1-m3's send counts every 20 ms for 45 s (the backlog lasts longer): sends in the 10 s
    before and after the SIGHUP (ideal 60 each) and the longest time after it with none."""
    with with_modems("reload", 4, 0.5, "600/min") as (sims, daemon, _):
        before = load()
        request(f"{sims.control}/modems/0/faults", {"slow_send": 20000}, "PUT")
        messages = [{"to": f"+1415891{i:04d}", "text": f"reload {i}"} for i in range(400)]
        request(daemon.base + "/v1/messages/batch", {"messages": messages})
        started = time.monotonic()
        samples, signalled = [], None
        while time.monotonic() - started < 45:
            now = time.monotonic() - started
            if signalled is None and now >= 10:
                daemon.proc.send_signal(signal.SIGHUP)
                signalled = now
            samples.append((now, sum(len(sims.sends(i)) for i in (1, 2, 3))))
            time.sleep(0.02)
        count_at = lambda t: max(n for at, n in samples if at <= t)
        before_n = count_at(signalled) - count_at(signalled - 10)
        after_n = count_at(signalled + 10) - count_at(signalled)
        changes = [at for (at, n), (_, prev) in zip(samples[1:], samples) if n > prev and at > signalled]
        gaps = [b - a for a, b in zip([signalled] + changes, changes + [samples[-1][0]])]
        request(f"{sims.control}/modems/0/vanish", {"seconds": 60})
        daemon.stop()
        print(f"Reload: m1-m3 sent {before_n} in the 10 s before the SIGHUP and {after_n} in the 10 s after "
              f"(ideal 60), longest gap after it {max(gaps):.2f} s, m0 in a 20 s send; load {before} → {load()}")


def bench_pace():
    """A modem's pace across a reload that changes its rate and across a restart. Rate change: one modem that answers at once at
    60/min; after its 5th send the config says 20/min (3 s), after its 9th 120/min (0.5 s), each applied by
    SIGHUP. Restart: a fresh modem at 6/min sends one message, the daemon is stopped (SIGTERM) and started
    again with a second one queued. Send counts are sampled every 5 ms; each gap should be the interval in
    force: 3 s and 0.5 s after the changes, 10 s across the restart."""
    with with_modems("pace", 1, 0, "60/min") as (sims, daemon, path):
        before = load()
        config = os.path.join(path, "modemgate.toml")
        messages = [{"to": f"+1415892{i:04d}", "text": f"rate {i}"} for i in range(20)]
        request(daemon.base + "/v1/messages/batch", {"messages": messages})
        started = time.monotonic()
        times, changes = [], {5: "20/min", 9: "120/min"}
        while time.monotonic() - started < 40 and len(times) < len(messages):
            now = time.monotonic() - started
            times += [now] * (len(sims.sends(0)) - len(times))
            rate = changes.get(len(times))
            if rate and now - times[-1] > 0.2:
                with open(config) as f:
                    text = f.read()
                with open(config, "w") as f:
                    f.write(text.replace('rate = "60/min"', f'rate = "{rate}"').replace('rate = "20/min"', f'rate = "{rate}"'))
                daemon.proc.send_signal(signal.SIGHUP)
                del changes[len(times)]
            time.sleep(0.005)
        daemon.stop()
        gaps = [f"{b - a:.2f}" for a, b in zip(times, times[1:])]
        print(f"Rate change: gaps between sends (s) {' '.join(gaps)}; 60/min → 20/min after the 5th send, → 120/min "
              f"after the 9th; load {before} → {load()}")
    with with_modems("pace", 1, 0, "6/min") as (sims, daemon, path):
        before = load()
        request(daemon.base + "/v1/messages", {"to": "+14158930001", "text": "pace 1"})
        while not sims.sends(0):
            time.sleep(0.005)
        first = time.monotonic()
        request(daemon.base + "/v1/messages", {"to": "+14158930002", "text": "pace 2"})
        daemon.stop()
        daemon = Daemon(os.path.join(path, "modemgate.toml"), daemon.port, os.path.join(path, "serve.log"))
        while len(sims.sends(0)) < 2:
            time.sleep(0.005)
        gap = time.monotonic() - first
        daemon.stop()
        print(f"Restart: gap between the sends either side of it {gap:.2f} s (6/min: 10 s due); "
              f"load {before} → {load()}")


def bench_restart():
    total = int(os.environ.get("QUEUED", "1000000"))
    path, port = workdir("restart"), free_port()
    config = write_config(path, port)
    log = os.path.join(path, "serve.log")
    daemon = Daemon(config, port, log)
    batch = [{"to": f"+1415890{i:04d}", "text": f"queued message {i}"} for i in range(1000)]
    body = {"messages": batch}
    filled_from = time.monotonic()
    for _ in range(total // 1000):
        request(daemon.base + "/v1/messages/batch", body)
    fill_s = time.monotonic() - filled_from
    rss_full = daemon.rss_mb()
    daemon.stop()
    stored = rows(path)
    size_mb = os.path.getsize(os.path.join(path, "bench.db")) / 1e6
    before = load()
    daemon = Daemon(config, port, log)
    rss_ready = daemon.rss_mb()
    time.sleep(2)
    rss_settled = daemon.rss_mb()
    daemon.stop()
    print(f"Restart: {stored} queued ({size_mb:.0f} MB database, filled in {fill_s:.0f} s, RSS while filling "
          f"{rss_full:.0f} MB); after restart /healthz {daemon.healthz_s:.3f} s, /readyz {daemon.readyz_s:.3f} s "
          f"after spawn, VmRSS {rss_ready:.0f} MB at ready, {rss_settled:.0f} MB 2 s later, load {before} → {load()}")


if __name__ == "__main__":
    benches = {"http": bench_http, "campaign": lambda: bench_http("campaign.lua", "campaign"),
               "batch": bench_batch, "drain": bench_drain, "latency": bench_latency, "wal": bench_wal,
               "reload": bench_reload, "pace": bench_pace, "restart": bench_restart}
    for name in sys.argv[1:] or benches:
        benches[name]()

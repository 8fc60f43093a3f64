#!/usr/bin/env python3
"""The satellite benchmark suite (issue 8): one command, python3 stdlib only.

    python3 benches/run.py            # full: every figure a median of 5 runs, h2load -D 10
    python3 benches/run.py --quick    # smoke test: 1 run, short durations
    python3 benches/run.py --runs 7 --duration 10 --warmup 2 --only unary,mtls
    python3 benches/run.py --servers satellite,before,satellite+icpt,tonic \
        --baseline OLD/satellite --baseline-loadgen OLD/loadgen   # before/after, interceptor cost

It builds satellite and the peers (benches/peers: tonic_server, floor_server, tonic_client,
loadgen; the Go server from tests/peers/go/build.sh when that exists), installs h2load when
missing, then runs every scenario with the servers alternating (A B C A B C ...), each server
pinned to CPU 0 and the load generator to CPU 1. Every server is started fresh for each
measurement and stopped after it. It prints a table and writes BENCHMARKS.md at the repository
root (use --out to write elsewhere).

Scenarios (ids for --only):
  unary      h2load, plaintext GetImage(1,2), -c 16 -m 32, p50/p99 from --log-file,
             server CPU us/call, idle and peak RSS
  latency    the same at -c 1 -m 1 (latency at low load)
  stream     h2load, GetImages over the whole map, --scale 8, --img-bytes 1 and 1024,
             one stream and 8 concurrent streams (h2load -n/-m), received DATA bytes checked
             against the exact expected gRPC framing
  mtls       loadgen (our client) with mutual TLS, unary -c 16 -m 32: calls/s, p50/p99,
             server CPU us/call, peak RSS
  grpcio     stock Python grpc.aio (benches/grpcio_load.py) with mutual TLS, 64 calls in
             flight on one channel: server CPU us/call, idle and peak RSS (the client is the
             bottleneck: a moderate, realistic load)
  mtlsstream loadgen with mutual TLS, GetImages 1 KiB images, one stream and 8 concurrent
             streams: MB/s
  idle       memory per idle mTLS connection: loadgen holds 10,000 connections (one call each);
             (server VmRSS then - VmRSS before) / connections
  client     client side: our loadgen vs tonic_client against the tonic server at equal
             concurrency: calls/s, p99 and client CPU us/call
"""

import argparse
import atexit
import datetime
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(ROOT, "benches", "peers")
PEER_BIN = os.path.join(PEERS, "target", "release")
SATELLITE = os.path.join(ROOT, "target", "release", "satellite")
GO_DIR = os.path.join(ROOT, "tests", "peers", "go")
WORLD = os.path.join(ROOT, "src", "satellite", "world.txt")
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_CPU = "0"
LOAD_CPU = "1"

WEB_ADDR = {}  # main address -> the --web listener's, for satellite-web
BASELINE = {}  # "satellite" / "loadgen": an earlier commit's binaries (--baseline, --baseline-loadgen)
STARTED = []  # every server process we started, to stop on any exit
COMMANDS = {}  # scenario -> example command lines, for BENCHMARKS.md
NOTES = []


def note_once(n):
    if n not in NOTES:
        NOTES.append(n)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run(cmd, **kw):
    log("+ " + " ".join(cmd))
    return subprocess.run(cmd, check=True, **kw)


# ---------------------------------------------------------------------------------- protocol


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def int32_field(tag, v):
    if v == 0:
        return b""
    return bytes([tag << 3]) + varint(v & 0xFFFFFFFFFFFFFFFF)


def location(x, y):
    return int32_field(1, x) + int32_field(2, y)


def area(ll, ur):
    a = location(*ll)
    b = location(*ur)
    return b"\x0a" + varint(len(a)) + a + b"\x12" + varint(len(b)) + b


def framed(msg):
    return b"\x00" + len(msg).to_bytes(4, "big") + msg


def image_len(x, y, n):
    return len(int32_field(1, x)) + len(int32_field(2, y)) + 1 + len(varint(n)) + n


def world_size():
    lines = open(WORLD).read().rstrip("\n").split("\n")
    return len(lines[0]), len(lines)


def expected_stream_bytes(scale, img_bytes):
    """Exact DATA bytes of one GetImages over the whole scaled map (prefix + Image each)."""
    w, h = world_size()
    w, h = w * scale, h * scale
    xs = sum(len(int32_field(1, x)) for x in range(w))
    ys = sum(len(int32_field(2, y)) for y in range(h))
    per_cell = 5 + 1 + len(varint(img_bytes)) + img_bytes
    return per_cell * w * h + xs * h + ys * w, w * h


# ---------------------------------------------------------------------------------- processes


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_us(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1_000_000 // CLK_TCK


def proc_mem_kib(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out


class Server:
    def __init__(self, name, argv, addr):
        self.name, self.argv, self.addr = name, argv, addr
        self.errlog = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU] + argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.errlog,
        )
        STARTED.append(self.proc)
        host, port = addr.rsplit(":", 1)
        deadline = time.time() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited at start: {self.stderr_tail()}")
            try:
                with socket.create_connection((host, int(port)), timeout=0.5):
                    break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"{name} did not listen on {addr}")
                time.sleep(0.05)
        time.sleep(0.3)
        self.idle = proc_mem_kib(self.proc.pid)

    def cpu_us(self):
        return proc_cpu_us(self.proc.pid)

    def mem(self):
        return proc_mem_kib(self.proc.pid)

    def stderr_tail(self, n=600):
        self.errlog.flush()
        try:
            with open(self.errlog.name, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                NOTES.append(f"{self.name} did not stop within 5 s of SIGINT: killed")
                self.proc.kill()
                self.proc.wait()
        if self.proc in STARTED:
            STARTED.remove(self.proc)
        tail = self.stderr_tail(4000)
        bad = [l for l in tail.splitlines() if re.search(r"\b(ERROR|WARN|panicked)\b", l)]
        if bad:
            NOTES.append(f"{self.name} logged under load: " + " | ".join(bad[:3]))
        os.unlink(self.errlog.name)


def stop_all():
    for p in list(STARTED):
        if p.poll() is None:
            p.kill()
            p.wait()


atexit.register(stop_all)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))


class CpuSampler:
    """Reads a server's CPU time `delay` seconds after start (end of warm-up) and at the end."""

    def __init__(self, server, delay):
        self.server, self.start = server, None
        self.t = threading.Timer(delay, self._sample)
        self.t.start()

    def _sample(self):
        self.start = self.server.cpu_us()

    def finish(self):
        self.t.join()
        return self.server.cpu_us() - (self.start or 0)


# ---------------------------------------------------------------------------------- servers


def server_argv(name, addr, certs, scale=1, img_bytes=1, go_bin=None):
    tls = ["--certs", certs] if certs else ["--plaintext"]
    common = ["--addr", addr] + tls + ["--scale", str(scale), "--img-bytes", str(img_bytes)]
    if name == "satellite":
        return [SATELLITE, "serve"] + common
    if name == "satellite+icpt":
        # The same server with one no-op interceptor on every call: what the hook costs.
        return [SATELLITE, "serve", "--bench-noop-interceptor"] + common
    if name == "before":
        # An earlier commit's binary (--baseline), for before/after tables in one run.
        return [BASELINE["satellite"], "serve"] + common
    if name == "tonic":
        return [os.path.join(PEER_BIN, "tonic_server")] + common
    if name == "satellite-web":
        # The browser listener beside the main port; its address is WEB_ADDR[addr].
        return [SATELLITE, "serve"] + common + ["--web", WEB_ADDR[addr], "--web-plaintext"]
    if name == "tonic-web":
        return [os.path.join(PEER_BIN, "tonic_server"), "--web"] + common
    if name == "floor":
        return [os.path.join(PEER_BIN, "floor_server")] + common
    if name == "go":
        # tests/peers/go's grpc-go server: --ca/--cert/--key, a map file, no --scale/--img-bytes.
        if scale != 1 or img_bytes != 1:
            return None
        tls = (["--ca", os.path.join(certs, "ca-cert.pem"), "--cert", os.path.join(certs, "server-cert.pem"),
                "--key", os.path.join(certs, "server-key.pem")] if certs else ["--plaintext"])
        return [go_bin, "--addr", addr] + tls + ["--map", WORLD]
    raise ValueError(name)


# ---------------------------------------------------------------------------------- h2load


H2LOAD_HEADERS = ["-H", "content-type: application/grpc", "-H", "te: trailers"]


def parse_h2load(out):
    r = {}
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
    if m:
        secs = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
        r["secs"], r["req_per_s"] = secs, float(m.group(3))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
    if m:
        r["done"], r["succeeded"], r["failed"], r["errored"] = (int(m.group(i)) for i in (3, 4, 5, 6))
    m = re.search(r"traffic: .*?, .*? headers .*?, [\d.]+\w*B \((\d+)\) data", out)
    if m:
        r["data_bytes"] = int(m.group(1))
    return r


def latency_from_log(path):
    durations = []
    with open(path) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1].strip() == "200":
                durations.append(int(parts[2]))
    durations.sort()
    if not durations:
        return None, None

    def pct(p):
        return durations[min(len(durations) - 1, round((len(durations) - 1) * p))]

    return pct(0.5), pct(0.99)


def h2load(url, body_file, extra, log_file=None):
    cmd = ["taskset", "-c", LOAD_CPU, "h2load", "-t", "1"] + extra + H2LOAD_HEADERS + ["-d", body_file]
    if log_file:
        cmd += ["--log-file", log_file]
    cmd.append(url)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return cmd, p.stdout + p.stderr


# ---------------------------------------------------------------------------------- scenarios

# results[scenario][metric][server] = [values...]; metric meta in METRICS
RESULTS = {}
METRICS = {}  # (scenario, metric) -> (label, unit, higher_is_better)
ORDER = []


def record(scenario, metric, server, value, label, unit, higher):
    if value is None:
        return
    RESULTS.setdefault(scenario, {}).setdefault(metric, {}).setdefault(server, []).append(value)
    if (scenario, metric) not in METRICS:
        METRICS[(scenario, metric)] = (label, unit, higher)
        ORDER.append((scenario, metric))


def note_cmd(scenario, cmd, addr):
    if scenario not in COMMANDS:
        COMMANDS[scenario] = " ".join(c if " " not in c else repr(c) for c in cmd).replace(addr, "127.0.0.1:PORT")


def scen_unary(name, servers, a, tmp, conc, scenario, title):
    c, m = conc
    body = os.path.join(tmp, "location.bin")
    for r in range(a.runs):
        for s in servers:
            addr = f"127.0.0.1:{free_port()}"
            srv = Server(s, server_argv(s, addr, None, go_bin=a.go_bin), addr)
            try:
                logf = os.path.join(tmp, f"h2load-{s}.tsv")
                if r == 0:
                    # One call first: the answer must be the 12 bytes of framed Image{1, 2, [cell]}.
                    # (h2load's traffic counters include the warm-up, so the load run can't check it.)
                    _, out = h2load(f"http://{addr}/satellite.Satellite/GetImage", body, ["-n", "1", "-c", "1"])
                    res = parse_h2load(out)
                    if res.get("succeeded") != 1 or res.get("data_bytes") != 12:
                        NOTES.append(f"{title}: {s} answered one GetImage(1, 2) with {res.get('data_bytes')} DATA bytes, expected 12")
                sampler = CpuSampler(srv, a.warmup)
                cmd, out = h2load(
                    f"http://{addr}/satellite.Satellite/GetImage",
                    body,
                    ["-D", str(a.duration), "--warm-up-time", str(a.warmup), "-c", str(c), "-m", str(m)],
                    logf,
                )
                cpu = sampler.finish()
                note_cmd(scenario, cmd, addr)
                res = parse_h2load(out)
                if "req_per_s" not in res:
                    raise RuntimeError(f"h2load output not understood against {s}:\n{out[-1500:]}")
                p50, p99 = latency_from_log(logf)
                os.unlink(logf)
                bad = res.get("failed", 0) + res.get("errored", 0)
                if bad:
                    NOTES.append(f"{title}: {s} run {r + 1}: {bad} failed/errored requests of {res.get('done')}")
                mem = srv.mem()
                record(scenario, "calls", s, res["req_per_s"], f"{title}: calls/s", "calls/s", True)
                record(scenario, "p50", s, p50 and p50 / 1000, f"{title}: p50", "ms", False)
                record(scenario, "p99", s, p99 and p99 / 1000, f"{title}: p99", "ms", False)
                calls = res["req_per_s"] * a.duration
                if calls:
                    record(scenario, "cpu", s, cpu / calls, f"{title}: server CPU per call", "us", False)
                if scenario == "unary":
                    record(scenario, "idle_rss", s, srv.idle["VmRSS"] / 1024, "idle RSS (plaintext, before load)", "MiB", False)
                    record(scenario, "peak_rss", s, mem["VmHWM"] / 1024, f"{title}: peak RSS", "MiB", False)
                log(f"  {title} [{s}] run {r + 1}: {res['req_per_s']:.0f} calls/s p50 {p50}us p99 {p99}us cpu/call {cpu / max(calls, 1):.2f}us")
            finally:
                srv.stop()


def stream_server(s, addr, certs, scale, img, a):
    """A server for a GetImages figure, or None (with a note) for one without --scale/--img-bytes."""
    argv = server_argv(s, addr, certs, scale, img, go_bin=a.go_bin)
    if argv is None:
        note_once(f"{s} has no --scale/--img-bytes: not in the GetImages figures")
        return None
    return Server(s, argv, addr)


def scen_stream(servers, a, tmp):
    w, h = world_size()
    scale = 8
    body = os.path.join(tmp, "area.bin")
    with open(body, "wb") as f:
        f.write(framed(area((0, 0), (w * scale - 1, h * scale - 1))))
    for img in (1, 1024):
        per_stream, cells = expected_stream_bytes(scale, img)
        for streams in (1, 8):
            n = (a.stream_rounds_small if img == 1 else a.stream_rounds_large) * streams
            scenario = f"stream_{img}_{streams}"
            title = f"GetImages whole map x{scale}, {img} B images, {streams} stream{'s' if streams > 1 else ''}"
            for r in range(a.runs):
                for s in servers:
                    addr = f"127.0.0.1:{free_port()}"
                    srv = stream_server(s, addr, None, scale, img, a)
                    if srv is None:
                        continue
                    try:
                        cpu0 = srv.cpu_us()
                        cmd, out = h2load(
                            f"http://{addr}/satellite.Satellite/GetImages", body, ["-n", str(n), "-c", "1", "-m", str(streams)]
                        )
                        cpu = srv.cpu_us() - cpu0
                        note_cmd(scenario, cmd, addr)
                        res = parse_h2load(out)
                        if "secs" not in res:
                            raise RuntimeError(f"h2load output not understood against {s}:\n{out[-1500:]}")
                        want = per_stream * n
                        got = res.get("data_bytes")
                        if got != want or res.get("succeeded") != n:
                            NOTES.append(f"{title}: {s} run {r + 1}: received {got} DATA bytes in {res.get('succeeded')}/{n} streams, expected {want}")
                        secs = res["secs"]
                        images = cells * n
                        record(scenario, "images", s, images / secs / 1e6, f"{title}: images/s", "M/s", True)
                        record(scenario, "mbps", s, (got or 0) / secs / 1e6, f"{title}: MB/s", "MB/s", True)
                        record(scenario, "cpu", s, cpu * 1000 / images, f"{title}: server CPU per image", "ns", False)
                        log(f"  {title} [{s}] run {r + 1}: {images / secs / 1e6:.2f} M images/s {(got or 0) / secs / 1e6:.0f} MB/s")
                    finally:
                        srv.stop()


def run_client(binary, addr, certs, args, scenario):
    cmd = ["taskset", "-c", LOAD_CPU, binary, "--addr", addr]
    if certs:
        cmd += ["--certs", certs]
    cmd += args
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    note_cmd(scenario, cmd, addr)
    line = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode != 0 or not line:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr[-1500:]}")
    if p.stderr.strip():
        NOTES.append(f"{scenario}: {os.path.basename(binary)} said: {p.stderr.strip()[:300]}")
    return json.loads(line[-1])


def scen_mtls(servers, a, tmp, certs):
    loadgen = os.path.join(PEER_BIN, "loadgen")
    c, m = a.conc
    title = f"unary mTLS, loadgen -c {c} -m {m}"
    for r in range(a.runs):
        for s in servers:
            addr = f"127.0.0.1:{free_port()}"
            srv = Server(s, server_argv(s, addr, certs, go_bin=a.go_bin), addr)
            try:
                sampler = CpuSampler(srv, a.warmup)
                res = run_client(
                    loadgen, addr, certs,
                    ["unary", "-c", str(c), "-m", str(m), "-d", str(a.duration), "--warmup", str(a.warmup)], "mtls",
                )
                cpu = sampler.finish()
                if res["errors"]:
                    NOTES.append(f"{title}: {s} run {r + 1}: {res['errors']} errors of {res['calls'] + res['errors']}")
                calls = res["calls"]
                record("mtls", "calls", s, res["calls_per_s"], f"{title}: calls/s", "calls/s", True)
                record("mtls", "p50", s, res["p50_us"] / 1000, f"{title}: p50", "ms", False)
                record("mtls", "p99", s, res["p99_us"] / 1000, f"{title}: p99", "ms", False)
                if calls:
                    record("mtls", "cpu", s, cpu / calls, f"{title}: server CPU per call", "us", False)
                record("mtls", "idle_rss", s, srv.idle["VmRSS"] / 1024, "idle RSS (mTLS, before load)", "MiB", False)
                record("mtls", "peak_rss", s, srv.mem()["VmHWM"] / 1024, f"{title}: peak RSS", "MiB", False)
                log(f"  {title} [{s}] run {r + 1}: {res['calls_per_s']} calls/s cpu/call {cpu / max(calls, 1):.2f}us")
            finally:
                srv.stop()


def grpcio_python():
    """A Python with stock grpcio and the example's stubs: the CI venv, made when missing."""
    venv = os.path.join(ROOT, "tests", "python", ".venv")
    py = os.path.join(venv, "bin", "python")
    examples = os.path.join(ROOT, "examples", "python")
    if not os.access(py, os.X_OK):
        run([sys.executable, "-m", "venv", venv])
    if subprocess.run([py, "-c", "import grpc, grpc_tools"], capture_output=True).returncode != 0:
        run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r",
             os.path.join(examples, "requirements.txt")])
    if not os.path.exists(os.path.join(examples, "satellite_pb2_grpc.py")):
        run(["bash", os.path.join(examples, "gen_stubs.sh")], env=dict(os.environ, PYTHON=py))
    return py


def scen_grpcio(servers, a, tmp, certs):
    """Stock Python grpc.aio over mTLS, 64 calls in flight on one channel: the client, not the
    server, saturates its core (about 11k calls/s), so this is the load of a real deployment
    rather than h2load's. Server CPU per call and peak RSS are the figures to compare."""
    py = grpcio_python()
    script = os.path.join(ROOT, "benches", "grpcio_load.py")
    title = "unary mTLS from stock grpcio (grpc.aio), 64 in flight, one channel"
    for r in range(a.runs):
        for s in servers:
            addr = f"127.0.0.1:{free_port()}"
            argv = server_argv(s, addr, certs, go_bin=a.go_bin)
            srv = Server(s, argv, addr)
            try:
                cmd = ["taskset", "-c", LOAD_CPU, py, script, "--addr", addr, "--certs", certs, "--inflight", "64",
                       "--duration", str(a.duration), "--warmup", str(a.warmup)]
                note_cmd("grpcio", cmd, addr)
                p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                first = p.stdout.readline().strip()
                cpu0 = srv.cpu_us()
                out, err = p.communicate(timeout=a.duration + 120)
                cpu = srv.cpu_us() - cpu0
                line = [l for l in out.splitlines() if l.startswith("{")]
                if first != "warm" or p.returncode != 0 or not line:
                    raise RuntimeError(f"grpcio_load against {s} failed ({p.returncode}): {first} {err[-1500:]}")
                res = json.loads(line[-1])
                if res["errors"]:
                    NOTES.append(f"{title}: {s} run {r + 1}: {res['errors']} errors of {res['calls'] + res['errors']}")
                calls = res["calls"]
                record("grpcio", "calls", s, res["calls_per_s"], f"{title}: calls/s", "calls/s", True)
                record("grpcio", "p99", s, res["p99_us"] / 1000, f"{title}: p99", "ms", False)
                if calls:
                    record("grpcio", "cpu", s, cpu / calls, f"{title}: server CPU per call", "us", False)
                record("grpcio", "idle_rss", s, srv.idle["VmRSS"] / 1024, "idle RSS (mTLS, before the grpcio load)", "MiB", False)
                record("grpcio", "peak_rss", s, srv.mem()["VmHWM"] / 1024, f"{title}: peak RSS", "MiB", False)
                log(f"  {title} [{s}] run {r + 1}: {res['calls_per_s']} calls/s cpu/call {cpu / max(calls, 1):.2f}us")
            finally:
                srv.stop()


def scen_mtls_stream(servers, a, tmp, certs):
    loadgen = os.path.join(PEER_BIN, "loadgen")
    for streams in (1, 8):
        scenario = "mtlsstream" if streams == 8 else f"mtlsstream_{streams}"
        title = f"GetImages mTLS (loadgen), whole map x8, 1024 B images, {streams} stream{'s' if streams > 1 else ''}"
        for r in range(a.runs):
            for s in servers:
                addr = f"127.0.0.1:{free_port()}"
                srv = stream_server(s, addr, certs, 8, 1024, a)
                if srv is None:
                    continue
                try:
                    cpu0 = srv.cpu_us()
                    res = run_client(
                        loadgen, addr, certs,
                        ["stream", "--scale", "8", "--streams", str(streams), "--rounds", str(a.stream_rounds_large)],
                        scenario,
                    )
                    cpu = srv.cpu_us() - cpu0
                    if res["errors"]:
                        NOTES.append(f"{title}: {s} run {r + 1}: {res['errors']} stream errors")
                    record(scenario, "mbps", s, res["mb_per_s"], f"{title}: MB/s", "MB/s", True)
                    record(scenario, "cpu", s, cpu * 1000 / max(res["images"], 1), f"{title}: server CPU per image", "ns", False)
                    log(f"  {title} [{s}] run {r + 1}: {res['mb_per_s']} MB/s")
                finally:
                    srv.stop()


def scen_idle(servers, a, tmp, certs):
    loadgen = os.path.join(PEER_BIN, "loadgen")
    n = a.idle_conns
    title = f"{n:,} idle mTLS connections held (one call each)"
    for r in range(a.runs):
        for s in servers:
            addr = f"127.0.0.1:{free_port()}"
            srv = Server(s, server_argv(s, addr, certs, go_bin=a.go_bin), addr)
            cmd = ["taskset", "-c", LOAD_CPU, loadgen, "--addr", addr, "--certs", certs, "hold", "-c", str(n), "--hold", "600"]
            note_cmd("idle", cmd, addr)
            gen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                ready, _, _ = select.select([gen.stdout], [], [], 600)
                line = gen.stdout.readline() if ready else ""
                if not line.startswith("{"):
                    raise RuntimeError(f"loadgen hold against {s} printed no result: {line!r}")
                res = json.loads(line)
                time.sleep(1)
                held_kib = srv.mem()["VmRSS"]
                if res["errors"]:
                    NOTES.append(f"{title}: {s} run {r + 1}: {res['errors']} of {n} connections failed")
                if res["held"]:
                    per = (held_kib - srv.idle["VmRSS"]) / res["held"]
                    record("idle", "per_conn", s, per, f"{title}: server memory per connection", "KiB", False)
                    record("idle", "rss", s, held_kib / 1024, f"{title}: server RSS", "MiB", False)
                    log(f"  {title} [{s}] run {r + 1}: {per:.1f} KiB/connection, {res['held']} held in {res['secs']} s")
            finally:
                gen.kill()
                gen.wait()
                srv.stop()


def scen_client(a, tmp):
    c, m = a.conc
    title = f"client side vs tonic_server (plaintext), -c {c} -m {m}"
    loadgen = os.path.join(PEER_BIN, "loadgen")
    clients = {"satellite": [loadgen], "tonic": [os.path.join(PEER_BIN, "tonic_client")]}
    if "satellite+icpt" in a.server_list:
        clients["satellite+icpt"] = [loadgen, "--noop-interceptor"]
    if "loadgen" in BASELINE:
        clients["before"] = [BASELINE["loadgen"]]
    for r in range(a.runs):
        for name, (binary, *extra) in clients.items():
            addr = f"127.0.0.1:{free_port()}"
            srv = Server("tonic", server_argv("tonic", addr, None), addr)
            try:
                args = ["-c", str(c), "-m", str(m), "-d", str(a.duration), "--warmup", str(a.warmup)]
                if name != "tonic":
                    args = ["unary"] + args + extra
                res = run_client(binary, addr, None, args, f"client_{name}")
                if res["errors"]:
                    NOTES.append(f"{title}: client {name} run {r + 1}: {res['errors']} errors")
                record("client", "calls", name, res["calls_per_s"], f"{title}: calls/s", "calls/s", True)
                record("client", "p99", name, res["p99_us"] / 1000, f"{title}: p99", "ms", False)
                if res["calls"]:
                    record("client", "cpu", name, res["client_cpu_us"] / res["calls"], f"{title}: client CPU per call", "us", False)
                log(f"  {title} [{name}] run {r + 1}: {res['calls_per_s']} calls/s")
            finally:
                srv.stop()


def h2load_web(url, body_file, extra, headers, h1):
    cmd = ["taskset", "-c", LOAD_CPU, "h2load", "-t", "1"] + (["--h1"] if h1 else []) + extra
    for h in headers:
        cmd += ["-H", h]
    cmd += ["-d", body_file, url]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return cmd, p.stdout + p.stderr


def scen_web(a, tmp):
    """Issue 13: gRPC-Web (both servers) and Connect (ours only: tonic has none) over HTTP/1.1
    (h2load --h1, our --web listener) and HTTP/2 (the main port), against tonic_server with
    tonic-web on the same load."""
    c, m = a.conc
    w, h = world_size()
    scale = 8
    loc_framed = os.path.join(tmp, "location.bin")
    loc_bare = os.path.join(tmp, "location-bare.bin")
    with open(loc_bare, "wb") as f:
        f.write(location(1, 2))
    area_body = os.path.join(tmp, "area.bin")
    with open(area_body, "wb") as f:
        f.write(framed(area((0, 0), (w * scale - 1, h * scale - 1))))
    grpc_web = ["content-type: application/grpc-web+proto", "x-grpc-web: 1"]
    connect = ["content-type: application/proto", "connect-protocol-version: 1"]
    connect_stream = ["content-type: application/connect+proto", "connect-protocol-version: 1"]
    cases = [
        # (scenario, title, servers, headers, body, h1, connections x in flight)
        ("web_unary_h1", "gRPC-Web unary, HTTP/1.1, h2load --h1 -c 16", ("satellite", "tonic"), grpc_web, loc_framed, True, (c, 1)),
        ("web_unary_h2", f"gRPC-Web unary, HTTP/2, h2load -c {c} -m {m}", ("satellite", "tonic"), grpc_web, loc_framed, False, (c, m)),
        ("connect_unary_h1", "Connect unary (binary), HTTP/1.1, h2load --h1 -c 16", ("satellite",), connect, loc_bare, True, (c, 1)),
        ("connect_unary_h2", f"Connect unary (binary), HTTP/2, h2load -c {c} -m {m}", ("satellite",), connect, loc_bare, False, (c, m)),
    ]
    for img in (1, 1024):
        per_stream, cells = expected_stream_bytes(scale, img)
        n = a.stream_rounds_small if img == 1 else a.stream_rounds_large
        for h1 in (True, False):
            wire = "HTTP/1.1" if h1 else "HTTP/2"
            cases.append((f"web_stream_{img}_{'h1' if h1 else 'h2'}", f"gRPC-Web GetImages whole map x{scale}, {img} B images, one stream, {wire}",
                          ("satellite", "tonic"), grpc_web, area_body, h1, (1, 1), img, n, per_stream, cells))
            cases.append((f"connect_stream_{img}_{'h1' if h1 else 'h2'}", f"Connect GetImages whole map x{scale}, {img} B images, one stream, {wire}",
                          ("satellite",), connect_stream, area_body, h1, (1, 1), img, n, per_stream, cells))
    for case in cases:
        scenario, title, names, headers, body, h1, (cc, mm) = case[:7]
        stream = len(case) > 7
        img = case[7] if stream else 1
        for r in range(a.runs):
            for name in names:
                addr = f"127.0.0.1:{free_port()}"
                WEB_ADDR[addr] = f"127.0.0.1:{free_port()}"
                server = "satellite-web" if name == "satellite" else "tonic-web"
                srv = Server(name, server_argv(server, addr, None, scale if stream else 1, img), addr)
                try:
                    target = WEB_ADDR[addr] if (h1 and name == "satellite") else addr
                    path = "GetImages" if stream else "GetImage"
                    url = f"http://{target}/satellite.Satellite/{path}"
                    cpu0 = srv.cpu_us()
                    if stream:
                        n, per_stream, cells = case[8], case[9], case[10]
                        cmd, out = h2load_web(url, body, ["-n", str(n), "-c", "1", "-m", "1"], headers, h1)
                    else:
                        sampler = CpuSampler(srv, a.warmup)
                        cmd, out = h2load_web(url, body, ["-D", str(a.duration), "--warm-up-time", str(a.warmup), "-c", str(cc), "-m", str(mm)], headers, h1)
                    note_cmd(scenario, cmd, target)
                    res = parse_h2load(out)
                    if "secs" not in res:
                        raise RuntimeError(f"h2load output not understood against {name}:\n{out[-1500:]}")
                    bad = res.get("failed", 0) + res.get("errored", 0)
                    if bad:
                        NOTES.append(f"{title}: {name} run {r + 1}: {bad} failed/errored of {res.get('done')}")
                    if stream:
                        cpu = srv.cpu_us() - cpu0
                        got = res.get("data_bytes") or 0
                        # The trailers frame differs between servers; every image must be there.
                        if got < per_stream * n or res.get("succeeded") != n:
                            NOTES.append(f"{title}: {name} run {r + 1}: {got} DATA bytes in {res.get('succeeded')}/{n} streams, expected at least {per_stream * n}")
                        secs = res["secs"]
                        images = cells * n
                        record(scenario, "images", name, images / secs / 1e6, f"{title}: images/s", "M/s", True)
                        record(scenario, "mbps", name, got / secs / 1e6, f"{title}: MB/s", "MB/s", True)
                        record(scenario, "cpu", name, cpu * 1000 / images, f"{title}: server CPU per image", "ns", False)
                        log(f"  {title} [{name}] run {r + 1}: {images / secs / 1e6:.2f} M images/s")
                    else:
                        cpu = sampler.finish()
                        record(scenario, "calls", name, res["req_per_s"], f"{title}: calls/s", "calls/s", True)
                        calls = res["req_per_s"] * a.duration
                        if calls:
                            record(scenario, "cpu", name, cpu / calls, f"{title}: server CPU per call", "us", False)
                        log(f"  {title} [{name}] run {r + 1}: {res['req_per_s']:.0f} calls/s")
                finally:
                    srv.stop()


def scen_balance(a, tmp):
    """Issue 12: each client over round_robin (ours) or balance_list (tonic's) to two
    tonic_servers, against the same client on one of them; same connections and calls."""
    c, m = a.conc
    title = f"client over two tonic_servers vs one (plaintext), -c {c} -m {m}"
    loadgen = os.path.join(PEER_BIN, "loadgen")
    tonic = os.path.join(PEER_BIN, "tonic_client")
    for r in range(a.runs):
        for name in ("satellite-1", "satellite-rr2", "tonic-1", "tonic-bal2"):
            addrs = [f"127.0.0.1:{free_port()}", f"127.0.0.2:{free_port()}"]
            servers = [Server("tonic", server_argv("tonic", addr, None), addr) for addr in addrs]
            try:
                two = name.endswith("2")
                args = ["-c", str(c), "-m", str(m), "-d", str(a.duration), "--warmup", str(a.warmup)]
                if name.startswith("satellite"):
                    target = f"ipv4:{addrs[0]},{addrs[1]}" if two else addrs[0]
                    binary, args = loadgen, ["unary"] + args + (["--round-robin"] if two else [])
                else:
                    target = ",".join(addrs) if two else addrs[0]
                    binary = tonic
                res = run_client(binary, target, None, args, f"balance_{name}")
                if res["errors"]:
                    NOTES.append(f"{title}: client {name} run {r + 1}: {res['errors']} errors")
                record("balance", "calls", name, res["calls_per_s"], f"{title}: calls/s", "calls/s", True)
                if res["calls"]:
                    record("balance", "cpu", name, res["client_cpu_us"] / res["calls"], f"{title}: client CPU per call", "us", False)
                # How evenly the two servers shared the work (their CPU over the whole run).
                cpu = [s.cpu_us() for s in servers]
                if two and sum(cpu):
                    record("balance", "share", name, min(cpu) / sum(cpu), f"{title}: smaller server's share of server CPU", "", True)
                log(f"  {title} [{name}] run {r + 1}: {res['calls_per_s']} calls/s")
            finally:
                for s in servers:
                    s.stop()


def balance_table():
    by = RESULTS.get("balance", {})
    names = ["satellite-1", "satellite-rr2", "tonic-1", "tonic-bal2"]
    rows = [["figure", "unit"] + names + ["rr2/1 (ours)", "rr2/bal2 (ours/tonic)"]]
    for metric in ("calls", "cpu", "share"):
        if metric not in by:
            continue
        label, unit, higher = METRICS[("balance", metric)]
        vals = by[metric]
        rows.append(
            [label + (" (higher is better)" if higher else ""), unit]
            + [cell(vals.get(n)) for n in names]
            + [ratio(vals.get("satellite-rr2"), vals.get("satellite-1")), ratio(vals.get("satellite-rr2"), vals.get("tonic-bal2"))]
        )
    return rows


# ---------------------------------------------------------------------------------- report


def fmt(v):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def cell(vals):
    if not vals:
        return "-"
    med = statistics.median(vals)
    if len(vals) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(vals))}–{fmt(max(vals))})"


def ratio(a, b):
    if not a or not b:
        return "-"
    mb = statistics.median(b)
    return f"{statistics.median(a) / mb:.2f}x" if mb else "-"


def table(servers):
    head = ["figure", "unit"] + servers + ["satellite/tonic", "satellite/floor"]
    if "go" in servers:
        head.append("satellite/go")
    # Before/after and interceptor-cost columns, when those variants ran.
    extra = [(x, y) for x, y in (("satellite", "before"), ("satellite+icpt", "satellite")) if x in servers and y in servers]
    head += [f"{x}/{y}" for x, y in extra]
    rows = [head]
    for scenario, metric in ORDER:
        if scenario == "balance":
            continue  # its own table (balance_table)
        label, unit, higher = METRICS[(scenario, metric)]
        by = RESULTS[scenario][metric]
        cols = servers if scenario != "client" else ["satellite", "tonic"]
        row = [label + (" (higher is better)" if higher else ""), unit]
        if scenario == "client":
            # Client columns line up with the server of the same name; tonic's client goes
            # under tonic.
            row += [(f"ours: {cell(by.get(s))}" if s != "tonic" else f"tonic's: {cell(by.get(s))}") if by.get(s) else "" for s in servers]
            row += [ratio(by.get("satellite"), by.get("tonic")), "-"]
            if "go" in servers:
                row.append("-")
        else:
            row += [cell(by.get(s)) for s in servers]
            row += [ratio(by.get("satellite"), by.get("tonic")), ratio(by.get("satellite"), by.get("floor"))]
            if "go" in servers:
                row.append(ratio(by.get("satellite"), by.get("go")))
        row += [ratio(by.get(x), by.get(y)) for x, y in extra]
        rows.append(row)
    return rows


def markdown(rows):
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)


def plain(rows):
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def cmd_out(cmd, cwd=ROOT):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "-"


def lock_version(lockfile, name):
    try:
        text = open(lockfile).read()
    except OSError:
        return "-"
    m = re.search(r'name = "' + re.escape(name) + r'"\nversion = "([^"]+)"', text)
    return m.group(1) if m else "-"


def versions(go_bin):
    peers_lock = os.path.join(PEERS, "Cargo.lock")
    v = {
        "rustc": cmd_out(["rustc", "--version"]),
        "tonic": lock_version(peers_lock, "tonic"),
        "h2 (satellite)": lock_version(os.path.join(ROOT, "Cargo.lock"), "h2"),
        "h2 (peers)": lock_version(peers_lock, "h2"),
        "hyper (tonic)": lock_version(peers_lock, "hyper"),
        "rustls": lock_version(peers_lock, "rustls"),
        "go": cmd_out(["go", "version"]) if go_bin and shutil.which("go") else "not run",
        "h2load": cmd_out(["h2load", "--version"]),
        "satellite commit": cmd_out(["git", "rev-parse", "--short", "HEAD"]),
    }
    return v


def machine():
    model = "-"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "-"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, {mem}, Linux {platform.release()}, load average at start {os.getloadavg()[0]:.2f}"


# ---------------------------------------------------------------------------------- main


def build(a):
    if a.skip_build:
        return
    run(["cargo", "build", "--release"], cwd=ROOT)
    run(["cargo", "build", "--release"], cwd=PEERS)


def find_go(a):
    script = os.path.join(GO_DIR, "build.sh")
    if not os.path.exists(script):
        NOTES.append("Go peer skipped: tests/peers/go/build.sh is not there")
        return None
    try:
        if not a.skip_build:
            run(["bash", script], cwd=GO_DIR)
    except subprocess.CalledProcessError as e:
        NOTES.append(f"Go peer skipped: tests/peers/go/build.sh failed ({e.returncode})")
        return None
    server = os.path.join(GO_DIR, "build", "bin", "server")
    if not os.access(server, os.X_OK):
        NOTES.append("Go peer skipped: build.sh left no tests/peers/go/build/bin/server")
        return None
    return server


def ensure_h2load():
    if shutil.which("h2load"):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(["apt-get", "install", "-y", "-qq", "nghttp2-client"], env=env).returncode != 0:
        run(["apt-get", "update", "-qq"], env=env)
        run(["apt-get", "install", "-y", "-qq", "nghttp2-client"], env=env)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke test: 1 run, 2 s figures, few stream rounds")
    p.add_argument("--runs", type=int, help="runs per figure (default 5; quick 1)")
    p.add_argument("--duration", type=float, help="h2load -D / loadgen -d seconds (default 10; quick 2)")
    p.add_argument("--warmup", type=float, help="warm-up seconds (default 2; quick 1)")
    p.add_argument("--conc", default="16x32", help="unary connections x in-flight per connection (default 16x32)")
    p.add_argument("--idle-conns", type=int, help="idle mTLS connections held (default 10000; quick 1000)")
    p.add_argument("--only", help="comma-separated scenarios: unary,latency,stream,mtls,grpcio,mtlsstream,idle,client,balance,web")
    p.add_argument("--servers", default="satellite,tonic,floor,go", help="servers to compare, in the alternating order")
    p.add_argument("--skip-build", action="store_true", help="use the binaries already built")
    p.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"), help="markdown report path ('-' for none)")
    p.add_argument("--label", default="", help="a line of context for the report (e.g. machine busy)")
    p.add_argument("--baseline", help="an earlier commit's satellite binary, run as server 'before' (add 'before' to --servers)")
    p.add_argument("--baseline-loadgen", help="an earlier commit's loadgen, measured as client 'before' in the client scenario")
    a = p.parse_args()
    a.runs = a.runs or (1 if a.quick else 5)
    a.duration = a.duration or (2 if a.quick else 10)
    a.warmup = a.warmup if a.warmup is not None else (1 if a.quick else 2)
    # Rounds of the whole map x8 per GetImages figure: about 1 s of streaming each on this
    # machine (one round of 1-byte images is 5 ms; the old 10 rounds measured 50 ms, mostly
    # start-up and scheduling noise).
    a.stream_rounds_small = 20 if a.quick else 150
    a.stream_rounds_large = 2 if a.quick else 10
    a.idle_conns = a.idle_conns or (1000 if a.quick else 10_000)
    a.conc = tuple(int(x) for x in a.conc.split("x"))
    only = set((a.only or "unary,latency,stream,mtls,grpcio,mtlsstream,idle,client,balance,web").split(","))
    # Enough file descriptors for the held connections (inherited by servers and load).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard >= 65536:
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, hard))
    if a.duration != int(a.duration) or a.warmup != int(a.warmup):
        sys.exit("h2load takes whole seconds: --duration and --warmup must be integers")
    a.duration, a.warmup = int(a.duration), int(a.warmup)

    started = datetime.datetime.now(datetime.timezone.utc)
    build(a)
    ensure_h2load()
    servers = [s for s in a.servers.split(",") if s]
    if a.baseline:
        BASELINE["satellite"] = os.path.abspath(a.baseline)
    if a.baseline_loadgen:
        BASELINE["loadgen"] = os.path.abspath(a.baseline_loadgen)
    if "before" in servers and "satellite" not in BASELINE:
        sys.exit("server 'before' needs --baseline BIN")
    a.server_list = servers
    a.go_bin = None
    if "go" in servers:
        a.go_bin = find_go(a)
        if not a.go_bin:
            servers.remove("go")
    for s in servers:
        argv0 = server_argv(s, "x", None, go_bin=a.go_bin)[0]
        if not os.access(argv0, os.X_OK):
            sys.exit(f"missing binary {argv0}: build first (drop --skip-build)")

    tmp = tempfile.mkdtemp(prefix="satellite-bench-")
    try:
        certs = os.path.join(tmp, "certs")
        run([SATELLITE, "certs", "--out", certs, "--force"], stdout=subprocess.DEVNULL)
        with open(os.path.join(tmp, "location.bin"), "wb") as f:
            f.write(framed(location(1, 2)))
        c, m = a.conc
        if "unary" in only:
            log(f"== unary plaintext (h2load -c {c} -m {m})")
            scen_unary("unary", servers, a, tmp, (c, m), "unary", f"unary plaintext, h2load -c {c} -m {m}")
        if "latency" in only:
            log("== unary plaintext at low load (h2load -c 1 -m 1)")
            scen_unary("latency", servers, a, tmp, (1, 1), "latency", "unary plaintext, h2load -c 1 -m 1")
        if "stream" in only:
            log("== GetImages (h2load)")
            scen_stream(servers, a, tmp)
        if "mtls" in only:
            log("== unary mTLS (loadgen)")
            scen_mtls(servers, a, tmp, certs)
        if "grpcio" in only:
            log("== unary mTLS from stock grpcio (grpc.aio)")
            scen_grpcio(servers, a, tmp, certs)
        if "mtlsstream" in only:
            log("== GetImages mTLS (loadgen)")
            scen_mtls_stream(servers, a, tmp, certs)
        if "idle" in only:
            log(f"== {a.idle_conns} idle mTLS connections (loadgen hold)")
            scen_idle(servers, a, tmp, certs)
        if "client" in only:
            log("== client side (loadgen vs tonic_client against tonic_server)")
            scen_client(a, tmp)
        if "balance" in only:
            log("== client over two servers (round_robin vs balance_list)")
            scen_balance(a, tmp)
        if "web" in only:
            log("== gRPC-Web and Connect (h2load, HTTP/1.1 and HTTP/2) vs tonic-web")
            scen_web(a, tmp)
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    rows = table(servers)
    print(plain(rows))
    if "balance" in RESULTS:
        print()
        print(plain(balance_table()))
    for n in NOTES:
        print("note:", n)
    if a.out != "-":
        write_report(a, rows, servers, started)


ABOUT = """
## What this measures

The suite compares, in one run on one machine, `satellite serve` against the same Satellite
service on tonic 0.14 (`benches/peers` `tonic_server`), the classic grpc-go server
(`tests/peers/go`, when its build script is present and builds) and a raw-h2 floor
(`benches/peers` `floor_server`: one task per connection, canned headers and trailers, every
readable request answered before one flush, streamed messages encoded straight into 64 KiB
chunks within the granted capacity, a 1 MiB send buffer; it still parses every request and
produces correct images). The floor is the physical limit for a server on `h2`.

- Plaintext load is h2load (nghttp2-client): unary `GetImage(1, 2)` at `-c 16 -m 32` and at
  `-c 1 -m 1`, and `GetImages` over the whole map at `--scale 8` with 1-byte and 1 KiB images,
  one stream at a time and 8 concurrent streams on one connection. Every GetImages run checks
  h2load's received DATA bytes against the exact gRPC framing computed from the map size; every
  unary series first checks one answer is the 12 framed bytes of `Image{1, 2, [cell]}`.
- mTLS (h2load cannot present a client certificate) uses `loadgen`, our load generator on the
  satellite crate's client, against every server alike: unary calls/s, p50/p99 and the
  server's CPU per call; GetImages MB/s with 1 KiB images; memory per idle connection with
  10,000 connections held.
- Moderate load from the classic client's stack: stock Python `grpc.aio` (`benches/grpcio_load.py`,
  in the CI venv, made when missing) over mTLS, 64 calls in flight on one channel. The client
  saturates its core first, so this is a deployment's load, not h2load's pipelining: server
  CPU per call, idle and peak RSS.
- Client side: `loadgen` vs `tonic_client` (tonic's client) against `tonic_server`, same
  connections and calls in flight: calls/s, p99 and the client's own CPU per call.
- Each server runs pinned to CPU 0 (`taskset -c 0`), each load generator to CPU 1, a fresh
  server process per measurement, servers alternating A B C A B C ...

## How to run

    python3 benches/run.py             # full: 5 runs per figure, h2load -D 10 --warm-up-time 2
    python3 benches/run.py --quick     # smoke test: 1 run, 2 s figures
    python3 benches/run.py --only unary,mtls --runs 7 --duration 10 --servers satellite,tonic,floor

It builds both packages (`cargo build --release` here and in `benches/peers`, whose own
`[workspace]` keeps tonic out of satellite's build), builds the Go peer with
`tests/peers/go/build.sh` when it exists (skipped with a note otherwise), installs h2load
(`apt-get install nghttp2-client`) when missing, and writes this file. `.ci/run` does not run
the suite (minutes long, and only meaningful on a quiet machine), nor build the peers: a cold
release build of `benches/peers` (tonic, thin LTO, codegen-units 1) took over 8 minutes here.

## Approximations

- Server CPU per call is utime+stime from /proc/PID/stat (10 ms ticks), read by a timer at the
  end of the warm-up and again after the load, divided by the calls measured; for GetImages it
  covers the whole h2load run (per image, in ns), so very short runs (`--quick`) round to a tick.
- h2load's p50/p99 come from its `--log-file`; calls/s is h2load's req/s over `-D`.
- With the load generator on a single CPU, `loadgen`'s mTLS calls/s can be bounded by the
  client rather than the server: server CPU per call is the figure to compare there.
- Idle RSS is VmRSS 0.3 s after the server listens; peak RSS is VmHWM after the load; memory per
  idle connection is (VmRSS with the connections held - idle VmRSS) / connections.
- The Go server takes no `--scale`/`--img-bytes`, so it is only in the unary, mTLS and idle rows.
- On a shared machine (other jobs on the same two CPUs) absolute numbers move from run to
  run; the min–max columns show by how much. Compare ratios measured in the same run.
"""


HAND_WRITTEN = "## Optimisations (hand-written"


def write_report(a, rows, servers, started):
    v = versions(a.go_bin)
    mode = "quick (smoke test)" if a.quick else "full"
    lines = [
        "# BENCHMARKS",
        "",
        "Produced by `python3 benches/run.py"
        + (" --quick" if a.quick else "")
        + (f" --runs {a.runs} --duration {a.duration} --warmup {a.warmup}" if not a.quick else "")
        + "` (see the script's header for what each scenario does).",
        "",
        f"- date: {started.strftime('%Y-%m-%d %H:%M UTC')}; mode: {mode}; {a.runs} run(s) per figure, servers alternating "
        f"({', '.join(servers)}), each server started fresh per measurement and pinned to CPU {SERVER_CPU}, the load to CPU {LOAD_CPU}",
        f"- machine: {machine()}",
    ]
    lines.append(f"- load average (1 min) at the end: {os.getloadavg()[0]:.2f}; figures are only evidence when "
                 "nothing else ran beside the suite")
    if a.label:
        lines.append(f"- context: {a.label}")
    lines += ["- versions: " + "; ".join(f"{k} {val}" for k, val in v.items()), ""]
    lines += [
        "Each cell: median (min–max) over the runs. Ratios are medians, satellite divided by the peer",
        "(above 1 is better for throughput, below 1 is better for latency, CPU and memory).",
        "CPU per call is the server's utime+stime (from /proc/PID/stat, clock ticks of "
        f"{1_000_000 // CLK_TCK} µs) over the measured window divided by the calls in it.",
        "",
        markdown(rows),
        "",
    ]
    if "balance" in RESULTS:
        lines += ["Client over two servers (issue 12): the same client and load over two tonic_servers",
                  "(ours: round_robin; tonic's: `balance_list`) and over one.", "", markdown(balance_table()), ""]
    if NOTES:
        lines += ["Notes from this run:", ""] + [f"- {n}" for n in NOTES] + [""]
    lines += ABOUT.strip("\n").split("\n") + [""]
    lines += ["## Commands", "", "One example per scenario (PORT is a fresh port per run; the servers run as "
              f"`taskset -c {SERVER_CPU} <server> --addr 127.0.0.1:PORT [--plaintext | --certs DIR] --scale K --img-bytes N`):", ""]
    for k, cmdline in COMMANDS.items():
        lines.append(f"- {k}: `{cmdline}`")
    lines.append("")
    # The hand-written part (the optimisation logs) is kept as it was.
    try:
        with open(a.out) as f:
            old = f.read()
        at = old.find(HAND_WRITTEN)
        if at >= 0:
            lines.append(old[at:].rstrip("\n"))
            lines.append("")
    except OSError:
        pass
    with open(a.out, "w") as f:
        f.write("\n".join(lines))
    log(f"wrote {a.out}")


if __name__ == "__main__":
    main()

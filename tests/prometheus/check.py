#!/usr/bin/env python3
"""Metrics checked by a real Prometheus server (issue 14).

Starts `satellite serve --admin-addr` with an authorization policy, and Debian's `prometheus`
with a scrape config pointing at the admin address; makes a known number of calls of each
outcome with the `satellite` client; then asks Prometheus's query API for the call counts and
the duration histogram's count, and fails unless they are exactly those numbers.

Standard library only. Usage: check.py --bin target/release/satellite
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

POLICY = {
    "name": "ci-policy",
    "deny_rules": [{"name": "no-intruder", "source": {"principals": ["CN=intruder"]}}],
    "allow_rules": [{"name": "everyone", "source": {"principals": ["*"]}}],
}

# (what, arguments after the subcommand, expected exit code, how many times)
CALLS = [
    ("ok", ["get", "1", "1"], 0, 5),
    ("out of range", ["get", "999", "999"], 1, 3),
    ("denied", ["get", "0", "0", "--cert", "{certs}/client-intruder-cert.pem",
                "--key", "{certs}/client-intruder-key.pem"], 1, 2),
    ("stream", ["area", "0", "0", "1", "1", "--render", "none"], 0, 1),
]

GET_IMAGE = "satellite.Satellite/GetImage"
GET_IMAGES = "satellite.Satellite/GetImages"

# query -> {label value: expected}, keyed by the one label the query keeps.
EXPECTED = [
    ("sum by (grpc_method) (grpc_server_call_started_total)", "grpc_method",
     {GET_IMAGE: 10, GET_IMAGES: 1}),
    ('sum by (grpc_status) (grpc_server_call_duration_seconds_count{grpc_method="%s"})'
     % GET_IMAGE, "grpc_status", {"OK": 5, "OUT_OF_RANGE": 3, "PERMISSION_DENIED": 2}),
    ('sum by (grpc_status) (grpc_server_call_duration_seconds_count{grpc_method="%s"})'
     % GET_IMAGES, "grpc_status", {"OK": 1}),
    ("sum by (decision) (grpc_server_authz_decisions_total)", "decision",
     {"allow": 9, "deny": 2}),
    ('up{job="satellite"}', "job", {"satellite": 1}),
]

WAIT = 90  # seconds for anything to come up or be scraped


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, log):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"error: process exited early ({proc.returncode}):\n{read(log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"error: nothing listened on {port}:\n{read(log)}")


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()[-4000:]
    except OSError:
        return ""


def run(bin_path, args):
    return subprocess.run([bin_path, *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, check=False)


def query(port, promql):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise RuntimeError(f"query {promql!r} failed: {body}")
    return body["data"]["result"]


def values(result, label):
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in result}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True, help="the satellite binary")
    parser.add_argument("--prometheus", default="prometheus", help="the prometheus binary")
    args = parser.parse_args()
    bin_path = os.path.abspath(args.bin)
    prometheus = shutil.which(args.prometheus)
    if prometheus is None:
        sys.exit("error: prometheus not found; install Debian's `prometheus` package")

    procs = []
    work = tempfile.mkdtemp(prefix="satellite-prom-")
    try:
        certs = os.path.join(work, "certs")
        for step in (["certs", "--out", certs],
                     ["certs", "--out", certs, "--client-name", "intruder"]):
            done = run(bin_path, step)
            if done.returncode != 0:
                sys.exit(f"error: {step}: {done.stderr}")
        policy = os.path.join(work, "policy.json")
        with open(policy, "w", encoding="utf-8") as f:
            json.dump(POLICY, f)

        grpc_port, admin_port, prom_port = free_port(), free_port(), free_port()
        serve_log = os.path.join(work, "serve.log")
        serve = subprocess.Popen(
            [bin_path, "serve", "--addr", f"127.0.0.1:{grpc_port}", "--certs", certs,
             "--admin-addr", f"127.0.0.1:{admin_port}", "--authz-policy", policy],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(serve_log, "w", encoding="utf-8"))
        procs.append(serve)
        wait_port(grpc_port, serve, serve_log)
        wait_port(admin_port, serve, serve_log)

        config = os.path.join(work, "prometheus.yml")
        with open(config, "w", encoding="utf-8") as f:
            f.write(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "scrape_configs:\n  - job_name: satellite\n    metrics_path: /metrics\n"
                f"    static_configs:\n      - targets: ['127.0.0.1:{admin_port}']\n")
        prom_log = os.path.join(work, "prometheus.log")
        prom = subprocess.Popen(
            [prometheus, f"--config.file={config}",
             f"--storage.tsdb.path={os.path.join(work, 'data')}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(prom_log, "w", encoding="utf-8"))
        procs.append(prom)
        wait_port(prom_port, prom, prom_log)

        client = ["--addr", f"127.0.0.1:{grpc_port}", "--certs", certs]
        for what, call, code, times in CALLS:
            call = [a.format(certs=certs) for a in call]
            for _ in range(times):
                done = run(bin_path, [*call, *client])
                if done.returncode != code:
                    sys.exit(f"error: {what} call {call} exited {done.returncode}, "
                             f"expected {code}: {done.stderr}")
        print(f"made {sum(c[3] for c in CALLS)} calls: "
              + ", ".join(f"{c[3]} {c[0]}" for c in CALLS))

        # Wait for a scrape that has seen every call, then check each query exactly.
        deadline = time.monotonic() + WAIT
        while True:
            got = []
            try:
                got = [values(query(prom_port, q), label) for q, label, _ in EXPECTED]
            except (OSError, RuntimeError, ValueError) as e:
                last_error = e
            if got and all(g == {k: float(v) for k, v in want.items()}
                           for g, (_, _, want) in zip(got, EXPECTED)):
                break
            if time.monotonic() > deadline:
                for (q, _, want), g in zip(EXPECTED, got or [None] * len(EXPECTED)):
                    print(f"query {q}\n  expected {want}\n  got      {g}")
                if not got:
                    print(f"last error: {last_error}")
                sys.exit(f"error: Prometheus never reported the expected counts\n"
                         f"--- serve log\n{read(serve_log)}\n--- prometheus log\n{read(prom_log)}")
            time.sleep(0.5)
        for (q, _, _), g in zip(EXPECTED, got):
            print(f"{q} => {json.dumps({k: int(v) for k, v in g.items()}, sort_keys=True)}")
        print(f"prometheus: all {len(EXPECTED)} queries matched")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

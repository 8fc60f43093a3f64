"""Scale-out behind Debian's nginx (deploy/nginx): three `satellite serve` replicas, nginx with
mutual TLS at the edge and `grpc_pass grpcs://` to the replicas (presenting our client
certificate), upstream health from the replicas' plaintext health ports. A stock grpcio client
goes through nginx while one replica is killed mid-run.

Needs nginx on PATH (.ci/run installs Debian's); without it the test fails saying so.
"""

from __future__ import annotations

import collections
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from conftest import REPO, WAIT, free_port, make_certs, start_server, stop_server

sys.path.insert(0, str(REPO / "deploy" / "nginx"))
import health_watch  # noqa: E402
import satellite_pb2  # noqa: E402
import satellite_pb2_grpc  # noqa: E402

INSTANCE = "x-satellite-instance"


def wait_port(port: int) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def instance_of(call) -> str:
    return dict(call.initial_metadata()).get(INSTANCE, "?")


def unary_with_retry(stub, x, y, attempts=3):
    """One GetImage; UNAVAILABLE is retried (the issue allows it), anything else fails."""
    for attempt in range(attempts):
        try:
            reply, call = stub.GetImage.with_call(satellite_pb2.Location(x=x, y=y), timeout=5)
            return reply, instance_of(call), attempt
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE or attempt == attempts - 1:
                raise


@pytest.fixture
def cluster(tmp_path: Path):
    if shutil.which("nginx") is None:
        pytest.fail("nginx not found: install Debian's nginx (apt-get install nginx)")
    certs = make_certs(tmp_path / "certs")
    replicas = []
    nginx = None
    watcher = None
    # Everything started is stopped in `finally`, whatever step fails.
    try:
        for i in range(3):
            # Two ports picked separately can collide (the first is not bound until serve
            # runs): retry with fresh ones on "Address already in use".
            for attempt in range(5):
                health_port = free_port()
                try:
                    server = start_server(
                        certs, tmp_path, "--instance", f"r{i}", "--health-port",
                        str(health_port), "--send-delay", "20", "--grace", "1",
                    )
                    break
                except RuntimeError as e:
                    if "in use" not in str(e) or attempt == 4:
                        raise
            replicas.append((server, f"127.0.0.1:{health_port}"))
        prefix = tmp_path / "nginx"
        prefix.mkdir()
        edge = free_port()
        conf = health_watch.render(str(prefix), f"127.0.0.1:{edge}", str(certs))
        upstreams = {s.addr: h for s, h in replicas}
        health_watch.write_upstreams(str(prefix), upstreams, set(upstreams))
        nginx = subprocess.Popen(
            ["nginx", "-p", str(prefix), "-c", conf, "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        watcher = health_watch.Watcher(str(prefix), conf, upstreams)
        try:
            wait_port(edge)
        except TimeoutError:
            nginx.kill()
            pytest.fail(f"nginx did not start: {nginx.stderr.read().decode(errors='replace')}")
        watcher.start()
        creds = grpc.ssl_channel_credentials(
            root_certificates=(certs / "ca-cert.pem").read_bytes(),
            private_key=(certs / "client-key.pem").read_bytes(),
            certificate_chain=(certs / "client-cert.pem").read_bytes(),
        )
        channel = grpc.secure_channel(
            f"127.0.0.1:{edge}", creds, options=[("grpc.ssl_target_name_override", "localhost")]
        )
        yield channel, replicas, watcher, prefix
        channel.close()
    finally:
        if watcher is not None and watcher.is_alive():
            watcher.stop()
        if nginx is not None:
            nginx.send_signal(signal.SIGQUIT)
            try:
                nginx.wait(timeout=10)
            except subprocess.TimeoutExpired:
                nginx.kill()
        for server, _ in replicas:
            stop_server(server)


def test_replicas_behind_nginx_survive_a_killed_replica(cluster):
    channel, replicas, watcher, prefix = cluster
    stub = satellite_pb2_grpc.SatelliteStub(channel)
    report = {}

    # Phase 1: every replica serves unary calls through nginx.
    before = collections.Counter()
    for i in range(90):
        _, who, _ = unary_with_retry(stub, i % 80, i % 32)
        before[who] += 1
    assert set(before) == {"r0", "r1", "r2"}, before
    report["before_kill"] = dict(before)

    # Phase 2: open streams until one lands on r0, then kill r0 mid-stream.
    streams = []
    victim = None
    for _ in range(12):
        call = stub.GetImages(
            satellite_pb2.Area(ll=satellite_pb2.Location(x=0, y=0),
                               ur=satellite_pb2.Location(x=9, y=9)),
            timeout=30,
        )
        streams.append(call)
        if instance_of(call) == "r0":
            victim = call
            break
    assert victim is not None, "no stream reached r0"
    first = next(victim)
    assert first.x == 0 and first.y == 9
    replicas[0][0].process.kill()
    started = time.monotonic()
    received = 1
    with pytest.raises(grpc.RpcError) as ended:
        for _ in victim:
            received += 1
    took = time.monotonic() - started
    # A clean status, not a hang: nginx ends the stream once the replica is gone.
    assert ended.value.code() in (
        grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED,
    ), ended.value
    assert took < 10, took
    report["killed_stream"] = {
        "code": ended.value.code().name, "cells_before_end": received, "seconds": round(took, 3),
    }
    # Streams on the other replicas are unaffected.
    for call in streams:
        if call is victim:
            continue
        assert len(list(call)) == 100

    # Phase 3: unary calls keep succeeding (retrying UNAVAILABLE), spread over the survivors.
    after = collections.Counter()
    retries = 0
    for i in range(90):
        _, who, attempt = unary_with_retry(stub, i % 80, i % 32)
        after[who] += 1
        retries += attempt
    assert set(after) <= {"r1", "r2"} and len(after) == 2, after
    report["after_kill"] = dict(after)
    report["unary_retries_after_kill"] = retries

    # The health watcher saw r0 go and took it out of nginx's upstreams.
    deadline = time.monotonic() + WAIT
    while replicas[0][0].addr in watcher.healthy and time.monotonic() < deadline:
        time.sleep(0.1)
    assert replicas[0][0].addr not in watcher.healthy
    upstreams = (prefix / "upstreams.conf").read_text()
    assert f"server {replicas[0][0].addr} max_fails=1 fail_timeout=2s down;" in upstreams
    report["nginx_reloads"] = watcher.reloads

    print("nginx scale-out report:", json.dumps(report, sort_keys=True))
    out = REPO / "target" / "nginx-report.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")

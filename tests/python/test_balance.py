"""Stock grpcio against several `satellite serve` replicas and a Unix socket: the targets,
balancers and service config the Rust client takes work the same from Python."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import grpc

import satellite_pb2 as pb
import satellite_pb2_grpc as pb_grpc
from conftest import EXAMPLES, WAIT, satellite_bin, start_server, stop_server

SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{"service": "satellite.Satellite"}],
            "timeout": "10s",
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.1s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}


def test_round_robin_over_two_replicas_from_grpcio(certs: Path, tmp_path: Path):
    a = start_server(certs, tmp_path, "--instance", "a")
    b = start_server(certs, tmp_path, "--instance", "b")
    try:
        target = f"ipv4:{a.addr},{b.addr}"

        async def body() -> Counter:
            options = [
                ("grpc.ssl_target_name_override", "localhost"),
                ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
            ]
            async with grpc.aio.secure_channel(target, a.credentials(), options=options) as ch:
                stub = pb_grpc.SatelliteStub(ch)
                await ch.channel_ready()
                seen: Counter = Counter()
                for i in range(100):
                    call = stub.GetImage(pb.Location(x=i % 80, y=0), timeout=5)
                    await call
                    metadata = dict(await call.initial_metadata())
                    seen[metadata.get("x-satellite-instance")] += 1
                return seen

        seen = asyncio.run(asyncio.wait_for(body(), WAIT * 2))
        assert set(seen) == {"a", "b"}, seen
        assert min(seen.values()) >= 30, seen

        config = tmp_path / "service-config.json"
        config.write_text(json.dumps(SERVICE_CONFIG))
        result = subprocess.run(
            [
                sys.executable,
                EXAMPLES / "client.py",
                "--addr",
                target,
                "--lb",
                "round_robin",
                "--service-config",
                config,
                "--certs",
                certs,
                "--server-name",
                "localhost",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "cells: 2560" in result.stdout, result.stdout
    finally:
        stop_server(a)
        stop_server(b)


def test_example_client_refuses_a_service_config_that_is_not_json(certs: Path, tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = subprocess.run(
        [sys.executable, EXAMPLES / "client.py", "--service-config", bad, "--certs", certs],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "bad.json" in result.stderr, result.stderr


def test_grpcio_and_the_example_client_over_a_unix_socket(certs: Path, tmp_path: Path):
    socket_path = tmp_path / "satellite.sock"
    log = tmp_path / "unix-serve.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [satellite_bin(), "serve", "--addr", f"unix:{socket_path}", "--certs", certs],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "NO_COLOR": "1"},
        )
    try:
        deadline = time.monotonic() + WAIT
        while not socket_path.exists():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        result = subprocess.run(
            [
                sys.executable,
                EXAMPLES / "client.py",
                "--addr",
                f"unix:{socket_path}",
                "--certs",
                certs,
                "--server-name",
                "localhost",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "cells: 2560" in result.stdout, result.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0, log.read_text()
    assert not socket_path.exists()

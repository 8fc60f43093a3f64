"""Operations with stock tooling: grpcio-health-checking (Check, Watch, NOT_SERVING at
shutdown, the plaintext --health-port), grpcio-reflection's descriptor database, SSLKEYLOGFILE,
--trace-wire, and max connection idle / keepalive seen from a grpcio client."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from conftest import WAIT, free_port, start_server, stop_server
import satellite_pb2  # noqa: E402
import satellite_pb2_grpc  # noqa: E402

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


def mtls_channel(server) -> grpc.Channel:
    return grpc.secure_channel(
        server.addr, server.credentials(),
        options=[("grpc.ssl_target_name_override", "localhost")],
    )


def test_health_check_over_mtls_and_the_plaintext_health_port(certs, tmp_path):
    health_port = free_port()
    server = start_server(certs, tmp_path, "--health-port", str(health_port))
    try:
        with mtls_channel(server) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for service in ("", "satellite.Satellite"):
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert reply.status == SERVING, service
            try:
                stub.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=5)
                raise AssertionError("unknown service answered")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.NOT_FOUND
        # The health port needs no client certificate (Kubernetes' probe cannot send one) and
        # serves health alone.
        with grpc.insecure_channel(f"127.0.0.1:{health_port}") as plain:
            reply = health_pb2_grpc.HealthStub(plain).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5
            )
            assert reply.status == SERVING
            try:
                satellite_pb2_grpc.SatelliteStub(plain).GetImage(
                    satellite_pb2.Location(x=0, y=0), timeout=5
                )
                raise AssertionError("the health port served the map")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        assert stop_server(server) == 0


def test_watch_sees_not_serving_when_shutdown_begins(certs, tmp_path):
    server = start_server(certs, tmp_path, "--grace", "5")
    seen: list[int] = []
    unknown: list[int] = []
    ended = threading.Event()

    def watch(service: str, into: list[int]) -> None:
        with mtls_channel(server) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                for reply in stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=WAIT):
                    into.append(reply.status)
            except grpc.RpcError:
                pass
        if service == "":
            ended.set()

    threads = [
        threading.Thread(target=watch, args=("", seen), daemon=True),
        threading.Thread(target=watch, args=("later.Service", unknown), daemon=True),
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + WAIT
    while (not seen or not unknown) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert seen == [SERVING]
    assert unknown == [SERVICE_UNKNOWN]
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert ended.wait(WAIT), "Watch did not end after shutdown began"
    assert seen == [SERVING, NOT_SERVING]
    assert server.process.wait(timeout=WAIT) == 0
    # The Watch stream ended by itself: shutdown did not wait out the 5 s grace for it...
    # (the unknown-service watcher is cut at the grace period at the latest).
    assert time.monotonic() - started < 5 + 2


def test_reflection_resolves_the_service_without_the_proto(server):
    with mtls_channel(server) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"satellite.Satellite", "grpc.health.v1.Health"} <= services
        pool = DescriptorPool(database)
        method = pool.FindMethodByName("satellite.Satellite.GetImages")
        assert method.input_type.full_name == "satellite.Area"
        assert method.output_type.full_name == "satellite.Image"
        assert [f.name for f in method.output_type.fields] == ["x", "y", "img"]
        assert not method.client_streaming and method.server_streaming
        area = pool.FindMessageTypeByName("satellite.Area")
        assert [f.message_type.full_name for f in area.fields] == ["satellite.Location"] * 2


def test_sslkeylogfile_and_trace_wire(certs, tmp_path):
    keylog = tmp_path / "keys.log"
    os.environ["SSLKEYLOGFILE"] = str(keylog)
    try:
        server = start_server(certs, tmp_path, "--trace-wire")
    finally:
        del os.environ["SSLKEYLOGFILE"]
    try:
        with mtls_channel(server) as channel:
            stub = satellite_pb2_grpc.SatelliteStub(channel)
            stub.GetImage(satellite_pb2.Location(x=3, y=4), timeout=5,
                          metadata=[("token", "wire-test")])
    finally:
        assert stop_server(server) == 0
    # TLS 1.3 secrets in the NSS key log format, so Wireshark can decrypt a capture.
    lines = keylog.read_text().splitlines()
    assert any(line.startswith("CLIENT_TRAFFIC_SECRET_0 ") for line in lines), lines[:3]
    log = server.log_text()
    assert "/satellite.Satellite/GetImage" in log and "wire-test" in log
    assert 'direction="recv"' in log and 'direction="send"' in log
    assert "grpc-status" in log


def test_max_connection_idle_sends_goaway_and_clients_reconnect(certs, tmp_path):
    server = start_server(certs, tmp_path, "--max-connection-idle", "1",
                          "--keepalive-interval", "1", "--log", "debug")
    try:
        with mtls_channel(server) as channel:
            stub = satellite_pb2_grpc.SatelliteStub(channel)
            assert stub.GetImage(satellite_pb2.Location(x=0, y=0), timeout=5).img
            time.sleep(2.5)
            # The idle connection was closed with GOAWAY; the next call reconnects.
            assert stub.GetImage(satellite_pb2.Location(x=1, y=1), timeout=5).img
    finally:
        assert stop_server(server) == 0
    log = server.log_text()
    assert 'why="max connection idle"' in log
    assert "send frame=Ping { ack: false" in log

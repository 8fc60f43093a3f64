"""Fixtures for the stock-grpcio interop tests: certificates made by the release binary, and
`satellite serve` processes on free loopback ports, all over mutual TLS.

The binary is $SATELLITE_BIN (default target/release/satellite). The stubs are generated into
examples/python by examples/python/gen_stubs.sh and imported from there, never committed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "python"
WORLD_FILE = REPO / "src" / "satellite" / "world.txt"

# Every wait in these tests is bounded by this many seconds.
WAIT = 20.0

sys.path.insert(0, str(EXAMPLES))
try:
    import satellite_pb2  # noqa: E402,F401
    import satellite_pb2_grpc  # noqa: E402,F401
except ImportError as e:  # pragma: no cover - setup error, reported clearly
    raise ImportError(
        f"{e}: generate the stubs first: bash examples/python/gen_stubs.sh"
    ) from e


def satellite_bin() -> Path:
    """The binary under test; a missing one is an error, not a skip."""
    path = Path(os.environ.get("SATELLITE_BIN", REPO / "target" / "release" / "satellite"))
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run `cargo build --release` or set SATELLITE_BIN"
        )
    return path


def world_rows() -> list[bytes]:
    """The map file's lines: rows[0] is the top (y = H - 1), rows[-1] is y = 0."""
    return WORLD_FILE.read_bytes().splitlines()


def cell(rows: list[bytes], x: int, y: int) -> bytes:
    """The file's byte at Cartesian (x, y)."""
    return rows[len(rows) - 1 - y][x : x + 1]


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_certs(out: Path) -> Path:
    """`satellite certs --out out`; returns out."""
    subprocess.run(
        [satellite_bin(), "certs", "--out", out],
        check=True,
        timeout=WAIT,
        capture_output=True,
    )
    return out


@dataclass
class Server:
    """A running `satellite serve`."""

    process: subprocess.Popen[bytes]
    port: int
    certs: Path
    log: Path

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def credentials(self, certs: Path | None = None, client_cert: bool = True):
        """mTLS credentials trusting this server's CA, presenting a client certificate
        from `certs` (default: this server's own PKI) unless `client_cert` is False."""
        ca = (self.certs / "ca-cert.pem").read_bytes()
        if not client_cert:
            return grpc.ssl_channel_credentials(root_certificates=ca)
        source = certs or self.certs
        return grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=(source / "client-key.pem").read_bytes(),
            certificate_chain=(source / "client-cert.pem").read_bytes(),
        )

    def channel(self, credentials=None) -> grpc.aio.Channel:
        """A grpc.aio channel (create it inside the running event loop)."""
        return grpc.aio.secure_channel(
            self.addr,
            credentials or self.credentials(),
            options=[("grpc.ssl_target_name_override", "localhost")],
        )


def start_server(certs: Path, log_dir: Path, *extra: str) -> Server:
    """Starts `serve` and waits (bounded) until its port accepts connections."""
    port = free_port()
    log = log_dir / f"serve-{port}.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [satellite_bin(), "serve", "--addr", f"127.0.0.1:{port}", "--certs", certs, *extra],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "NO_COLOR": "1"},
        )
    server = Server(process, port, certs, log)
    deadline = time.monotonic() + WAIT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"serve exited with {process.returncode}: {server.log_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_server(server)
            raise TimeoutError(f"serve never listened on {port}: {server.log_text()}")
        time.sleep(0.02)


def stop_server(server: Server) -> int | None:
    """SIGTERM, then SIGKILL if it lingers; returns the exit code after SIGTERM (None if
    it had to be killed)."""
    if server.process.poll() is not None:
        return server.process.returncode
    server.process.send_signal(signal.SIGTERM)
    try:
        return server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)
        return None


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certs(tmp_path_factory.mktemp("pki") / "certs")


@pytest.fixture(scope="session")
def other_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second, unrelated PKI (another CA)."""
    return make_certs(tmp_path_factory.mktemp("other-pki") / "certs")


@pytest.fixture(scope="session")
def rows() -> list[bytes]:
    return world_rows()


def _serve(certs: Path, tmp_path_factory: pytest.TempPathFactory, *extra: str) -> Iterator[Server]:
    server = start_server(certs, tmp_path_factory.mktemp("logs"), *extra)
    try:
        yield server
    finally:
        code = stop_server(server)
    assert code == 0, f"serve did not exit 0 on SIGTERM ({code}): {server.log_text()}"


@pytest.fixture(scope="session")
def server(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The default server: the embedded world, no delay."""
    yield from _serve(certs, tmp_path_factory)


@pytest.fixture(scope="session")
def slow_server(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server pausing 50 ms before each streamed cell (the whole map takes ~2 minutes)."""
    yield from _serve(certs, tmp_path_factory, "--send-delay", "50")

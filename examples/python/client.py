#!/usr/bin/env python3
"""The classic Satellite client, on stock grpcio (grpc.aio) over mutual TLS.

It makes six single GetImage requests (the last one deliberately off the map, to show a
status code and its details), then streams the whole map with GetImages. The streamed cells
go onto a multiprocessing queue and a second process draws the map as they arrive, so
drawing never slows the receiving loop down.

Exit codes: 0 on success, 1 on an unexpected RPC error (its code is printed), 2 when the
certificates cannot be read.

Run gen_stubs.sh first: satellite_pb2.py and satellite_pb2_grpc.py are generated, never
committed.
"""

from __future__ import annotations

import argparse
import json
import asyncio
import multiprocessing
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType

import grpc

import satellite_pb2
import satellite_pb2_grpc

# What the drawing process receives last: no more cells.
SENTINEL = None


class SatelliteClient:
    """A small proxy over one mutual-TLS channel: `async with SatelliteClient(...) as c`."""

    def __init__(
        self,
        addr: str,
        credentials: grpc.ChannelCredentials,
        *,
        deadline: float | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        server_name: str | None = None,
        lb_policy: str | None = None,
        service_config: str | None = None,
    ) -> None:
        self._addr = addr
        self._lb_policy = lb_policy
        self._service_config = service_config
        self._credentials = credentials
        self._deadline = deadline
        self._metadata = tuple(metadata)
        self._server_name = server_name
        self._channel: grpc.aio.Channel | None = None
        self._stub: satellite_pb2_grpc.SatelliteStub | None = None

    async def __aenter__(self) -> SatelliteClient:
        options = []
        if self._server_name:
            # Check the server certificate against this name instead of the host in --addr.
            options.append(("grpc.ssl_target_name_override", self._server_name))
        if self._service_config:
            # grpcio applies retry policies only with retries enabled (its default since 1.40,
            # said explicitly here).
            options.append(("grpc.service_config", self._service_config))
            options.append(("grpc.enable_retries", 1))
        if self._lb_policy:
            # Overrides the service config's choice, as `satellite get --lb` does.
            options.append(("grpc.lb_policy_name", self._lb_policy))
        self._channel = grpc.aio.secure_channel(self._addr, self._credentials, options=options)
        self._stub = satellite_pb2_grpc.SatelliteStub(self._channel)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._channel = None
        self._stub = None

    async def get_image(self, x: int, y: int) -> satellite_pb2.Image:
        """One cell; raises grpc.aio.AioRpcError (e.g. OUT_OF_RANGE off the map)."""
        return await self._connected().GetImage(
            satellite_pb2.Location(x=x, y=y),
            timeout=self._deadline,
            metadata=self._metadata,
        )

    async def get_images(
        self, ll: tuple[int, int], ur: tuple[int, int]
    ) -> AsyncIterator[satellite_pb2.Image]:
        """The cells of the inclusive area ll..ur, in reading order, as the server sends them."""
        area = satellite_pb2.Area(
            ll=satellite_pb2.Location(x=ll[0], y=ll[1]),
            ur=satellite_pb2.Location(x=ur[0], y=ur[1]),
        )
        call = self._connected().GetImages(area, timeout=self._deadline, metadata=self._metadata)
        try:
            async for image in call:
                yield image
        finally:
            # A caller that stops early cancels the stream (RST_STREAM) instead of leaving
            # the server sending into a full window.
            call.cancel()

    def _connected(self) -> satellite_pb2_grpc.SatelliteStub:
        if self._stub is None:
            raise RuntimeError("use SatelliteClient inside 'async with'")
        return self._stub


def mtls_credentials(certs: Path) -> grpc.ChannelCredentials:
    """Client credentials from certs/: trust ca-cert.pem, present client-cert.pem.

    Reading the files here, before any channel exists, makes a missing file fail with its
    name (OSError) rather than later as an opaque handshake error.
    """
    return grpc.ssl_channel_credentials(
        root_certificates=(certs / "ca-cert.pem").read_bytes(),
        private_key=(certs / "client-key.pem").read_bytes(),
        certificate_chain=(certs / "client-cert.pem").read_bytes(),
    )


def draw(cells: multiprocessing.Queue, width: int, height: int) -> None:
    """Draws (x, y, byte) cells from the queue until SENTINEL.

    On a terminal each cell appears in place (ANSI cursor moves, relative to the line below
    the map); otherwise the finished map is printed at the end.
    """
    live = sys.stdout.isatty()
    grid = [[" "] * width for _ in range(height)]
    out = sys.stdout
    if live:
        out.write("\n" * height)  # reserve the rows; the cursor now sits below them
    while (item := cells.get()) is not SENTINEL:
        x, y, byte = item
        if not (0 <= x < width and 0 <= y < height):
            continue  # never let a stray cell move the cursor outside the map's rows
        char = chr(byte) if 0x20 <= byte <= 0x7E else "?"
        row = height - 1 - y  # y = 0 is the bottom row
        if live:
            up = height - row
            out.write(f"\x1b[{up}A\x1b[{x + 1}G{char}\x1b[{up}B\r")
            out.flush()
        else:
            grid[row][x] = char
    if not live:
        out.write("".join("".join(line) + "\n" for line in grid))
    out.flush()


def metadata_pair(text: str) -> tuple[str, str]:
    """argparse type for --metadata k=v (gRPC wants lower-case keys)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip().lower(), value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="Classic Satellite client: six GetImage calls, then the whole map.",
        epilog="Exit codes: 0 ok, 1 RPC error, 2 unreadable certificates or service config.",
    )
    parser.add_argument(
        "--addr",
        default="localhost:8000",
        help="target: host:port, dns:///host:port, ipv4:a:port,b:port, ipv6:[a]:port, unix:/path",
    )
    parser.add_argument(
        "--lb",
        choices=["pick_first", "round_robin"],
        default=None,
        help="load balancing over the target's addresses (default: the service config's)",
    )
    parser.add_argument(
        "--service-config",
        type=Path,
        default=None,
        metavar="FILE",
        help="a service config in JSON: balancer, timeouts, retry policies, health checking",
    )
    parser.add_argument(
        "--certs",
        type=Path,
        default=Path("certs"),
        help="directory with ca-cert.pem, client-cert.pem, client-key.pem (default: certs)",
    )
    parser.add_argument("--deadline", type=float, default=None, help="per-call deadline in seconds")
    parser.add_argument(
        "--metadata",
        type=metadata_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="request metadata, repeatable",
    )
    parser.add_argument(
        "--server-name",
        default=None,
        help="name to verify in the server certificate (ssl_target_name_override)",
    )
    parser.add_argument("--width", type=int, default=80, help="map width (default 80)")
    parser.add_argument("--height", type=int, default=32, help="map height (default 32)")
    return parser.parse_args(argv)


def locations(width: int, height: int) -> list[tuple[int, int]]:
    """The six single requests: corners and land-ish points, then one just off the map."""
    return [
        (0, 0),
        (width - 1, height - 1),
        (width * 2 // 9, height * 3 // 4),  # North America on the default map
        (width * 5 // 9, height // 2),  # Africa
        (width * 7 // 8, height * 3 // 8),  # Australia
        (width, height),  # off the map on purpose: OUT_OF_RANGE
    ]


async def run(args: argparse.Namespace) -> int:
    """The classic session; returns the exit code."""
    try:
        credentials = mtls_credentials(args.certs)
    except OSError as e:
        print(f"error: cannot read certificates: {e} (run `satellite certs`)", file=sys.stderr)
        return 2
    service_config = None
    if args.service_config is not None:
        try:
            service_config = args.service_config.read_text()
            json.loads(service_config)
        except (OSError, ValueError) as e:
            print(f"error: --service-config {args.service_config}: {e}", file=sys.stderr)
            return 2
    async with SatelliteClient(
        args.addr,
        credentials,
        deadline=args.deadline,
        metadata=args.metadata,
        server_name=args.server_name,
        lb_policy=args.lb,
        service_config=service_config,
    ) as client:
        off_map = (args.width, args.height)
        for x, y in locations(args.width, args.height):
            try:
                image = await client.get_image(x, y)
            except grpc.aio.AioRpcError as e:
                print(f"GetImage({x}, {y}): {e.code().name}: {e.details()}")
                if (x, y) != off_map or e.code() != grpc.StatusCode.OUT_OF_RANGE:
                    return 1
                continue
            print(f"GetImage({x}, {y}) = {image.img.decode('ascii', 'replace')!r}")
        return await stream_map(client, args.width, args.height)


async def stream_map(client: SatelliteClient, width: int, height: int) -> int:
    """Streams the whole map to a drawing process; returns the exit code."""
    # spawn, not fork: forking a process that already runs gRPC's threads is unsafe.
    context = multiprocessing.get_context("spawn")
    cells = context.Queue()
    drawer = context.Process(target=draw, args=(cells, width, height), daemon=True)
    drawer.start()
    count = size = 0
    started = time.perf_counter()
    error: grpc.aio.AioRpcError | None = None
    try:
        async for image in client.get_images((0, 0), (width - 1, height - 1)):
            cells.put((image.x, image.y, image.img[0] if image.img else 0))
            count += 1
            size += len(image.img)
    except grpc.aio.AioRpcError as e:
        error = e
    finally:
        cells.put(SENTINEL)
        await asyncio.to_thread(drawer.join)
    elapsed = time.perf_counter() - started
    rate = f"{count / elapsed:.0f}" if elapsed > 0 else "-"
    print(f"cells: {count}, bytes: {size}, elapsed: {elapsed:.3f} s, cells/s: {rate}")
    if error is not None:
        print(f"GetImages: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

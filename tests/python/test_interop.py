"""Stock grpcio (grpc.aio) against the release `satellite serve` over mutual TLS.

Every expectation comes from src/satellite/world.txt: y = 0 is its last line, x = 0 the first
byte of a line.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import grpc
import pytest

import satellite_pb2 as pb
import satellite_pb2_grpc as pb_grpc
from conftest import EXAMPLES, WAIT, Server, cell

W, H = 80, 32


def run(coro):
    """Runs one async test body with a bounded wait."""
    return asyncio.run(asyncio.wait_for(coro, WAIT * 2))


def area(ll: tuple[int, int] | None, ur: tuple[int, int] | None) -> pb.Area:
    loc = lambda p: None if p is None else pb.Location(x=p[0], y=p[1])  # noqa: E731
    return pb.Area(ll=loc(ll), ur=loc(ur))


async def collect(stub: pb_grpc.SatelliteStub, request: pb.Area, timeout: float = WAIT):
    return [image async for image in stub.GetImages(request, timeout=timeout)]


def test_world_file_shape(rows):
    assert len(rows) == H and all(len(r) == W for r in rows)


UNARY_CELLS = [(0, 0), (79, 0), (0, 31), (79, 31), (10, 20), (40, 16), (62, 24), (17, 9)]


def test_unary_cells_match_the_map_file(server: Server, rows):
    # The bottom row differs from the top, so a flipped y axis cannot pass.
    assert rows[0] != rows[-1]

    async def body():
        async with server.channel() as channel:
            stub = pb_grpc.SatelliteStub(channel)
            cells = UNARY_CELLS + [(x, y) for y in range(H) for x in range(0, W, 7)]
            for x, y in cells:
                image = await stub.GetImage(pb.Location(x=x, y=y), timeout=WAIT)
                assert (image.x, image.y) == (x, y)
                assert image.img == cell(rows, x, y), (x, y)

    run(body())


@pytest.mark.parametrize("x, y", [(80, 0), (0, 32), (-1, 0), (0, -1), (80, 32)])
def test_get_image_off_the_map_is_out_of_range(server: Server, x, y):
    async def body():
        async with server.channel() as channel:
            stub = pb_grpc.SatelliteStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetImage(pb.Location(x=x, y=y), timeout=WAIT)
            assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
            assert f"({x}, {y})" in err.value.details()
            assert f"{W} x {H}" in err.value.details()

    run(body())


@pytest.mark.parametrize(
    "ll, ur, off",
    [((-1, 0), (3, 3), (-1, 0)), ((0, 0), (80, 3), (80, 3)), ((0, 0), (3, 32), (3, 32))],
)
def test_area_corner_off_the_map_is_out_of_range(server: Server, ll, ur, off):
    async def body():
        async with server.channel() as channel:
            stub = pb_grpc.SatelliteStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await collect(stub, area(ll, ur))
            assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
            assert f"({off[0]}, {off[1]})" in err.value.details()
            assert f"{W} x {H}" in err.value.details()

    run(body())


@pytest.mark.parametrize(
    "ll, ur",
    [
        ((5, 1), (4, 1)),  # inverted x
        ((1, 5), (1, 4)),  # inverted y
        ((5, 5), (1, 1)),  # both
        (None, (1, 1)),  # missing ll
        ((1, 1), None),  # missing ur
        (None, None),  # both missing
    ],
)
def test_bad_area_is_invalid_argument(server: Server, ll, ur):
    async def body():
        async with server.channel() as channel:
            stub = pb_grpc.SatelliteStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await collect(stub, area(ll, ur))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details()

    run(body())


def test_whole_map_stream_order_and_count(server: Server, rows):
    async def body():
        async with server.channel() as channel:
            stub = pb_grpc.SatelliteStub(channel)
            images = await collect(stub, area((0, 0), (W - 1, H - 1)))
        assert len(images) == W * H == 2560
        # Reading order: rows from the top (y = H - 1) down, x ascending within a row.
        assert [(i.x, i.y) for i in images] == [
            (x, y) for y in range(H - 1, -1, -1) for x in range(W)
        ]
        assert b"".join(i.img for i in images) == b"".join(rows)

    run(body())


def test_sub_area_stream(server: Server, rows):
    ll, ur = (10, 20), (30, 25)

    async def body():
        async with server.channel() as channel:
            stub = pb_grpc.SatelliteStub(channel)
            images = await collect(stub, area(ll, ur))
        want = [
            (x, y, cell(rows, x, y))
            for y in range(ur[1], ll[1] - 1, -1)
            for x in range(ll[0], ur[0] + 1)
        ]
        assert [(i.x, i.y, i.img) for i in images] == want

    run(body())


def test_deadline_exceeded_with_send_delay(slow_server: Server):
    async def body():
        async with slow_server.channel() as channel:
            stub = pb_grpc.SatelliteStub(channel)
            received = 0
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in stub.GetImages(area((0, 0), (W - 1, H - 1)), timeout=0.5):
                    received += 1
            elapsed = time.monotonic() - started
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert received < 20, received  # 50 ms per cell: about 10 fit in 0.5 s
            assert 0.4 < elapsed < 5, elapsed
            # Unary calls are not delayed, and the channel still works.
            image = await stub.GetImage(pb.Location(x=0, y=0), timeout=2)
            assert (image.x, image.y) == (0, 0)

    run(body())


def test_cancel_mid_stream_then_a_new_call_succeeds(slow_server: Server, rows):
    async def body():
        async with slow_server.channel() as channel:
            stub = pb_grpc.SatelliteStub(channel)
            call = stub.GetImages(area((0, 0), (W - 1, H - 1)), timeout=WAIT)
            got = []
            async for image in call:
                got.append(image)
                if len(got) == 5:
                    break
            assert call.cancel()
            assert await call.code() == grpc.StatusCode.CANCELLED
            assert [(i.x, i.y) for i in got] == [(x, H - 1) for x in range(5)]

            # The same channel: a unary call and a short stream both work.
            image = await stub.GetImage(pb.Location(x=3, y=4), timeout=WAIT)
            assert image.img == cell(rows, 3, 4)
            images = await collect(stub, area((0, 0), (2, 0)))
            assert [i.img for i in images] == [cell(rows, x, 0) for x in range(3)]
        # And a fresh channel.
        async with slow_server.channel() as channel:
            stub = pb_grpc.SatelliteStub(channel)
            image = await stub.GetImage(pb.Location(x=W - 1, y=H - 1), timeout=WAIT)
            assert image.img == cell(rows, W - 1, H - 1)

    run(body())


def test_rejected_without_a_client_certificate(server: Server):
    async def body():
        async with server.channel(server.credentials(client_cert=False)) as channel:
            stub = pb_grpc.SatelliteStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetImage(pb.Location(x=0, y=0), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE

    run(body())


def test_rejected_with_a_certificate_from_another_ca(server: Server, other_certs):
    async def body():
        credentials = server.credentials(certs=other_certs)
        async with server.channel(credentials) as channel:
            stub = pb_grpc.SatelliteStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetImage(pb.Location(x=0, y=0), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        # The server's own client still gets in.
        async with server.channel() as channel:
            await pb_grpc.SatelliteStub(channel).GetImage(pb.Location(x=0, y=0), timeout=5)

    run(body())


def test_example_client_end_to_end(server: Server, rows):
    result = subprocess.run(
        [
            sys.executable,
            EXAMPLES / "client.py",
            "--addr",
            server.addr,
            "--certs",
            server.certs,
            "--server-name",
            "localhost",
            "--deadline",
            "10",
            "--metadata",
            "token=pytest",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "OUT_OF_RANGE" in out, out
    assert f"({W}, {H})" in out, out
    # The drawn map (plain text when stdout is not a terminal) is the map file.
    lines = out.splitlines()
    text_rows = [r.decode("ascii") for r in rows]
    start = next((i for i in range(len(lines)) if lines[i : i + H] == text_rows), None)
    assert start is not None, f"the map was not drawn:\n{out}"
    assert "cells: 2560" in out, out

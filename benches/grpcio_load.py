#!/usr/bin/env python3
"""Moderate, realistic load from stock Python gRPC (grpc.aio) over mutual TLS: the `grpcio`
scenario of benches/run.py (issue 15).

One secure channel, `--inflight` GetImage calls kept in flight by as many tasks, for
`--warmup` then `--duration` seconds. It prints `warm` when the warm-up ends (run.py reads
the server's CPU time then) and, at the end, one JSON line: calls, calls_per_s, errors,
p50_us, p99_us. Run with the venv that has examples/python/requirements.txt; the stubs come
from examples/python (gen_stubs.sh).
"""

import argparse
import asyncio
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "examples", "python"))

import grpc  # noqa: E402

import satellite_pb2  # noqa: E402
import satellite_pb2_grpc  # noqa: E402


def credentials(certs):
    def read(name):
        with open(os.path.join(certs, name), "rb") as f:
            return f.read()

    return grpc.ssl_channel_credentials(
        root_certificates=read("ca-cert.pem"),
        private_key=read("client-key.pem"),
        certificate_chain=read("client-cert.pem"),
    )


async def main(a):
    options = [("grpc.ssl_target_name_override", a.server_name)]
    async with grpc.aio.secure_channel(a.addr, credentials(a.certs), options=options) as channel:
        stub = satellite_pb2_grpc.SatelliteStub(channel)
        request = satellite_pb2.Location(x=1, y=2)
        await stub.GetImage(request, timeout=10)
        measuring = False
        stop = False
        latencies = []
        errors = 0

        async def worker():
            nonlocal errors
            while not stop:
                t0 = time.perf_counter()
                try:
                    await stub.GetImage(request, timeout=10)
                except grpc.aio.AioRpcError:
                    if measuring:
                        errors += 1
                    continue
                if measuring:
                    latencies.append(time.perf_counter() - t0)

        tasks = [asyncio.create_task(worker()) for _ in range(a.inflight)]
        await asyncio.sleep(a.warmup)
        measuring = True
        print("warm", flush=True)
        t0 = time.perf_counter()
        await asyncio.sleep(a.duration)
        measuring = False
        elapsed = time.perf_counter() - t0
        stop = True
        await asyncio.gather(*tasks)

    latencies.sort()

    def pct(p):
        if not latencies:
            return 0
        return round(latencies[min(len(latencies) - 1, round((len(latencies) - 1) * p))] * 1e6)

    print(json.dumps({
        "calls": len(latencies),
        "calls_per_s": round(len(latencies) / elapsed),
        "errors": errors,
        "p50_us": pct(0.5),
        "p99_us": pct(0.99),
    }), flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--addr", required=True)
    p.add_argument("--certs", required=True, help="directory with ca-cert.pem, client-cert.pem, client-key.pem")
    p.add_argument("--server-name", default="localhost")
    p.add_argument("--inflight", type=int, default=64)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--warmup", type=float, default=2)
    asyncio.run(main(p.parse_args()))

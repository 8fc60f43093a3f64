"""A stock grpcio grpc.testing.TestService server, for our interop client to test against.

Usage: grpcio_server.py --port P [--use_tls --cert F --key F [--ca F]]
With --ca, client certificates are required and verified. Listens on 127.0.0.1; --port 0
picks a free port. Prints "listening on 127.0.0.1:PORT" once it serves.

grpcio cannot tell a servicer whether a request came compressed (grpc-encoding never reaches
invocation_metadata), so expect_compressed is accepted without a check here.
"""

import argparse
import os
import signal
import sys
import threading
import time
from concurrent import futures

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402

import empty_pb2  # noqa: E402
import messages_pb2  # noqa: E402
import test_pb2_grpc  # noqa: E402

ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"


def bool_flag(value):
    return value.lower() in ("1", "true", "yes")


def payload(size):
    return messages_pb2.Payload(type=messages_pb2.COMPRESSABLE, body=b"\0" * size)


def echo_metadata(context):
    initial, trailing = [], []
    for key, value in context.invocation_metadata():
        if key == ECHO_INITIAL:
            initial.append((key, value))
        elif key == ECHO_TRAILING:
            trailing.append((key, value))
    if initial:
        context.send_initial_metadata(initial)
    if trailing:
        context.set_trailing_metadata(trailing)


def maybe_abort(request, context):
    if request.HasField("response_status") and request.response_status.code != 0:
        code = CODES.get(request.response_status.code, grpc.StatusCode.UNKNOWN)
        context.abort(code, request.response_status.message)


CODES = {code.value[0]: code for code in grpc.StatusCode}


def stream_responses(params, context):
    for p in params:
        if p.interval_us > 0:
            time.sleep(p.interval_us / 1e6)
        if p.HasField("compressed"):
            if p.compressed.value:
                context.set_compression(grpc.Compression.Gzip)
            else:
                context.disable_next_message_compression()
        yield messages_pb2.StreamingOutputCallResponse(payload=payload(p.size))


class TestService(test_pb2_grpc.TestServiceServicer):
    def EmptyCall(self, request, context):
        return empty_pb2.Empty()

    def UnaryCall(self, request, context):
        echo_metadata(context)
        maybe_abort(request, context)
        if request.response_compressed.value:
            context.set_compression(grpc.Compression.Gzip)
        return messages_pb2.SimpleResponse(payload=payload(request.response_size))

    def StreamingOutputCall(self, request, context):
        echo_metadata(context)
        maybe_abort(request, context)
        yield from stream_responses(request.response_parameters, context)

    def StreamingInputCall(self, request_iterator, context):
        total = sum(len(r.payload.body) for r in request_iterator)
        return messages_pb2.StreamingInputCallResponse(aggregated_payload_size=total)

    def FullDuplexCall(self, request_iterator, context):
        echo_metadata(context)
        for request in request_iterator:
            maybe_abort(request, context)
            yield from stream_responses(request.response_parameters, context)

    def HalfDuplexCall(self, request_iterator, context):
        echo_metadata(context)
        requests = list(request_iterator)
        for request in requests:
            maybe_abort(request, context)
        for request in requests:
            yield from stream_responses(request.response_parameters, context)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--use_tls", nargs="?", const="true", default="false")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--ca")
    args = parser.parse_args()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    test_pb2_grpc.add_TestServiceServicer_to_server(TestService(), server)
    address = f"127.0.0.1:{args.port}"
    if bool_flag(args.use_tls):
        if not (args.cert and args.key):
            parser.error("--use_tls needs --cert and --key")
        with open(args.cert, "rb") as f:
            cert = f.read()
        with open(args.key, "rb") as f:
            key = f.read()
        ca = None
        if args.ca:
            with open(args.ca, "rb") as f:
                ca = f.read()
        creds = grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=ca is not None)
        port = server.add_secure_port(address, creds)
    else:
        port = server.add_insecure_port(address)
    server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(1):
        pass
    server.stop(grace=1).wait(5)


if __name__ == "__main__":
    main()

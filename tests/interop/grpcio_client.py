"""A stock grpcio interop client (grpc/grpc doc/interop-test-descriptions.md), to test our server.

Usage: grpcio_client.py --server_host H --server_port P --test_case CASE|all
       [--use_tls --ca F [--cert F --key F] [--server_host_override NAME]]
Exits 0 when the case (or every case) passes; otherwise prints why and exits 1.

The grpcio API does not show a response message's compressed flag, so server_compressed_*
check that the call succeeds with the right sizes while compression is asked for.
"""

import argparse
import os
import queue
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402

import empty_pb2  # noqa: E402
import messages_pb2  # noqa: E402
import test_pb2_grpc  # noqa: E402

TIMEOUT = 10  # seconds, for every call but the one that tests deadlines
ECHO_INITIAL = ("x-grpc-test-echo-initial", "test_initial_metadata_value")
ECHO_TRAILING = ("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab")
SPECIAL_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


def payload(size):
    return messages_pb2.Payload(body=b"\0" * size)


def check_body(p, size):
    check(len(p.body) == size, f"payload of {len(p.body)} bytes, want {size}")
    check(p.body == b"\0" * size, "payload is not all zeros")


def expect_code(fn, code, message=None):
    try:
        fn()
    except grpc.RpcError as e:
        check(e.code() == code, f"status {e.code()} ({e.details()!r}), want {code}")
        if message is not None:
            check(e.details() == message, f"status message {e.details()!r}, want {message!r}")
        return
    raise Failure(f"the call succeeded, want {code}")


class Requests:
    """A request iterator the test feeds one message at a time; None half-closes."""

    def __init__(self):
        self.q = queue.Queue()

    def put(self, m):
        self.q.put(m)

    def __iter__(self):
        return self

    def __next__(self):
        m = self.q.get(timeout=TIMEOUT)
        if m is None:
            raise StopIteration
        return m


def empty_unary(stub):
    r = stub.EmptyCall(empty_pb2.Empty(), timeout=TIMEOUT)
    check(isinstance(r, empty_pb2.Empty), "response is not Empty")


def large_unary(stub):
    r = stub.UnaryCall(
        messages_pb2.SimpleRequest(response_size=314159, payload=payload(271828)), timeout=TIMEOUT)
    check_body(r.payload, 314159)


def client_streaming(stub):
    reqs = [messages_pb2.StreamingInputCallRequest(payload=payload(n))
            for n in (27182, 8, 1828, 45904)]
    r = stub.StreamingInputCall(iter(reqs), timeout=TIMEOUT)
    check(r.aggregated_payload_size == 74922, f"aggregated {r.aggregated_payload_size}")


def server_streaming(stub):
    sizes = [31415, 9, 2653, 58979]
    req = messages_pb2.StreamingOutputCallRequest(
        response_parameters=[messages_pb2.ResponseParameters(size=n) for n in sizes])
    got = [len(r.payload.body) for r in stub.StreamingOutputCall(req, timeout=TIMEOUT)]
    check(got == sizes, f"response sizes {got}, want {sizes}")


def ping_pong(stub):
    pairs = [(31415, 27182), (9, 8), (2653, 1828), (58979, 45904)]
    requests = Requests()
    call = stub.FullDuplexCall(requests, timeout=TIMEOUT)
    for size, body in pairs:
        requests.put(messages_pb2.StreamingOutputCallRequest(
            response_parameters=[messages_pb2.ResponseParameters(size=size)],
            payload=payload(body)))
        r = next(call)
        check_body(r.payload, size)
    requests.put(None)
    rest = list(call)
    check(not rest, f"{len(rest)} responses too many")
    check(call.code() == grpc.StatusCode.OK, f"status {call.code()}")


def empty_stream(stub):
    call = stub.FullDuplexCall(iter([]), timeout=TIMEOUT)
    rest = list(call)
    check(not rest, f"{len(rest)} responses, want none")
    check(call.code() == grpc.StatusCode.OK, f"status {call.code()}")


def cancel_after_begin(stub):
    requests = Requests()
    future = stub.StreamingInputCall.future(requests, timeout=TIMEOUT)
    future.cancel()
    check(future.cancelled(), "the call was not cancelled")
    check(future.code() == grpc.StatusCode.CANCELLED, f"status {future.code()}")
    requests.put(None)


def cancel_after_first_response(stub):
    requests = Requests()
    call = stub.FullDuplexCall(requests, timeout=TIMEOUT)
    requests.put(messages_pb2.StreamingOutputCallRequest(
        response_parameters=[messages_pb2.ResponseParameters(size=31415)],
        payload=payload(27182)))
    r = next(call)
    check_body(r.payload, 31415)
    call.cancel()
    check(call.code() == grpc.StatusCode.CANCELLED, f"status {call.code()}")
    requests.put(None)


def timeout_on_sleeping_server(stub):
    requests = Requests()
    call = stub.FullDuplexCall(requests, timeout=0.001)
    requests.put(messages_pb2.StreamingOutputCallRequest(payload=payload(27182)))
    try:
        for _ in call:
            pass
    except grpc.RpcError:
        pass
    check(call.code() == grpc.StatusCode.DEADLINE_EXCEEDED, f"status {call.code()}")
    requests.put(None)


def custom_metadata(stub):
    metadata = [ECHO_INITIAL, ECHO_TRAILING]

    def check_echo(initial, trailing):
        check(ECHO_INITIAL in list(initial), f"initial metadata {initial}")
        check(ECHO_TRAILING in list(trailing), f"trailing metadata {trailing}")

    r, call = stub.UnaryCall.with_call(
        messages_pb2.SimpleRequest(response_size=314159, payload=payload(271828)),
        metadata=metadata, timeout=TIMEOUT)
    check_body(r.payload, 314159)
    check_echo(call.initial_metadata(), call.trailing_metadata())

    req = messages_pb2.StreamingOutputCallRequest(
        response_parameters=[messages_pb2.ResponseParameters(size=314159)],
        payload=payload(271828))
    call = stub.FullDuplexCall(iter([req]), metadata=metadata, timeout=TIMEOUT)
    responses = list(call)
    check(len(responses) == 1, f"{len(responses)} responses, want 1")
    check_body(responses[0].payload, 314159)
    check_echo(call.initial_metadata(), call.trailing_metadata())


def _status_case(stub, message):
    status = messages_pb2.EchoStatus(code=2, message=message)
    expect_code(lambda: stub.UnaryCall(
        messages_pb2.SimpleRequest(response_status=status), timeout=TIMEOUT),
        grpc.StatusCode.UNKNOWN, message)
    return status


def status_code_and_message(stub):
    status = _status_case(stub, "test status message")
    req = messages_pb2.StreamingOutputCallRequest(response_status=status)
    expect_code(lambda: list(stub.FullDuplexCall(iter([req]), timeout=TIMEOUT)),
                grpc.StatusCode.UNKNOWN, "test status message")


def special_status_message(stub):
    _status_case(stub, SPECIAL_MESSAGE)


def unimplemented_method(stub):
    expect_code(lambda: stub.UnimplementedCall(empty_pb2.Empty(), timeout=TIMEOUT),
                grpc.StatusCode.UNIMPLEMENTED)


def unimplemented_service(stub):
    other = test_pb2_grpc.UnimplementedServiceStub(stub._channel)
    expect_code(lambda: other.UnimplementedCall(empty_pb2.Empty(), timeout=TIMEOUT),
                grpc.StatusCode.UNIMPLEMENTED)


def client_compressed_unary(stub):
    def req(expect):
        return messages_pb2.SimpleRequest(
            expect_compressed=messages_pb2.BoolValue(value=expect),
            response_size=314159, payload=payload(271828))

    # The probe: uncompressed although compression is expected.
    expect_code(lambda: stub.UnaryCall(req(True), timeout=TIMEOUT),
                grpc.StatusCode.INVALID_ARGUMENT)
    r = stub.UnaryCall(req(True), compression=grpc.Compression.Gzip, timeout=TIMEOUT)
    check_body(r.payload, 314159)
    r = stub.UnaryCall(req(False), compression=grpc.Compression.NoCompression, timeout=TIMEOUT)
    check_body(r.payload, 314159)


def server_compressed_unary(stub):
    for compressed in (True, False):
        r = stub.UnaryCall(messages_pb2.SimpleRequest(
            response_compressed=messages_pb2.BoolValue(value=compressed),
            response_size=314159, payload=payload(271828)), timeout=TIMEOUT)
        check_body(r.payload, 314159)


def client_compressed_streaming(stub):
    probe = messages_pb2.StreamingInputCallRequest(
        expect_compressed=messages_pb2.BoolValue(value=True), payload=payload(27182))
    expect_code(lambda: stub.StreamingInputCall(iter([probe]), timeout=TIMEOUT),
                grpc.StatusCode.INVALID_ARGUMENT)
    # grpcio compresses every message of a call, so the second one (expect_compressed false)
    # goes compressed too; the server only insists on compression when it is expected.
    reqs = [probe, messages_pb2.StreamingInputCallRequest(
        expect_compressed=messages_pb2.BoolValue(value=False), payload=payload(45904))]
    r = stub.StreamingInputCall(iter(reqs), compression=grpc.Compression.Gzip, timeout=TIMEOUT)
    check(r.aggregated_payload_size == 73086, f"aggregated {r.aggregated_payload_size}")


def server_compressed_streaming(stub):
    params = [(True, 31415), (False, 92653)]
    req = messages_pb2.StreamingOutputCallRequest(response_parameters=[
        messages_pb2.ResponseParameters(compressed=messages_pb2.BoolValue(value=c), size=n)
        for c, n in params])
    got = [len(r.payload.body) for r in stub.StreamingOutputCall(req, timeout=TIMEOUT)]
    check(got == [n for _, n in params], f"response sizes {got}")


CASES = [
    empty_unary, large_unary, client_streaming, server_streaming, ping_pong, empty_stream,
    cancel_after_begin, cancel_after_first_response, timeout_on_sleeping_server,
    custom_metadata, status_code_and_message, special_status_message, unimplemented_method,
    unimplemented_service, client_compressed_unary, server_compressed_unary,
    client_compressed_streaming, server_compressed_streaming,
]


def channel(args):
    target = f"{args.server_host}:{args.server_port}"
    options = []
    if args.server_host_override:
        options.append(("grpc.ssl_target_name_override", args.server_host_override))
        options.append(("grpc.default_authority", args.server_host_override))
    if args.use_tls.lower() not in ("1", "true", "yes"):
        return grpc.insecure_channel(target, options=options)

    def read(path):
        if not path:
            return None
        with open(path, "rb") as f:
            return f.read()

    creds = grpc.ssl_channel_credentials(
        root_certificates=read(args.ca), private_key=read(args.key),
        certificate_chain=read(args.cert))
    return grpc.secure_channel(target, creds, options=options)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server_host", default="localhost")
    parser.add_argument("--server_port", type=int, required=True)
    parser.add_argument("--test_case", required=True)
    parser.add_argument("--use_tls", nargs="?", const="true", default="false")
    parser.add_argument("--server_host_override")
    parser.add_argument("--ca")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()

    by_name = {c.__name__: c for c in CASES}
    if args.test_case == "all":
        cases = CASES
    elif args.test_case in by_name:
        cases = [by_name[args.test_case]]
    else:
        parser.error(f"unknown test case {args.test_case!r}")

    failed = 0
    with channel(args) as ch:
        grpc.channel_ready_future(ch).result(timeout=TIMEOUT)
        stub = test_pb2_grpc.TestServiceStub(ch)
        stub._channel = ch
        for case in cases:
            start = time.monotonic()
            try:
                case(stub)
            except (Failure, grpc.RpcError, queue.Empty) as e:
                failed += 1
                detail = f"{e.code()}: {e.details()}" if isinstance(e, grpc.RpcError) else e
                print(f"FAIL {case.__name__}: {detail}", file=sys.stderr)
                continue
            print(f"PASS {case.__name__} ({time.monotonic() - start:.2f}s)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

"""The interop matrix: every standard case, both directions, plaintext and mutual TLS.

    grpcio->satellite: the stock grpcio client (grpcio_client.py) against examples/interop_server
    satellite->grpcio: examples/interop_client against the stock grpcio server (grpcio_server.py)

plus the grpc-go rows of tests/peers/go/matrix.sh when that script exists. Prints a table
`case | direction | transport | PASS/FAIL`, then one line `N passed, M failed`; exits 1 if any
cell failed. Builds nothing: it expects `cargo build --release --bins --examples` to have run
(target/release/satellite, target/release/examples/interop_{server,client}). Run it with the
Python that has tests/interop/requirements.txt installed. Loopback only; every wait is bounded.
"""

import os
import queue
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
RELEASE = os.path.join(REPO, "target", "release")
SATELLITE = os.environ.get("SATELLITE_BIN", os.path.join(RELEASE, "satellite"))
OUR_SERVER = os.path.join(RELEASE, "examples", "interop_server")
OUR_CLIENT = os.path.join(RELEASE, "examples", "interop_client")
GO_MATRIX = os.path.join(REPO, "tests", "peers", "go", "matrix.sh")

CASES = [
    "empty_unary", "large_unary", "client_streaming", "server_streaming", "ping_pong",
    "empty_stream", "cancel_after_begin", "cancel_after_first_response",
    "timeout_on_sleeping_server", "custom_metadata", "status_code_and_message",
    "special_status_message", "unimplemented_method", "unimplemented_service",
    "client_compressed_unary", "server_compressed_unary", "client_compressed_streaming",
    "server_compressed_streaming",
]
CASE_TIMEOUT = 60  # seconds per case, start to exit
START_TIMEOUT = 20  # seconds for a server to say where it listens
GO_TIMEOUT = 1800  # the Go script may apt-get install its toolchain first


def log(message):
    print(message, file=sys.stderr, flush=True)


class Server:
    """A server process on port 0 that prints `... listening on 127.0.0.1:PORT`."""

    def __init__(self, name, argv):
        self.name = name
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
        lines = queue.Queue()
        self.output = []

        def pump():
            for line in self.proc.stdout:
                self.output.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.stop()
                raise RuntimeError(f"{name} did not start:\n{''.join(self.output)}")
            if "listening on 127.0.0.1:" in line:
                self.port = int(line.rsplit(":", 1)[1].split()[0])
                return

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def run_case(argv):
    try:
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True,
                              timeout=CASE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {CASE_TIMEOUT}s"
    return done.returncode == 0, (done.stdout + done.stderr).strip()


def tls_args(certs, transport, server):
    if transport == "plaintext":
        return []
    if server:
        return ["--use_tls", "--cert", f"{certs}/server-cert.pem",
                "--key", f"{certs}/server-key.pem", "--ca", f"{certs}/ca-cert.pem"]
    return ["--use_tls", "--ca", f"{certs}/ca-cert.pem", "--cert", f"{certs}/client-cert.pem",
            "--key", f"{certs}/client-key.pem", "--server_host_override", "localhost"]


def grpcio_rows(certs):
    rows = []
    py = sys.executable
    for transport in ("plaintext", "mtls"):
        ours = Server("interop_server",
                      [OUR_SERVER, "--port", "0"] + tls_args(certs, transport, True))
        try:
            theirs = Server("grpcio_server.py",
                            [py, os.path.join(HERE, "grpcio_server.py"), "--port", "0"]
                            + tls_args(certs, transport, True))
        except Exception:
            ours.stop()
            raise
        try:
            for case in CASES:
                for direction, client, port in (
                    ("grpcio->satellite", [py, os.path.join(HERE, "grpcio_client.py")],
                     ours.port),
                    ("satellite->grpcio", [OUR_CLIENT], theirs.port),
                ):
                    argv = client + ["--server_host", "127.0.0.1", "--server_port", str(port),
                                     "--test_case", case] + tls_args(certs, transport, False)
                    ok, output = run_case(argv)
                    if not ok:
                        log(f"--- {case} | {direction} | {transport} failed:\n{output}")
                    rows.append((case, direction, transport, "PASS" if ok else "FAIL"))
        finally:
            ours.stop()
            theirs.stop()
    return rows


def go_rows():
    if not os.path.exists(GO_MATRIX):
        return []
    env = dict(os.environ, SATELLITE_BIN=SATELLITE)
    try:
        done = subprocess.run(["bash", GO_MATRIX], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              text=True, timeout=GO_TIMEOUT)
    except subprocess.TimeoutExpired:
        return [("tests/peers/go/matrix.sh", "-", "-", "FAIL")]
    rows = []
    for line in done.stdout.splitlines():
        fields = line.split("\t")
        if len(fields) == 4 and fields[3] in ("PASS", "FAIL"):
            rows.append(tuple(fields))
    if done.returncode != 0 and not any(r[3] == "FAIL" for r in rows):
        # A setup error (or a failure with no row of its own) must still fail the matrix.
        rows.append(("tests/peers/go/matrix.sh", "-", "-", "FAIL"))
        log(f"tests/peers/go/matrix.sh exited {done.returncode}")
    return rows


def main():
    for path in (SATELLITE, OUR_SERVER, OUR_CLIENT):
        if not os.access(path, os.X_OK):
            sys.exit(f"error: {path} is missing; run cargo build --release --bins --examples")
    if not os.path.exists(os.path.join(HERE, "gen", "test_pb2_grpc.py")):
        subprocess.run(["bash", os.path.join(HERE, "gen_stubs.sh")], check=True, timeout=120,
                       env=dict(os.environ, PYTHON=sys.executable), stdout=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="interop-certs-") as certs:
        subprocess.run([SATELLITE, "certs", "--out", certs], check=True, timeout=60,
                       stdout=subprocess.DEVNULL)
        rows = grpcio_rows(certs)
    rows += go_rows()

    header = ("case", "direction", "transport", "result")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]

    def line(r):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"

    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    passed = sum(r[3] == "PASS" for r in rows)
    failed = len(rows) - passed
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

"""Keep nginx's upstream list in step with the replicas' health (open-source nginx has no
active gRPC health checks): poll each replica's plaintext health port with the stock grpcio
health client, mark a replica that is NOT_SERVING or unreachable "down", and reload nginx
when the list changes.

Usage: python health_watch.py PREFIX HOST:PORT=HEALTHPORT [...]
"""

import os
import subprocess
import sys
import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

HERE = os.path.dirname(os.path.abspath(__file__))


def render(prefix, listen, certs):
    """Writes PREFIX/nginx.conf from the template."""
    with open(os.path.join(HERE, "nginx.conf.template")) as f:
        text = f.read()
    # Workers must read the 0600 keys: as root, run them as root.
    user_line = "user root;" if os.geteuid() == 0 else ""
    # Plain replacement: the template is full of nginx's own braces.
    conf = text
    for key, value in (("prefix", prefix), ("listen", listen), ("certs", certs),
                       ("user_line", user_line)):
        conf = conf.replace("{" + key + "}", value)
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(prefix, d), exist_ok=True)
    path = os.path.join(prefix, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return path


def write_upstreams(prefix, replicas, healthy):
    """Writes PREFIX/upstreams.conf; replicas not in `healthy` are marked down."""
    lines = []
    for addr in replicas:
        down = "" if addr in healthy else " down"
        lines.append(f"server {addr} max_fails=1 fail_timeout=2s{down};\n")
    if not healthy:
        # nginx refuses an upstream block whose servers are all down; keep one to fail on.
        lines[0] = lines[0].replace(" down", "")
    with open(os.path.join(prefix, "upstreams.conf"), "w") as f:
        f.writelines(lines)


def is_serving(health_addr, timeout=0.5):
    """True when the replica's health port answers SERVING for the server as a whole."""
    try:
        with grpc.insecure_channel(health_addr) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
            return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


class Watcher(threading.Thread):
    """Polls the health ports and reloads nginx on a change."""

    def __init__(self, prefix, conf, replicas, interval=0.3):
        super().__init__(daemon=True)
        self.prefix, self.conf, self.replicas, self.interval = prefix, conf, replicas, interval
        self.healthy = set(replicas)
        self.reloads = 0
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            healthy = {a for a, h in self.replicas.items() if is_serving(h)}
            if healthy != self.healthy:
                self.healthy = healthy
                write_upstreams(self.prefix, self.replicas, healthy)
                subprocess.run(["nginx", "-p", self.prefix, "-c", self.conf, "-s", "reload"],
                               check=False, capture_output=True)
                self.reloads += 1
            self.stopping.wait(self.interval)

    def stop(self):
        self.stopping.set()
        self.join(timeout=5)


def main(argv):
    prefix = argv[1]
    replicas = dict(arg.split("=", 1) for arg in argv[2:])
    conf = os.path.join(prefix, "nginx.conf")
    write_upstreams(prefix, replicas, set(replicas))
    watcher = Watcher(prefix, conf, replicas)
    watcher.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        watcher.stop()


if __name__ == "__main__":
    main(sys.argv)

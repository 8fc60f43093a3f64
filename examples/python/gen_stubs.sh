#!/usr/bin/env bash
# Generates satellite_pb2.py and satellite_pb2_grpc.py next to this script from proto/.
# They are build products of the pinned grpcio-tools (see requirements.txt), so they are
# .gitignored rather than committed: regenerate after changing the proto or the pins.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
proto_dir="$(cd "$here/../../proto" && pwd)"
python="${PYTHON:-python}"

"$python" -m grpc_tools.protoc \
    --proto_path="$proto_dir" \
    --python_out="$here" \
    --grpc_python_out="$here" \
    "$proto_dir/satellite.proto"

echo "generated $here/satellite_pb2.py and $here/satellite_pb2_grpc.py"

#!/usr/bin/env bash
# Generates the grpc.testing Python stubs (empty_pb2, messages_pb2, test_pb2, test_pb2_grpc)
# into tests/interop/gen/ (gitignored) from proto/grpc/testing/.
#
# The protos import each other as "grpc/testing/...", which would make a Python package named
# `grpc` that shadows grpcio itself; so they are copied flat with the imports rewritten. The
# proto package stays grpc.testing, so method paths are unchanged.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$(cd "$here/../../proto/grpc/testing" && pwd)"
python="${PYTHON:-python}"
out="$here/gen"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

for f in empty messages test; do
    sed 's|import "grpc/testing/\([a-z]*\.proto\)";|import "\1";|' "$src/$f.proto" >"$tmp/$f.proto"
done
mkdir -p "$out"
"$python" -m grpc_tools.protoc \
    --proto_path="$tmp" \
    --python_out="$out" \
    --grpc_python_out="$out" \
    "$tmp/empty.proto" "$tmp/messages.proto" "$tmp/test.proto"
echo "generated the grpc.testing stubs in $out"

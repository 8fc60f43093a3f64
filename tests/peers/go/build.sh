#!/usr/bin/env bash
# Builds the grpc-go Satellite peers from Debian's packages only, in GOPATH mode (no module
# proxy, no `go mod download`): protoc + protoc-gen-go + protoc-gen-go-grpc write the stubs into
# the gitignored build dir, then `go build` makes build/bin/{server,client}.
#
# Needs: golang-go golang-google-grpc-dev golang-google-protobuf-dev protoc-gen-go
#        protoc-gen-go-grpc protobuf-compiler golang-github-golang-protobuf-1-5-dev (matrix.sh installs them when missing).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
build="${SATELLITE_GO_BUILD:-$here/build}"
gopath="$build/gopath"
pbdir="$gopath/src/satellite/pb"

for tool in go protoc protoc-gen-go protoc-gen-go-grpc; do
    command -v "$tool" >/dev/null || { echo "build.sh: $tool not found" >&2; exit 2; }
done
[ -d /usr/share/gocode/src/google.golang.org/grpc ] \
    || { echo "build.sh: Debian's grpc-go (golang-google-grpc-dev) is not installed" >&2; exit 2; }
# grpc-go's codec goes through github.com/golang/protobuf: the 1.3 package (which apt may pick
# for golang-google-grpc-dev) panics on protoc-gen-go 1.28's messages; 1.5 wraps APIv2.
if [ -e /usr/share/gocode/src/github.com/golang/protobuf/proto/table_unmarshal.go ]; then
    echo "build.sh: install golang-github-golang-protobuf-1-5-dev (1-3 is installed)" >&2
    exit 2
fi

mkdir -p "$pbdir" "$build/bin" "$build/cache"
rm -f "$pbdir"/*.pb.go
# The proto has no go_package: map it to the GOPATH import path "satellite/pb".
protoc -I "$repo/proto" \
    --go_out="$pbdir" --go_opt=paths=source_relative --go_opt=Msatellite.proto=satellite/pb \
    --go-grpc_out="$pbdir" --go-grpc_opt=paths=source_relative \
    --go-grpc_opt=Msatellite.proto=satellite/pb \
    "$repo/proto/satellite.proto"

export GO111MODULE=off GOFLAGS= GOPROXY=off
export GOPATH="$gopath:/usr/share/gocode"
export GOCACHE="$build/cache"
cd "$here"
go build -o "$build/bin/server" ./server
go build -o "$build/bin/client" ./client
echo "build.sh: built $build/bin/server and $build/bin/client" >&2

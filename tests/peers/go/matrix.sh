#!/usr/bin/env bash
# Interop matrix between our `satellite` CLI and grpc-go peers built from Debian's packages,
# over plaintext and mutual TLS, on free loopback ports.
#
#   satellite->grpc-go: `satellite get` / `satellite area` against the Go server
#   grpc-go->satellite: the Go client against `satellite serve`
#
# stdout carries only the result lines, one per check, then the totals:
#   CASE<TAB>DIRECTION<TAB>TRANSPORT<TAB>PASS|FAIL
#   N passed, M failed
# Everything else goes to stderr. Exit 0 when all pass, 1 on any FAIL, 2 on a setup error.
# Environment: SATELLITE_BIN (default target/release/satellite), KEEP_TMP=1 keeps the logs.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
cd "$repo"
sat="${SATELLITE_BIN:-$repo/target/release/satellite}"
map="$repo/src/satellite/world.txt"
gobin="$here/build/bin"

say() { echo "matrix.sh: $*" >&2; }
die() { say "error: $*"; exit 2; }

# ----- packages (Debian's only; no Go module proxy) -----
packages=(golang-go golang-google-grpc-dev golang-google-protobuf-dev
    golang-github-golang-protobuf-1-5-dev protoc-gen-go protoc-gen-go-grpc protobuf-compiler)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    [ "$(id -u)" = 0 ] || die "need root to apt-get install ${missing[*]}"
    timeout 300 apt-get update >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y --no-install-recommends \
        "${missing[@]}" >&2 || die "apt-get install failed"
fi

# ----- builds -----
if [ ! -x "$sat" ]; then
    say "building $sat"
    timeout 1800 cargo build --release >&2 || die "cargo build --release failed"
fi
[ -x "$sat" ] || die "$sat is missing"
timeout 600 bash "$here/build.sh" >&2 || die "tests/peers/go/build.sh failed"

# ----- scratch, certificates, cleanup -----
tmp="$(mktemp -d "${TMPDIR:-/tmp}/satellite-go-matrix.XXXXXX")"
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "${KEEP_TMP:-0}" = 1 ]; then say "logs kept in $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

certs="$tmp/certs"
timeout 30 "$sat" certs --out "$certs" >&2 || die "satellite certs failed"

started=$(date +%s)
passed=0
failed=0

# ----- servers -----
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits (at most 10 s) until the process listens on the port; fails if it exits first.
wait_ready() {
    local pid=$1 port=$2
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 1
        port_in_use "$port" && return 0
        sleep 0.1
    done
    return 1
}

# start_server NAME CMD... (the literal word PORT in CMD becomes the port): sets $port, $spid.
start_server() {
    local name=$1 attempt p args a
    shift
    for attempt in 1 2 3 4 5; do
        p=$((20000 + RANDOM % 40000))
        port_in_use "$p" && continue
        args=()
        for a in "$@"; do args+=("${a//PORT/$p}"); done
        "${args[@]}" >"$tmp/$name.log" 2>&1 &
        spid=$!
        pids+=("$spid")
        if wait_ready "$spid" "$p"; then
            port=$p
            say "$name listening on 127.0.0.1:$p (pid $spid)"
            return 0
        fi
        kill "$spid" 2>/dev/null || true
        wait "$spid" 2>/dev/null || true
        say "$name did not start on port $p (attempt $attempt):"
        tail -n 5 "$tmp/$name.log" >&2 || true
    done
    return 1
}

stop_server() {
    local pid=$1
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# ----- checks -----
# record CASE DIRECTION TRANSPORT STATUS LOG
record() {
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4"
    if [ "$4" = PASS ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        say "FAIL $1 $2 $3; its log:"
        sed 's/^/    /' "$5" >&2 || true
    fi
}

# check CASE DIRECTION TRANSPORT FUNCTION: FUNCTION's output goes to the check's log.
check() {
    local log="$tmp/check-$1-$2-$3.log"
    log="${log//>/}"
    local rc
    # Not under `if`/`&&`: there bash would ignore set -e inside the check's subshell.
    set +e
    (set -euo pipefail; "$4") >"$log" 2>&1
    rc=$?
    set -e
    if [ "$rc" = 0 ]; then
        record "$1" "$2" "$3" PASS "$log"
    else
        echo "(exit $rc)" >>"$log"
        record "$1" "$2" "$3" FAIL "$log"
    fi
}

# The map's byte at Cartesian (x, y): y = 0 is the file's last line.
cell() { local line; line=$(sed -n "$((32 - $2))p" "$map"); printf '%s' "${line:$1:1}"; }

cells=("0 0" "10 20" "40 16" "62 24" "79 31" "0 31" "79 0" "20 28")

ms_now() { date +%s%3N; }

# Runs a command that must fail with exit 1 and print `error: CODE: ...`.
expect_status() {
    local code=$1 rc=0
    shift
    echo "\$ $*"
    timeout 30 "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
    cat "$tmp/out" "$tmp/err"
    [ "$rc" = 1 ] || { echo "exit $rc, expected 1"; return 1; }
    grep -q "^error: $code: " "$tmp/err" || { echo "no 'error: $code:' line"; return 1; }
}

# --- satellite -> grpc-go ---
sat_unary() {
    local xy x y want got
    for xy in "${cells[@]}"; do
        read -r x y <<<"$xy"
        want="($x, $y): \"$(cell "$x" "$y")\""
        got=$(timeout 30 "$sat" get "$x" "$y" "${sat_client[@]}")
        echo "get $x $y -> $got"
        [ "$got" = "$want" ] || { echo "expected $want"; return 1; }
    done
}
sat_whole_map() {
    timeout 60 "$sat" area 0 0 79 31 --render plain "${sat_client[@]}" >"$tmp/area.out"
    cat "$tmp/area.out"
    head -n 32 "$tmp/area.out" | cmp - "$map"
    [ "$(wc -l <"$tmp/area.out")" = 33 ]
    sed -n 33p "$tmp/area.out" | grep -q '^cells: 2560, bytes: 2560,'
}
sat_out_of_range() {
    expect_status OUT_OF_RANGE "$sat" get 80 0 "${sat_client[@]}"
    expect_status OUT_OF_RANGE "$sat" get 0 -1 "${sat_client[@]}"
    expect_status OUT_OF_RANGE "$sat" area 0 0 79 32 --render none "${sat_client[@]}"
}
sat_invalid_argument() {
    expect_status INVALID_ARGUMENT "$sat" area 10 10 5 5 --render none "${sat_client[@]}"
}
sat_deadline() {
    local t0 t1
    t0=$(ms_now)
    expect_status DEADLINE_EXCEEDED "$sat" area 0 0 79 31 --render none --deadline 300 \
        "${sat_client[@]}"
    t1=$(ms_now)
    echo "took $((t1 - t0)) ms"
    [ $((t1 - t0)) -lt 5000 ] || { echo "the deadline was not kept"; return 1; }
}

# --- grpc-go -> satellite ---
go_unary() {
    local xy x y
    for xy in "${cells[@]}"; do
        read -r x y <<<"$xy"
        timeout 30 "$gobin/client" "${go_client[@]}" -op get -x "$x" -y "$y" -map "$map"
    done
}
go_stream() {
    timeout 60 "$gobin/client" "${go_client[@]}" -op area -area 0,0,79,31 -map "$map" \
        >"$tmp/stream.out"
    cat "$tmp/stream.out"
    cmp "$tmp/stream.out" "$map"
    timeout 30 "$gobin/client" "${go_client[@]}" -op area -area 3,4,20,9 -map "$map"
    timeout 30 "$gobin/client" "${go_client[@]}" -op area -area 79,31,79,31 -map "$map"
}
go_out_of_range() {
    timeout 30 "$gobin/client" "${go_client[@]}" -op out-of-range -x 80 -y 0
    timeout 30 "$gobin/client" "${go_client[@]}" -op out-of-range -x 0 -y -1
}
go_invalid_argument() {
    timeout 30 "$gobin/client" "${go_client[@]}" -op invalid-argument -area 10,10,5,5
}
go_deadline() {
    local t0 t1
    t0=$(ms_now)
    timeout 30 "$gobin/client" "${go_client[@]}" -op deadline -area 0,0,79,31 -deadline 300
    t1=$(ms_now)
    echo "took $((t1 - t0)) ms"
    [ $((t1 - t0)) -lt 5000 ] || { echo "the deadline was not kept"; return 1; }
}

# run_group DIRECTION TRANSPORT SERVER-NAME "CASE:function ..." SERVER-CMD...
run_group() {
    local dir=$1 transport=$2 name=$3 cases=$4 c
    shift 4
    if ! start_server "$name" "$@"; then
        for c in $cases; do
            echo "server $name did not start" >"$tmp/nostart.log"
            record "${c%%:*}" "$dir" "$transport" FAIL "$tmp/nostart.log"
        done
        return 0
    fi
    local addr="127.0.0.1:$port" pid=$spid
    if [ "$transport" = plaintext ]; then
        sat_client=(--addr "$addr" --plaintext)
        go_client=(-addr "$addr" -plaintext)
    else
        sat_client=(--addr "$addr" --certs "$certs" --server-name localhost)
        go_client=(-addr "$addr" -ca "$certs/ca-cert.pem" -cert "$certs/client-cert.pem"
            -key "$certs/client-key.pem" -server-name localhost)
    fi
    for c in $cases; do
        check "${c%%:*}" "$dir" "$transport" "${c#*:}"
    done
    stop_server "$pid"
}

for transport in plaintext mtls; do
    if [ "$transport" = plaintext ]; then
        go_tls=(-plaintext)
        sat_tls=(--plaintext)
    else
        go_tls=(-ca "$certs/ca-cert.pem" -cert "$certs/server-cert.pem" -key "$certs/server-key.pem")
        sat_tls=(--certs "$certs")
    fi

    d='satellite->grpc-go'
    run_group "$d" "$transport" "go-server-$transport" \
        "unary:sat_unary whole_map:sat_whole_map out_of_range:sat_out_of_range invalid_argument:sat_invalid_argument" \
        "$gobin/server" -addr 127.0.0.1:PORT -map "$map" "${go_tls[@]}"
    run_group "$d" "$transport" "go-server-slow-$transport" "deadline_exceeded:sat_deadline" \
        "$gobin/server" -addr 127.0.0.1:PORT -map "$map" -send-delay 20 "${go_tls[@]}"

    d='grpc-go->satellite'
    run_group "$d" "$transport" "satellite-serve-$transport" \
        "unary:go_unary stream:go_stream out_of_range:go_out_of_range invalid_argument:go_invalid_argument" \
        "$sat" serve --addr 127.0.0.1:PORT "${sat_tls[@]}"
    run_group "$d" "$transport" "satellite-serve-slow-$transport" "deadline_exceeded:go_deadline" \
        "$sat" serve --addr 127.0.0.1:PORT --send-delay 20 "${sat_tls[@]}"
done

say "checks took $(($(date +%s) - started)) s"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]

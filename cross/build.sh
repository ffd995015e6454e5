#!/usr/bin/env bash
# Builds release binaries of hallgate for the ARM boxes (aarch64 and armv7 Linux) on a Debian
# x86_64 machine from nothing but the package registries, proves which glibc they need, and
# smoke-tests them under qemu user emulation: --version, `validate` on the shipped example and
# on a broken config (exit 78), and a live run — the ARM simulator and the ARM gateway against a
# real mosquitto, until the broker holds a retained `state` with every room and live traffic.
#
# The recipe (see cross/README.md): rustup cannot add targets here, so Debian's rustc-web builds
# the target's std from rust-web-src (`-Z build-std`); cargo-zigbuild links against glibc 2.28
# so the binaries run on Debian 10+ boards, or Debian's cross gcc links against bookworm's glibc
# with `--linker debian`. The cross builds have their own target dir (target/cross): the host
# toolchain (rustup's) and Debian's would otherwise rebuild each other's artifacts.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bash cross/build.sh [TARGET...] [OPTIONS]

Builds release binaries of hallgate for ARM Linux and smoke-tests them under qemu.

Targets (default: all):
  aarch64        aarch64-unknown-linux-gnu (Raspberry Pi 3/4/5 64-bit, most ARM boxes)
  armv7          armv7-unknown-linux-gnueabihf (32-bit ARMv7 with hard float)
  all            both

Options:
  --linker zig      link with cargo-zigbuild against an older glibc (default; see --glibc)
  --linker debian   link with Debian's cross gcc against bookworm's glibc (needs 2.34+ on the box)
  --glibc X.Y       the glibc floor: zig links against it; both fail if the binary needs more
                    (default: 2.28 with zig, 2.36 with debian)
  --no-smoke        build only
  --smoke-only      smoke-test the binaries already built, do not build
  --no-install      never install missing packages; fail and name them instead
  --target-dir DIR  cargo's target dir for the cross builds (default: target/cross)
  -h, --help        this text

Binaries land in DIR/<triple>/release/hallgate and are copied to DIR/dist/hallgate-<target>.
Run as root or with sudo available when packages are missing. For a low priority next to other
work: nice -n 15 bash cross/build.sh
EOF
}

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

targets=()
linker=zig
glibc=""
do_build=1
do_smoke=1
do_install=1
target_dir="$repo/target/cross"

die() {
    printf 'cross/build.sh: %s\n' "$*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case "$1" in
        aarch64 | armv7) targets+=("$1") ;;
        all) targets+=(aarch64 armv7) ;;
        --linker) [ $# -ge 2 ] || die "--linker needs zig or debian"; linker=$2; shift ;;
        --linker=*) linker=${1#--linker=} ;;
        --glibc) [ $# -ge 2 ] || die "--glibc needs a version such as 2.28"; glibc=$2; shift ;;
        --glibc=*) glibc=${1#--glibc=} ;;
        --no-smoke) do_smoke=0 ;;
        --smoke-only) do_build=0 ;;
        --no-install) do_install=0 ;;
        --target-dir) [ $# -ge 2 ] || die "--target-dir needs a directory"; target_dir=$2; shift ;;
        --target-dir=*) target_dir=${1#--target-dir=} ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
done
case "$linker" in
    zig) glibc=${glibc:-2.28} ;;
    debian) glibc=${glibc:-2.36} ;;
    *) die "--linker is zig or debian, not $linker" ;;
esac
[[ "$glibc" =~ ^2\.[0-9]+$ ]] || die "--glibc is a version such as 2.28, not $glibc"
[ "$do_build" -eq 1 ] || [ "$do_smoke" -eq 1 ] || die "--smoke-only and --no-smoke leave nothing to do"
[ ${#targets[@]} -gt 0 ] || targets=(aarch64 armv7)
# `all aarch64` builds aarch64 once.
mapfile -t targets < <(printf '%s\n' "${targets[@]}" | awk '!seen[$0]++')
mkdir -p "$target_dir"
target_dir=$(cd "$target_dir" && pwd)

started=$SECONDS
elapsed() {
    local s=$((SECONDS - started))
    printf '%d:%02d' $((s / 60)) $((s % 60))
}
step() {
    printf '\n[%s] ==== %s ====\n' "$(elapsed)" "$*"
}
note() {
    printf '[%s] %s\n' "$(elapsed)" "$*"
}

# What differs per target: Rust triple, GNU triple (cross gcc, binutils, qemu's sysroot),
# qemu, Debian packages, and what readelf calls the machine.
triple_of() { case "$1" in aarch64) echo aarch64-unknown-linux-gnu ;; armv7) echo armv7-unknown-linux-gnueabihf ;; esac; }
gnu_of() { case "$1" in aarch64) echo aarch64-linux-gnu ;; armv7) echo arm-linux-gnueabihf ;; esac; }
qemu_of() { case "$1" in aarch64) echo qemu-aarch64-static ;; armv7) echo qemu-arm-static ;; esac; }
packages_of() { case "$1" in aarch64) echo gcc-aarch64-linux-gnu libc6-dev-arm64-cross ;; armv7) echo gcc-arm-linux-gnueabihf libc6-dev-armhf-cross ;; esac; }
machine_of() { case "$1" in aarch64) echo AArch64 ;; armv7) echo ARM ;; esac; }

# --- what is needed -----------------------------------------------------------------------

installed() {
    dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo "$@"
    fi
}

wanted=()
# The cross gcc comes along even for zig: its binutils read the binaries' symbol versions and
# its libc is the sysroot qemu runs them with.
for t in "${targets[@]}"; do
    # shellcheck disable=SC2207
    wanted+=($(packages_of "$t"))
done
if [ "$do_build" -eq 1 ]; then
    wanted+=(rustc-web cargo-web rust-web-src)
fi
if [ "$do_smoke" -eq 1 ]; then
    wanted+=(qemu-user-static mosquitto mosquitto-clients openssl)
    command -v python3 >/dev/null 2>&1 || wanted+=(python3)
fi
missing=()
for p in "${wanted[@]}"; do
    installed "$p" || missing+=("$p")
done

step "checking what is installed (targets: ${targets[*]}; linker: $linker, glibc floor $glibc)"
if [ ${#missing[@]} -gt 0 ]; then
    [ "$do_install" -eq 1 ] || die "missing Debian packages (--no-install): ${missing[*]}"
    step "installing ${missing[*]}"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [ "$do_build" -eq 1 ] && [ "$linker" = zig ] && ! command -v cargo-zigbuild >/dev/null 2>&1; then
    [ "$do_install" -eq 1 ] || die "cargo-zigbuild is missing (--no-install): pip install ziglang cargo-zigbuild"
    step "installing cargo-zigbuild and zig (PyPI: cargo-zigbuild, ziglang)"
    if ! python3 -m pip --version >/dev/null 2>&1; then
        as_root apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-pip
    fi
    # Debian's python3 refuses plain pip installs (PEP 668); a pyenv one takes them.
    python3 -m pip install --quiet 'ziglang==0.17.*' 'cargo-zigbuild==0.24.*' ||
        python3 -m pip install --quiet --break-system-packages 'ziglang==0.17.*' 'cargo-zigbuild==0.24.*'
    hash -r
    command -v cargo-zigbuild >/dev/null 2>&1 || die "cargo-zigbuild installed but not on PATH"
fi
if [ "$do_build" -eq 1 ]; then
    note "$(/usr/bin/rustc --version); $(/usr/bin/cargo --version)"
    [ "$linker" = zig ] && note "cargo-zigbuild $(cargo-zigbuild --version | awk '{print $2}'), zig $(python3 -m ziglang version)"
fi

# --- build --------------------------------------------------------------------------------

declare -A build_secs=() bytes=() glibc_needed=() smoke_result=()

binary_of() { echo "$target_dir/$(triple_of "$1")/release/hallgate"; }

build() {
    local t=$1 triple
    triple=$(triple_of "$t")
    # Debian's toolchain, called by path: rustup's cargo and rustc come first on PATH and
    # cannot build std for these targets. RUSTC_BOOTSTRAP unlocks -Z build-std on a stable
    # compiler; panic_abort is built too because std needs it even with panic = "unwind".
    local env=(env RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO=/usr/bin/cargo CARGO_TARGET_DIR="$target_dir")
    local args=(--release --locked --bin hallgate -Z "build-std=std,panic_abort")
    local t0=$SECONDS
    if [ "$linker" = zig ]; then
        step "$t: cargo zigbuild --target $triple.$glibc (release, std from rust-web-src)"
        "${env[@]}" /usr/bin/cargo zigbuild --target "$triple.$glibc" "${args[@]}"
    else
        step "$t: cargo build --target $triple, Debian's $(gnu_of "$t")-gcc (release, std from rust-web-src)"
        "${env[@]}" /usr/bin/cargo build --config "$repo/cross/cargo-config.toml" --target "$triple" "${args[@]}"
    fi
    build_secs[$t]=$((SECONDS - t0))
    note "$t built in ${build_secs[$t]} s"
}

# --- checks -------------------------------------------------------------------------------

# The binary is for the right machine and needs no glibc symbol newer than the floor.
check_binary() {
    local t=$1 bin readelf highest
    bin=$(binary_of "$t")
    [ -f "$bin" ] || die "$t: no binary at $bin (build it first: bash cross/build.sh $t)"
    readelf="$(gnu_of "$t")-readelf"
    step "$t: machine and glibc floor of $bin"
    local machine
    machine=$("$readelf" -h "$bin" | awk -F: '/Machine:/ {gsub(/^ +/, "", $2); print $2}')
    note "machine: $machine"
    [ "$machine" = "$(machine_of "$t")" ] || die "$t: the binary is for $machine, not $(machine_of "$t")"
    "$readelf" -l "$bin" | grep -o 'interpreter: [^]]*' | sed 's/^/  /'
    "$readelf" -d "$bin" | awk '/NEEDED/ {print "  needs " $NF}'
    local versions
    versions=$("$readelf" -W --version-info "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/^GLIBC_//' | sort -u -V)
    [ -n "$versions" ] || die "$t: no GLIBC_ symbol versions found in $bin"
    note "glibc symbol versions needed: $(echo "$versions" | tr '\n' ' ')"
    highest=$(echo "$versions" | tail -n 1)
    glibc_needed[$t]=$highest
    "$readelf" -W --dyn-syms "$bin" | grep -o "[A-Za-z0-9_]*@GLIBC_$highest" | sort -u | head -n 5 |
        sed "s/^/  newest: /"
    if [ "$(printf '%s\n%s\n' "$highest" "$glibc" | sort -V | tail -n 1)" != "$glibc" ]; then
        die "$t: the binary needs glibc $highest, above the floor $glibc"
    fi
    note "ok: needs glibc $highest, within the floor $glibc"
    # dist/ only ever holds a binary that passed this check.
    mkdir -p "$target_dir/dist"
    cp "$bin" "$target_dir/dist/hallgate-$t"
    bytes[$t]=$(stat -c %s "$bin")
    note "size: ${bytes[$t]} bytes ($(awk -v b="${bytes[$t]:-0}" 'BEGIN {printf "%.1f", b / 1048576}') MiB)"
}

# Processes the smoke test started, stopped on any exit; its scratch dir, kept on failure.
smoke_pids=()
smoke_dir=""
cleanup() {
    local status=$?
    for pid in "${smoke_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    if [ -n "$smoke_dir" ]; then
        if [ "$status" -eq 0 ]; then
            rm -rf "$smoke_dir"
        else
            printf 'cross/build.sh: the failed smoke test left its files in %s\n' "$smoke_dir" >&2
        fi
    fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

show_logs() {
    local f
    for f in "$smoke_dir"/*.log; do
        printf -- '--- last lines of %s\n' "$f" >&2
        tail -n 25 "$f" >&2 || true
    done
}

smoke_fail() {
    printf 'cross/build.sh: SMOKE TEST FAILED (%s): %s\n' "$current" "$*" >&2
    show_logs
    exit 1
}

# Waits up to $2 s for process $1 to exit and returns its exit status (124 if it did not).
wait_exit() {
    local pid=$1 limit=$2 t0=$SECONDS
    while kill -0 "$pid" 2>/dev/null; do
        [ $((SECONDS - t0)) -lt "$limit" ] || return 124
        sleep 0.2
    done
    local status=0
    wait "$pid" || status=$?
    return "$status"
}

smoke() {
    local t=$1 bin qemu sysroot
    current=$t
    bin=$(binary_of "$t")
    qemu=$(qemu_of "$t")
    sysroot="/usr/$(gnu_of "$t")"
    # NO_COLOR: plain logs, to read when a step fails.
    local arm=(env NO_COLOR=1 "$qemu" -L "$sysroot" "$bin")
    smoke_dir=$(mktemp -d "${TMPDIR:-/tmp}/hallgate-cross-$t.XXXXXX")
    smoke_pids=()

    step "$t smoke (a): hallgate --version under $qemu"
    local version want
    version=$("${arm[@]}" --version) || smoke_fail "--version failed"
    want="hallgate $(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
    note "$version"
    [ "$version" = "$want" ] || smoke_fail "--version said \"$version\", not \"$want\""

    step "$t smoke (b): validate the shipped example (exit 0) and a broken copy (exit 78)"
    local out status=0
    out=$("${arm[@]}" validate --config firmware-config/examples/hall.toml 2>&1) || status=$?
    note "$out"
    [ "$status" -eq 0 ] || smoke_fail "validate of the shipped example exited $status"
    grep -q ': ok' <<<"$out" || smoke_fail "validate of the shipped example did not say ok"
    grep -q '^closing_time = "21:00"$' firmware-config/examples/hall.toml ||
        smoke_fail "the example has no closing_time = \"21:00\" line to break"
    sed 's/^closing_time = "21:00"$/closing_time = "25:61"/' firmware-config/examples/hall.toml >"$smoke_dir/broken.toml"
    status=0
    out=$("${arm[@]}" validate --config "$smoke_dir/broken.toml" 2>&1) || status=$?
    note "$out"
    [ "$status" -eq 78 ] || smoke_fail "validate of a broken config exited $status, not 78"
    grep -q 'hall.closing_time' <<<"$out" || smoke_fail "validate did not name hall.closing_time"

    step "$t smoke (c): ARM simulator + ARM gateway + mosquitto over TLS, until a retained state has live traffic"
    local broker_port p1 p2 status_port hall mosquitto closing
    broker_port=$(free_port)
    p1=$(free_port)
    p2=$(free_port)
    status_port=$(free_port)
    hall="cross-smoke-$t-$$"
    mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
    # Twelve hours from now in Asia/Shanghai (UTC+8, no DST), so no daily reset falls inside.
    closing=$(date -u -d '+20 hours' +%H:%M)
    # The uplink goes over TLS, as it does to the city's broker: rustls and ring's handshake,
    # certificate checks and ciphers run on the ARM build. A throwaway CA and a server
    # certificate for 127.0.0.1, made with openssl.
    cat >"$smoke_dir/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = hallgate cross smoke test CA
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
authorityKeyIdentifier = keyid
subjectKeyIdentifier = hash
EOF
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    (
        cd "$smoke_dir"
        openssl req -x509 -new -config openssl.cnf -extensions ca_ext "${ec[@]}" \
            -keyout ca.key -out ca.pem -days 2 &&
            openssl req -new -config openssl.cnf -subj /CN=127.0.0.1 "${ec[@]}" \
                -keyout server.key -out server.csr &&
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                -extfile openssl.cnf -extensions server_ext -days 2 -out server.pem
    ) >"$smoke_dir/openssl.log" 2>&1 || smoke_fail "openssl could not make the test certificates"
    # Run as root, mosquitto would switch to the mosquitto user, who cannot read the key in
    # this private dir; as another user the line has no effect.
    cat >"$smoke_dir/mosquitto.conf" <<EOF
listener $broker_port 127.0.0.1
cafile $smoke_dir/ca.pem
certfile $smoke_dir/server.pem
keyfile $smoke_dir/server.key
allow_anonymous true
persistence false
log_dest stderr
user root
EOF
    cat >"$smoke_dir/hall.toml" <<EOF
# Written by cross/build.sh for the qemu smoke test.
[hall]
id = "$hall"
district = "smoke"
time_zone = "Asia/Shanghai"
closing_time = "$closing"

[uplink]
broker = "mqtts://127.0.0.1:$broker_port"
ca_file = "ca.pem"
keep_alive_secs = 10
state_interval_ms = 500
max_reconnect_backoff_ms = 1000

[storage]
data_dir = "$smoke_dir/data"
commit_interval_ms = 200

[status]
listen = "127.0.0.1:$status_port"

[[rooms]]
id = "lobby"
capacity = 100

[[rooms]]
id = "reading"
capacity = 30

[[doors]]
id = "entrance"
from = "outside"
to = "lobby"

[[doors]]
id = "reading-door"
from = "lobby"
to = "reading"

[[counters]]
id = "pc-entrance"
door = "entrance"
profile = "generic-u32"
transport = "modbus_tcp"
address = "127.0.0.1:$p1"
unit_id = 1
poll_interval_ms = 250
timeout_ms = 1000

[[counters]]
id = "pc-reading"
door = "reading-door"
profile = "generic-u16"
transport = "modbus_tcp"
address = "127.0.0.1:$p2"
unit_id = 1
poll_interval_ms = 250
timeout_ms = 1000
EOF
    "$mosquitto" -c "$smoke_dir/mosquitto.conf" 2>"$smoke_dir/mosquitto.log" &
    local broker_pid=$!
    smoke_pids+=("$broker_pid")
    local t0=$SECONDS
    # Our own mosquitto says it runs and the port answers: not someone else's broker.
    until grep -q ' running' "$smoke_dir/mosquitto.log" && port_open "$broker_port"; do
        kill -0 "$broker_pid" 2>/dev/null || smoke_fail "mosquitto exited at start on port $broker_port"
        [ $((SECONDS - t0)) -lt 10 ] || smoke_fail "mosquitto did not listen on port $broker_port within 10 s"
        sleep 0.1
    done
    note "mosquitto listening with TLS on 127.0.0.1:$broker_port (test CA and certificate made with openssl)"

    "${arm[@]}" simulate --config "$smoke_dir/hall.toml" --seed 7 --arrivals-per-min 120 \
        --mean-dwell-secs 30 >"$smoke_dir/simulate.log" 2>&1 &
    local sim_pid=$!
    smoke_pids+=("$sim_pid")
    "${arm[@]}" run --config "$smoke_dir/hall.toml" >"$smoke_dir/gateway.log" 2>&1 &
    local gw_pid=$!
    smoke_pids+=("$gw_pid")
    note "started the ARM simulator (pid $sim_pid) and gateway (pid $gw_pid), counters on ports $p1 and $p2"

    local topic="hallgate/smoke/$hall/state" limit=120 verdict=""
    t0=$SECONDS
    while :; do
        kill -0 "$sim_pid" 2>/dev/null || smoke_fail "the ARM simulator exited"
        kill -0 "$gw_pid" 2>/dev/null || smoke_fail "the ARM gateway exited"
        # The state is retained: a subscriber that comes late still gets the newest one.
        # --insecure skips only mosquitto_sub's own host-name check (an IP here); it still
        # checks the chain. The gateway checked the name, or it would not have published.
        if mosquitto_sub -h 127.0.0.1 -p "$broker_port" --cafile "$smoke_dir/ca.pem" --insecure \
            -t "$topic" -C 1 -W 3 >"$smoke_dir/state.json" 2>/dev/null &&
            verdict=$(python3 - "$smoke_dir/state.json" "$hall" <<'EOF'
import json, sys
state = json.load(open(sys.argv[1]))
rooms = {r["id"]: r for r in state.get("rooms", [])}
devices = {d["id"]: d["online"] for d in state.get("devices", [])}
summary = "; ".join(
    f'{i} {r["occupancy"]}/{r["capacity"]} entries {r["entries_today"]}' for i, r in rooms.items()
)
summary += f'; visitors today {state["hall"]["visitors_today"]}; devices ' + ", ".join(
    f'{i} {"online" if on else "OFFLINE"}' for i, on in devices.items()
)
print(summary)
ok = (
    state.get("hall_id") == sys.argv[2]
    and set(rooms) == {"lobby", "reading"}
    and devices == {"pc-entrance": True, "pc-reading": True}
    and state["hall"]["visitors_today"] > 0
)
sys.exit(0 if ok else 1)
EOF
            ); then
            break
        fi
        [ $((SECONDS - t0)) -lt "$limit" ] ||
            smoke_fail "no retained state with both rooms, both counters online and visitors within ${limit} s (last: ${verdict:-none})"
        sleep 1
    done
    note "retained state after $((SECONDS - t0)) s: $verdict"

    # The status page (hyper) of the ARM gateway: /healthz, and `hallgate status` reading it.
    local health
    health=$(python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode().strip())' \
        "http://127.0.0.1:$status_port/healthz" 2>&1) || smoke_fail "GET /healthz failed: $health"
    [ "$health" = ok ] || smoke_fail "GET /healthz answered \"$health\", not ok"
    note "GET http://127.0.0.1:$status_port/healthz: $health"
    status=0
    out=$("${arm[@]}" status --config "$smoke_dir/hall.toml" 2>&1) || status=$?
    printf '%s\n' "$out" | sed 's/^/  | /'
    [ "$status" -eq 0 ] || smoke_fail "hallgate status exited $status"
    grep -q 'reading' <<<"$out" || smoke_fail "hallgate status did not show the reading room"

    # SIGTERM: the gateway shuts down cleanly (exit 0) within its 10 s deadline, with margin
    # for qemu; a panic or an ERROR logged on the way (data loss, action needed) fails.
    kill -TERM "$gw_pid"
    status=0
    wait_exit "$gw_pid" 30 || status=$?
    [ "$status" -eq 0 ] || smoke_fail "the gateway exited $status after SIGTERM (124: still running after 30 s)"
    kill -TERM "$sim_pid"
    wait_exit "$sim_pid" 30 || true
    kill -TERM "$broker_pid"
    wait_exit "$broker_pid" 10 || true
    if grep -E 'panicked|ERROR' "$smoke_dir/gateway.log" "$smoke_dir/simulate.log"; then
        smoke_fail "the ARM processes logged a panic or an ERROR"
    fi
    note "gateway stopped cleanly on SIGTERM; no panic or ERROR in the logs"
    smoke_pids=()
    rm -rf "$smoke_dir"
    smoke_dir=""
    smoke_result[$t]=passed
}

# --- run ----------------------------------------------------------------------------------

current=""
for t in "${targets[@]}"; do
    [ "$do_build" -eq 0 ] || build "$t"
    check_binary "$t"
    [ "$do_smoke" -eq 0 ] || smoke "$t"
done

step "summary (total $(elapsed))"
printf '%-8s %-52s %10s %8s %7s %8s %s\n' target binary bytes MiB glibc build smoke
for t in "${targets[@]}"; do
    printf '%-8s %-52s %10s %8s %7s %8s %s\n' "$t" "${target_dir#"$repo"/}/dist/hallgate-$t" "${bytes[$t]:-?}" \
        "$(awk -v b="${bytes[$t]:-0}" 'BEGIN {printf "%.1f", b / 1048576}')" "${glibc_needed[$t]:-?}+" \
        "${build_secs[$t]:-"-"}${build_secs[$t]:+" s"}" "${smoke_result[$t]:-skipped}"
done

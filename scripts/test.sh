#!/usr/bin/env bash
# The one test command, for a developer machine or a fresh Debian CI box: installs the test
# peers that are missing (mosquitto, socat, openssl), then checks formatting, lints and runs every test,
# including the black-box tests that start real mosquitto, simulator and gateway processes and
# join them over socat pty pairs for the RS-485 buses.
set -euo pipefail

cd "$(dirname "$0")/.."

step() {
    printf '\n==== %s ====\n' "$*"
}

# mosquitto lives in /usr/sbin on Debian, which is not on every user's PATH.
have_mosquitto() {
    command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]
}

# Root on a CI box, sudo on a developer machine.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo "$@"
    fi
}

# What is missing, installed with one apt-get run.
missing=()
if ! have_mosquitto; then
    missing+=(mosquitto mosquitto-clients)
fi
if ! command -v socat >/dev/null 2>&1; then
    missing+=(socat)
fi
# The TLS tests (tests/tls.rs) make their CAs and certificates with the openssl CLI.
if ! command -v openssl >/dev/null 2>&1; then
    missing+=(openssl)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    step "installing ${missing[*]} (the black-box tests' broker and serial lines)"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

# pymodbus, the independent Modbus implementation the interoperability tests
# (tests/interop_pymodbus.rs) run the gateway against, for the python3 on the PATH (the one the
# tests start). Debian's python3 refuses plain pip installs (PEP 668); a pyenv one takes them.
if ! python3 -c 'import pymodbus, serial' >/dev/null 2>&1; then
    step "installing pymodbus (the interoperability tests' Modbus peer)"
    if ! python3 -m pip --version >/dev/null 2>&1; then
        as_root apt-get update
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-pip
    fi
    python3 -m pip install --quiet 'pymodbus[serial]==3.*' ||
        python3 -m pip install --quiet --break-system-packages 'pymodbus[serial]==3.*'
fi

step "cargo test --all-targets"
cargo test --all-targets

step "all checks passed"

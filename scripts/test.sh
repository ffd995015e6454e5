#!/usr/bin/env bash
# The one test command, for a developer machine or a fresh Debian CI box: installs the test
# peers that are missing (mosquitto), then checks formatting, lints and runs every test,
# including the black-box tests that start real mosquitto, simulator and gateway processes.
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

if ! have_mosquitto; then
    step "installing mosquitto (the black-box tests' broker)"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto mosquitto-clients
fi

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo test --all-targets"
cargo test --all-targets

step "all checks passed"

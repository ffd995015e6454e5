#!/usr/bin/env bash
# hallgate as a peer of the shared bench harness (../shared/bench/README.md, "Adapter
# interface"): `measure.sh --peer <this folder>` or `suite.sh <this folder> peers/node-red …`.
# The harness measures hallgate's process (CPU, RSS) as it does the peers'; since hallgate
# forwards aggregates, not events, judge what it counted with benches/peer/analyze.py RUN_DIR.
#
# HALLGATE_BIN picks the binary (default: this checkout's target/release/hallgate, built by
# benches/run.sh); hall_config.py lists the other knobs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${HALLGATE_BIN:-$here/../../target/release/hallgate}"
[ -x "$bin" ] || { echo "no hallgate binary at $bin: run cargo build --release, or set HALLGATE_BIN" >&2; exit 1; }
case "${1:-}" in
  version) echo "$("$bin" --version) ($(rustc --version 2>/dev/null || echo rustc unknown))" ;;
  start)
    python3 "$here/hall_config.py" > "$BENCH_RUN_DIR/hall.toml"
    "$bin" validate --config "$BENCH_RUN_DIR/hall.toml" > "$BENCH_RUN_DIR/validate.log" 2>&1 \
      || { cat "$BENCH_RUN_DIR/validate.log" >&2; exit 1; }
    # INFO, as on a hall box; the launch time marks the start-up figure (launch to first publish).
    date +%s.%N > "$BENCH_RUN_DIR/launched"
    RUST_LOG="${RUST_LOG:-info}" setsid "$bin" run --config "$BENCH_RUN_DIR/hall.toml" \
      > "$BENCH_RUN_DIR/stdout.log" 2> "$BENCH_RUN_DIR/gateway.log" < /dev/null &
    echo $! > "$BENCH_PIDFILE" ;;
  stop) ;;
  *) echo "usage: adapter.sh version|start|stop" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# The whole performance table (issue 8), one section after another, each printing its own
# markdown table; `docs/performance.md` holds a recorded run and what it means.
#
#   benches/run.sh [SECTION...]      default: engine e2e hall drain peers
#
#   engine  cargo bench --bench engine: events/s on one thread, engine alone and the live core
#   e2e     the shared harness (../shared/bench) with hallgate as its peer: N = 16, 64, 256
#           Modbus TCP counters at 1 Hz + face events at R = 10, 100, 1000/s with 20 KiB
#           snapshots; CPU, RSS, completeness against ground truth, latency to the centre,
#           start-up (benches/peer/analyze.py)
#   hall    benches/hall_load.sh: the budget hall (64 counters + 10 terminals at 1 event/s each,
#           real JPEG snapshots), vision off and on: RSS, CPU, disk writes, commits
#   drain   benches/store_forward.sh: a 24-hour backlog drained to a local broker, and disk
#           wear at the busy-hall load
#   peers   the same harness workloads for ThingsBoard IoT Gateway and Node-RED, in the same
#           run, so the ratios compare like with like
#
# Env: DURATION (harness window, s; 60), E2E_COUNTERS ("16 64 256"), E2E_RATES ("10 100 1000"),
#      PEER_WORKLOADS ("64:10 64:100 16:1000"), OUT (run folder; default target/bench/<date>).
# First run: `bash scripts/test.sh` installs mosquitto; the harness's peers install with
# ../shared/bench/{workload,peers/tb-gateway,peers/node-red}/install.sh (this script runs them
# when missing). A measurement, not a test: run it on a quiet machine; it takes about an hour.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bench_dir=$(cd ../shared/bench 2>/dev/null && pwd) || { echo "../shared/bench (the harness) is missing"; exit 1; }
sections=("$@")
[ ${#sections[@]} -eq 0 ] && sections=(engine e2e hall drain peers)
duration=${DURATION:-60}
out=${OUT:-$root/target/bench/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

cargo build --release --quiet
export HALLGATE_BIN=$root/target/release/hallgate

harness_ready() {
  [ -x "$bench_dir/.deps/work-venv/bin/python" ] || bash "$bench_dir/workload/install.sh" >&2
}

# measure NAME PEER_DIR COUNTERS RATE [extra measure.sh args]: one harness run into $out/NAME.
measure() {
  local name=$1 peer=$2 n=$3 r=$4
  shift 4
  log "harness run $name: $n counters, $r face events/s, ${duration} s"
  (cd "$bench_dir" && ./measure.sh --peer "$peer" --out "$out/$name" --devices "$n" \
    --face-rate "$r" --snapshot-bytes 20480 --duration "$duration" "$@") > "$out/$name.log" 2>&1 \
    || { log "$name failed: see $out/$name.log"; return 1; }
}

for section in "${sections[@]}"; do
  case "$section" in
    engine)
      echo "## Engine throughput"; echo
      cargo bench --quiet --bench engine 2>/dev/null | grep '^|'
      echo ;;
    e2e)
      harness_ready
      echo "## End to end: hallgate in the shared harness (vision off, 20 KiB snapshots, ${duration} s)"; echo
      echo "| counters | face events/s | CPU, % of one core | CPU s per 1000 msgs | peak RSS | faces counted / sent | face → centre p50 / p99 | counters consistent | change → centre p50 / p99 | start-up to first publish |"
      echo "|---|---|---|---|---|---|---|---|---|---|"
      for n in ${E2E_COUNTERS:-16 64 256}; do
        for r in ${E2E_RATES:-10 100 1000}; do
          # hallgate's figures never carry a counter's raw in/out, which the harness waits
          # for in its warm-up: end that wait after 15 s (hallgate polls within 1 s).
          measure "hallgate-$n-$r" "$root/benches/peer" "$n" "$r" --warmup-max 15 --drain-quiet 8 || continue
          python3 benches/peer/analyze.py "$out/hallgate-$n-$r" --json > /dev/null
          python3 - "$out/hallgate-$n-$r/hallgate.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); f, c, s, u = r["faces"], r["counters"], r["resources"], r["startup"] or {}
n, rate = r["run"].split("-")[1:3]
print(f"| {n} | {rate} | {s['sut_cpu_pct_one_core']} % | {s['sut_cpu_s_per_1000_msgs']} | {s['sut_peak_rss_mib']} MiB "
      f"| {f['counted']} / {f['sent']} | {f['latency_p50_s']} / {f['latency_p99_s']} s | {c['consistent']} / {c['counters']} "
      f"| {c['change_to_centre_p50_s']} / {c['change_to_centre_p99_s']} s | {u.get('to_first_publish_s')} s |")
PY
        done
      done
      echo ;;
    hall)
      echo "## The budget hall (real JPEG snapshots)"; echo
      bash benches/hall_load.sh 64 10 "${HALL_DURATION:-120}"
      echo ;;
    drain)
      echo "## Backlog and disk"; echo
      bash benches/store_forward.sh 64 "${DRAIN_DURATION:-300}" | grep '^|'
      echo ;;
    peers)
      harness_ready
      [ -x "$bench_dir/.deps/tb-venv/bin/python" ] || bash "$bench_dir/peers/tb-gateway/install.sh" >&2
      [ -d "$bench_dir/.deps/node-red" ] || bash "$bench_dir/peers/node-red/install.sh" >&2
      echo "## Side by side (same harness, same run, ${duration} s, 20 KiB snapshots)"; echo
      echo "| workload | peer | CPU, % of one core | CPU s per 1000 msgs | peak RSS | faces delivered / sent | face latency p50 / p99 |"
      echo "|---|---|---|---|---|---|---|"
      for w in ${PEER_WORKLOADS:-64:10 64:100 16:1000}; do
        n=${w%%:*} r=${w##*:}
        for peer in hallgate tb-gateway node-red; do
          dir=$bench_dir/peers/$peer extra=()
          [ "$peer" = hallgate ] && dir=$root/benches/peer extra=(--warmup-max 15)
          measure "peer-$peer-$n-$r" "$dir" "$n" "$r" "${extra[@]}" || continue
          if [ "$peer" = hallgate ]; then
            python3 benches/peer/analyze.py "$out/peer-$peer-$n-$r" --json > /dev/null
          fi
          python3 - "$out/peer-$peer-$n-$r" "$peer" "$n:$r" <<'PY'
import json, os, sys
rd, peer, w = sys.argv[1:4]
res = json.load(open(os.path.join(rd, "result.json")))
s = res["resources"]
if peer == "hallgate":
    f = json.load(open(os.path.join(rd, "hallgate.json")))["faces"]
    got, p50, p99 = f"{f['counted']} / {f['sent']} counted", f["latency_p50_s"], f["latency_p99_s"]
else:
    f = res["face"]; lat = f["latency_s"]
    got, p50, p99 = f"{f['sent'] - f['lost']} / {f['sent']}", lat["p50"], lat["p99"]
print(f"| {w} | {peer} | {s['sut_cpu_pct_one_core']} % | {s['sut_cpu_s_per_1000_msgs']} | {s['sut_peak_rss_mib']} MiB | {got} | {p50} / {p99} s |")
PY
        done
      done
      echo ;;
    *) echo "unknown section $section (engine e2e hall drain peers)"; exit 2 ;;
  esac
done
log "run folders in $out"

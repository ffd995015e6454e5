#!/usr/bin/env bash
# The issue-8 budget hall: `hallgate run` with N simulated Modbus TCP counters polled at 1 Hz
# (`hallgate simulate`) and 10 face terminals (`hallgate simulate-terminals`, HTTPv2 and
# Uniubi, each passage with a real 23 KB JPEG snapshot) at RATE passages/s in all, on the
# embedded terminal broker, uplink to a real mosquitto; vision off, then on. Per run: peak RSS
# (VmHWM), CPU % of one core and CPU s per 1000 input messages (polls + passages) over the
# measured window, passages sent vs counted, bytes written to disk and WAL commits, scaled
# to a day.
#
#   benches/hall_load.sh [COUNTERS=64] [RATE_PER_SEC=10] [DURATION_SECS=120]
#
# Env: HALL_STORAGE="event_commit_interval_ms = 60000" adds a line to [storage];
#      HALL_VISION_OFF_ONLY=1 skips the vision-on run.
#
# A measurement, not a test: run it on a quiet machine and read the figures as such.
set -euo pipefail
cd "$(dirname "$0")/.."

counters=${1:-64}
rate=${2:-10}
duration=${3:-120}
. benches/common.sh
need mosquitto_sub "apt-get install mosquitto-clients"
snapshot=tests/fixtures/images/astronaut_640x480.jpg
read -r -a ports < <(free_ports "$((counters + 2))")
broker_port=${ports[0]}
terminal_port=${ports[1]}
base="hallgate/bench/bench-hall"
start_mosquitto "$broker_port"

hall() {  # $1 = vision on|off
  python3 benches/bench_hall.py "$counters" "${ports[@]:2}" ${HALL_STORAGE:+--extra-storage "$HALL_STORAGE"}
  printf '[terminal_broker]\nlisten = "127.0.0.1:%s"\n' "$terminal_port"
  printf '[status]\nenabled = false\n'
  bench_terminals "$1"
}

state() {  # the retained state, as one JSON line
  mosquitto_sub -p "$broker_port" -t "$base/state" -C 1 -W 10
}

run() {  # $1 = vision on|off
  hall "$1" > "$work/hall-$1.toml"
  "$bin" simulate --config "$work/hall-$1.toml" --seed 1 --arrivals-per-min 120 --mean-dwell-secs 60 \
    --duration-secs "$((duration + 60))" 2>"$work/sim-$1.log" &
  local sim=$!
  sleep 1
  RUST_LOG=warn "$bin" run --config "$work/hall-$1.toml" --uplink "mqtt://127.0.0.1:$broker_port" \
    --data-dir "$work/data-$1" 2>"$work/gw-$1.log" &
  local gw=$!
  # Start-up writes (the database, its reserve file) and the model's load are not the steady
  # rate: the window starts 10 s in.
  sleep 10
  local tck; tck=$(getconf CLK_TCK)
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$gw/stat")
  local wb0; wb0=$(awk '/^write_bytes/ {print $2}' "/proc/$gw/io")
  local c0; c0=$(state | python3 -c 'import json,sys; print(json.load(sys.stdin)["outbox"]["commits"])')
  local t0; t0=$(date +%s.%N)
  "$bin" simulate-terminals --config "$work/hall-$1.toml" --seed 1 --passages "$((rate * duration))" \
    --rate-per-sec "$rate" --resend-share 0 --bad-share 0 --snapshot "$snapshot" \
    --truth "$work/truth-$1.jsonl" 2>"$work/simt-$1.log"
  local t1; t1=$(date +%s.%N)
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$gw/stat")
  local wb; wb=$(( $(awk '/^write_bytes/ {print $2}' "/proc/$gw/io") - wb0 ))
  local c1; c1=$(state | python3 -c 'import json,sys; print(json.load(sys.stdin)["outbox"]["commits"])')
  local sent; sent=$(tail -1 "$work/truth-$1.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["totals"]["hall"]["passages"])')
  # Late is not lost: let the reorder window and the detector's queue empty (up to 60 s).
  local counted=0
  for _ in $(seq 60); do
    counted=$(state | python3 -c 'import json,sys; print(json.load(sys.stdin)["hall"].get("passages_today",{}).get("passages",0))')
    [ "$counted" -ge "$sent" ] && break
    sleep 1
  done
  local hwm; hwm=$(awk '/VmHWM/ {print $2}' "/proc/$gw/status")
  kill -TERM "$gw"; wait "$gw" || true
  kill -TERM "$sim"; wait "$sim" 2>/dev/null || true
  # What each commit rewrites: the stored (compressed) engine state.
  local stored; stored=$(python3 -c "
import sqlite3; c = sqlite3.connect('$work/data-$1/hallgate.db')
print(c.execute('SELECT length(state) FROM engine_state').fetchone()[0])")
  python3 -c "
cpu = ($u1 + $s1 - $u0 - $s0) / $tck
wall = $t1 - $t0
msgs = $counters * wall + $sent
print(f'| vision $1 | {wall:.0f} s | $sent | $counted | {100 * cpu / wall:.2f} % | {1000 * cpu / msgs:.3f} | $((hwm / 1024)) MiB | {$wb * 86400 / wall / 1e6:.1f} MB | {($c1 - $c0) * 3600 / wall:.0f} | {$stored / 1024:.1f} KiB |')"
  if grep -qE 'WARN|ERROR' "$work/gw-$1.log"; then
    grep -hE 'WARN|ERROR' "$work/gw-$1.log" | sed -E 's/^[^ ]+ +//' | cut -c1-140 | sort | uniq -c | sort -rn | head -3 >&2
  fi
}

echo "$counters counters at 1 Hz + 10 terminals, $rate passages/s in all, each with a $(stat -c %s $snapshot)-byte JPEG; $duration s window"
echo
echo "| run | window | passages sent | counted | CPU, % of one core | CPU s per 1000 msgs | peak RSS | disk writes per day | commits per hour | stored engine state |"
echo "|---|---|---|---|---|---|---|---|---|---|"
run off
[ -n "${HALL_VISION_OFF_ONLY:-}" ] || run on

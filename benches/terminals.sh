#!/usr/bin/env bash
# Terminal ingest figures: `hallgate run` with its embedded terminal broker and 10 simulated
# terminals (`hallgate simulate-terminals`, HTTPv2 and Uniubi, each passage carrying a ~23 KB
# JPEG snapshot), vision off and on. Prints, per run: passages sent and counted (no loss means
# equal), the gateway's CPU seconds per 1000 events and % of one core, and its peak RSS.
#
#   benches/terminals.sh [PASSAGES=3000] [RATE_PER_SEC=100]
#
# A measurement, not a test: run it on a quiet machine and read the figures as such.
set -euo pipefail
cd "$(dirname "$0")/.."

passages=${1:-3000}
rate=${2:-100}
. benches/common.sh
need mosquitto_sub "apt-get install mosquitto-clients"
snapshot=tests/fixtures/images/astronaut_640x480.jpg
read -r broker_port terminal_port < <(free_ports 2)
start_mosquitto "$broker_port"

hall() {  # $1 = vision on|off
  cat <<TOML
[hall]
id = "bench-terminals"
district = "bench"
closing_time = "03:30"
[uplink]
broker = "mqtt://127.0.0.1:$broker_port"
[terminal_broker]
listen = "127.0.0.1:$terminal_port"
[[rooms]]
id = "lobby"
capacity = 500
TOML
  bench_terminals "$1"
}

run() {  # $1 = vision on|off
  hall "$1" > "$work/hall-$1.toml"
  RUST_LOG=warn "$bin" run --config "$work/hall-$1.toml" --data-dir "$work/data-$1" 2>"$work/gw-$1.log" &
  local gw=$!
  sleep 1.5
  local tck; tck=$(getconf CLK_TCK)
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$gw/stat")
  local t0; t0=$(date +%s.%N)
  "$bin" simulate-terminals --config "$work/hall-$1.toml" --seed 1 --passages "$passages" \
    --rate-per-sec "$rate" --resend-share 0 --bad-share 0 --snapshot "$snapshot" \
    --truth "$work/truth-$1.jsonl" 2>"$work/sim-$1.log"
  local sent; sent=$(tail -1 "$work/truth-$1.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["totals"]["hall"]["passages"])')
  # Wait (up to 60 s) until the gateway has counted them all: with vision on, snapshots still
  # queued for the detector are not lost, only late.
  for _ in $(seq 60); do
    n=$(mosquitto_sub -p "$broker_port" -t "hallgate/bench/bench-terminals/state" -C 1 \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["hall"].get("passages_today",{}).get("passages",0))')
    [ "$n" -ge "$sent" ] && break
    sleep 1
  done
  local t1; t1=$(date +%s.%N)
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$gw/stat")
  local hwm; hwm=$(awk '/VmHWM/ {print $2}' "/proc/$gw/status")
  local counted; counted=$(mosquitto_sub -p "$broker_port" -t "hallgate/bench/bench-terminals/state" -C 1 \
    | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["hall"].get("passages_today",{}).get("passages",0), s["hall"].get("passages_today",{}).get("people",0))')
  kill -TERM "$gw"; wait "$gw" || true
  read -r c_pass c_people <<<"$counted"
  python3 -c "
cpu = ($u1 + $s1 - $u0 - $s0) / $tck
wall = $t1 - $t0
print(f'| vision $1 | $sent | $c_pass | $c_people | {cpu:.2f} | {1000 * cpu / $sent:.2f} | {100 * cpu / wall:.1f} % | $((hwm / 1024)) MiB |')"
}

echo "$passages passages at $rate/s over 10 terminals, each with a $(stat -c %s $snapshot)-byte JPEG snapshot"
echo
echo "| run | passages sent | counted | people | gateway CPU s | CPU s per 1000 events | % of one core | peak RSS |"
echo "|---|---|---|---|---|---|---|---|"
run off
run on

#!/usr/bin/env bash
# Store-and-forward figures for a busy hall (N counters, default 64, so N rooms):
#
#  1. drain: a 24-hour backlog (1440 minute bins, written by `hallgate seed-backlog`) replayed
#     to a local mosquitto with the pacing lifted; time from the gateway's start to the last
#     bin at a subscriber, in messages per second;
#  2. wear: `hallgate run` against N simulated counters at 1 Hz for DURATION seconds with the
#     broker up: bytes written to disk (/proc/PID/io write_bytes) scaled to a day, commits per
#     hour (from the retained state), and the fsync/fdatasync calls themselves (strace).
#
#   benches/store_forward.sh [COUNTERS=64] [DURATION_SECS=300]
#
# A measurement, not a test: run it on a quiet machine and read the figures as such.
set -euo pipefail
cd "$(dirname "$0")/.."

counters=${1:-64}
duration=${2:-300}
. benches/common.sh
need mosquitto_sub "apt-get install mosquitto-clients"
read -r -a ports < <(free_ports "$((counters + 1))")
broker_port=${ports[0]}
base="hallgate/bench/bench-hall"
start_mosquitto "$broker_port"

# 1. Drain a day's backlog as fast as the gateway can (pacing lifted, a wide window).
python3 benches/bench_hall.py "$counters" "${ports[@]:1}" \
  --extra-uplink "max_replay_msgs_per_sec = 100000" --extra-uplink "max_inflight = 256" > "$work/drain.toml"
seeded=$("$bin" seed-backlog --config "$work/drain.toml" --data-dir "$work/drain" --minutes 1440 --end "$(date -u -d '-1 hour' +%Y-%m-%dT%H:%M:%SZ)")
echo "$seeded"
db_bytes=$(stat -c %s "$work/drain/hallgate.db")
mosquitto_sub -p "$broker_port" -q 1 -t "$base/agg/#" -C 1440 > /dev/null &
sub=$!
sleep 0.5
t0=$(date +%s.%N)
RUST_LOG=warn "$bin" run --config "$work/drain.toml" --uplink "mqtt://127.0.0.1:$broker_port" \
  --data-dir "$work/drain" 2>"$work/drain.log" &
gw=$!
wait "$sub"
t1=$(date +%s.%N)
kill -TERM "$gw"; wait "$gw" || true
drain_secs=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
drain_rate=$(python3 -c "print(f'{1440 / ($t1 - $t0):.0f}')")

# 2. Steady state at the busy hall's load, broker up.
python3 benches/bench_hall.py "$counters" "${ports[@]:1}" > "$work/hall.toml"
"$bin" simulate --config "$work/hall.toml" --seed 1 --arrivals-per-min 120 --mean-dwell-secs 60 \
  --duration-secs "$((duration + 30))" --warmup-secs 2 2>"$work/sim.log" &
sleep 1
# Under strace when it is there, to count the fsyncs themselves; --seccomp-bpf stops the
# gateway only at those two calls, so the rest runs at full speed.
tracer=()
if command -v strace >/dev/null; then
  tracer=(strace -f --seccomp-bpf -qq -c -e trace=fsync,fdatasync -o "$work/fsyncs.txt")
fi
RUST_LOG=warn "${tracer[@]}" "$bin" run --config "$work/hall.toml" --uplink "mqtt://127.0.0.1:$broker_port" \
  --data-dir "$work/data" 2>"$work/gw.log" &
traced=$!
sleep 1
gw=$traced
[ ${#tracer[@]} -gt 0 ] && gw=$(pgrep -P "$traced" -x hallgate)
echo "hallgate run (pid $gw): $counters counters at 1 Hz for $duration s …"
sleep 4
wb0=$(awk '/^write_bytes/ {print $2}' "/proc/$gw/io")
commits0=$(mosquitto_sub -p "$broker_port" -t "$base/state" -C 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["outbox"]["commits"])')
sleep "$duration"
wb=$(( $(awk '/^write_bytes/ {print $2}' "/proc/$gw/io") - wb0 ))
commits=$(( $(mosquitto_sub -p "$broker_port" -t "$base/state" -C 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["outbox"]["commits"])') - commits0 ))
kill -TERM "$gw"; wait "$traced" || true
# strace's count covers the whole run, start-up and shutdown included: an upper bound.
fsyncs=n/a
if [ -s "$work/fsyncs.txt" ]; then
  fsyncs=$(awk '$NF == "total" {print $(NF-1)}' "$work/fsyncs.txt")
  fsyncs="$fsyncs over the run ($(python3 -c "print(f'{$fsyncs * 3600 / ($duration + 5):.0f}')") per hour)"
fi

echo
echo "| figure | value |"
echo "|---|---|"
echo "| hall | $counters counters and rooms, 1 Hz |"
echo "| 24 h backlog | 1440 minute bins, database $((db_bytes / 1024)) KiB |"
echo "| drain time (start to last bin at a subscriber) | $drain_secs s |"
echo "| drain rate | $drain_rate messages/s |"
echo "| steady state, measured over | $duration s |"
echo "| bytes written to disk | $wb ($(python3 -c "print(f'{$wb * 86400 / $duration / 1e6:.1f}')") MB/day) |"
echo "| commits | $commits ($(python3 -c "print(f'{$commits * 3600 / $duration:.0f}')") per hour) |"
echo "| fsync + fdatasync calls (strace) | $fsyncs |"
echo "| gateway WARN/ERROR lines | steady $(grep -cE 'WARN|ERROR' "$work/gw.log" || true), drain $(grep -cE 'WARN|ERROR' "$work/drain.log" || true) |"
grep -hE 'WARN|ERROR' "$work/drain.log" "$work/gw.log" | sed -E 's/^[^ ]+ +//' | cut -c1-160 | sort | uniq -c | sort -rn | head -5 || true

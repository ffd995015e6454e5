#!/usr/bin/env bash
# Foundation load figures: `hallgate run` against N simulated Modbus TCP counters polled at 1 Hz,
# with a real mosquitto as the central broker, for DURATION seconds. Prints peak and final RSS,
# CPU seconds (user+system), CPU % of one core, bytes written to disk and the release binary size.
#
#   benches/foundation.sh [COUNTERS=64] [DURATION_SECS=300]
#
# A measurement, not a test: run it on a quiet machine and read the figures as such.
set -euo pipefail
cd "$(dirname "$0")/.."

counters=${1:-64}
duration=${2:-300}
. benches/common.sh
read -r -a ports < <(free_ports "$((counters + 1))")
broker_port=${ports[0]}

python3 benches/bench_hall.py "$counters" "${ports[@]:1}" > "$work/hall.toml"

start_mosquitto "$broker_port"
"$bin" simulate --config "$work/hall.toml" --seed 1 --arrivals-per-min 120 --mean-dwell-secs 60 \
  --duration-secs "$((duration + 30))" --warmup-secs 2 2>"$work/sim.log" &
sleep 1
RUST_LOG=warn "$bin" run --config "$work/hall.toml" --uplink "mqtt://127.0.0.1:$broker_port" \
  --data-dir "$work/data" 2>"$work/gw.log" &
gw=$!
# Start-up writes (the database, its 512 KiB reserve file) are not the steady rate: measure
# disk writes from 5 s in.
sleep 5
wb0=$(awk '/^write_bytes/ {print $2}' "/proc/$gw/io")
echo "hallgate run (pid $gw): $counters counters at 1 Hz for $duration s …"
for ((s = 0; s < duration; s += 60)); do sleep $(( duration - s < 60 ? duration - s : 60 )); echo "  $((s + 60 < duration ? s + 60 : duration)) s"; done

tck=$(getconf CLK_TCK)
read -r utime stime < <(awk '{print $14, $15}' "/proc/$gw/stat")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$gw/status")
rss=$(awk '/VmRSS/ {print $2}' "/proc/$gw/status")
wb=$(( $(awk '/^write_bytes/ {print $2}' "/proc/$gw/io") - wb0 ))
cpu=$(python3 -c "print(f'{($utime + $stime) / $tck:.2f}')")
pct=$(python3 -c "print(f'{100 * ($utime + $stime) / $tck / $duration:.2f}')")
size=$(stat -c %s "$bin")
kill -TERM "$gw"; wait "$gw" || true

echo
echo "| figure | value |"
echo "|---|---|"
echo "| counters polled at 1 Hz | $counters |"
echo "| duration | $duration s |"
echo "| peak RSS (VmHWM) | $((hwm / 1024)) MiB ($hwm KiB) |"
echo "| RSS at end | $((rss / 1024)) MiB ($rss KiB) |"
echo "| CPU (user+sys) | $cpu s |"
echo "| CPU, % of one core | $pct % |"
echo "| bytes written to disk | $wb ($(python3 -c "print(f'{$wb * 86400 / $duration / 1e6:.0f}')") MB/day at this rate) |"
echo "| release binary size | $size bytes ($((size / 1024 / 1024)) MiB) |"
echo "| gateway WARN lines | $(grep -c WARN "$work/gw.log" || true) |"
if grep -q WARN "$work/gw.log"; then
  echo; echo "most frequent warnings:"
  grep WARN "$work/gw.log" | sed -E 's/^.*WARN[^a-z]*//; s/counter[^ ]*=[^ ]*//g' | cut -c1-120 | sort | uniq -c | sort -rn | head -5
fi

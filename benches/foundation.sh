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
command -v mosquitto >/dev/null || { echo "mosquitto is missing: run scripts/test.sh once (it installs it)"; exit 1; }

cargo build --release --quiet
bin=target/release/hallgate
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

# Free loopback ports, chosen by the kernel.
read -r -a ports < <(python3 - "$((counters + 1))" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)
broker_port=${ports[0]}

python3 benches/bench_hall.py "$counters" "${ports[@]:1}" > "$work/hall.toml"

printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n' "$broker_port" > "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" &
sleep 0.5
"$bin" simulate --config "$work/hall.toml" --seed 1 --arrivals-per-min 120 --mean-dwell-secs 60 \
  --duration-secs "$((duration + 30))" --warmup-secs 2 2>"$work/sim.log" &
sleep 1
RUST_LOG=warn "$bin" run --config "$work/hall.toml" --uplink "mqtt://127.0.0.1:$broker_port" \
  --data-dir "$work/data" 2>"$work/gw.log" &
gw=$!
echo "hallgate run (pid $gw): $counters counters at 1 Hz for $duration s …"
for ((s = 0; s < duration; s += 60)); do sleep $(( duration - s < 60 ? duration - s : 60 )); echo "  $((s + 60 < duration ? s + 60 : duration)) s"; done

tck=$(getconf CLK_TCK)
read -r utime stime < <(awk '{print $14, $15}' "/proc/$gw/stat")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$gw/status")
rss=$(awk '/VmRSS/ {print $2}' "/proc/$gw/status")
wb=$(awk '/^write_bytes/ {print $2}' "/proc/$gw/io")
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

# Shared by the bench scripts (sourced, not run): checks, the release build, a work directory
# cleaned up on exit, free loopback ports, and a throwaway mosquitto.

need() {  # need COMMAND HINT
  command -v "$1" >/dev/null || { echo "$1 is missing: $2"; exit 1; }
}

need mosquitto "run scripts/test.sh once (it installs it)"
cargo build --release --quiet
bin=target/release/hallgate
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

# free_ports N: N free loopback ports, chosen by the kernel, on one line.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# start_mosquitto PORT: a broker without persistence or logs, in the background.
start_mosquitto() {
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\nmax_queued_messages 100000\n' "$1" > "$work/mosquitto.conf"
  mosquitto -c "$work/mosquitto.conf" &
  sleep 0.5
}

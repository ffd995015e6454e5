# Shared by the bench scripts (sourced, not run): checks, the release build, a work directory
# cleaned up on exit, free loopback ports, a throwaway mosquitto, and the bench terminals.

need() {  # need COMMAND HINT
  command -v "$1" >/dev/null || { echo "$1 is missing: $2"; exit 1; }
}

need mosquitto "run scripts/test.sh once (it installs it)"
cargo build --release --quiet
# HALLGATE_BIN runs another build (an A/B comparison) in place of this tree's release.
bin=${HALLGATE_BIN:-target/release/hallgate}
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

# bench_terminals on|off: the [vision] section when on, and 10 terminals in the lobby (HTTPv2
# and Uniubi alternately) with a login each on the embedded broker.
bench_terminals() {
  if [ "$1" = on ]; then printf '[vision]\nmodel = "%s/models/centerface.onnx"\nqueue = 64\n' "$PWD"; fi
  for i in $(seq 0 9); do
    profile=$([ $((i % 2)) = 0 ] && echo httpv2-record || echo uniubi-uface)
    # validate refuses logins shorter than 12 characters and files others can read.
    (umask 077 && echo "bench-terminal-password-$i" > "$work/t$i.pass")
    printf '[[terminals]]\nid = "BENCH-T%02d"\nprofile = "%s"\nroom = "lobby"\nusername = "t%d"\npassword_file = "%s"\n' \
      "$i" "$profile" "$i" "$work/t$i.pass"
  done
}

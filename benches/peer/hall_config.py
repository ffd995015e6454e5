"""Writes hallgate's config for one run of the shared bench harness to stdout, from the
harness's BENCH_* environment (../shared/bench/README.md, "Adapter interface").

The harness's counters are independent rooms: counter-NNN counts the one door between the
street and room-NNN, so its occupancy is in - out. The face terminals stand in a reception room
whose service visits are their passages. Knobs of our own (not the harness's):

    HALLGATE_FACE_DEVICES  terminals face-00.. to configure (the harness's --face-devices, 8)
    HALLGATE_VISION        a face model (.onnx): count faces in the snapshots
    HALLGATE_STATUS_PORT   the status page's loopback port (18839); "off" turns it off
"""
import os
from pathlib import Path

env = os.environ
run_dir = Path(env["BENCH_RUN_DIR"])
n = int(env["BENCH_DEVICES"])
mode = env.get("BENCH_MODBUS_MODE", "ports")
host = env.get("BENCH_MODBUS_HOST", "127.0.0.1")
base = int(env["BENCH_MODBUS_BASE_PORT"])
poll_ms = int(env.get("BENCH_POLL_MS", "1000"))
faces = int(env.get("HALLGATE_FACE_DEVICES", "8"))
here = Path(__file__).resolve().parent

print(f"""[hall]
id = "bench-hall"
district = "bench"
time_zone = "UTC"
opening_time = "00:00"
closing_time = "23:59"

[uplink]
broker = "mqtt://127.0.0.1:{env["BENCH_UPSTREAM_PORT"]}"

[storage]
data_dir = "{run_dir / "data"}"

[terminal_broker]
external = "mqtt://127.0.0.1:{env["BENCH_LOCAL_PORT"]}"
profile_dirs = ["{here / "terminals"}"]
""")
status = env.get("HALLGATE_STATUS_PORT", "18839")
if status == "off":
    print("[status]\nenabled = false\n")
else:
    print(f'[status]\nlisten = "127.0.0.1:{status}"\n')
if env.get("HALLGATE_VISION"):
    print(f'[vision]\nmodel = "{Path(env["HALLGATE_VISION"]).resolve()}"\n')

print('[[rooms]]\nid = "reception"\ncapacity = 500\nservice_visits = "passages"\n')
for i in range(n):
    print(f'[[rooms]]\nid = "room-{i:03d}"\ncapacity = 100\n')
    print(f'[[doors]]\nid = "door-{i:03d}"\nfrom = "outside"\nto = "room-{i:03d}"\n')
for i in range(n):
    port, unit = (base + i, 1) if mode == "ports" else (base, i + 1)
    print(
        f'[[counters]]\nid = "counter-{i:03d}"\ndoor = "door-{i:03d}"\nprofile = "generic-u32"\n'
        f'transport = "modbus_tcp"\naddress = "{host}:{port}"\nunit_id = {unit}\n'
        f"poll_interval_ms = {poll_ms}\n"
    )
for i in range(faces):
    print(f'[[terminals]]\nid = "face-{i:02d}"\nprofile = "bench-face"\nroom = "reception"\n')

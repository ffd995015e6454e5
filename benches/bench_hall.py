"""Writes the benchmark hall's config to stdout: a lobby and N-1 rooms off it, one Modbus TCP
counter per door on the given loopback ports, polled at 1 Hz.

    python3 benches/bench_hall.py N PORT... [--extra-uplink LINE] [--extra-storage LINE]
"""
import sys

args = sys.argv[1:]
extra = {"uplink": [], "storage": []}
while len(args) >= 2 and args[-2].startswith("--extra-"):
    extra[args[-2][len("--extra-"):]].append(args[-1])
    args = args[:-2]
n = int(args[0])
ports = args[1:]
profiles = ["generic-u16", "generic-u32", "generic-u32-input"]
print('[hall]\nid = "bench-hall"\ndistrict = "bench"\nclosing_time = "03:30"\n')
print('[uplink]\nbroker = "mqtt://127.0.0.1:1"')
print("\n".join(extra["uplink"]) + "\n")
print("[storage]\n" + "\n".join(extra["storage"]) + "\n")
print('[[rooms]]\nid = "lobby"\ncapacity = 500\n')
for i in range(1, n):
    print(f'[[rooms]]\nid = "room-{i}"\ncapacity = 30\n')
print('[[doors]]\nid = "entrance"\nfrom = "outside"\nto = "lobby"\n')
for i in range(1, n):
    print(f'[[doors]]\nid = "door-{i}"\nfrom = "lobby"\nto = "room-{i}"\n')
for i in range(n):
    door = "entrance" if i == 0 else f"door-{i}"
    print(
        f'[[counters]]\nid = "pc-{i}"\ndoor = "{door}"\nprofile = "{profiles[i % 3]}"\n'
        f'transport = "modbus_tcp"\naddress = "127.0.0.1:{ports[i]}"\npoll_interval_ms = 1000\n'
    )

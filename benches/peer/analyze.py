"""hallgate's completeness and latency in one run of the shared bench harness, judged against
the workload's ground truth (hallgate forwards figures, never raw events, so the harness's own
per-event_id matching sees nothing of it).

    python3 benches/peer/analyze.py RUN_DIR [--json]

Reads what the harness leaves in RUN_DIR: upstream.tsv (every message the central broker
delivered, with its arrival time), face_truth.csv, modbus_truth.csv, meta.json, result.json
(the harness's CPU and RSS figures, which hold for any peer) and sut/launched (the adapter's
launch time). Everything is taken from the retained `state` hallgate publishes (at most once a
second while something changes):

- faces: events sent vs passages counted at the terminals (`terminals[].stats.passages`), and
  re-sends and rejects as hallgate counted them. Latency: event k (in time order) is at the
  centre when the first state counting >= k passages arrives; counts, not ids, because
  identities never leave the box.
- counters: per counter, the room's entries/exits since hallgate's first poll. Its first reading
  is unknown, so it is solved for: the baseline b with entries(a) = in(t) - b for some t a
  few seconds before every state's arrival a (poll, reorder window and state interval). No
  consistent baseline means a count was lost, doubled or torn; the counter is then "wrong".
  Change -> centre: for every change of in/out in the measured window, the time until the
  first state showing it (or a later value).
- start-up: launch to the first message at the centre, and to the first state with every
  counter online.
- uplink: payload bytes at the centre per topic, and per day at the run's rate.
"""
import bisect
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

# The oldest a state's counts may be at arrival: a 1 s poll, the 2 s reorder window, the 1 s
# state interval, and slack for a loaded 2-core box.
MAX_LAG_S = 6.0


def pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(q / 100.0 * (len(xs) - 1)))))]


def r3(x):
    return None if x is None else round(x, 3)


def states(rd):
    """(arrival, state payload) for every hallgate state at the centre, in arrival order; the
    first arrival of any message; and payload bytes per topic kind (the uplink's volume)."""
    out, first_any, volume = [], None, defaultdict(int)
    with open(rd / "upstream.tsv", encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t", 2)
            if len(parts) < 3 or not parts[1].startswith("hallgate/"):
                continue
            t = float(parts[0])
            volume[parts[1].split("/", 3)[-1]] += len(parts[2].encode())
            first_any = t if first_any is None else min(first_any, t)
            if parts[1].endswith("/state"):
                try:
                    out.append((t, json.loads(parts[2])))
                except ValueError:
                    pass
    out.sort(key=lambda s: s[0])
    return out, first_any, dict(volume)


def faces(rd, sts):
    truth = sorted(int(r["ts_ms"]) / 1000.0 for r in csv.DictReader(open(rd / "face_truth.csv")))
    def counted(s):
        return sum(t["stats"].get("passages", 0) for t in s.get("terminals", []))
    last = sts[-1][1] if sts else {}
    n = counted(last) if sts else 0
    # Latency by count: the k-th event is delivered with the first state counting >= k.
    lat, k = [], 0
    for t, s in sts:
        c = min(counted(s), len(truth))
        while k < c:
            lat.append(t - truth[k])
            k += 1
    stats = [t["stats"] for t in last.get("terminals", [])]
    rejected = defaultdict(int)
    for s in stats:
        for why, c in s.get("rejected", {}).items():
            rejected[why] += c
    return {
        "sent": len(truth),
        "counted": n,
        "lost": len(truth) - n,
        "resends_dropped": sum(s.get("duplicates", 0) for s in stats),
        "rejected": dict(rejected),
        "unattributed": last.get("terminals_unattributed", {}).get("messages", 0),
        "hall_passages": last.get("hall", {}).get("passages_today", {}).get("passages", 0),
        "latency_p50_s": r3(pct(lat, 50)),
        "latency_p99_s": r3(pct(lat, 99)),
        "latency_max_s": r3(max(lat) if lat else None),
    }


def counters(rd, sts, window):
    truth = defaultdict(list)  # device -> [(t, in, out)], in time order
    for r in csv.DictReader(open(rd / "modbus_truth.csv")):
        truth[r["device"]].append((float(r["t_epoch"]), int(r["in"]), int(r["out"])))
    rooms = defaultdict(list)  # device -> [(arrival, entries, exits)]
    online_at = {}
    for t, s in sts:
        online = set()
        for d in s.get("devices", []):
            if d.get("online"):
                online_at.setdefault(d["id"], t)
                online.add(d["id"])
        # Before its first reading a counter's room shows 0 whatever the counter says.
        for room in s.get("rooms", []):
            dev = "counter-" + room["id"][5:]
            if room["id"].startswith("room-") and dev in online:
                rooms[dev].append((t, room["entries_today"], room["exits_today"]))
    right, wrong, changes, lat = [], [], 0, []
    for dev, rows in sorted(truth.items()):
        rows.sort()
        times = [r[0] for r in rows]
        seen = rooms.get(dev, [])
        # Candidate baselines from every state: the truth values in [a - MAX_LAG_S, a].
        cand = None
        for a, e, x in seen:
            lo = max(0, bisect.bisect_left(times, a - MAX_LAG_S) - 1)
            hi = bisect.bisect_right(times, a)
            here = {(rows[i][1] - e, rows[i][2] - x) for i in range(lo, hi)}
            cand = here if cand is None else cand & here
            if not cand:
                break
        if not seen or not cand:
            wrong.append(dev)
            continue
        right.append(dev)
        b_in, b_out = min(cand)
        # Change -> centre, for changes inside the measured window.
        for t, i, o in rows:
            if not window[0] <= t <= window[1]:
                continue
            changes += 1
            for a, e, x in seen:
                if a >= t and e + b_in >= i and x + b_out >= o:
                    lat.append(a - t)
                    break
    return {
        "counters": len(truth),
        "consistent": len(right),
        "inconsistent": wrong,
        "changes_in_window": changes,
        "changes_seen": len(lat),
        "change_to_centre_p50_s": r3(pct(lat, 50)),
        "change_to_centre_p99_s": r3(pct(lat, 99)),
        "all_online_at": max(online_at.values()) if len(online_at) >= len(truth) else None,
    }


def analyze(rd):
    rd = Path(rd)
    meta = json.load(open(rd / "meta.json"))
    window = (meta["window"]["t_start"], meta["window"]["t_end"])
    sts, first_any, volume = states(rd)
    out = {"run": rd.name, "states": len(sts), "faces": faces(rd, sts), "counters": counters(rd, sts, window)}
    # The uplink's volume while the window ran and the drain after it, scaled to a day.
    span = sts[-1][0] - sts[0][0] if len(sts) > 1 else None
    out["uplink"] = {
        "payload_bytes": volume,
        "mb_per_day": r3(sum(volume.values()) * 86400 / span / 1e6) if span else None,
        "states_per_s": r3((len(sts) - 1) / span) if span else None,
    }
    try:
        launched = float((rd / "sut" / "launched").read_text())
        online = out["counters"].pop("all_online_at")
        out["startup"] = {
            "to_first_publish_s": r3(first_any - launched) if first_any else None,
            "to_all_counters_online_s": r3(online - launched) if online else None,
        }
    except (OSError, ValueError):
        out["startup"] = None
    try:
        res = json.load(open(rd / "result.json"))["resources"]
        out["resources"] = {k: res.get(k) for k in (
            "sut_cpu_s_window", "sut_cpu_pct_one_core", "sut_cpu_s_per_1000_msgs", "sut_peak_rss_mib")}
    except (OSError, ValueError, KeyError):
        out["resources"] = None
    return out


def line(r):
    f, c, s = r["faces"], r["counters"], r.get("resources") or {}
    return (f"{r['run']}: faces {f['counted']}/{f['sent']} counted (lost {f['lost']}), "
            f"latency p50 {f['latency_p50_s']} s p99 {f['latency_p99_s']} s; counters "
            f"{c['consistent']}/{c['counters']} consistent, change->centre p50 "
            f"{c['change_to_centre_p50_s']} s p99 {c['change_to_centre_p99_s']} s "
            f"({c['changes_seen']}/{c['changes_in_window']}); cpu {s.get('sut_cpu_pct_one_core')} % "
            f"{s.get('sut_cpu_s_per_1000_msgs')} s/1k msgs, peak RSS {s.get('sut_peak_rss_mib')} MiB")


if __name__ == "__main__":
    result = analyze(sys.argv[1])
    (Path(sys.argv[1]) / "hallgate.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1) if "--json" in sys.argv else line(result))

//! Engine throughput on one thread: `cargo bench --bench engine`.
//!
//! Two figures for the performance table (`docs/performance.md`):
//!
//! 1. **engine**: `occupancy::Engine` alone, fed counter deltas (one crossing per read, the
//!    common case at 1 Hz) and terminal passages (a third of them members, hashed beforehand
//!    as the terminal task does), with a `tick` every virtual second as the core loop runs it.
//!    The 64-room bench hall of `benches/bench_hall.py`; virtual time, so minute bins, 15-minute
//!    bins and a day close all happen.
//! 2. **core**: a seeded busy day (`simulate::day`) replayed through the live core
//!    (`simulate::replay`): reorder window, `HallCore`, alert rules, bins, situation figures,
//!    and every message committed to a real SQLite outbox in a temporary directory. This is
//!    the per-event cost of everything but the network.
//!
//! Plain `fn main` (no harness): each figure is the median of `RUNS` runs.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use hallgate::config::{self, Overrides};
use hallgate::occupancy::{Engine, HallModel, Input, PassageFacts};
use hallgate::simulate::day::{DayOptions, generate};
use hallgate::simulate::replay::replay;
use hallgate::terminals::{MemberHasher, MemberRef};
use jiff::{SignedDuration, Timestamp};

const RUNS: usize = 5;
/// Engine operations per run: about 11 hours of a 64-counter hall at 1 Hz with a passage
/// every 4 s.
const OPS: u64 = 2_000_000;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn bench_hall(counters: usize) -> String {
    // The same hall as benches/bench_hall.py: a lobby off the street, rooms off the lobby.
    let mut text = String::from(
        "[hall]\nid = \"bench-hall\"\ndistrict = \"bench\"\nclosing_time = \"03:30\"\n\
         [uplink]\nbroker = \"mqtt://127.0.0.1:1\"\n\
         [[rooms]]\nid = \"lobby\"\ncapacity = 500\nservice_visits = \"passages\"\n\
         [[doors]]\nid = \"entrance\"\nfrom = \"outside\"\nto = \"lobby\"\n",
    );
    for i in 1..counters {
        text += &format!(
            "[[rooms]]\nid = \"room-{i}\"\ncapacity = 30\n\
             [[doors]]\nid = \"door-{i}\"\nfrom = \"lobby\"\nto = \"room-{i}\"\n"
        );
    }
    for i in 0..counters {
        let door = if i == 0 {
            "entrance".to_string()
        } else {
            format!("door-{i}")
        };
        text += &format!(
            "[[counters]]\nid = \"pc-{i}\"\ndoor = \"{door}\"\nprofile = \"generic-u32\"\n\
             transport = \"modbus_tcp\"\naddress = \"127.0.0.1:{}\"\n",
            20_000 + i
        );
    }
    text
}

/// One run of the engine alone: returns events per second.
fn engine_run(model: &HallModel, start: Timestamp) -> f64 {
    let doors = model.doors.len() as u64;
    let mut hasher = MemberHasher::new();
    let day = start.to_zoned(jiff::tz::TimeZone::UTC).date();
    let members: Vec<_> = (0..200)
        .map(|i| hasher.hash(day, &MemberRef::new(format!("m-{i}"))))
        .collect();
    let mut engine = Engine::new(model.clone(), None, start);
    let mut now = start;
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    let started = Instant::now();
    for op in 0..OPS {
        // xorshift: cheap, and the same sequence every run.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        if op.is_multiple_of(64) {
            now = now.checked_add(SignedDuration::from_secs(1)).unwrap_or(now);
            black_box(engine.apply(now, Input::Time));
        }
        if op % 16 == 15 {
            let facts = PassageFacts {
                room: 0,
                member: rng
                    .is_multiple_of(3)
                    .then(|| members[(rng >> 8) as usize % members.len()]),
                fever: rng.is_multiple_of(97),
                mask_off: rng.is_multiple_of(13),
                sensor_error: false,
                people: 1,
            };
            black_box(engine.apply(now, Input::Passage(&facts)));
        } else {
            // In and out alike, so rooms neither fill up nor sit at zero.
            let door = (rng >> 16) as usize % doors as usize;
            let (inward, outward) = if rng & 1 == 0 { (1, 0) } else { (0, 1) };
            let input = Input::Crossings {
                door,
                inward,
                outward,
            };
            black_box(engine.apply(now, input));
        }
    }
    black_box(engine.state());
    OPS as f64 / started.elapsed().as_secs_f64()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo test --all-targets` runs bench targets too, unoptimised: figures from that would
    // mean nothing. `cargo bench` passes `--bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("engine bench: skipped (run it with `cargo bench --bench engine`)");
        return Ok(());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = config::parse(&bench_hall(64), root, &Overrides::default())
        .map_err(|p| format!("bench hall: {p:?}"))?;
    let model = HallModel::from_config(&config);
    let start: Timestamp = "2026-12-01T04:00:00Z".parse()?;

    let engine: Vec<f64> = (0..RUNS).map(|_| engine_run(&model, start)).collect();

    // The live core on a seeded busy day: many more parties than a real hall sees, so the
    // replay is long enough to time.
    let example = config::load(
        &root.join("firmware-config/examples/hall.toml"),
        &Overrides::default(),
    )?;
    let mut options = DayOptions::for_config(1, "2026-12-01".parse()?, &example);
    options.parties = 6000;
    let day = generate(&example, &options)?;
    let events = day.events.len();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut core = Vec::new();
    let mut messages = 0;
    for _ in 0..RUNS {
        let dir = tempfile::tempdir()?;
        let started = Instant::now();
        let out = runtime.block_on(replay(example.clone(), day.events.clone(), dir.path()))?;
        core.push(events as f64 / started.elapsed().as_secs_f64());
        messages = out.len();
    }

    println!("| path | events | events/s on one thread (median of {RUNS}) |");
    println!("|---|---|---|");
    println!(
        "| engine: counter deltas + passages, 64 rooms | {OPS} | {:.0} |",
        median(engine)
    );
    println!(
        "| core: a day replayed, reorder + core + SQLite outbox ({messages} messages) | {events} | {:.0} |",
        median(core)
    );
    Ok(())
}

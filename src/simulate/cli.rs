//! The tool subcommands of the `hallgate` binary, above the product: `simulate`,
//! `simulate-terminals`, `seed-backlog` and `replay-day`. Their arguments are a clap
//! [`ToolCommand`] that `main` flattens into its own command list (so `hallgate --help` shows
//! them beside `run`), and [`run`] turns one into options for the simulators in this module's
//! siblings, runs it on the runtime `main` builds, and says how it ended.
//!
//! Thin by intent: parsing flags into options and printing one summary line for scripts; what
//! the tools do is in [`super`], [`super::terminals`], [`super::http_terminals`],
//! [`super::backlog`] and the day replay.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::config::terminals::TerminalTransport;
use crate::config::{self, Config, Overrides};
use crate::signals;
use crate::simulate::http_terminals::{self, HttpOptions};
use crate::simulate::terminals::{ScriptOptions, SimulateTerminalsOptions};
use crate::simulate::{SimulateOptions, day::DayOptions};

#[derive(clap::Subcommand, Debug)]
pub enum ToolCommand {
    /// Serve simulated people counters for every counter in the config, with ground truth.
    Simulate(SimulateArgs),
    /// Play the config's face-recognition terminals (passages, re-sends, malformed messages,
    /// heartbeats), with ground truth. MQTT terminals publish to the terminal broker (QoS 1);
    /// terminals with another `transport` are played over HTTP: `http_push` ones POST to
    /// `[terminal_http]` (Hikvision ISAPI multipart, Uniubi callbacks, ZKTeco ADMS) and keep
    /// every record until it is answered with success; `hikvision_pull`, `hikvision_stream`
    /// and `dahua_stream` ones serve at their `address` (Digest login, locked for
    /// --lockout-secs after 5 failed logins). HTTP truth: one line per record the gateway took
    /// (`passage`, `resend`, `bad`, `heartbeat`, `fail`; with `transport` and `attempts`), then
    /// `unacknowledged` lines for records never taken, then the final line (`totals`,
    /// `redelivered`, `complete`, `unacknowledged`, and per-terminal `terminals` counts:
    /// requests, failed_requests, retries, failed_logins, lockouts, max_connections, …).
    /// A config may not mix MQTT and HTTP terminals in one run.
    SimulateTerminals(SimulateTerminalsArgs),
    /// Write a synthetic backlog of minute bins into the outbox, as a long outage would leave
    /// it (for benchmarks and tests of store-and-forward). The gateway must not be running.
    SeedBacklog(SeedBacklogArgs),
    /// Simulate one whole hall day (seeded), replay it through the gateway's core under a
    /// virtual clock, and write the payloads (JSON lines), the ground truth and the bookings.
    ReplayDay(ReplayDayArgs),
}

// `hallgate simulate`
#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Seed of the random traffic; the same seed gives the same crossings.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the ground truth here as JSON lines (one per crossing, then the totals).
    #[arg(long, value_name = "FILE")]
    pub truth: Option<PathBuf>,
    /// Stop the traffic after this many seconds (the counters keep being served).
    #[arg(long, value_name = "S")]
    pub duration_secs: Option<f64>,
    /// Serve unchanging counters for this long before the traffic starts.
    #[arg(long, value_name = "S", default_value_t = 0.0)]
    pub warmup_secs: f64,
    /// Visitors arriving at the hall per minute (Poisson).
    #[arg(long, value_name = "N", default_value_t = 30.0)]
    pub arrivals_per_min: f64,
    /// Mean time a visitor spends in a room, in seconds (exponential).
    #[arg(long, value_name = "S", default_value_t = 20.0)]
    pub mean_dwell_secs: f64,
    /// Serve bus BUS_ID's RTU slaves on PATH, the device side of a pty pair you made (e.g.
    /// with socat); repeat for more buses. Without it the simulator makes the pair itself
    /// with socat: the bus's `port` for the gateway, `<port>.device` for itself.
    #[arg(long = "serial-peer", value_name = "BUS_ID=PATH", value_parser = parse_serial_peer)]
    pub serial_peers: Vec<(String, PathBuf)>,
    /// Random bytes per second to send on every simulated bus between answers (line
    /// noise); the same seed gives the same noise.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub serial_noise_bytes_per_sec: u32,
    /// After the warm-up, hold the traffic until FILE exists (e.g. until a script has seen
    /// the gateway take every counter's baseline).
    #[arg(long, value_name = "FILE")]
    pub start_file: Option<PathBuf>,
}

// `hallgate simulate-terminals`
#[derive(clap::Args, Debug)]
pub struct SimulateTerminalsArgs {
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Terminal broker to connect to, overriding the config's `[terminal_broker]` address.
    #[arg(long, value_name = "HOST:PORT")]
    pub broker: Option<String>,
    /// Seed of the random passages; the same seed gives the same events.
    #[arg(long)]
    pub seed: u64,
    /// How many distinct passages to play.
    #[arg(long, value_name = "N")]
    pub passages: u64,
    /// Passages per second, over all terminals.
    #[arg(long, value_name = "R")]
    pub rate_per_sec: f64,
    /// Write the ground truth here as JSON lines (one per message, then the totals).
    #[arg(long, value_name = "FILE")]
    pub truth: Option<PathBuf>,
    /// After a passage, how often an earlier one is sent again (must count once).
    #[arg(long, value_name = "SHARE", default_value_t = 0.1)]
    pub resend_share: f64,
    /// After a passage, how often a malformed message follows (must be rejected); a few
    /// passages carry a broken snapshot instead (they still count).
    #[arg(long, value_name = "SHARE", default_value_t = 0.05)]
    pub bad_share: f64,
    /// Members to draw from, so members come back.
    #[arg(long, value_name = "N", default_value_t = 40)]
    pub member_pool: u32,
    /// Share of strangers at terminals that report them (not Hikvision).
    #[arg(long, value_name = "SHARE", default_value_t = 0.2)]
    pub stranger_share: f64,
    /// Share of fevers (37.5 °C and above).
    #[arg(long, value_name = "SHARE", default_value_t = 0.03)]
    pub fever_share: f64,
    /// Share without a mask at terminals that check (not HTTPv2).
    #[arg(long, value_name = "SHARE", default_value_t = 0.1)]
    pub mask_off_share: f64,
    /// A JPEG to attach, base64, to passages of profiles with a snapshot field (HTTP:
    /// Hikvision's `Picture` part and Uniubi's `base64` field).
    #[arg(long, value_name = "FILE.jpg")]
    pub snapshot: Option<PathBuf>,
    /// HTTP: where pushing terminals POST, overriding `[terminal_http] listen`.
    #[arg(long, value_name = "IP:PORT")]
    pub http: Option<String>,
    /// HTTP: halfway through, pushing terminals hold their records this long, then send
    /// the backlog in a burst (0: no backlog).
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    pub backlog_secs: f64,
    /// HTTP: after the last passage, how long to wait for the gateway to take every record
    /// (pushes retried, logs read) before writing the final line.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub drain_secs: u64,
    /// HTTP: a push unanswered this long failed; the terminal keeps the record.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub request_timeout_ms: u64,
    /// HTTP: how long a pushing terminal waits before sending again after a failure.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub retry_ms: u64,
    /// HTTP: how long a pulled terminal refuses every login after 5 failed ones.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub lockout_secs: u64,
    /// HTTP: after the final truth line, pulled terminals go on serving their logs this
    /// long (or until SIGTERM), so a gateway restarted late can still read what it lost.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub linger_secs: u64,
}

// `hallgate seed-backlog`
#[derive(clap::Args, Debug)]
pub struct SeedBacklogArgs {
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Where the outbox database lives, overriding `storage.data_dir`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// How many minute bins to write (1440 is a day).
    #[arg(long, value_name = "N")]
    pub minutes: u32,
    /// The bins end with the minute before this time (RFC 3339); now when left out.
    #[arg(long, value_name = "TIME")]
    pub end: Option<jiff::Timestamp>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

// `hallgate replay-day`
#[derive(clap::Args, Debug)]
pub struct ReplayDayArgs {
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The hall's local date to simulate.
    #[arg(long, default_value = "2026-12-01")]
    pub date: jiff::civil::Date,
    /// Opening time (local), instead of the config's `hall.opening_time`.
    #[arg(long)]
    pub opening_time: Option<jiff::civil::Time>,
    /// Walk-in parties over the day.
    #[arg(long, default_value_t = 260)]
    pub parties: u32,
    /// Shares of IN and OUT crossings the counters miss.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    pub miss_in: f64,
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    pub miss_out: f64,
    /// A room that takes bookings (repeat), instead of the config's `rooms[].bookable`.
    #[arg(long = "bookable", value_name = "ROOM")]
    pub bookable: Vec<String>,
    /// Share of walk-in parties that are groups of 2–4 (default 0.3).
    #[arg(long, value_name = "SHARE")]
    pub group_share: Option<f64>,
    /// Days to replay (day i takes seed + i and date + i). More than one: the multi-day
    /// accuracy run (one engine carried from day to day, its state saved and restored between
    /// days), printed as tables of the live and day errors without learning (the raw figures),
    /// with learning and with the true miss rates given (the floor), and written to
    /// `OUT/accuracy.json`.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub days: u32,
    /// One door's own miss shares (repeat): `DOOR=IN,OUT`, e.g. `entrance=0,0.02`; the other
    /// doors take --miss-in/--miss-out.
    #[arg(long = "miss", value_name = "DOOR=IN,OUT", value_parser = parse_miss)]
    pub miss: Vec<(String, f64, f64)>,
}

/// How `main` builds its async runtime (one policy for the daemon and the tools).
pub type Runtime = fn() -> anyhow::Result<tokio::runtime::Runtime>;

/// Runs one tool to its end. The config is loaded (and a bad one reported, exit 78 in `main`)
/// before `runtime` starts; SIGINT/SIGTERM stop the long-running tools (see [`signals`]).
pub fn run(command: ToolCommand, runtime: Runtime) -> anyhow::Result<ExitCode> {
    match command {
        ToolCommand::Simulate(args) => simulate(args, runtime),
        ToolCommand::SimulateTerminals(args) => simulate_terminals(args, runtime),
        ToolCommand::SeedBacklog(args) => seed_backlog(args, runtime),
        ToolCommand::ReplayDay(args) => replay_day(args, runtime),
    }?;
    Ok(ExitCode::SUCCESS)
}

/// `hallgate simulate`: serves the config's counters until SIGINT/SIGTERM.
fn simulate(args: SimulateArgs, runtime: Runtime) -> anyhow::Result<()> {
    let cfg = config::load(&args.config, &Overrides::default())?;
    let mut peers = BTreeMap::new();
    for (bus, peer) in args.serial_peers {
        if let Some(first) = peers.insert(bus.clone(), peer) {
            anyhow::bail!(
                "--serial-peer gives bus {bus} twice (first {})",
                first.display()
            );
        }
    }
    let options = SimulateOptions {
        seed: args.seed,
        truth: args.truth,
        duration: args.duration_secs.map(secs).transpose()?,
        warmup: secs(args.warmup_secs)?,
        arrivals_per_min: args.arrivals_per_min,
        mean_dwell: secs(args.mean_dwell_secs)?,
        serial_peers: peers,
        serial_noise_bytes_per_sec: args.serial_noise_bytes_per_sec,
        start_file: args.start_file,
    };
    runtime()?.block_on(async move {
        let shutdown = signals::shutdown_token(None);
        super::run(&cfg, options, shutdown).await
    })?;
    Ok(())
}

/// `hallgate simulate-terminals`: the config's terminals over MQTT, or over HTTP when it has
/// HTTP terminals (never both in one run).
fn simulate_terminals(args: SimulateTerminalsArgs, runtime: Runtime) -> anyhow::Result<()> {
    let cfg = config::load(&args.config, &Overrides::default())?;
    let script = ScriptOptions {
        seed: args.seed,
        passages: args.passages,
        rate_per_sec: args.rate_per_sec,
        resend_share: args.resend_share,
        bad_share: args.bad_share,
        member_pool: args.member_pool,
        stranger_share: args.stranger_share,
        fever_share: args.fever_share,
        mask_off_share: args.mask_off_share,
    };
    if http_terminals::has_http_terminals(&cfg) {
        return simulate_http_terminals(&cfg, script, args, runtime);
    }
    let options = SimulateTerminalsOptions {
        broker: args.broker,
        script,
        truth: args.truth,
        snapshot: args.snapshot,
    };
    runtime()?.block_on(async move {
        let shutdown = signals::shutdown_token(None);
        super::terminals::run(&cfg, options, shutdown).await
    })?;
    Ok(())
}

/// The HTTP half of `simulate-terminals`.
fn simulate_http_terminals(
    cfg: &Config,
    script: ScriptOptions,
    args: SimulateTerminalsArgs,
    runtime: Runtime,
) -> anyhow::Result<()> {
    if cfg
        .terminals
        .iter()
        .any(|t| t.transport == TerminalTransport::Mqtt)
    {
        anyhow::bail!(
            "this config mixes MQTT and HTTP terminals; simulate-terminals plays one kind per run: split the config"
        );
    }
    let plan = http_terminals::plan_from_config(cfg, args.http.as_deref())?;
    let options = HttpOptions {
        script,
        truth: args.truth,
        snapshot: args.snapshot,
        backlog_secs: args.backlog_secs,
        drain_secs: args.drain_secs,
        request_timeout_ms: args.request_timeout_ms,
        retry_ms: args.retry_ms,
        lockout_secs: args.lockout_secs,
        linger_secs: args.linger_secs,
    };
    runtime()?.block_on(async move {
        let shutdown = signals::shutdown_token(None);
        http_terminals::run(plan, options, shutdown).await
    })?;
    Ok(())
}

/// `hallgate seed-backlog`: writes the bins, then one `key=value` line for scripts.
fn seed_backlog(args: SeedBacklogArgs, runtime: Runtime) -> anyhow::Result<()> {
    let cfg = config::load(
        &args.config,
        &Overrides {
            data_dir: args.data_dir,
            ..Overrides::default()
        },
    )?;
    let end = args.end.unwrap_or_else(jiff::Timestamp::now);
    let report = runtime()?.block_on(super::backlog::seed(&cfg, args.minutes, end, args.seed))?;
    // One line for scripts: key=value pairs.
    println!(
        "seeded messages={} payload_bytes={} first_bin={} last_bin={} entries={}",
        report.messages, report.bytes, report.first_bin, report.last_bin, report.entries
    );
    Ok(())
}

/// `hallgate replay-day`: one seeded day through the core, then a summary line.
fn replay_day(args: ReplayDayArgs, runtime: Runtime) -> anyhow::Result<()> {
    let cfg = config::load(&args.config, &Overrides::default())?;
    let seed = args.seed;
    let mut options = DayOptions::for_config(seed, args.date, &cfg);
    options.opening_time = args.opening_time.unwrap_or(options.opening_time);
    options.parties = args.parties;
    options.miss_in = args.miss_in;
    options.miss_out = args.miss_out;
    options.group_share = args.group_share.unwrap_or(options.group_share);
    if !args.bookable.is_empty() {
        options.bookable.clear();
    }
    for room in args.bookable {
        let index = cfg.rooms.iter().position(|r| r.id == room);
        options
            .bookable
            .push(index.with_context(|| format!("--bookable {room}: no such room"))?);
    }
    if !args.miss.is_empty() {
        options.miss_by_door = vec![(options.miss_in, options.miss_out); cfg.doors.len()];
    }
    for (door, miss_in, miss_out) in args.miss {
        let index = cfg.doors.iter().position(|d| d.id == door);
        let index = index.with_context(|| format!("--miss {door}=…: no such door"))?;
        options.miss_by_door[index] = (miss_in, miss_out);
    }
    if args.days > 1 {
        return replay_days(&cfg, options, args.days, &args.out);
    }
    let started = std::time::Instant::now();
    let report = runtime()?.block_on(crate::simulate::replay::replay_day(
        cfg, &options, &args.out,
    ))?;
    println!(
        "replayed day {} (seed {seed}): {} device events, {} messages in {:.2} s; payloads {}, truth {}, bookings {}",
        report.day,
        report.events,
        report.messages,
        started.elapsed().as_secs_f64(),
        report.payloads.display(),
        report.truth.display(),
        report.bookings.display()
    );
    Ok(())
}

/// `replay-day --days N`: the multi-day accuracy run, as tables and `OUT/accuracy.json`.
fn replay_days(
    cfg: &Config,
    first: DayOptions,
    days: u32,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    use crate::simulate::accuracy::{self, MultiDay};
    let run = |learn, oracle| {
        accuracy::run(
            cfg,
            &MultiDay {
                first: first.clone(),
                days,
                learn,
                oracle,
            },
        )
    };
    let without = run(false, false)?;
    let learned = run(true, false)?;
    let floor = run(true, true)?;
    // Without learning the corrected figures are the raw ones, the table's first column.
    let runs = [
        ("learning", learned.as_slice()),
        ("true rates (floor)", floor.as_slice()),
    ];
    print!("{}", accuracy::table(&runs));
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let path = out.join("accuracy.json");
    let json = serde_json::json!({
        "without_learning": without,
        "learning": learned,
        "true_rates": floor,
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&json)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "\nreplayed {days} days (seed {} on): figures in {}",
        first.seed,
        path.display()
    );
    Ok(())
}

/// `DOOR=IN,OUT` of `--miss`.
fn parse_miss(text: &str) -> Result<(String, f64, f64), String> {
    let bad = || format!("{text:?} is not DOOR=IN,OUT (shares between 0 and 1)");
    let (door, shares) = text.split_once('=').ok_or_else(bad)?;
    let (i, o) = shares.split_once(',').ok_or_else(bad)?;
    let share = |s: &str| {
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|x| (0.0..=1.0).contains(x))
            .ok_or_else(bad)
    };
    if door.is_empty() {
        return Err(bad());
    }
    Ok((door.to_string(), share(i)?, share(o)?))
}

/// `BUS_ID=PATH` of `--serial-peer`.
fn parse_serial_peer(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((bus, path)) if !bus.is_empty() && !path.is_empty() => {
            Ok((bus.to_string(), PathBuf::from(path)))
        }
        _ => Err(format!("{text:?} is not BUS_ID=PATH")),
    }
}

fn secs(value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .with_context(|| format!("{value} is not a duration in seconds"))
}

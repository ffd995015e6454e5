//! The `hallgate` command line: a thin shell over the library. Parses arguments, sets up
//! logging, loads the config and hands over to `supervisor`, `simulate` or `demo`. Exit codes
//! mean something: 0 done, 1 failed, 78 the config is bad (systemd stops restarting on it).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hallgate::config::{self, ConfigError, EXIT_BAD_CONFIG, Overrides};
use hallgate::supervisor::notify::Notifier;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    name = "hallgate",
    version,
    about = "Edge gateway for community service halls"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a hall config and print every problem with its key path; exit 78 if it is bad.
    Validate {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run the gateway (the daemon).
    Run {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Central broker, overriding the config's `uplink.broker`.
        #[arg(long, value_name = "mqtt://HOST:PORT")]
        uplink: Option<String>,
        /// Where the outbox database lives, overriding `storage.data_dir`.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Print the running gateway's status (rooms, devices, link, today's alerts), read from
    /// its status page at the config's `[status] listen`; exit 1 if it does not answer.
    Status {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Serve simulated people counters for every counter in the config, with ground truth.
    Simulate {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Seed of the random traffic; the same seed gives the same crossings.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write the ground truth here as JSON lines (one per crossing, then the totals).
        #[arg(long, value_name = "FILE")]
        truth: Option<PathBuf>,
        /// Stop the traffic after this many seconds (the counters keep being served).
        #[arg(long, value_name = "S")]
        duration_secs: Option<f64>,
        /// Serve unchanging counters for this long before the traffic starts.
        #[arg(long, value_name = "S", default_value_t = 0.0)]
        warmup_secs: f64,
        /// Visitors arriving at the hall per minute (Poisson).
        #[arg(long, value_name = "N", default_value_t = 30.0)]
        arrivals_per_min: f64,
        /// Mean time a visitor spends in a room, in seconds (exponential).
        #[arg(long, value_name = "S", default_value_t = 20.0)]
        mean_dwell_secs: f64,
        /// Serve bus BUS_ID's RTU slaves on PATH, the device side of a pty pair you made (e.g.
        /// with socat); repeat for more buses. Without it the simulator makes the pair itself
        /// with socat: the bus's `port` for the gateway, `<port>.device` for itself.
        #[arg(long = "serial-peer", value_name = "BUS_ID=PATH", value_parser = parse_serial_peer)]
        serial_peers: Vec<(String, PathBuf)>,
        /// Random bytes per second to send on every simulated bus between answers (line
        /// noise); the same seed gives the same noise.
        #[arg(long, value_name = "N", default_value_t = 0)]
        serial_noise_bytes_per_sec: u32,
        /// After the warm-up, hold the traffic until FILE exists (e.g. until a script has seen
        /// the gateway take every counter's baseline).
        #[arg(long, value_name = "FILE")]
        start_file: Option<PathBuf>,
    },
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
    SimulateTerminals {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Terminal broker to connect to, overriding the config's `[terminal_broker]` address.
        #[arg(long, value_name = "HOST:PORT")]
        broker: Option<String>,
        /// Seed of the random passages; the same seed gives the same events.
        #[arg(long)]
        seed: u64,
        /// How many distinct passages to play.
        #[arg(long, value_name = "N")]
        passages: u64,
        /// Passages per second, over all terminals.
        #[arg(long, value_name = "R")]
        rate_per_sec: f64,
        /// Write the ground truth here as JSON lines (one per message, then the totals).
        #[arg(long, value_name = "FILE")]
        truth: Option<PathBuf>,
        /// After a passage, how often an earlier one is sent again (must count once).
        #[arg(long, value_name = "SHARE", default_value_t = 0.1)]
        resend_share: f64,
        /// After a passage, how often a malformed message follows (must be rejected); a few
        /// passages carry a broken snapshot instead (they still count).
        #[arg(long, value_name = "SHARE", default_value_t = 0.05)]
        bad_share: f64,
        /// Members to draw from, so members come back.
        #[arg(long, value_name = "N", default_value_t = 40)]
        member_pool: u32,
        /// Share of strangers at terminals that report them (not Hikvision).
        #[arg(long, value_name = "SHARE", default_value_t = 0.2)]
        stranger_share: f64,
        /// Share of fevers (37.5 °C and above).
        #[arg(long, value_name = "SHARE", default_value_t = 0.03)]
        fever_share: f64,
        /// Share without a mask at terminals that check (not HTTPv2).
        #[arg(long, value_name = "SHARE", default_value_t = 0.1)]
        mask_off_share: f64,
        /// A JPEG to attach, base64, to passages of profiles with a snapshot field (HTTP:
        /// Hikvision's `Picture` part and Uniubi's `base64` field).
        #[arg(long, value_name = "FILE.jpg")]
        snapshot: Option<PathBuf>,
        /// HTTP: where pushing terminals POST, overriding `[terminal_http] listen`.
        #[arg(long, value_name = "IP:PORT")]
        http: Option<String>,
        /// HTTP: halfway through, pushing terminals hold their records this long, then send
        /// the backlog in a burst (0: no backlog).
        #[arg(long, value_name = "SECS", default_value_t = 0.0)]
        backlog_secs: f64,
        /// HTTP: after the last passage, how long to wait for the gateway to take every record
        /// (pushes retried, logs read) before writing the final line.
        #[arg(long, value_name = "SECS", default_value_t = 30)]
        drain_secs: u64,
        /// HTTP: a push unanswered this long failed; the terminal keeps the record.
        #[arg(long, value_name = "MS", default_value_t = 5000)]
        request_timeout_ms: u64,
        /// HTTP: how long a pushing terminal waits before sending again after a failure.
        #[arg(long, value_name = "MS", default_value_t = 1000)]
        retry_ms: u64,
        /// HTTP: how long a pulled terminal refuses every login after 5 failed ones.
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        lockout_secs: u64,
        /// HTTP: after the final truth line, pulled terminals go on serving their logs this
        /// long (or until SIGTERM), so a gateway restarted late can still read what it lost.
        #[arg(long, value_name = "SECS", default_value_t = 0)]
        linger_secs: u64,
    },
    /// Write a synthetic backlog of minute bins into the outbox, as a long outage would leave
    /// it (for benchmarks and tests of store-and-forward). The gateway must not be running.
    SeedBacklog {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Where the outbox database lives, overriding `storage.data_dir`.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// How many minute bins to write (1440 is a day).
        #[arg(long, value_name = "N")]
        minutes: u32,
        /// The bins end with the minute before this time (RFC 3339); now when left out.
        #[arg(long, value_name = "TIME")]
        end: Option<jiff::Timestamp>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Simulate one whole hall day (seeded), replay it through the gateway's core under a
    /// virtual clock, and write the payloads (JSON lines), the ground truth and the bookings.
    ReplayDay {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The hall's local date to simulate.
        #[arg(long, default_value = "2026-12-01")]
        date: jiff::civil::Date,
        /// Opening time (local), instead of the config's `hall.opening_time`.
        #[arg(long)]
        opening_time: Option<jiff::civil::Time>,
        /// Walk-in parties over the day.
        #[arg(long, default_value_t = 260)]
        parties: u32,
        /// Shares of IN and OUT crossings the counters miss.
        #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
        miss_in: f64,
        #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
        miss_out: f64,
        /// A room that takes bookings (repeat), instead of the config's `rooms[].bookable`.
        #[arg(long = "bookable", value_name = "ROOM")]
        bookable: Vec<String>,
    },
    /// Run the example hall against simulated counters and an embedded broker, with a live table.
    Demo {
        /// Hall config to demo; the shipped example when left out.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(matches!(cli.command, Command::Demo { .. }));
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(error) => {
            // An unreadable config is as bad as an invalid one: both stop systemd's restarts.
            if error.downcast_ref::<ConfigError>().is_some() {
                eprintln!("{error}");
                return ExitCode::from(EXIT_BAD_CONFIG as u8);
            }
            eprintln!("hallgate: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Validate { config: path } => match config::load(&path, &Overrides::default()) {
            Ok(cfg) => {
                println!(
                    "{}: ok — hall {} ({}), {} rooms, {} doors, {} counters",
                    path.display(),
                    cfg.hall.id,
                    cfg.hall.time_zone_name,
                    cfg.rooms.len(),
                    cfg.doors.len(),
                    cfg.counters.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(error) => Err(error.into()),
        },
        Command::Run {
            config: path,
            uplink,
            data_dir,
        } => {
            let overrides = Overrides {
                uplink,
                data_dir,
                ..Overrides::default()
            };
            let cfg = config::load(&path, &overrides)?;
            let reload = runtime()?.block_on(async move {
                let signals = daemon_signals(path, overrides);
                hallgate::supervisor::run(cfg, signals.shutdown, Notifier::from_env()).await?;
                anyhow::Ok(signals.reload.load(Ordering::SeqCst))
            })?;
            if reload {
                return Err(reexec());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { config: path } => {
            let cfg = config::load(&path, &Overrides::default())?;
            let fetched = runtime()?.block_on(hallgate::status::client::fetch(cfg.status.as_ref()));
            match fetched {
                Ok(view) => {
                    print!("{}", hallgate::status::text::render(&view));
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => {
                    eprintln!("hallgate status: {error}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Simulate {
            config: path,
            seed,
            truth,
            duration_secs,
            warmup_secs,
            arrivals_per_min,
            mean_dwell_secs,
            serial_peers,
            serial_noise_bytes_per_sec,
            start_file,
        } => {
            let cfg = config::load(&path, &Overrides::default())?;
            let mut peers = BTreeMap::new();
            for (bus, peer) in serial_peers {
                if let Some(first) = peers.insert(bus.clone(), peer) {
                    anyhow::bail!(
                        "--serial-peer gives bus {bus} twice (first {})",
                        first.display()
                    );
                }
            }
            let options = hallgate::simulate::SimulateOptions {
                seed,
                truth,
                duration: duration_secs.map(secs).transpose()?,
                warmup: secs(warmup_secs)?,
                arrivals_per_min,
                mean_dwell: secs(mean_dwell_secs)?,
                serial_peers: peers,
                serial_noise_bytes_per_sec,
                start_file,
            };
            runtime()?.block_on(async move {
                let shutdown = shutdown_on_signals();
                hallgate::simulate::run(&cfg, options, shutdown).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::SimulateTerminals {
            config: path,
            broker,
            seed,
            passages,
            rate_per_sec,
            truth,
            resend_share,
            bad_share,
            member_pool,
            stranger_share,
            fever_share,
            mask_off_share,
            snapshot,
            http,
            backlog_secs,
            drain_secs,
            request_timeout_ms,
            retry_ms,
            lockout_secs,
            linger_secs,
        } => {
            use hallgate::simulate::http_terminals::{self, HttpOptions};
            use hallgate::simulate::terminals::{ScriptOptions, SimulateTerminalsOptions};
            let cfg = config::load(&path, &Overrides::default())?;
            let script = ScriptOptions {
                seed,
                passages,
                rate_per_sec,
                resend_share,
                bad_share,
                member_pool,
                stranger_share,
                fever_share,
                mask_off_share,
            };
            if http_terminals::has_http_terminals(&cfg) {
                if cfg
                    .terminals
                    .iter()
                    .any(|t| t.transport == config::terminals::TerminalTransport::Mqtt)
                {
                    anyhow::bail!(
                        "this config mixes MQTT and HTTP terminals; simulate-terminals plays one kind per run: split the config"
                    );
                }
                let plan = http_terminals::plan_from_config(&cfg, http.as_deref())?;
                let options = HttpOptions {
                    script,
                    truth,
                    snapshot,
                    backlog_secs,
                    drain_secs,
                    request_timeout_ms,
                    retry_ms,
                    lockout_secs,
                    linger_secs,
                };
                runtime()?.block_on(async move {
                    let shutdown = shutdown_on_signals();
                    http_terminals::run(plan, options, shutdown).await
                })?;
                return Ok(ExitCode::SUCCESS);
            }
            let options = SimulateTerminalsOptions {
                broker,
                script,
                truth,
                snapshot,
            };
            runtime()?.block_on(async move {
                let shutdown = shutdown_on_signals();
                hallgate::simulate::terminals::run(&cfg, options, shutdown).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::SeedBacklog {
            config: path,
            data_dir,
            minutes,
            end,
            seed,
        } => {
            let cfg = config::load(
                &path,
                &Overrides {
                    data_dir,
                    ..Overrides::default()
                },
            )?;
            let end = end.unwrap_or_else(jiff::Timestamp::now);
            let report =
                runtime()?.block_on(hallgate::simulate::backlog::seed(&cfg, minutes, end, seed))?;
            // One line for scripts: key=value pairs.
            println!(
                "seeded messages={} payload_bytes={} first_bin={} last_bin={} entries={}",
                report.messages, report.bytes, report.first_bin, report.last_bin, report.entries
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::ReplayDay {
            config: path,
            seed,
            out,
            date,
            opening_time,
            parties,
            miss_in,
            miss_out,
            bookable,
        } => {
            let cfg = config::load(&path, &Overrides::default())?;
            let mut options = hallgate::simulate::day::DayOptions::for_config(seed, date, &cfg);
            options.opening_time = opening_time.unwrap_or(options.opening_time);
            options.parties = parties;
            options.miss_in = miss_in;
            options.miss_out = miss_out;
            if !bookable.is_empty() {
                options.bookable.clear();
            }
            for room in bookable {
                let index = cfg.rooms.iter().position(|r| r.id == room);
                options
                    .bookable
                    .push(index.with_context(|| format!("--bookable {room}: no such room"))?);
            }
            let started = std::time::Instant::now();
            let report =
                runtime()?.block_on(hallgate::simulate::replay::replay_day(cfg, &options, &out))?;
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
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { config: path, seed } => {
            let cfg = match path {
                // The demo replaces every terminal login with a fresh random one, so the
                // shipped example password files may stand in the config it is given.
                Some(path) => config::load(
                    &path,
                    &Overrides {
                        allow_example_secrets: true,
                        ..Overrides::default()
                    },
                )?,
                None => hallgate::demo::example_config()?,
            };
            runtime()?.block_on(async move {
                let shutdown = shutdown_on_signals();
                hallgate::demo::run(cfg, seed, shutdown).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
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

/// The async runtime: one thread, unless `TOKIO_WORKER_THREADS` asks for a pool of that size
/// (kept for measuring). The async side of the gateway is light — polls, MQTT, a few µs of
/// decoding per event — and the slow parts already have threads of their own: SQLite commits
/// (the outbox thread) and inference (the vision thread). Against
/// the two-worker pool it replaced, one thread measured the same CPU per event within noise
/// and 1 MiB less RSS at 1000 face events/s (docs/performance.md); it is also one thread
/// fewer to reason about when a task misbehaves.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if std::env::var_os("TOKIO_WORKER_THREADS").is_some() {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// What the daemon's signals do: [`DaemonSignals::shutdown`] is cancelled by SIGINT or
/// SIGTERM (stop), or by a SIGHUP whose new config validated (`reload` is then set).
struct DaemonSignals {
    shutdown: CancellationToken,
    reload: Arc<AtomicBool>,
}

/// SIGHUP reloads the config at `path`: it is validated first, and a bad one is logged and
/// ignored — the gateway keeps running on the config it has. A good one stops the gateway in
/// its usual stages and `main` re-executes it (see [`reexec`]). SIGINT and SIGTERM stop it;
/// a second one exits at once.
fn daemon_signals(path: PathBuf, overrides: Overrides) -> DaemonSignals {
    let token = CancellationToken::new();
    let reload = Arc::new(AtomicBool::new(false));
    let signals = DaemonSignals {
        shutdown: token.clone(),
        reload: reload.clone(),
    };
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            tracing::error!("cannot install signal handlers; stop the gateway with SIGKILL");
            return;
        };
        let notifier = Notifier::from_env();
        loop {
            tokio::select! {
                _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
                _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
                _ = hup.recv() => {
                    // Reading and checking a hall config is quick and pure; the core loop
                    // keeps running meanwhile on its own task.
                    match config::load(&path, &overrides) {
                        Ok(_) => {
                            tracing::info!(
                                config = %path.display(),
                                signal = "SIGHUP",
                                "the new config is valid; restarting the gateway with it"
                            );
                            notifier.reloading();
                            reload.store(true, Ordering::SeqCst);
                        }
                        Err(error) => {
                            tracing::error!(
                                config = %path.display(),
                                signal = "SIGHUP",
                                problems = %error,
                                "the new config is rejected; still running on the old one — fix the file and reload again"
                            );
                            notifier.status("config reload rejected (still running on the old config); see the journal");
                            continue;
                        }
                    }
                }
            }
            break;
        }
        if !reload.load(Ordering::SeqCst) {
            notifier.stopping();
        }
        token.cancel();
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("second signal: exiting without waiting for a clean shutdown");
        std::process::exit(130);
    });
    signals
}

/// Replaces this process with a fresh `hallgate` of the same arguments, which loads the new
/// config. The gateway has already stopped in its stages (state committed, outbox closed).
/// A fresh image rather than restarting the stages in place: a new image is certain to start
/// from nothing but the config and the outbox — just as after a systemd restart. The
/// PID stays, so systemd sees one service that reloaded (`RELOADING=1`, then `READY=1`).
/// Only returns on failure.
fn reexec() -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // `current_exe` names the running binary even when started through a relative path;
    // after a package upgrade replaced it on disk, it reads "… (deleted)": use argv[0] then.
    let program = std::env::current_exe()
        .ok()
        .filter(|p| p.exists())
        .or_else(|| args.first().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("hallgate"));
    tracing::info!(program = %program.display(), "re-executing with the new config");
    let error = std::process::Command::new(&program)
        .args(args.iter().skip(1))
        .exec();
    anyhow::anyhow!(
        "cannot re-execute {} to reload the config: {error}; the gateway has stopped",
        program.display()
    )
}

/// A token cancelled by the first SIGINT or SIGTERM; a second one exits at once.
fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; stop the gateway with SIGKILL");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
        }
        trigger.cancel();
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("second signal: exiting without waiting for a clean shutdown");
        std::process::exit(130);
    });
    token
}

/// Logs go to stderr; under systemd (JOURNAL_STREAM set) without colours or timestamps, which
/// journald adds itself, and without colours when stderr is not a terminal. `RUST_LOG`
/// overrides the default level (info; warn for the demo, whose table is the output).
fn init_logging(quiet: bool) {
    use tracing_subscriber::EnvFilter;
    // The demo's table is its output; rumqttd (its embedded broker) logs client hang-ups as
    // errors, which they are not there.
    let default = if quiet { "warn,rumqttd=off" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().with_ansi(false).init();
    } else {
        // Colours only for a person at a terminal: a log file or a pipe gets plain text.
        use std::io::IsTerminal as _;
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

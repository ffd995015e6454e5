//! The `hallgate` command line: a thin shell over the library. Parses arguments, sets up
//! logging, loads the config and hands over to `supervisor`, `demo` or, for the tool
//! subcommands (`simulate`, `simulate-terminals`, `seed-backlog`, `replay-day`), to
//! `simulate::cli`. Exit codes mean something: 0 done, 1 failed, 78 the config is bad (systemd
//! stops restarting on it).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hallgate::config::{self, ConfigError, EXIT_BAD_CONFIG, Overrides};
use hallgate::signals::{self, ConfigReload};
use hallgate::simulate::cli::ToolCommand;
use hallgate::supervisor::notify::Notifier;

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
    // simulate, simulate-terminals, seed-backlog, replay-day: the tools above the product.
    #[command(flatten)]
    Tool(ToolCommand),
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
        Command::Validate { config: path } => validate(&path),
        Command::Run {
            config: path,
            uplink,
            data_dir,
        } => run(path, uplink, data_dir),
        Command::Status { config: path } => status(&path),
        Command::Tool(tool) => hallgate::simulate::cli::run(tool, runtime),
        Command::Demo { config: path, seed } => demo(path, seed),
    }
}

/// `hallgate validate`: one line for a good config; a bad one is `main`'s exit 78.
fn validate(path: &Path) -> anyhow::Result<ExitCode> {
    let cfg = config::load(path, &Overrides::default())?;
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

/// `hallgate run`: the daemon, until SIGINT/SIGTERM, or until a SIGHUP with a valid config
/// (then it re-executes itself, see [`reexec`]).
fn run(
    path: PathBuf,
    uplink: Option<String>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let overrides = Overrides {
        uplink,
        data_dir,
        ..Overrides::default()
    };
    // A SIGHUP before its handler is in place would end the daemon (see `signals`).
    signals::hold_hangups();
    signals::drop_held_hangup();
    let cfg = config::load(&path, &overrides)?;
    let reload = runtime()?.block_on(async move {
        let reload = ConfigReload::new(path, overrides, Notifier::from_env());
        let requested = reload.requested();
        let shutdown = signals::shutdown_token(Some(reload));
        hallgate::supervisor::run(cfg, shutdown, Notifier::from_env()).await?;
        anyhow::Ok(requested.load(Ordering::SeqCst))
    })?;
    if reload {
        return Err(reexec());
    }
    Ok(ExitCode::SUCCESS)
}

/// `hallgate status`: the running gateway's status page as text; exit 1 if it does not answer.
fn status(path: &Path) -> anyhow::Result<ExitCode> {
    let cfg = config::load(path, &Overrides::default())?;
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

/// `hallgate demo`: the given hall, or the shipped example, until Ctrl-C.
fn demo(path: Option<PathBuf>, seed: u64) -> anyhow::Result<ExitCode> {
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
        let shutdown = signals::shutdown_token(None);
        hallgate::demo::run(cfg, seed, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
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
    // Held across the exec: the new image has no handler until it installs one.
    signals::hold_hangups();
    let error = std::process::Command::new(&program)
        .args(args.iter().skip(1))
        .exec();
    anyhow::anyhow!(
        "cannot re-execute {} to reload the config: {error}; the gateway has stopped",
        program.display()
    )
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

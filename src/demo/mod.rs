//! `hallgate demo`: a whole hall on one laptop, with nothing to set up.
//!
//! Starts an embedded MQTT broker (rumqttd, in-process) on a free loopback port as the
//! stand-in central broker, the simulator serving the hall's counters on free loopback ports,
//! and the real gateway pointed at both. The live table is drawn from what the *broker*
//! receives (the retained `state`), so what you watch has been through the whole path:
//! counters → Modbus → engine → outbox → MQTT.

use std::collections::HashMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::terminals::{TerminalSource, TerminalTransport};
use crate::config::{self, Config, CounterTransport, Overrides, Zone};
use crate::simulate::terminals::{ScriptOptions, SimulateTerminalsOptions};
use crate::simulate::{self, SimulateOptions, Simulation};
use crate::status::text::{char_width, display_width};
use crate::supervisor;

/// The shipped example hall, compiled in so the demo runs from any directory.
const EXAMPLE: &str = include_str!("../../firmware-config/examples/hall.toml");

/// How often the table is redrawn.
const REFRESH: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the shipped example config is invalid: {0}")]
    Example(String),
    #[error("cannot find a free loopback port: {0}")]
    Port(std::io::Error),
    #[error("cannot create the demo's data directory {path}: {error}")]
    DataDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the embedded broker failed to start: {0}")]
    Broker(String),
    #[error("the simulated terminals cannot start: {0}")]
    Terminals(String),
    #[error(transparent)]
    Simulator(#[from] simulate::SimulateError),
    #[error(transparent)]
    Gateway(#[from] supervisor::SupervisorError),
}

/// The shipped example hall.
pub fn example_config() -> Result<Config, DemoError> {
    config::parse(EXAMPLE, Path::new("."), &Overrides::default()).map_err(|problems| {
        DemoError::Example(
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> Result<u16, DemoError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(DemoError::Port)?;
    Ok(listener.local_addr().map_err(DemoError::Port)?.port())
}

/// Runs the demo until `shutdown`.
pub async fn run(
    mut config: Config,
    seed: u64,
    shutdown: CancellationToken,
) -> Result<(), DemoError> {
    let data_dir = make_data_dir()?;
    config.storage.data_dir = data_dir.clone();
    move_terminals_to_loopback(&mut config)?;
    move_counters_to_loopback(&mut config, &data_dir);
    let simulation = match Simulation::bind(&config, simulation_options(seed)).await {
        Ok(simulation) => simulation,
        Err(error) => {
            let _ = std::fs::remove_dir_all(&data_dir);
            return Err(error.into());
        }
    };
    let broker_port = free_port()?;
    point_uplink_at_embedded_broker(&mut config, broker_port);
    for (id, address) in simulation.counter_addresses() {
        for counter in config.counters.iter_mut().filter(|c| c.id == id) {
            if let CounterTransport::ModbusTcp { unit_id, .. } = counter.transport {
                counter.transport = CounterTransport::ModbusTcp { address, unit_id };
            }
        }
    }
    give_fresh_logins(&mut config);
    let terminal_broker_port = move_terminal_broker_to_loopback(&mut config)?;
    // The status page moves to a free loopback port too: a gateway may already be on 8080.
    if let Some(status) = &mut config.status {
        status.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    }

    let latest = Arc::new(Mutex::new(None::<StateView>));
    start_broker(broker_port, &config, latest.clone())?;
    print_banner(&config, broker_port, &data_dir);

    let sim_stop = CancellationToken::new();
    let sim = tokio::spawn(simulation.run(sim_stop.clone()));
    let gateway = tokio::spawn(supervisor::run(
        config.clone(),
        shutdown.clone(),
        supervisor::notify::Notifier::disabled(),
    ));
    if let Some(port) = terminal_broker_port {
        start_mqtt_terminals(&config, port, seed, &sim_stop);
    }
    if simulate::http_terminals::has_http_terminals(&config) {
        start_http_terminals(&config, seed, &sim_stop)?;
    }
    show_table_until(&config, &latest, &shutdown).await;

    println!("\nstopping…");
    let gateway_result = gateway.await;
    sim_stop.cancel();
    let sim_result = sim.await;
    let _ = std::fs::remove_dir_all(&data_dir);
    if let Ok(Err(error)) = gateway_result {
        return Err(error.into());
    }
    if let Ok(Err(error)) = sim_result {
        return Err(error.into());
    }
    Ok(())
}

/// The demo's own data directory (the outbox), removed when it stops.
fn make_data_dir() -> Result<PathBuf, DemoError> {
    let data_dir = std::env::temp_dir().join(format!("hallgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&data_dir).map_err(|error| DemoError::DataDir {
        path: data_dir.clone(),
        error,
    })?;
    Ok(data_dir)
}

/// HTTP terminals: the listener moves to a free loopback port, push terminals push from
/// loopback, and pulled terminals are served by the simulator on free loopback ports.
fn move_terminals_to_loopback(config: &mut Config) -> Result<(), DemoError> {
    if let Some(http) = &mut config.terminal_http {
        http.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    }
    for terminal in &mut config.terminals {
        match &mut terminal.transport {
            TerminalTransport::Mqtt => {}
            TerminalTransport::HttpPush { address } => {
                if address.is_some() {
                    *address = Some(Ipv4Addr::LOCALHOST.into());
                }
            }
            TerminalTransport::HikvisionPull { address, .. }
            | TerminalTransport::HikvisionStream { address }
            | TerminalTransport::DahuaStream { address } => {
                *address = format!("127.0.0.1:{}", free_port()?);
            }
        }
    }
    Ok(())
}

/// Counters move to loopback ports the simulator binds itself (port 0): the config's LAN
/// addresses do not exist here, and a fixed port could be answered by another program.
/// Serial lines (RS-485 buses, streaming counters) become socat pty pairs the simulator
/// makes in the demo's directory.
fn move_counters_to_loopback(config: &mut Config, data_dir: &Path) {
    for counter in &mut config.counters {
        match &mut counter.transport {
            CounterTransport::ModbusTcp { address, .. } => {
                *address = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
            }
            CounterTransport::SerialStream { serial, .. } => {
                serial.port = data_dir.join(format!("{}.tty", counter.id));
            }
            CounterTransport::ModbusRtu { .. } => {}
            // The simulated camera pushes from loopback, with a fresh password (the config
            // may name a shipped example file); the simulator reads both from this config.
            CounterTransport::HttpPush { address, login } => {
                if address.is_some() {
                    *address = Some(Ipv4Addr::LOCALHOST.into());
                }
                if let Some((_, secret)) = login {
                    *secret = crate::config::terminals::Secret::random();
                }
            }
        }
    }
    for bus in &mut config.buses {
        bus.serial.port = data_dir.join(format!("{}.tty", bus.id));
    }
}

/// The demo's traffic: brisker than a real hall, so the table moves.
fn simulation_options(seed: u64) -> SimulateOptions {
    SimulateOptions {
        seed,
        truth: None,
        duration: None,
        warmup: Duration::from_secs(1),
        arrivals_per_min: 40.0,
        mean_dwell: Duration::from_secs(45),
        serial_peers: Default::default(),
        serial_noise_bytes_per_sec: 0,
        start_file: None,
    }
}

/// The embedded broker is plain MQTT on loopback: no TLS, no login.
fn point_uplink_at_embedded_broker(config: &mut Config, port: u16) {
    config.uplink.host = Ipv4Addr::LOCALHOST.to_string();
    config.uplink.port = port;
    config.uplink.tls = None;
    config.uplink.tls_files_unused = false;
    config.uplink.login = None;
}

/// Every terminal and camera login gets a fresh random password: the config may name the
/// shipped example files, whose passwords are public. The simulated terminals log in with
/// what the config holds, so they follow.
fn give_fresh_logins(config: &mut Config) {
    for terminal in &mut config.terminals {
        if let Some((_, secret)) = &mut terminal.login
            && !terminal.transport.is_pull()
        {
            *secret = crate::config::terminals::Secret::random();
        }
    }
    for camera in &mut config.cameras {
        if let Some((_, secret)) = &mut camera.login {
            *secret = crate::config::terminals::Secret::random();
        }
    }
}

/// Terminals publish to the gateway's own broker, moved to a free loopback port; its port, if
/// there are MQTT terminals to play.
fn move_terminal_broker_to_loopback(config: &mut Config) -> Result<Option<u16>, DemoError> {
    Ok(match &mut config.terminal_broker {
        Some(broker) if !config.terminals.is_empty() => {
            let port = free_port()?;
            broker.source = TerminalSource::Embedded {
                listen: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            };
            Some(port)
        }
        _ => None,
    })
}

/// What runs where, before the first table.
fn print_banner(config: &Config, broker_port: u16, data_dir: &Path) {
    println!(
        "hallgate demo: hall {} — {} rooms, {} simulated counters, embedded broker on 127.0.0.1:{broker_port}",
        config.hall.name,
        config.rooms.len(),
        config.counters.len()
    );
    if let Some(status) = &config.status {
        println!(
            "the status page for facilities staff is at http://{}/{}",
            status.listen,
            if status.token.is_some() {
                " (with ?token=… from status.token_file)"
            } else {
                ""
            }
        );
    }
    println!(
        "data in {} (removed on exit). Ctrl-C to stop.\n",
        data_dir.display()
    );
}

/// The simulated MQTT terminals, publishing to the gateway's broker on `port` until `stop`.
fn start_mqtt_terminals(config: &Config, port: u16, seed: u64, stop: &CancellationToken) {
    println!(
        "{} simulated face-recognition terminals publish to the gateway's broker on 127.0.0.1:{port}\n",
        config.terminals.len()
    );
    let config = config.clone();
    let stop = stop.clone();
    tokio::spawn(async move {
        // Give the gateway a moment to open its terminal broker.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let options = SimulateTerminalsOptions {
            broker: None,
            script: demo_script(seed),
            truth: None,
            snapshot: None,
        };
        if let Err(error) = simulate::terminals::run(&config, options, stop).await {
            tracing::error!(%error, "the simulated terminals stopped");
        }
    });
}

/// The simulated HTTP terminals, pushing to the gateway or read by it, until `stop`.
fn start_http_terminals(
    config: &Config,
    seed: u64,
    stop: &CancellationToken,
) -> Result<(), DemoError> {
    println!(
        "{} simulated HTTP terminals push to http://{}/terminals/… or are read by the gateway\n",
        config.terminals.len(),
        config
            .terminal_http
            .as_ref()
            .map_or_else(|| "-".to_string(), |h| h.listen.to_string())
    );
    let plan = simulate::http_terminals::plan_from_config(config, None)
        .map_err(|error| DemoError::Terminals(error.to_string()))?;
    let stop = stop.clone();
    tokio::spawn(async move {
        let options = simulate::http_terminals::HttpOptions {
            script: demo_script(seed),
            truth: None,
            snapshot: None,
            backlog_secs: 0.0,
            drain_secs: 5,
            request_timeout_ms: 10_000,
            retry_ms: 1_000,
            lockout_secs: 60,
            linger_secs: 0,
        };
        if let Err(error) = simulate::http_terminals::run(plan, options, stop).await {
            tracing::error!(%error, "the simulated HTTP terminals stopped");
        }
    });
    Ok(())
}

/// Redraws the table from the broker's latest `state` every [`REFRESH`] until `shutdown`.
async fn show_table_until(
    config: &Config,
    latest: &Mutex<Option<StateView>>,
    shutdown: &CancellationToken,
) {
    let mut ticker = tokio::time::interval(REFRESH);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {
                let view = latest.lock().map(|g| g.clone()).unwrap_or(None);
                print_table(config, view.as_ref());
            }
        }
    }
}

/// The demo's terminals: a passage every second and a half or so, with a few re-sends and
/// malformed messages, for as long as it runs.
fn demo_script(seed: u64) -> ScriptOptions {
    ScriptOptions {
        seed,
        passages: 1_000_000,
        rate_per_sec: 0.7,
        resend_share: 0.05,
        bad_share: 0.02,
        member_pool: 60,
        stranger_share: 0.2,
        fever_share: 0.03,
        mask_off_share: 0.1,
    }
}

/// The parts of the `state` payload the table shows.
#[derive(Debug, Clone, Deserialize)]
struct StateView {
    ts: String,
    rooms: Vec<RoomView>,
    hall: HallView,
    devices: Vec<DeviceView>,
}

#[derive(Debug, Clone, Deserialize)]
struct RoomView {
    id: String,
    occupancy: u64,
    capacity: u32,
    entries_today: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct HallView {
    occupancy: u64,
    visitors_today: u64,
    #[serde(default)]
    passages_today: Option<PassagesView>,
    #[serde(default)]
    unique_members_today: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct PassagesView {
    #[serde(default)]
    passages: u64,
    #[serde(default)]
    strangers: u64,
    #[serde(default)]
    fevers: u64,
    #[serde(default)]
    mask_off: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct DeviceView {
    id: String,
    online: bool,
}

/// Starts rumqttd on `port` and a local link that keeps the latest `state` it receives.
fn start_broker(
    port: u16,
    config: &Config,
    latest: Arc<Mutex<Option<StateView>>>,
) -> Result<(), DemoError> {
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: 256 * 1024,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "demo".into(),
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let broker_config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 16,
            max_outgoing_packet_count: 200,
            max_segment_size: 1024 * 1024,
            max_segment_count: 4,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..rumqttd::Config::default()
    };
    let mut broker = rumqttd::Broker::new(broker_config);
    let (mut link_tx, mut link_rx) = broker
        .link("demo-table")
        .map_err(|e| DemoError::Broker(e.to_string()))?;
    std::thread::Builder::new()
        .name("demo-broker".into())
        .spawn(move || {
            if let Err(error) = broker.start() {
                tracing::error!(%error, "embedded broker stopped");
            }
        })
        .map_err(|e| DemoError::Broker(e.to_string()))?;
    let state_topic = format!(
        "{}/{}",
        crate::uplink::payload::base_topic(config),
        crate::uplink::payload::TOPIC_STATE
    );
    link_tx
        .subscribe(state_topic)
        .map_err(|e| DemoError::Broker(e.to_string()))?;
    std::thread::Builder::new()
        .name("demo-table".into())
        .spawn(move || {
            // The link blocks; it lives on its own thread and ends with the process.
            while let Ok(notification) = link_rx.recv() {
                if let Some(rumqttd::Notification::Forward(forward)) = notification
                    && let Ok(view) = serde_json::from_slice::<StateView>(&forward.publish.payload)
                    && let Ok(mut guard) = latest.lock()
                {
                    *guard = Some(view);
                }
            }
        })
        .map_err(|e| DemoError::Broker(e.to_string()))?;
    Ok(())
}

fn print_table(config: &Config, view: Option<&StateView>) {
    let mut out = String::new();
    let Some(view) = view else {
        println!("waiting for the first state message at the broker…");
        return;
    };
    let local_time = view
        .ts
        .parse::<jiff::Timestamp>()
        .map(|t| {
            t.to_zoned(config.hall.time_zone.clone())
                .strftime("%H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| view.ts.clone());
    out.push_str(&format!(
        "── {} · {local_time} ({}) · {} inside · {} visitors today ──\n",
        config.hall.id, config.hall.time_zone_name, view.hall.occupancy, view.hall.visitors_today
    ));
    if let Some(p) = &view.hall.passages_today {
        out.push_str(&format!(
            "   terminals: {} passages · {} members (unique) · {} strangers · {} fever alerts · {} without mask\n",
            p.passages, view.hall.unique_members_today, p.strangers, p.fevers, p.mask_off
        ));
    }
    out.push_str(&format!(
        "{} {:>9}  {:<20} {:>8}  {}\n",
        pad("room", 34),
        "occupancy",
        "",
        "entries today",
        "counter"
    ));
    for room in &view.rooms {
        let name = config
            .rooms
            .iter()
            .find(|r| r.id == room.id)
            .map_or(room.id.as_str(), |r| r.name.as_str());
        // The counter on the door into this room.
        let counter = config
            .counters
            .iter()
            .find(|c| {
                let door = &config.doors[c.door];
                config
                    .rooms
                    .iter()
                    .position(|r| r.id == room.id)
                    .is_some_and(|i| door.to == Zone::Room(i))
            })
            .map(|c| c.id.as_str());
        let status = counter.map_or("-".to_string(), |id| {
            match view.devices.iter().find(|d| d.id == id) {
                Some(d) if d.online => format!("{id} online"),
                Some(_) => format!("{id} OFFLINE"),
                None => format!("{id} ?"),
            }
        });
        let share = room.occupancy as f64 / f64::from(room.capacity.max(1));
        let filled = ((share.min(1.0)) * 20.0).round() as usize;
        out.push_str(&format!(
            "{} {:>4}/{:<4}  {:<20} {:>13}  {}\n",
            pad(name, 34),
            room.occupancy,
            room.capacity,
            "█".repeat(filled) + &"·".repeat(20 - filled),
            room.entries_today,
            status
        ));
    }
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{out}");
    let _ = stdout.flush();
}

/// `s` cut or padded to exactly `width` terminal columns (room names are often Chinese).
fn pad(s: &str, width: usize) -> String {
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = char_width(c);
        if used + w > width.saturating_sub(1) && display_width(s) > width {
            out.push('…');
            used += 1;
            break;
        }
        out.push(c);
        used += w;
    }
    out.push_str(&" ".repeat(width.saturating_sub(used)));
    out
}

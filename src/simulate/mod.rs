//! Simulated people counters with ground truth, for the demo and the tests.
//!
//! `hallgate simulate` stands in for the hall's devices: for every Modbus TCP counter in the
//! config it serves, at the configured address, the register map of the counter's profile,
//! with cumulative totals that grow as seeded simulated visitors walk through the doors; the
//! Modbus RTU counters of each `[[buses]]` entry answer as slaves on the device side of a pty
//! pair ([`serial`]). What the visitors really did is written to a truth file, so a test can
//! compare the gateway's figures with the facts.
//!
//! This module is the async shell: sockets, timers and the truth file. The decisions are in
//! pure parts: [`traffic`] (who crosses which door when), [`registers`] (totals to registers,
//! and a device's answer to a read), [`rtu`] (RTU framing and line noise) and `truth` (the JSON
//! lines).
//!
//! A run goes: bind every listener and open every bus's device side (or fail naming the
//! counter or bus) → serve unchanging counters for the warm-up (and, with a start file, until
//! that file exists) → play the traffic in real time
//! → at the end of the duration (or on shutdown) write the final truth line → keep serving the
//! frozen totals until shutdown.
//!
//! [`terminals`] (`hallgate simulate-terminals`) plays the face/temperature terminals over MQTT,
//! [`http_terminals`] the ones that push to the gateway over HTTP or are pulled by it.

pub mod accuracy;
pub mod backlog;
pub mod camera;
pub mod cli;
pub mod day;
pub mod http_terminals;
pub mod registers;
pub mod replay;
pub mod rtu;
pub mod serial;
pub mod stream;
pub mod terminals;
pub mod traffic;
mod truth;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep, sleep_until};
use tokio_modbus::server::tcp::Server;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_util::sync::CancellationToken;

use crate::config::profile::FunctionCode;
use crate::config::{Config, CounterTransport};

use registers::SimulatedCounter;
use serial::{SerialBus, SerialError, SocatPair};
use stream::StreamDevice;
use traffic::{Crossing, CrossingTally, Traffic, TrafficError, TrafficOptions};
use truth::{CrossingLine, FinalLine, TruthWriter};

/// How the simulated hall behaves.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    pub seed: u64,
    pub truth: Option<PathBuf>,
    pub duration: Option<Duration>,
    pub warmup: Duration,
    pub arrivals_per_min: f64,
    pub mean_dwell: Duration,
    /// The device side of each bus's pty pair, by bus id. A bus with simulated counters and
    /// no entry gets a pair made with socat (see [`serial`]).
    pub serial_peers: BTreeMap<String, PathBuf>,
    /// Random bytes per second sent on every simulated bus between answers; 0 for a clean
    /// line.
    pub serial_noise_bytes_per_sec: u32,
    /// Hold the traffic, once the warm-up is over, until this file exists. A test harness
    /// creates it when the gateway has taken every counter's baseline, so a gateway slow to
    /// start on a loaded machine cannot miss the first crossings.
    pub start_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error(transparent)]
    Traffic(#[from] TrafficError),
    /// `counters` names every counter served at the address, comma-separated.
    #[error("cannot listen for counter {counters} on {address}: {error}")]
    Listen {
        counters: String,
        address: SocketAddr,
        error: io::Error,
    },
    #[error("cannot write truth file {path}: {error}")]
    Truth { path: PathBuf, error: io::Error },
    #[error(
        "--serial-peer names \"{bus}\", which is neither a bus nor a serial_stream counter of the config"
    )]
    UnknownBus { bus: String },
    #[error(transparent)]
    Serial(#[from] SerialError),
}

/// Starting totals come from their own random stream, so that adding a counter to a config
/// does not change the visitors' behaviour for the same seed.
const STARTING_TOTALS_STREAM: u64 = 0x5EED_C0DE_0A7E_0001;

/// Line noise has a random stream of its own (per bus, mixed with the bus index), for the same
/// reason: turning noise on must not change the visitors.
const NOISE_STREAM: u64 = 0x5EED_C0DE_0A7E_0002;

/// How often the progress line is logged while the traffic runs.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// How often buffered truth lines are flushed, so a reader is never far behind.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Most crossings played in one go before the timers and shutdown get a look in; only
/// reached when the playback has fallen behind (a very high arrival rate).
const PLAYBACK_BATCH: usize = 256;

/// Pause before accepting again after the listener failed to accept (e.g. out of file
/// descriptors), so a persistent failure does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

type SharedCounter = Arc<Mutex<SimulatedCounter>>;

/// A counter's state is a few integers changed in one statement; a panic elsewhere while the
/// lock was held cannot have left it half-updated, so a poisoned lock is still good to use.
fn lock(counter: &SharedCounter) -> MutexGuard<'_, SimulatedCounter> {
    counter.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The Modbus service of one listening address or one bus: its counters, by unit id.
#[derive(Debug, Clone)]
struct Units(Arc<Vec<(u8, SharedCounter)>>);

impl Units {
    fn counter(&self, unit: u8) -> Option<&SharedCounter> {
        self.0
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, counter)| counter)
    }

    fn answer(&self, request: SlaveRequest<'static>) -> Result<Response, ExceptionCode> {
        let Some(counter) = self.counter(request.slave) else {
            // What a Modbus TCP gateway says for a unit behind it that does not answer: the
            // gateway under test is asking the wrong unit id.
            return Err(ExceptionCode::GatewayTargetDevice);
        };
        let mut counter = lock(counter);
        match request.request {
            Request::ReadHoldingRegisters(address, count) => counter
                .read(FunctionCode::HoldingRegisters, address, count)
                .map(Response::ReadHoldingRegisters),
            Request::ReadInputRegisters(address, count) => counter
                .read(FunctionCode::InputRegisters, address, count)
                .map(Response::ReadInputRegisters),
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }
}

impl tokio_modbus::server::Service for Units {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, request: Self::Request) -> Self::Future {
        std::future::ready(self.answer(request))
    }
}

/// One bound address and the counters served there.
#[derive(Debug)]
struct Listener {
    tcp: TcpListener,
    local: SocketAddr,
    units: Units,
}

/// A simulation whose listeners are bound, ready to [`run`](Simulation::run).
///
/// Binding first lets a caller put `127.0.0.1:0` in the config and learn the ports the
/// system chose from [`counter_addresses`](Simulation::counter_addresses) before starting the
/// gateway, with no window in which another process could take them.
#[derive(Debug)]
pub struct Simulation {
    config: Config,
    options: SimulateOptions,
    traffic: Traffic,
    /// By counter index.
    counters: Vec<SharedCounter>,
    /// Where each counter is served, by counter index.
    addresses: Vec<SocketAddr>,
    /// The counter on each door, by door index.
    door_counter: Vec<Option<usize>>,
    listeners: Vec<Listener>,
    buses: Vec<SerialBus>,
    streams: Vec<StreamDevice>,
    /// Pairs made with socat; dropping them kills socat.
    pairs: Vec<SocatPair>,
    /// People-counting cameras that push to the gateway's HTTP listener.
    cameras: Vec<camera::CountingCamera>,
}

impl Simulation {
    /// Checks the options, seeds the counters, binds a listener for every counter address and
    /// opens the device side of every bus. Counters sharing an address share its listener and
    /// are told apart by unit id, as are the counters of one bus.
    pub async fn bind(config: &Config, options: SimulateOptions) -> Result<Self, SimulateError> {
        let traffic = Traffic::new(
            config,
            &TrafficOptions {
                seed: options.seed,
                arrivals_per_min: options.arrivals_per_min,
                mean_dwell: options.mean_dwell,
                duration: options.duration,
            },
        )?;

        let mut rng = StdRng::seed_from_u64(options.seed ^ STARTING_TOTALS_STREAM);
        let counters: Vec<SharedCounter> = config
            .counters
            .iter()
            .map(|c| {
                let in_total = registers::starting_total(&c.profile, &mut rng);
                let out_total = registers::starting_total(&c.profile, &mut rng);
                let counter = SimulatedCounter::new(c.profile.clone(), in_total, out_total);
                Arc::new(Mutex::new(counter))
            })
            .collect();
        let mut door_counter = vec![None; config.doors.len()];
        for (i, c) in config.counters.iter().enumerate() {
            door_counter[c.door] = Some(i);
        }

        // Group the counters by configured address, in config order. Port 0 means "any free
        // port" and is never shared: each such counter gets a listener of its own.
        let mut groups: Vec<(SocketAddr, Vec<(usize, u8)>)> = Vec::new();
        for (i, c) in config.counters.iter().enumerate() {
            // Serial counters are served on their pty pairs (see `serial`), not here.
            let CounterTransport::ModbusTcp { address, unit_id } = c.transport else {
                continue;
            };
            match groups
                .iter_mut()
                .find(|(a, _)| *a == address && address.port() != 0)
            {
                Some((_, members)) => members.push((i, unit_id)),
                None => groups.push((address, vec![(i, unit_id)])),
            }
        }

        // Every listener is bound before anything is served, so a clash is reported before
        // the simulation has started at all.
        let mut listeners = Vec::with_capacity(groups.len());
        let mut addresses = vec![SocketAddr::from(([0, 0, 0, 0], 0)); config.counters.len()];
        for (address, members) in groups {
            let names = || {
                members
                    .iter()
                    .map(|&(i, _)| config.counters[i].id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let listen_error = |error: io::Error| SimulateError::Listen {
                counters: names(),
                address,
                error,
            };
            let tcp = TcpListener::bind(address).await.map_err(listen_error)?;
            let local = tcp.local_addr().map_err(listen_error)?;
            for &(i, unit_id) in &members {
                addresses[i] = local;
                let (in_total, out_total) = lock(&counters[i]).totals();
                tracing::info!(
                    counter = %config.counters[i].id,
                    address = %local,
                    unit_id,
                    profile = %config.counters[i].profile.name,
                    in_total,
                    out_total,
                    "serving simulated counter"
                );
            }
            let units = members
                .iter()
                .map(|&(i, unit_id)| (unit_id, Arc::clone(&counters[i])))
                .collect();
            listeners.push(Listener {
                tcp,
                local,
                units: Units(Arc::new(units)),
            });
        }

        let (buses, mut pairs) = open_buses(config, &options, &counters).await?;
        let streams = open_streams(config, &options, &counters, &mut pairs).await?;
        let cameras = config
            .counters
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match (&c.transport, &config.terminal_http) {
                (CounterTransport::HttpPush { login, .. }, Some(http)) => {
                    tracing::info!(counter = %c.id, target = %http.listen, "simulated counting camera pushes its totals");
                    Some(camera::CountingCamera {
                        id: c.id.clone(),
                        counter: Arc::clone(&counters[i]),
                        target: http.listen,
                        login: login
                            .as_ref()
                            .map(|(u, s)| (u.clone(), s.expose().to_string())),
                    })
                }
                _ => None,
            })
            .collect();

        Ok(Simulation {
            config: config.clone(),
            options,
            traffic,
            counters,
            addresses,
            door_counter,
            listeners,
            buses,
            streams,
            pairs,
            cameras,
        })
    }

    /// Each served bus's id and the device side the simulator answers on, in config order.
    pub fn bus_device_sides(&self) -> Vec<(String, PathBuf)> {
        self.buses
            .iter()
            .map(|b| (b.id.clone(), b.path().to_path_buf()))
            .collect()
    }

    /// Each counter's id and the address it is served at (with the system's port where the
    /// config said port 0), in config order.
    pub fn counter_addresses(&self) -> Vec<(String, SocketAddr)> {
        self.config
            .counters
            .iter()
            .zip(&self.addresses)
            .map(|(c, &a)| (c.id.clone(), a))
            .collect()
    }

    /// Serves the counters, plays the traffic and writes the truth, then keeps serving the
    /// final totals until `shutdown`. Returns `Ok` on shutdown.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), SimulateError> {
        let Simulation {
            config,
            options,
            traffic,
            counters,
            addresses: _,
            door_counter,
            listeners,
            buses,
            streams,
            pairs,
            cameras,
        } = self;

        let truth = match &options.truth {
            Some(path) => Some(TruthWriter::create(path)?),
            None => None,
        };

        let mut servers = JoinSet::new();
        for listener in listeners {
            servers.spawn(serve(listener));
        }
        for bus in buses {
            servers.spawn(serial::serve(bus));
        }
        for device in streams {
            servers.spawn(stream::serve(device));
        }
        let cameras_stop = shutdown.child_token();
        for camera in cameras {
            servers.spawn(camera.run(cameras_stop.clone()));
        }

        let mut playback = Playback {
            config: &config,
            counters: &counters,
            door_counter: &door_counter,
            tally: CrossingTally::new(config.rooms.len(), config.doors.len()),
            truth,
        };
        let result = playback.play(traffic, &options, &shutdown).await;
        if result.is_ok() {
            // The counters hold their final totals until the process is stopped, so a
            // gateway polling them settles on the truth.
            shutdown.cancelled().await;
        }
        servers.shutdown().await;
        // Only now that nothing serves on them: the pairs made here go with socat.
        drop(pairs);
        result
    }
}

/// Opens the device side of every streaming serial counter: its `--serial-peer`, or one side
/// of a pair made here with socat.
async fn open_streams(
    config: &Config,
    options: &SimulateOptions,
    counters: &[SharedCounter],
    pairs: &mut Vec<SocatPair>,
) -> Result<Vec<StreamDevice>, SimulateError> {
    let mut devices = Vec::new();
    for (i, c) in config.counters.iter().enumerate() {
        let CounterTransport::SerialStream { serial, format } = &c.transport else {
            continue;
        };
        let path = match options.serial_peers.get(&c.id) {
            Some(path) => path.clone(),
            None => {
                let pair = SocatPair::create(&c.id, &serial.port).await?;
                let path = pair.device_side().to_path_buf();
                pairs.push(pair);
                path
            }
        };
        let (in_total, out_total) = lock(&counters[i]).totals();
        tracing::info!(
            counter = %c.id,
            device_side = %path.display(),
            format = %format.name,
            in_total,
            out_total,
            "serving simulated streaming counter"
        );
        devices.push(StreamDevice::open(
            &c.id,
            serial,
            path,
            format.clone(),
            Arc::clone(&counters[i]),
        )?);
    }
    Ok(devices)
}

/// Opens the device side of every bus that has simulated counters: the `--serial-peer` given
/// for it, or one side of a pair made here with socat.
async fn open_buses(
    config: &Config,
    options: &SimulateOptions,
    counters: &[SharedCounter],
) -> Result<(Vec<SerialBus>, Vec<SocatPair>), SimulateError> {
    if let Some(bus) = options.serial_peers.keys().find(|id| {
        !config.buses.iter().any(|b| &b.id == *id)
            && !config.counters.iter().any(|c| {
                &c.id == *id && matches!(c.transport, CounterTransport::SerialStream { .. })
            })
    }) {
        return Err(SimulateError::UnknownBus { bus: bus.clone() });
    }
    let (mut buses, mut pairs) = (Vec::new(), Vec::new());
    for (b, bus) in config.buses.iter().enumerate() {
        let members: Vec<(usize, u8)> = config
            .counters
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match c.transport {
                CounterTransport::ModbusRtu { bus, unit_id } if bus == b => Some((i, unit_id)),
                _ => None,
            })
            .collect();
        if members.is_empty() {
            continue;
        }
        let path = match options.serial_peers.get(&bus.id) {
            Some(path) => path.clone(),
            None => {
                let pair = SocatPair::create(&bus.id, &bus.serial.port).await?;
                let path = pair.device_side().to_path_buf();
                pairs.push(pair);
                path
            }
        };
        let units = members
            .iter()
            .map(|&(i, unit_id)| (unit_id, Arc::clone(&counters[i])))
            .collect();
        let noise = rtu::NoiseSource::new(
            options.seed ^ NOISE_STREAM ^ b as u64,
            options.serial_noise_bytes_per_sec,
        );
        let opened = SerialBus::open(&bus.id, &bus.serial, &path, Units(Arc::new(units)), noise)?;
        for &(i, unit_id) in &members {
            let (in_total, out_total) = lock(&counters[i]).totals();
            tracing::info!(
                counter = %config.counters[i].id,
                bus = %bus.id,
                device_side = %path.display(),
                unit_id,
                profile = %config.counters[i].profile.name,
                in_total,
                out_total,
                "serving simulated counter"
            );
        }
        if options.serial_noise_bytes_per_sec > 0 {
            tracing::info!(
                bus = %bus.id,
                bytes_per_sec = options.serial_noise_bytes_per_sec,
                "sending random noise on the bus between answers"
            );
        }
        buses.push(opened);
    }
    Ok((buses, pairs))
}

/// Runs a simulation of `config`'s counters until `shutdown`; see [`Simulation`].
pub async fn run(
    config: &Config,
    options: SimulateOptions,
    shutdown: CancellationToken,
) -> Result<(), SimulateError> {
    Simulation::bind(config, options).await?.run(shutdown).await
}

/// Accepts Modbus TCP connections on one listener for as long as the task runs.
async fn serve(listener: Listener) {
    let Listener { tcp, local, units } = listener;
    let server = Server::new(tcp);
    let on_connected = move |stream: TcpStream, _peer: SocketAddr| {
        let units = units.clone();
        async move { Ok::<_, io::Error>(Some((units, stream))) }
    };
    loop {
        let on_process_error = move |error: io::Error| {
            tracing::debug!(address = %local, error = %error, "modbus client connection ended with an error");
        };
        // `serve` returns only when accepting fails; the listener is still good, so carry on.
        if let Err(error) = server.serve(&on_connected, on_process_error).await {
            tracing::warn!(address = %local, error = %error, "cannot accept a modbus connection; retrying");
            sleep(ACCEPT_RETRY).await;
        }
    }
}

/// Plays crossings onto the counters and into the truth file.
struct Playback<'a> {
    config: &'a Config,
    counters: &'a [SharedCounter],
    door_counter: &'a [Option<usize>],
    /// The crossings actually played (the model has always decided one more than that).
    tally: CrossingTally,
    truth: Option<TruthWriter>,
}

impl Playback<'_> {
    /// Waits out the warm-up, plays the traffic until the duration ends or `shutdown`, then
    /// writes the final truth line. Either way the final line is written, so an interrupted
    /// run still leaves a usable truth file.
    async fn play(
        &mut self,
        mut traffic: Traffic,
        options: &SimulateOptions,
        shutdown: &CancellationToken,
    ) -> Result<(), SimulateError> {
        // A start too far away to represent never comes; only shutdown ends the wait.
        let start = Instant::now().checked_add(options.warmup);
        if !options.warmup.is_zero() {
            tracing::info!(
                warmup_secs = options.warmup.as_secs_f64(),
                "serving unchanging counters before the traffic starts"
            );
        }
        let started = tokio::select! {
            _ = shutdown.cancelled() => None,
            _ = until(start) => start,
        };
        let started = match (started, &options.start_file) {
            (Some(warm), Some(file)) => tokio::select! {
                _ = shutdown.cancelled() => None,
                held = hold_until_exists(file) => Some(if held { Instant::now() } else { warm }),
            },
            (started, _) => started,
        };
        if let Some(start) = started {
            tracing::info!(
                seed = options.seed,
                arrivals_per_min = options.arrivals_per_min,
                mean_dwell_secs = options.mean_dwell.as_secs_f64(),
                duration_secs = options.duration.map(|d| d.as_secs_f64()),
                "traffic started"
            );
            self.play_from(start, &mut traffic, options.duration, shutdown)
                .await?;
        }
        if let Some(truth) = &mut self.truth {
            truth.finish(&FinalLine::new(self.config, &self.tally))?;
        }
        tracing::info!(
            crossings = self.tally.crossings,
            inside = self.tally.inside(),
            turned_away = traffic.turned_away(),
            "traffic stopped; the counters keep their totals"
        );
        Ok(())
    }

    async fn play_from(
        &mut self,
        start: Instant,
        traffic: &mut Traffic,
        duration: Option<Duration>,
        shutdown: &CancellationToken,
    ) -> Result<(), SimulateError> {
        let end = duration.and_then(|d| start.checked_add(d));
        let due = |c: &Crossing| start.checked_add(c.offset);
        let mut flush = interval_at(start + FLUSH_EVERY, FLUSH_EVERY);
        flush.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut progress = interval_at(start + PROGRESS_EVERY, PROGRESS_EVERY);
        progress.set_missed_tick_behavior(MissedTickBehavior::Delay);

        let mut pending = traffic.next();
        loop {
            // Play everything already due, in bounded batches.
            let now = Instant::now();
            let mut played = 0;
            while let Some(crossing) = pending {
                if played == PLAYBACK_BATCH || due(&crossing).is_none_or(|at| at > now) {
                    break;
                }
                self.apply(&crossing)?;
                pending = traffic.next();
                played += 1;
            }
            // With no crossing left the traffic is over at the end of the duration (never,
            // without one); the model runs dry early only when nobody can come any more.
            let wake = match &pending {
                Some(crossing) => due(crossing),
                None => end,
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                _ = flush.tick() => {
                    if let Some(truth) = &mut self.truth {
                        truth.flush()?;
                    }
                }
                _ = progress.tick() => tracing::info!(
                    crossings = self.tally.crossings,
                    inside = self.tally.inside(),
                    "traffic running"
                ),
                _ = until(wake) => {
                    if pending.is_none() {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn apply(&mut self, crossing: &Crossing) -> Result<(), SimulateError> {
        self.tally.apply(crossing);
        let counter = self.door_counter[crossing.door];
        if let Some(i) = counter {
            lock(&self.counters[i]).record(crossing.direction);
        }
        if let Some(truth) = &mut self.truth {
            let id = counter.map(|i| self.config.counters[i].id.as_str());
            truth.crossing(&CrossingLine::new(
                self.config,
                id,
                crossing,
                SystemTime::now(),
            ))?;
        }
        Ok(())
    }
}

/// How often the start file is looked for while the traffic is held.
const START_FILE_POLL: Duration = Duration::from_millis(20);

/// Returns once `file` exists: at once (false) if it already did, else (true) when it appears.
async fn hold_until_exists(file: &Path) -> bool {
    if file.exists() {
        return false;
    }
    tracing::info!(
        start_file = %file.display(),
        "holding the traffic until the start file exists"
    );
    while !file.exists() {
        sleep(START_FILE_POLL).await;
    }
    true
}

/// Sleeps until `at`, or for ever when there is no such instant.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;

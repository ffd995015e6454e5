//! Simulated RS-485 buses: Modbus RTU slaves on the device side of a pty pair.
//!
//! For every `[[buses]]` entry with simulated counters on it, the simulator opens the *device
//! side* of a pty pair and answers there, by unit id, for the bus's counters: the same
//! [`SimulatedCounter`](super::registers::SimulatedCounter)s the traffic moves and the truth
//! file describes, so the gateway polling the other side (the bus's configured `port`) is
//! checked against the same ground truth as over Modbus TCP. The device side is either given
//! (`--serial-peer BUS_ID=PATH`, a pair the caller made and may destroy) or made here:
//! `socat` links `<port>` for the gateway and `<port>.device` for the simulator, and is killed
//! when the simulator stops.
//!
//! What the line does, and what the simulated slaves do about it:
//!
//! - **A unit nobody serves.** A request addressed to it gets no answer at all, as on a real
//!   bus where that slave is dead or missing; an exception would be a live slave saying no.
//! - **Unplug.** When the device side fails (the pair was destroyed), the serving task closes
//!   it and re-opens the same path every [`REOPEN_EVERY`] until it is back; the traffic and
//!   the totals go on meanwhile, as people keep walking through doors whose counters have lost
//!   their cable.
//! - **Noise.** With `--serial-noise-bytes-per-sec`, seeded junk goes out on the line in
//!   bursts. The one task that owns the port writes it, so it always falls between two answers
//!   and never inside one: the gateway sees corrupt frames, never a good answer with a byte
//!   changed. A slave answers after a short `TURNAROUND`, as real ones do, so junk can also
//!   come between a request and its answer.
//!
//! Why not tokio-modbus's `server::rtu::Server`: it owns the port, so nothing else can be
//! written on the line between its answers, and it stops at the first request it cannot
//! decode, where a real slave resynchronises and carries on. The framing it would do is the
//! few lines in [`super::rtu`].

use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, sleep};
use tokio_serial::SerialStream;

use super::rtu::{self, NoiseSource, RequestFramer};
use super::{Units, lock, until};
use crate::config::SerialSettings;

/// How often a vanished device side is looked for again.
pub const REOPEN_EVERY: Duration = Duration::from_millis(200);

/// Appended to a bus's `port` for the simulator's side of a pair it makes itself.
pub const DEVICE_SIDE_SUFFIX: &str = ".device";

/// How long socat may take to create a pair's links.
const SOCAT_START_LIMIT: Duration = Duration::from_secs(5);

/// Silence after which an unfinished frame is junk. Modbus says 3.5 characters, but a pty
/// delivers bytes on the scheduler's clock, not the baud rate's. A master writes a request in
/// one go, so its bytes arrive together; what still waits for its end after this long never
/// gets one.
const FRAME_SILENCE: Duration = Duration::from_millis(20);

/// How long a slave takes to answer. Real counters take a few milliseconds to turn a request
/// round; it is also the moment when noise on the line can get in front of an answer, which
/// junk sent while the master is idle cannot (a master may discard what arrived unasked).
const TURNAROUND: Duration = Duration::from_millis(4);

/// Most bytes taken from the port per read; more than the longest frame.
const READ_CHUNK: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    #[error(
        "cannot create the pty pair of bus {bus}: socat is not installed (apt-get install socat); \
         or make the pair yourself and pass --serial-peer {bus}=PATH"
    )]
    SocatMissing { bus: String },
    #[error(
        "cannot make a pty pair for bus {bus}: {path} already exists; remove it, or pass \
         --serial-peer {bus}=PATH with the device side of the pair that is there"
    )]
    PathTaken { bus: String, path: PathBuf },
    #[error("cannot start socat for the pty pair of bus {bus}: {error}")]
    Socat { bus: String, error: io::Error },
    #[error(
        "socat exited ({status}) before linking the pty pair of bus {bus} at {gateway_side} and \
         {device_side}; its messages are above"
    )]
    SocatExited {
        bus: String,
        status: ExitStatus,
        gateway_side: PathBuf,
        device_side: PathBuf,
    },
    #[error(
        "socat did not link the pty pair of bus {bus} at {gateway_side} and {device_side} within \
         {limit:?}"
    )]
    SocatSlow {
        bus: String,
        gateway_side: PathBuf,
        device_side: PathBuf,
        limit: Duration,
    },
    #[error("cannot open {path}, the device side of bus {bus}: {error}")]
    Open {
        bus: String,
        path: PathBuf,
        error: tokio_serial::Error,
    },
}

/// A pty pair made by `socat` for a bus that was given no `--serial-peer`; killed, and its
/// links removed, when dropped.
#[derive(Debug)]
pub struct SocatPair {
    child: Child,
    gateway_side: PathBuf,
    device_side: PathBuf,
}

impl SocatPair {
    /// Starts `socat` linking `gateway_side` and `gateway_side` + [`DEVICE_SIDE_SUFFIX`], and
    /// waits until both links exist.
    pub async fn create(bus: &str, gateway_side: &Path) -> Result<Self, SerialError> {
        let mut device_side = gateway_side.as_os_str().to_owned();
        device_side.push(DEVICE_SIDE_SUFFIX);
        let device_side = PathBuf::from(device_side);
        // socat replaces whatever is at a link path. Something that is there and alive (a real
        // adapter's by-id link, a pair another process serves) is not ours to replace; a
        // dangling link is what a killed socat leaves, and would only fool the wait below.
        for link in [gateway_side, device_side.as_path()] {
            if link.exists() {
                return Err(SerialError::PathTaken {
                    bus: bus.into(),
                    path: link.to_path_buf(),
                });
            }
            if link.symlink_metadata().is_ok() {
                tracing::info!(bus, link = %link.display(), "removing a dangling pty link");
                let _ = std::fs::remove_file(link);
            }
        }
        let end = |path: &Path| {
            let mut arg = std::ffi::OsString::from("pty,raw,echo=0,link=");
            arg.push(path);
            arg
        };
        let child = Command::new("socat")
            .args([
                "-d".into(),
                "-d".into(),
                end(gateway_side),
                end(&device_side),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Its notices (which /dev/pts the links point to) belong in the simulator's log.
            .stderr(Stdio::inherit())
            // Its own process group: a Ctrl-C meant for the simulator (or the demo) must not
            // tear the line down under it; the simulator stops socat itself, in order.
            .process_group(0)
            .spawn()
            .map_err(|error| match error.kind() {
                io::ErrorKind::NotFound => SerialError::SocatMissing { bus: bus.into() },
                _ => SerialError::Socat {
                    bus: bus.into(),
                    error,
                },
            })?;
        // From here on, an early return kills socat through `drop`.
        let mut pair = SocatPair {
            child,
            gateway_side: gateway_side.to_path_buf(),
            device_side,
        };
        let deadline = Instant::now() + SOCAT_START_LIMIT;
        loop {
            if pair.gateway_side.exists() && pair.device_side.exists() {
                tracing::info!(
                    bus,
                    gateway_side = %pair.gateway_side.display(),
                    device_side = %pair.device_side.display(),
                    "made a pty pair for the bus with socat"
                );
                return Ok(pair);
            }
            if let Ok(Some(status)) = pair.child.try_wait() {
                return Err(SerialError::SocatExited {
                    bus: bus.into(),
                    status,
                    gateway_side: pair.gateway_side.clone(),
                    device_side: pair.device_side.clone(),
                });
            }
            if Instant::now() >= deadline {
                return Err(SerialError::SocatSlow {
                    bus: bus.into(),
                    gateway_side: pair.gateway_side.clone(),
                    device_side: pair.device_side.clone(),
                    limit: SOCAT_START_LIMIT,
                });
            }
            sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn device_side(&self) -> &Path {
        &self.device_side
    }
}

impl Drop for SocatPair {
    fn drop(&mut self) {
        // SIGKILL leaves socat no chance to remove its links; do it for it, touching only
        // symlinks, so a real device at the path could never be removed.
        let _ = self.child.kill();
        let _ = self.child.wait();
        for link in [&self.gateway_side, &self.device_side] {
            if link.symlink_metadata().is_ok_and(|m| m.is_symlink()) {
                let _ = std::fs::remove_file(link);
            }
        }
    }
}

/// One simulated bus, its device side open, ready to [`serve`].
#[derive(Debug)]
pub(super) struct SerialBus {
    pub id: String,
    serial: SerialSettings,
    /// The device side of the pair.
    path: PathBuf,
    port: Option<SerialStream>,
    units: Units,
    noise: Option<NoiseSource>,
}

impl SerialBus {
    /// Opens the device side at `path` now, so a wrong path fails the simulator at start and
    /// not silently later.
    pub(super) fn open(
        id: &str,
        serial: &SerialSettings,
        path: &Path,
        units: Units,
        noise: Option<NoiseSource>,
    ) -> Result<Self, SerialError> {
        let port = open(serial, path).map_err(|error| SerialError::Open {
            bus: id.into(),
            path: path.to_path_buf(),
            error,
        })?;
        Ok(SerialBus {
            id: id.into(),
            serial: serial.clone(),
            path: path.to_path_buf(),
            port: Some(port),
            units,
            noise,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Serves the bus's slaves for as long as the task runs, re-opening the device side whenever
/// it fails.
pub(super) async fn serve(mut bus: SerialBus) {
    let mut framer = RequestFramer::new(FRAME_SILENCE);
    // Whether the device side has failed before: a later open is a recovery worth a line.
    let mut lost = false;
    loop {
        let port = match bus.port.take() {
            Some(port) => Ok(port),
            None => open(&bus.serial, &bus.path),
        };
        match port {
            Ok(port) => {
                if lost {
                    tracing::info!(
                        bus = %bus.id,
                        path = %bus.path.display(),
                        "device side of the bus is back; serving again"
                    );
                }
                let reason = serve_port(&mut bus, port, &mut framer).await;
                tracing::warn!(
                    bus = %bus.id,
                    path = %bus.path.display(),
                    %reason,
                    "device side of the bus failed; closed it, the traffic goes on, \
                     re-opening it when it is back"
                );
                lost = true;
            }
            Err(error) => tracing::debug!(
                bus = %bus.id,
                path = %bus.path.display(),
                %error,
                "device side of the bus is still gone"
            ),
        }
        sleep(REOPEN_EVERY).await;
    }
}

/// Answers requests on `port` (and sends noise between answers) until the port fails; returns
/// why. Dropping `port` on return closes the descriptor.
async fn serve_port(
    bus: &mut SerialBus,
    mut port: SerialStream,
    framer: &mut RequestFramer,
) -> String {
    let mut input = [0u8; READ_CHUNK];
    let mut next_noise = bus.noise.as_mut().map(|noise| {
        let (wait, bytes) = noise.next_burst();
        (Instant::now() + wait, bytes)
    });
    // The answer being prepared, and when it goes out. One at a time, as on a real bus: a
    // request that arrives meanwhile waits in the framer.
    let mut answer: Option<(Instant, Vec<u8>)> = None;
    loop {
        while answer.is_none()
            && let Some(request) = framer.next_request()
        {
            // Ours or nobody's: a unit not served here stays silent, like a dead slave.
            if let Some(counter) = bus.units.counter(request.unit) {
                let frame = rtu::answer(&request, &mut lock(counter));
                answer = Some((Instant::now() + TURNAROUND, frame));
            }
        }
        tokio::select! {
            read = port.read(&mut input) => match read {
                // A pty reads end-of-file once the other end is gone.
                Ok(0) => return "the pty pair is gone (end of file)".to_string(),
                Ok(n) => framer.push(&input[..n], std::time::Instant::now()),
                Err(error) => return format!("read failed: {error}"),
            },
            () = until(answer.as_ref().map(|(at, _)| *at)) => {
                if let Some((_, frame)) = answer.take()
                    && let Err(error) = port.write_all(&frame).await
                {
                    return format!("write failed: {error}");
                }
            }
            () = until(next_noise.as_ref().map(|(at, _)| *at)) => {
                if let Some((_, bytes)) = next_noise.take()
                    && let Err(error) = port.write_all(&bytes).await
                {
                    return format!("write failed: {error}");
                }
                next_noise = bus.noise.as_mut().map(|noise| {
                    let (wait, bytes) = noise.next_burst();
                    (Instant::now() + wait, bytes)
                });
            }
        }
    }
}

/// Opens a device side, naming what it is for in the error.
pub(super) fn open_device_side(
    id: &str,
    serial: &SerialSettings,
    path: &Path,
) -> Result<SerialStream, SerialError> {
    open(serial, path).map_err(|error| SerialError::Open {
        bus: id.into(),
        path: path.to_path_buf(),
        error,
    })
}

fn open(serial: &SerialSettings, path: &Path) -> Result<SerialStream, tokio_serial::Error> {
    // A pty ignores line settings, but a real adapter on the device side would not.
    crate::devices::modbus_rtu::open_serial(serial, path)
}

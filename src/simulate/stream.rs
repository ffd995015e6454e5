//! Simulated streaming serial counters: a counter that prints its totals on a serial line of
//! its own (Terabee Evo frames, or ASCII lines), on the device side of a pty pair.
//!
//! The totals are those of the same [`SimulatedCounter`](super::registers::SimulatedCounter)
//! the traffic moves and the truth describes. The device speaks when its totals change and,
//! like the text counters that print every few seconds, repeats itself every
//! [`REPEAT_EVERY`] when nothing happens. It encodes with the gateway's own encoders
//! (`SerialFormat::encode`); the black-box test `tests/serial_stream.rs` builds its frames by
//! hand instead, so the format is also checked independently. When the device side fails (the
//! pair was destroyed), it is re-opened every [`super::serial::REOPEN_EVERY`] while the totals
//! go on.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, sleep};
use tokio_serial::SerialStream;

use super::serial::{REOPEN_EVERY, SerialError, open_device_side};
use super::{SharedCounter, lock};
use crate::config::SerialSettings;
use crate::devices::stream::{SerialFormat, SerialProfile, StreamReading};

/// How often an unchanged reading is sent again.
pub const REPEAT_EVERY: Duration = Duration::from_secs(2);

/// How often the totals are looked at for a change.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// One simulated streaming counter and its device side.
#[derive(Debug)]
pub struct StreamDevice {
    id: String,
    serial: SerialSettings,
    path: PathBuf,
    port: Option<SerialStream>,
    format: SerialProfile,
    counter: SharedCounter,
}

impl StreamDevice {
    /// Opens the device side at `path` now, so a wrong path fails the simulator at start.
    pub fn open(
        id: &str,
        serial: &SerialSettings,
        path: PathBuf,
        format: SerialProfile,
        counter: SharedCounter,
    ) -> Result<Self, SerialError> {
        let port = open_device_side(id, serial, &path)?;
        Ok(StreamDevice {
            id: id.to_string(),
            serial: serial.clone(),
            path,
            port: Some(port),
            format,
            counter,
        })
    }

    fn reading(&self) -> StreamReading {
        let (inward, outward) = lock(&self.counter).totals();
        StreamReading {
            sensor_id: Some(1),
            inward: inward % self.format.wrap_modulus,
            outward: outward % self.format.wrap_modulus,
        }
    }
}

/// Streams the counter's readings for as long as the task runs.
pub async fn serve(mut device: StreamDevice) {
    let mut lost = false;
    loop {
        let port = match device.port.take() {
            Some(port) => Some(port),
            None => open_device_side(&device.id, &device.serial, &device.path).ok(),
        };
        if let Some(port) = port {
            if lost {
                tracing::info!(counter = %device.id, path = %device.path.display(), "device side of the streaming counter is back");
            }
            let error = stream(&device, port).await;
            tracing::warn!(
                counter = %device.id,
                path = %device.path.display(),
                %error,
                "device side of the streaming counter failed; the traffic goes on, re-opening it when it is back"
            );
            lost = true;
        }
        sleep(REOPEN_EVERY).await;
    }
}

async fn stream(device: &StreamDevice, mut port: SerialStream) -> std::io::Error {
    // A text counter joined mid-line loses that line; start on a line of its own.
    if matches!(device.format.format, SerialFormat::AsciiLine(_))
        && let Err(error) = port.write_all(b"\r\n").await
    {
        return error;
    }
    let mut last: Option<StreamReading> = None;
    let mut sent_at = Instant::now();
    loop {
        let reading = device.reading();
        if last.as_ref() != Some(&reading) || sent_at.elapsed() >= REPEAT_EVERY {
            let bytes = device.format.format.encode(&reading);
            if let Err(error) = port.write_all(&bytes).await {
                return error;
            }
            last = Some(reading);
            sent_at = Instant::now();
        }
        sleep(LOOK_EVERY).await;
    }
}

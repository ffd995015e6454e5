//! Streaming serial counter driver: a counter that prints its totals on a serial line (Terabee
//! Evo frames, or text lines such as `IN=12,OUT=9`), one task per port.
//!
//! The async shell around the pure decoders of [`super::stream`]: it owns the port, feeds
//! whatever bytes arrive to the decoder, and hands each decoded reading to the counter's
//! [`CounterReporter`]. Garbage on the line is the decoder's business (it resynchronises and
//! counts); the driver copies those counts into the device statistics. When the port fails or
//! vanishes (EOF or an I/O error: an unplugged adapter), the stream is dropped — closing the
//! descriptor — and reopened at the same path with capped backoff. Cumulative totals give back
//! whatever was counted meanwhile.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use jiff::Timestamp;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::counter::{Baseline, Totals};
use super::modbus_rtu::SERIAL_REOPEN;
use super::reporter::CounterReporter;
use super::stream::{StreamDecoder, StreamStats};
use super::{DeviceEvent, DeviceStats, PollStats};
use crate::config::{Counter, SerialSettings};
use crate::devices::stream::SerialProfile;

pub struct SerialStreamCounterDriver {
    index: usize,
    serial: SerialSettings,
    format: SerialProfile,
    reporter: CounterReporter,
    stats: Arc<DeviceStats>,
}

impl SerialStreamCounterDriver {
    pub fn new(
        index: usize,
        counter: &Counter,
        (serial, format): (SerialSettings, SerialProfile),
        baseline: Option<Baseline>,
        stats: Arc<DeviceStats>,
        events: mpsc::Sender<DeviceEvent>,
    ) -> Self {
        let reporter = CounterReporter::new(index, counter, baseline, events);
        SerialStreamCounterDriver {
            index,
            serial,
            format,
            reporter,
            stats,
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = SERIAL_REOPEN;
        loop {
            let port = match super::modbus_rtu::open(&self.serial) {
                Ok(port) => port,
                Err(error) => {
                    PollStats::count(&self.stats.counters[self.index].link_errors);
                    self.reporter
                        .port_lost(format!(
                            "cannot open serial port {}: {error}",
                            self.serial.port.display()
                        ))
                        .await;
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff.next_wait()) => {}
                    }
                    continue;
                }
            };
            backoff.reset();
            tracing::info!(
                counter = %self.reporter.id(),
                port = %self.serial.port.display(),
                format = %self.format.name,
                "serial counter port open"
            );
            let Some(reason) = self.read_until_lost(port, &shutdown).await else {
                return;
            };
            PollStats::count(&self.stats.counters[self.index].link_errors);
            // The port (an adapter) is the gateway's side: no sign the device restarted.
            self.reporter.port_lost(reason).await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff.first()) => {}
            }
        }
    }

    /// Reads until the port fails (`Some(reason)`) or shutdown (`None`). The port is dropped,
    /// and so closed, on return.
    async fn read_until_lost(
        &mut self,
        mut port: tokio_serial::SerialStream,
        shutdown: &CancellationToken,
    ) -> Option<String> {
        // A fresh decoder per open: bytes from before an unplug are not half a frame of after.
        let mut decoder = StreamDecoder::new(&self.format.format);
        let mut counted = StreamStats::default();
        let mut buf = [0u8; 512];
        loop {
            let n = tokio::select! {
                _ = shutdown.cancelled() => return None,
                read = port.read(&mut buf) => match read {
                    Ok(0) => return Some(format!("serial port {} closed", self.serial.port.display())),
                    Ok(n) => n,
                    Err(error) => return Some(format!("serial port {} failed: {error}", self.serial.port.display())),
                },
            };
            let at = Timestamp::now();
            // The line answers: the device is there even before its first full reading.
            self.reporter.went_online(at).await;
            for reading in decoder.push(&buf[..n]) {
                PollStats::count(&self.stats.counters[self.index].polls);
                let totals = Totals {
                    inward: reading.inward,
                    outward: reading.outward,
                };
                self.reporter.reading(totals, at).await;
            }
            let now = decoder.stats();
            let stats = &self.stats.counters[self.index];
            let corrupt = (now.crc_errors - counted.crc_errors)
                + (now.bad_lines - counted.bad_lines)
                + (now.overlong_lines - counted.overlong_lines);
            stats.crc_errors.fetch_add(corrupt, Ordering::Relaxed);
            counted = now;
        }
    }
}

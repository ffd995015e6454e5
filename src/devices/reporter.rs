//! What every counter driver does with what it read, in one place: totals through the tracker
//! into crossings, and online/offline transitions, each reported once as a [`DeviceEvent`]
//! with one log sentence. The drivers differ only in how they reach the device.
//!
//! The reporter also keeps the evidence the tracker judges a reading with
//! ([`Evidence`]): the time since the previous reading, and whether the device was lost in
//! between (a device that reboots drops its connection or stops answering) — for a baseline
//! restored at start, what the shell knows of the time and of a power cut since it was saved
//! ([`Baseline`]). The gateway's own serial port failing
//! ([`CounterReporter::port_lost`]) says nothing of the device and is no such evidence.

use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;

use super::DeviceEvent;
use super::counter::{Baseline, CounterTracker, Counting, Evidence, Totals};
use crate::config::Counter;

#[derive(Debug)]
pub struct CounterReporter {
    /// Index into `Config::counters`.
    index: usize,
    id: String,
    counting: Counting,
    tracker: CounterTracker,
    /// `None` until the first attempt tells.
    online: Option<bool>,
    events: mpsc::Sender<DeviceEvent>,
    /// When the baseline's reading was taken; `None` for a baseline restored at start.
    last_read: Option<Timestamp>,
    /// The link was lost (or the box restarted) since the baseline's reading.
    interrupted: bool,
    /// For a baseline restored at start: the time since it was saved, judged at the first
    /// reading.
    restored_elapsed: Option<Duration>,
}

impl CounterReporter {
    /// The reporter of counter `index`, resuming from `baseline` (its last persisted totals
    /// and what is known since).
    pub fn new(
        index: usize,
        counter: &Counter,
        baseline: Option<Baseline>,
        events: mpsc::Sender<DeviceEvent>,
    ) -> Self {
        CounterReporter {
            index,
            id: counter.id.clone(),
            counting: counter.profile.counting(),
            tracker: CounterTracker::new(baseline.map(|b| b.totals)),
            online: None,
            events,
            last_read: None,
            // A gateway restart alone says nothing of the device (a crash, a reload, an
            // upgrade); a box that booted since the baseline was saved lost power, and so
            // did its counters, most likely (see `supervisor::restart_evidence`).
            interrupted: baseline.is_some_and(|b| b.since.interrupted),
            restored_elapsed: baseline.and_then(|b| b.since.elapsed),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn is_online(&self) -> bool {
        self.online == Some(true)
    }

    /// The device answered with `totals` at `at`.
    pub async fn reading(&mut self, totals: Totals, at: Timestamp) {
        self.went_online(at).await;
        let before = self.tracker.baseline();
        let evidence = Evidence {
            // A clock stepped back between the reads gives no time, not a negative one.
            elapsed: match self.last_read {
                Some(t) => Some(Duration::try_from(at.duration_since(t)).unwrap_or(Duration::ZERO)),
                None => self.restored_elapsed,
            },
            interrupted: self.interrupted,
        };
        let step = self.tracker.observe(self.counting, totals, evidence);
        self.last_read = Some(at);
        self.interrupted = false;
        match step.doubt {
            Some(_) if step.reset => tracing::warn!(
                counter = %self.id,
                previous = ?before,
                now = ?totals,
                interrupted = evidence.interrupted,
                "counter totals went backwards: the device was reset; counting on from its new totals"
            ),
            Some(doubt) => tracing::warn!(
                counter = %self.id,
                previous = ?before,
                now = ?totals,
                kind = doubt.kind.as_str(),
                limit = doubt.limit,
                hint = %doubt.hint(),
                "counter totals jumped beyond what its door can pass; nothing counted, counting on from the new totals"
            ),
            None => {}
        }
        if before != Some(totals) || step.inward > 0 || step.outward > 0 {
            self.send(DeviceEvent::CounterRead {
                counter: self.index,
                at,
                totals,
                step,
            })
            .await;
        }
    }

    pub async fn went_online(&mut self, at: Timestamp) {
        if self.online == Some(true) {
            return;
        }
        if self.online == Some(false) {
            tracing::info!(counter = %self.id, "counter is back online");
        }
        self.online = Some(true);
        self.send(DeviceEvent::DeviceOnline {
            counter: self.index,
            at,
        })
        .await;
    }

    /// The device stopped answering, refused or dropped the connection, or answered
    /// nonsense: it may be restarting, so a fall in its totals after this is a reset.
    pub async fn went_offline(&mut self, reason: String) {
        self.interrupted = true;
        self.offline(reason).await;
    }

    /// The gateway's own end of the link failed (its serial port vanished or would not open):
    /// offline, but nothing is known of the device, so a fall in its totals after this is
    /// judged by the arithmetic and the door's rate over the gap alone.
    pub async fn port_lost(&mut self, reason: String) {
        self.offline(reason).await;
    }

    async fn offline(&mut self, reason: String) {
        if self.online == Some(false) {
            tracing::debug!(counter = %self.id, %reason, "counter still offline");
            return;
        }
        tracing::warn!(
            counter = %self.id,
            %reason,
            "counter is offline; retrying in the background, other devices are unaffected"
        );
        self.online = Some(false);
        self.send(DeviceEvent::DeviceOffline {
            counter: self.index,
            at: Timestamp::now(),
            reason,
        })
        .await;
    }

    async fn send(&self, event: DeviceEvent) {
        // The receiver only goes away at shutdown, when losing the event is expected.
        let _ = self.events.send(event).await;
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::devices::counter::{Counted, DoubtKind};

    /// A u16 counter at the top of its range, as the reporter of a running gateway.
    fn reporter() -> (CounterReporter, mpsc::Receiver<DeviceEvent>) {
        let config = crate::config::parse(
            r#"
[hall]
id = "h"
district = "d"
[uplink]
broker = "mqtt://127.0.0.1:1883"
[[rooms]]
id = "lobby"
capacity = 50
[[doors]]
id = "entrance"
from = "outside"
to = "lobby"
[[counters]]
id = "c1"
door = "entrance"
profile = "generic-u16"
transport = "modbus_tcp"
address = "127.0.0.1:1502"
"#,
            Path::new("."),
            &crate::config::Overrides::default(),
        )
        .expect("a valid config");
        let (events, received) = mpsc::channel(16);
        (
            CounterReporter::new(0, &config.counters[0], None, events),
            received,
        )
    }

    fn totals(inward: u64, outward: u64) -> Totals {
        Totals { inward, outward }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_796_000_000 + secs).expect("a valid time")
    }

    /// The step of the last `CounterRead` in `events`.
    fn last_step(events: &mut mpsc::Receiver<DeviceEvent>) -> Option<Counted> {
        let mut last = None;
        while let Ok(event) = events.try_recv() {
            if let DeviceEvent::CounterRead { step, .. } = event {
                last = Some(step);
            }
        }
        last
    }

    #[tokio::test]
    async fn a_fall_after_the_device_dropped_its_connection_is_a_reset() {
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let (mut r, mut events) = reporter();
            r.reading(totals(65_530, 10), at(0)).await;
            r.went_offline("transport: connection reset by peer".into())
                .await;
            r.reading(totals(3, 10), at(5)).await;
            let step = last_step(&mut events).expect("a reading");
            assert_eq!(step.doubt.map(|d| d.kind), Some(DoubtKind::Reset));
            assert_eq!(step.inward, 3);
        })
        .await
        .expect("no hang");
    }

    #[tokio::test]
    async fn a_fall_after_the_gateways_own_port_was_lost_is_judged_by_the_door_alone() {
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let (mut r, mut events) = reporter();
            r.reading(totals(65_530, 10), at(0)).await;
            r.port_lost("serial port gone".into()).await;
            r.reading(totals(3, 10), at(5)).await;
            let step = last_step(&mut events).expect("a reading");
            assert_eq!((step.inward, step.doubt), (9, None));
        })
        .await
        .expect("no hang");
    }
}

//! What every counter driver does with what it read, in one place: totals through the tracker
//! into crossings, and online/offline transitions, each reported once as a [`DeviceEvent`]
//! with one log sentence. The drivers differ only in how they reach the device.

use jiff::Timestamp;
use tokio::sync::mpsc;

use super::DeviceEvent;
use super::counter::{CounterTracker, Counting, Totals};
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
}

impl CounterReporter {
    /// The reporter of counter `index`, resuming from `baseline` (its last persisted totals).
    pub fn new(
        index: usize,
        counter: &Counter,
        baseline: Option<Totals>,
        events: mpsc::Sender<DeviceEvent>,
    ) -> Self {
        CounterReporter {
            index,
            id: counter.id.clone(),
            counting: counter.profile.counting(),
            tracker: CounterTracker::new(baseline),
            online: None,
            events,
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
        let step = self.tracker.update(self.counting, totals);
        if step.reset {
            tracing::warn!(
                counter = %self.id,
                previous = ?before,
                now = ?totals,
                "counter totals went backwards: the device was reset; counting on from its new totals"
            );
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

    pub async fn went_offline(&mut self, reason: String) {
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

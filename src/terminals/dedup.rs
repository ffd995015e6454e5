//! Re-sent terminal events count once: a bounded set of recently seen event keys per terminal.
//!
//! Terminals re-send a record when they miss the acknowledgement, and upload their backlog
//! again after a reconnect; MQTT QoS 1 itself is at-least-once. The driver asks
//! [`Dedup::first_seen`] before handing a passage to the engine. The set is bounded twice:
//! the last `capacity_per_terminal` keys per terminal (oldest forgotten first), and at most
//! `max_terminals` terminals (the one quiet longest forgotten first), so a misbehaving
//! publisher cannot grow it without limit. It is serialisable so the caller can save it with
//! the engine state: a restart must not count the backlog a terminal re-sends twice.
//!
//! Keys are the terminal id and the vendor's event serial (or the event time, see
//! [`decode`](super::decode)) — no member ids, no names.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::TerminalId;

/// Keys remembered per terminal. A busy entrance sees a few hundred passages a day; 4096
/// covers a terminal re-uploading several days of backlog.
pub const DEFAULT_CAPACITY_PER_TERMINAL: usize = 4096;
/// Terminals remembered. A hall has a handful; the bound is against bogus publishers.
pub const DEFAULT_MAX_TERMINALS: usize = 256;

/// One event at one terminal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DedupKey {
    pub terminal: TerminalId,
    /// The vendor's event serial or record id, or `t<unix ms>` when it sends none.
    pub event: String,
}

impl fmt::Display for DedupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.terminal, self.event)
    }
}

#[derive(Debug, Clone, Default)]
struct Recent {
    /// Oldest first.
    order: VecDeque<Box<str>>,
    seen: HashSet<Box<str>>,
    /// Tick of the last lookup, to find the terminal quiet longest.
    last_used: u64,
}

/// The recent-keys set. See the module docs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "DedupState", into = "DedupState")]
pub struct Dedup {
    capacity_per_terminal: usize,
    max_terminals: usize,
    terminals: BTreeMap<TerminalId, Recent>,
    tick: u64,
}

/// Equal when they would answer every future question alike: same bounds, same keys in the
/// same order. The internal clock ticks are not part of that.
impl PartialEq for Dedup {
    fn eq(&self, other: &Self) -> bool {
        self.capacity_per_terminal == other.capacity_per_terminal
            && self.max_terminals == other.max_terminals
            && self.terminals.len() == other.terminals.len()
            && self
                .terminals
                .iter()
                .zip(&other.terminals)
                .all(|((a, ra), (b, rb))| a == b && ra.order == rb.order)
    }
}
impl Eq for Dedup {}

impl Default for Dedup {
    fn default() -> Self {
        Dedup::new(DEFAULT_CAPACITY_PER_TERMINAL, DEFAULT_MAX_TERMINALS)
    }
}

impl Dedup {
    /// An empty set with these bounds (each at least 1).
    pub fn new(capacity_per_terminal: usize, max_terminals: usize) -> Self {
        Dedup {
            capacity_per_terminal: capacity_per_terminal.max(1),
            max_terminals: max_terminals.max(1),
            terminals: BTreeMap::new(),
            tick: 0,
        }
    }

    /// True the first time `key` is seen (count it), false for a repeat (drop it). Remembers
    /// the key, forgetting the terminal's oldest one when full.
    pub fn first_seen(&mut self, key: &DedupKey) -> bool {
        self.tick += 1;
        if !self.terminals.contains_key(&key.terminal) && self.terminals.len() >= self.max_terminals
        {
            self.forget_quietest_terminal();
        }
        let recent = self.terminals.entry(key.terminal.clone()).or_default();
        recent.last_used = self.tick;
        if recent.seen.contains(key.event.as_str()) {
            return false;
        }
        let event: Box<str> = key.event.as_str().into();
        recent.seen.insert(event.clone());
        recent.order.push_back(event);
        while recent.order.len() > self.capacity_per_terminal {
            if let Some(old) = recent.order.pop_front() {
                recent.seen.remove(&old);
            }
        }
        true
    }

    /// Changes the bounds (a config reload), trimming what no longer fits.
    pub fn set_limits(&mut self, capacity_per_terminal: usize, max_terminals: usize) {
        self.capacity_per_terminal = capacity_per_terminal.max(1);
        self.max_terminals = max_terminals.max(1);
        for recent in self.terminals.values_mut() {
            while recent.order.len() > self.capacity_per_terminal {
                if let Some(old) = recent.order.pop_front() {
                    recent.seen.remove(&old);
                }
            }
        }
        while self.terminals.len() > self.max_terminals {
            self.forget_quietest_terminal();
        }
    }

    /// Keys remembered, over all terminals.
    pub fn len(&self) -> usize {
        self.terminals.values().map(|r| r.order.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn forget_quietest_terminal(&mut self) {
        let quietest = self
            .terminals
            .iter()
            .min_by_key(|(_, r)| r.last_used)
            .map(|(id, _)| id.clone());
        if let Some(id) = quietest {
            self.terminals.remove(&id);
        }
    }
}

/// The saved form: bounds, and each terminal's keys oldest first, in the order they were last
/// used (quietest first), so a restored set forgets the same terminal next.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DedupState {
    capacity_per_terminal: usize,
    max_terminals: usize,
    terminals: Vec<(TerminalId, Vec<String>)>,
}

impl From<Dedup> for DedupState {
    fn from(dedup: Dedup) -> Self {
        let mut terminals: Vec<_> = dedup.terminals.into_iter().collect();
        terminals.sort_by_key(|(_, r)| r.last_used);
        DedupState {
            capacity_per_terminal: dedup.capacity_per_terminal,
            max_terminals: dedup.max_terminals,
            terminals: terminals
                .into_iter()
                .map(|(id, r)| (id, r.order.into_iter().map(String::from).collect()))
                .collect(),
        }
    }
}

impl From<DedupState> for Dedup {
    fn from(state: DedupState) -> Self {
        let mut dedup = Dedup::new(state.capacity_per_terminal, state.max_terminals);
        for (terminal, events) in state.terminals {
            for event in events {
                dedup.first_seen(&DedupKey {
                    terminal: terminal.clone(),
                    event,
                });
            }
        }
        dedup
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(terminal: &str, event: &str) -> DedupKey {
        DedupKey {
            terminal: TerminalId::new(terminal).expect("valid id"),
            event: event.to_string(),
        }
    }

    #[test]
    fn a_resent_event_counts_once_per_terminal() {
        let mut d = Dedup::default();
        assert!(d.first_seen(&key("A", "1")));
        assert!(!d.first_seen(&key("A", "1")));
        assert!(d.first_seen(&key("B", "1")), "same serial, other terminal");
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn the_oldest_key_is_forgotten_when_a_terminal_is_full() {
        let mut d = Dedup::new(3, 8);
        for e in ["1", "2", "3", "4"] {
            assert!(d.first_seen(&key("A", e)));
        }
        assert_eq!(d.len(), 3);
        assert!(
            d.first_seen(&key("A", "1")),
            "1 was evicted, so it is new again"
        );
        assert!(!d.first_seen(&key("A", "4")));
    }

    #[test]
    fn the_quietest_terminal_is_forgotten_when_there_are_too_many() {
        let mut d = Dedup::new(10, 2);
        d.first_seen(&key("A", "1"));
        d.first_seen(&key("B", "1"));
        d.first_seen(&key("A", "2"));
        d.first_seen(&key("C", "1"));
        assert!(d.first_seen(&key("B", "1")), "B was quietest and forgotten");
        assert!(!d.first_seen(&key("C", "1")));
    }

    #[test]
    fn the_set_survives_a_save_and_restore() {
        let mut d = Dedup::new(3, 2);
        for (t, e) in [("A", "1"), ("A", "2"), ("B", "x"), ("A", "3"), ("A", "4")] {
            d.first_seen(&key(t, e));
        }
        let saved = serde_json::to_string(&d).expect("serialises");
        let mut restored: Dedup = serde_json::from_str(&saved).expect("restores");
        assert_eq!(restored, d);
        assert!(!restored.first_seen(&key("A", "4")));
        assert!(!restored.first_seen(&key("B", "x")));
        assert!(
            restored.first_seen(&key("A", "1")),
            "still evicted after restore"
        );
    }

    #[test]
    fn shrinking_the_limits_trims_the_set() {
        let mut d = Dedup::new(10, 10);
        for e in 0..10 {
            d.first_seen(&key("A", &e.to_string()));
        }
        d.first_seen(&key("B", "1"));
        d.set_limits(4, 1);
        assert_eq!(d.len(), 1, "only B, the most recent terminal, is left");
    }

    proptest! {
        /// Against a model: a key is new iff it is not among the terminal's last `cap`
        /// distinct keys (single terminal, so terminal eviction never interferes).
        #[test]
        fn first_seen_agrees_with_a_fifo_model(events in prop::collection::vec(0u8..20, 0..200), cap in 1usize..8) {
            let mut d = Dedup::new(cap, 4);
            let mut model: VecDeque<u8> = VecDeque::new();
            for e in events {
                let expected = !model.contains(&e);
                if expected {
                    model.push_back(e);
                    if model.len() > cap {
                        model.pop_front();
                    }
                }
                prop_assert_eq!(d.first_seen(&key("T", &e.to_string())), expected);
                prop_assert!(d.len() <= cap);
            }
        }
    }
}

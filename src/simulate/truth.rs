//! The ground truth: what the simulated visitors really did, as JSON lines.
//!
//! One line per crossing as it is played onto the counters, then — as soon as the traffic
//! stops — one line with the totals a test compares the gateway's figures with. The lines are
//! built from the config and the traffic's [`CrossingTally`]; [`TruthWriter`] only buffers and writes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::Config;

use super::SimulateError;
use super::traffic::{Crossing, CrossingTally};

/// One person through one door.
#[derive(Debug, Serialize)]
pub struct CrossingLine<'a> {
    /// Wall-clock time the counter counted it, Unix milliseconds.
    pub t_ms: u64,
    /// Simulated time since the traffic started; the same for the same seed.
    pub offset_ms: u64,
    pub person: u64,
    pub door: &'a str,
    /// The counter on the door; `null` for a door nobody counts.
    pub counter: Option<&'a str>,
    pub from: &'a str,
    pub to: &'a str,
    /// `in` or `out`, relative to the door's (and its counter's) `from` → `to`.
    pub direction: &'static str,
}

impl<'a> CrossingLine<'a> {
    pub fn new(
        config: &'a Config,
        counter: Option<&'a str>,
        crossing: &Crossing,
        at: SystemTime,
    ) -> Self {
        CrossingLine {
            t_ms: unix_ms(at),
            offset_ms: millis(crossing.offset),
            person: crossing.person,
            door: &config.doors[crossing.door].id,
            counter,
            from: config.zone_name(crossing.from),
            to: config.zone_name(crossing.to),
            direction: crossing.direction.as_str(),
        }
    }
}

/// IN and OUT crossings a counter saw during the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CounterCounts {
    #[serde(rename = "in")]
    pub in_count: u64,
    #[serde(rename = "out")]
    pub out_count: u64,
}

/// The totals once the traffic has stopped. Every room appears in every map, with 0 where
/// nothing happened, so a test never has to guess whether a missing key means zero.
#[derive(Debug, Serialize)]
pub struct FinalLine<'a> {
    /// People in each room when the traffic stopped.
    pub final_occupancy: BTreeMap<&'a str, u32>,
    /// Crossings into each room, through any door.
    pub entries: BTreeMap<&'a str, u64>,
    /// Crossings out of each room, through any door.
    pub exits: BTreeMap<&'a str, u64>,
    /// Crossings played, counted or not.
    pub crossings: u64,
    /// Per counter, what it counted: the difference its registers show over the run.
    pub counters: BTreeMap<&'a str, CounterCounts>,
}

impl<'a> FinalLine<'a> {
    pub fn new(config: &'a Config, tally: &CrossingTally) -> Self {
        let per_room = |values: &[u64]| -> BTreeMap<&'a str, u64> {
            config
                .rooms
                .iter()
                .zip(values)
                .map(|(room, &n)| (room.id.as_str(), n))
                .collect()
        };
        FinalLine {
            final_occupancy: config
                .rooms
                .iter()
                .zip(&tally.occupancy)
                .map(|(room, &n)| (room.id.as_str(), n))
                .collect(),
            entries: per_room(&tally.entries),
            exits: per_room(&tally.exits),
            crossings: tally.crossings,
            counters: config
                .counters
                .iter()
                .map(|c| {
                    let counts = CounterCounts {
                        in_count: tally.door_in[c.door],
                        out_count: tally.door_out[c.door],
                    };
                    (c.id.as_str(), counts)
                })
                .collect(),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unix_ms(at: SystemTime) -> u64 {
    // A clock set before 1970 is broken; 0 says so without stopping the simulation.
    at.duration_since(UNIX_EPOCH).map(millis).unwrap_or(0)
}

/// The truth file, written through a buffer.
///
/// Plain blocking writes on the async thread, on purpose: each line goes into the in-memory
/// buffer, and a flush (about once a second) is one small write into the page cache, far
/// below anything that would stall the counters' Modbus answers. A writer thread would be
/// more machinery than this test tool needs.
#[derive(Debug)]
pub struct TruthWriter {
    path: PathBuf,
    out: BufWriter<File>,
    /// Lines written since the last flush.
    dirty: bool,
}

impl TruthWriter {
    pub fn create(path: &Path) -> Result<Self, SimulateError> {
        let file = File::create(path).map_err(|error| SimulateError::Truth {
            path: path.to_path_buf(),
            error,
        })?;
        Ok(TruthWriter {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            dirty: false,
        })
    }

    fn failed(&self, error: io::Error) -> SimulateError {
        SimulateError::Truth {
            path: self.path.clone(),
            error,
        }
    }

    fn write_line(&mut self, line: &impl Serialize) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, line)?;
        self.out.write_all(b"\n")
    }

    pub fn crossing(&mut self, line: &CrossingLine<'_>) -> Result<(), SimulateError> {
        self.write_line(line).map_err(|e| self.failed(e))?;
        self.dirty = true;
        Ok(())
    }

    /// Writes the final line and flushes at once: a test waits for it.
    pub fn finish(&mut self, line: &FinalLine<'_>) -> Result<(), SimulateError> {
        self.write_line(line).map_err(|e| self.failed(e))?;
        self.dirty = true;
        self.flush()
    }

    pub fn flush(&mut self) -> Result<(), SimulateError> {
        if self.dirty {
            self.out.flush().map_err(|e| self.failed(e))?;
            self.dirty = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Zone;
    use crate::simulate::traffic::Way;

    fn hall() -> Config {
        crate::config::parse(
            include_str!("../../firmware-config/examples/hall.toml"),
            Path::new("."),
            &Default::default(),
        )
        .expect("the shipped example is valid")
    }

    #[test]
    fn a_crossing_line_names_door_counter_zones_and_direction() {
        let config = hall();
        let crossing = Crossing {
            offset: Duration::from_millis(1500),
            person: 12,
            door: 0,
            from: Zone::Room(0),
            to: Zone::Outside,
            direction: Way::Out,
        };
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let line = CrossingLine::new(&config, Some("pc-entrance"), &crossing, at);
        assert_eq!(
            serde_json::to_string(&line).expect("serialises"),
            r#"{"t_ms":1700000000123,"offset_ms":1500,"person":12,"door":"entrance","counter":"pc-entrance","from":"lobby","to":"outside","direction":"out"}"#
        );
    }

    #[test]
    fn the_final_line_lists_every_room_and_counter() {
        let config = hall();
        let mut tally = CrossingTally::new(config.rooms.len(), config.doors.len());
        tally.apply(&Crossing {
            offset: Duration::ZERO,
            person: 1,
            door: 0,
            from: Zone::Outside,
            to: Zone::Room(0),
            direction: Way::In,
        });
        let value = serde_json::to_value(FinalLine::new(&config, &tally)).expect("serialises");
        assert_eq!(value["final_occupancy"]["lobby"], 1);
        assert_eq!(value["final_occupancy"]["health"], 0);
        assert_eq!(value["entries"]["lobby"], 1);
        assert_eq!(value["exits"]["lobby"], 0);
        assert_eq!(value["crossings"], 1);
        assert_eq!(value["counters"]["pc-entrance"]["in"], 1);
        assert_eq!(value["counters"]["pc-health"]["out"], 0);
        assert_eq!(
            value["entries"].as_object().map(|m| m.len()),
            Some(config.rooms.len())
        );
    }
}

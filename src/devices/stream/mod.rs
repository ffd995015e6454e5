//! Pure decoders for people counters that stream their totals over a serial line.
//!
//! Some counters are not polled: once the port is open they print (ASCII lines) or send
//! (binary frames) their IN/OUT totals by themselves, on every crossing or every second. The
//! serial driver moves bytes, in whatever chunks the port hands it, into one of these decoders
//! and turns the [`StreamReading`]s that come out into crossings with the same
//! `CounterTracker` as the Modbus counters. No I/O and no clock here, so every case — split
//! frames, merged frames, line noise, a port opened in the middle of a frame — is a unit or
//! property test.
//!
//! Every decoder:
//! - accepts any chunking: a frame split across many pushes, or many frames in one push;
//! - never panics, whatever the bytes;
//! - resynchronises after garbage, and counts what it threw away in [`StreamStats`];
//! - holds at most a fixed number of bytes between pushes (see each decoder's `buffered`).
//!
//! The formats are a closed list ([`SerialFormat`]): [`terabee`] for the Terabee Evo People
//! Counter's binary frames, [`ascii`] for cheap counters that print a configurable line. Which
//! one a counter speaks is data, a profile in `firmware-config/serial/` ([`profile`]).

pub mod ascii;
pub mod profile;
pub mod terabee;

pub use ascii::{AsciiLineDecoder, AsciiLineProfile, FieldLayout, LineChecksum, format_line};
pub use profile::{
    SerialFormat, SerialFormatKind, SerialProfile, SerialProfileConfig, builtin_serial_profiles,
    parse_serial_profile,
};
pub use terabee::{TerabeeDecoder, encode_terabee_distance_frame, encode_terabee_frame};

/// One set of totals as the device reported them: cumulative IN and OUT since the device
/// started or was reset (the tracker takes differences).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamReading {
    /// The sender's own id, for formats that carry one (Terabee: 4 bytes); `None` otherwise.
    pub sensor_id: Option<u32>,
    pub inward: u64,
    pub outward: u64,
}

/// What a decoder has seen since it was created. Monotonic counters, for the status view
/// and for logs ("line noise on this port").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Readings decoded and handed out.
    pub readings: u64,
    /// Frames or lines whose CRC/checksum did not match. A corrupted frame may count more
    /// than once: after a failure the decoder looks for a frame one byte further on, and the
    /// corrupted bytes can look like another header.
    pub crc_errors: u64,
    /// Bytes skipped because they belong to no frame (binary formats), or came before the
    /// first line end (line formats: the port may have been opened mid-line).
    pub garbage_bytes: u64,
    /// Complete lines that do not parse under the profile.
    pub bad_lines: u64,
    /// Lines longer than the profile's `max_line_bytes`, dropped up to their line end.
    pub overlong_lines: u64,
    /// Well-formed frames or lines that carry no totals and were skipped on purpose:
    /// Terabee distance frames ("DD"), lines without the profile's `prefix`. A steadily
    /// rising count here means the device is alive even when nobody crosses.
    pub ignored: u64,
}

/// The decoder for one serial counter, whichever format it speaks.
#[derive(Debug, Clone)]
pub enum StreamDecoder {
    TerabeeEvo(TerabeeDecoder),
    AsciiLine(AsciiLineDecoder),
}

impl StreamDecoder {
    pub fn new(format: &SerialFormat) -> Self {
        match format {
            SerialFormat::TerabeeEvo => StreamDecoder::TerabeeEvo(TerabeeDecoder::new()),
            SerialFormat::AsciiLine(profile) => {
                StreamDecoder::AsciiLine(AsciiLineDecoder::new(profile.clone()))
            }
        }
    }

    /// Feeds bytes as read from the port; returns the readings completed by them, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<StreamReading> {
        match self {
            StreamDecoder::TerabeeEvo(d) => d.push(bytes),
            StreamDecoder::AsciiLine(d) => d.push(bytes),
        }
    }

    pub fn stats(&self) -> StreamStats {
        match self {
            StreamDecoder::TerabeeEvo(d) => d.stats(),
            StreamDecoder::AsciiLine(d) => d.stats(),
        }
    }

    /// Bytes held back waiting for the rest of a frame or line (bounded per format).
    pub fn buffered(&self) -> usize {
        match self {
            StreamDecoder::TerabeeEvo(d) => d.buffered(),
            StreamDecoder::AsciiLine(d) => d.buffered(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_format_round_trips_through_its_own_encoder() {
        let (profiles, problems) = builtin_serial_profiles();
        assert!(problems.is_empty(), "{problems:?}");
        for profile in profiles.values() {
            let mut decoder = StreamDecoder::new(&profile.format);
            // A line end first: line decoders drop whatever precedes the first one.
            let mut bytes = b"\n".to_vec();
            let sent = [(0, 0), (12, 9), (40_000, 39_999)];
            for (inward, outward) in sent {
                bytes.extend(profile.format.encode(&StreamReading {
                    sensor_id: Some(7),
                    inward,
                    outward,
                }));
            }
            let got: Vec<_> = bytes
                .chunks(3)
                .flat_map(|chunk| decoder.push(chunk))
                .map(|r| (r.inward, r.outward))
                .collect();
            assert_eq!(got, sent, "profile {}", profile.name);
            assert_eq!(decoder.stats().readings, 3, "profile {}", profile.name);
            assert_eq!(decoder.stats().crc_errors, 0, "profile {}", profile.name);
        }
    }
}

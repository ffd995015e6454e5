//! Terabee TeraRanger Evo People Counter: binary frames on the serial line → IN/OUT totals.
//!
//! The sensor (USB or UART/I2C backboard, 115200 8N1) streams two kinds of frame, back to
//! back, with no separator between frames:
//!
//! ```text
//! distance frame, continuously:         "DD" | distance 1 (2) | distance 2 (2) | CRC-8 (1)   =  7 bytes
//! count frame, after each crossing and
//! after a "reset counters" command:     "PC" | sensor id (4) | people counter (4)
//!                                            | count IN (2) | count OUT (2) | CRC-8 (1)     = 15 bytes
//! ```
//!
//! The people counter field is IN − OUT. Only count frames carry totals; distance frames are
//! checked and skipped (counted in [`StreamStats::ignored`], a liveness sign). The sensor
//! resets its counters when it loses power, and sends no count frame until someone crosses,
//! so the first baseline arrives with the first crossing.
//!
//! # Sources, and what is confirmed or assumed
//!
//! - Terabee, *User Manual for TeraRanger Evo People Counter* (2021 edition, 19 pp.), §5.4
//!   "List of sensor commands" (Table 10) and §5.5 "Details of the sensor output values":
//!   the "DD" frame (two 2-byte distances + CRC-8) and the "PC" frame with the fields and
//!   widths above (sensor id 4 bytes, people counter 4, count IN 2, count OUT 2, CRC-8 1);
//!   "Counter = Counter IN − Counter OUT"; IN counts left-to-right passages, OUT right-to-left.
//!   **Confirmed** from the manual: header, field order, field widths, a trailing CRC-8 byte.
//!   (The *TeraRanger Evo Swipe Plus* manual, 2020, §5.5.1, documents the same "PC" frame
//!   *without* the sensor id — 11 bytes. That variant is not supported here.)
//! - Terabee's `terabee_api` (C++, `include/terabee/internal/crc/crc.hpp`):
//!   `calcCrc8` = `boost::crc_optimal<8, 0x7, 0, 0>`, i.e. CRC-8, polynomial 0x07, init 0x00,
//!   no reflection, no final XOR; Terabee's Python samples use crcmod's predefined `crc-8`
//!   (the same). **Confirmed** against the manual: this CRC reproduces every command CRC in
//!   Table 10 (`00 55 08 00 00 00 00` → 0x7C, `00 61 01` → 0xE7, `00 61 02` → 0xEE) and the
//!   samples' binary-mode command (`00 11 02` → 0x4C); see the tests.
//! - Byte order big-endian (MSB first): **confirmed** for IN and OUT by a public deployment
//!   that reads these frames from real sensors (`RosLD/UPCT_TerabeePC`, `app.js`: after the
//!   "PC" header it skips 8 bytes — sensor id and people counter — and reads IN and OUT as
//!   2-byte MSB-first values), and consistent with every other Terabee frame (range frames
//!   are "T" + MSB + LSB + CRC). **Assumed** for the sensor id and the people counter (same
//!   convention); the decoder reports the id but does not rely on it.
//! - CRC coverage: **assumed** to be every byte before the CRC, header included — that is
//!   how every other Terabee frame is checked (`terabee_api` `TerarangerBasicCommon.cpp`:
//!   CRC over `data[0..3]` = "T" + 2 data bytes; the manual's command CRCs also cover every
//!   preceding byte). The deployment above does not check the CRC at all.
//! - The people counter field is **assumed** to be a signed 32-bit value (it is IN − OUT and
//!   can be negative); it is written by the encoder but not checked by the decoder, since IN
//!   and OUT wrap at 2^16 and nothing says how the 4-byte difference behaves then.
//!
//! All of that lives in [`layout`], so a correction is a change there.

use super::{StreamReading, StreamStats};

/// The frame layout: offsets, widths and headers. Everything else reads from here.
pub mod layout {
    use std::ops::Range;

    /// Header of a count frame, ASCII "PC".
    pub const COUNT_HEADER: [u8; 2] = *b"PC";
    /// Sensor id, 4 bytes big-endian (byte order assumed).
    pub const SENSOR_ID: Range<usize> = 2..6;
    /// "People counter" = IN − OUT, 4 bytes, assumed signed big-endian; not checked.
    pub const NET_COUNT: Range<usize> = 6..10;
    /// Count IN, 2 bytes big-endian.
    pub const COUNT_IN: Range<usize> = 10..12;
    /// Count OUT, 2 bytes big-endian.
    pub const COUNT_OUT: Range<usize> = 12..14;
    /// Length of a count frame; the CRC-8 is its last byte and covers all bytes before it.
    pub const COUNT_FRAME_LEN: usize = 15;

    /// Header of a distance frame, ASCII "DD".
    pub const DISTANCE_HEADER: [u8; 2] = *b"DD";
    /// Distance 1, 2 bytes big-endian (millimetres).
    pub const DISTANCE_1: Range<usize> = 2..4;
    /// Distance 2, 2 bytes big-endian (millimetres).
    pub const DISTANCE_2: Range<usize> = 4..6;
    /// Length of a distance frame, CRC-8 last.
    pub const DISTANCE_FRAME_LEN: usize = 7;

    /// CRC-8 generator polynomial (x^8 + x^2 + x + 1), init 0, no reflection, no final XOR.
    pub const CRC8_POLY: u8 = 0x07;
}

/// The most bytes the decoder holds. Anything it keeps between pushes is a possible frame
/// start shorter than the longest frame, so this is never reached in normal running; it
/// bounds how much of a large push is copied in at a time.
pub const BUFFER_CAP: usize = 64;

/// CRC-8 as Terabee computes it (see the module header).
pub fn crc8(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |crc, &byte| {
        (0..8).fold(crc ^ byte, |c, _| {
            if c & 0x80 != 0 {
                (c << 1) ^ layout::CRC8_POLY
            } else {
                c << 1
            }
        })
    })
}

/// Streaming decoder for the Terabee Evo People Counter.
#[derive(Debug, Clone)]
pub struct TerabeeDecoder {
    /// Bytes not yet decided: at most a partial frame after each push.
    buf: Vec<u8>,
    stats: StreamStats,
}

impl Default for TerabeeDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// What the bytes at the front of the buffer are.
enum Front {
    /// Could still become a frame: wait for more bytes.
    Incomplete,
    /// Not the start of any frame.
    NotAFrame,
    /// A whole count frame, CRC not yet checked.
    Count,
    /// A whole distance frame, CRC not yet checked.
    Distance,
}

fn classify(bytes: &[u8]) -> Front {
    let could_start = |header: [u8; 2]| bytes.first() == Some(&header[0]);
    match bytes {
        [] => Front::Incomplete,
        [_] if could_start(layout::COUNT_HEADER) || could_start(layout::DISTANCE_HEADER) => {
            Front::Incomplete
        }
        [a, b, ..] if [*a, *b] == layout::COUNT_HEADER => {
            if bytes.len() < layout::COUNT_FRAME_LEN {
                Front::Incomplete
            } else {
                Front::Count
            }
        }
        [a, b, ..] if [*a, *b] == layout::DISTANCE_HEADER => {
            if bytes.len() < layout::DISTANCE_FRAME_LEN {
                Front::Incomplete
            } else {
                Front::Distance
            }
        }
        _ => Front::NotAFrame,
    }
}

/// True when `frame` (exactly one frame long) ends with the CRC of the bytes before it.
fn crc_ok(frame: &[u8]) -> bool {
    match frame.split_last() {
        Some((crc, body)) => crc8(body) == *crc,
        None => false,
    }
}

fn be_u16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |v, &b| (v << 8) | u16::from(b))
}

fn be_u32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0u32, |v, &b| (v << 8) | u32::from(b))
}

impl TerabeeDecoder {
    pub fn new() -> Self {
        TerabeeDecoder {
            buf: Vec::with_capacity(BUFFER_CAP),
            stats: StreamStats::default(),
        }
    }

    /// Feeds bytes as read from the port; returns the count frames they completed, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<StreamReading> {
        let mut readings = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let mut room = BUFFER_CAP.saturating_sub(self.buf.len());
            if room == 0 {
                // Cannot happen (scan leaves less than a frame), but if it did, dropping the
                // held bytes keeps the bound and the stream resynchronises on the next header.
                self.stats.garbage_bytes += self.buf.len() as u64;
                self.buf.clear();
                room = BUFFER_CAP;
            }
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.buf.extend_from_slice(now);
            rest = later;
            self.scan(&mut readings);
        }
        readings
    }

    /// Decides as many bytes at the front of the buffer as it can.
    fn scan(&mut self, readings: &mut Vec<StreamReading>) {
        let mut at = 0;
        while at < self.buf.len() {
            let rest = &self.buf[at..];
            match classify(rest) {
                Front::Incomplete => break,
                Front::NotAFrame => {
                    self.stats.garbage_bytes += 1;
                    at += 1;
                }
                Front::Count | Front::Distance if !crc_ok(frame_of(rest)) => {
                    // A header with a bad CRC is line noise or a header-like pair inside
                    // garbage. Skip one byte only: a real frame may start inside it.
                    self.stats.crc_errors += 1;
                    self.stats.garbage_bytes += 1;
                    at += 1;
                }
                Front::Count => {
                    let frame = &rest[..layout::COUNT_FRAME_LEN];
                    readings.push(StreamReading {
                        sensor_id: Some(be_u32(&frame[layout::SENSOR_ID])),
                        inward: u64::from(be_u16(&frame[layout::COUNT_IN])),
                        outward: u64::from(be_u16(&frame[layout::COUNT_OUT])),
                    });
                    self.stats.readings += 1;
                    at += layout::COUNT_FRAME_LEN;
                }
                Front::Distance => {
                    self.stats.ignored += 1;
                    at += layout::DISTANCE_FRAME_LEN;
                }
            }
        }
        self.buf.drain(..at);
    }

    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    /// Bytes held back waiting for the rest of a frame: always below [`BUFFER_CAP`], and
    /// below the longest frame after every push.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// The whole frame at the front of `bytes`, which `classify` said is complete.
fn frame_of(bytes: &[u8]) -> &[u8] {
    let len = match classify(bytes) {
        Front::Count => layout::COUNT_FRAME_LEN,
        Front::Distance => layout::DISTANCE_FRAME_LEN,
        Front::Incomplete | Front::NotAFrame => 0,
    };
    &bytes[..len]
}

/// A count frame as the sensor sends it; the simulator's side of [`TerabeeDecoder`].
/// The people counter field is IN − OUT, as the manual defines it.
pub fn encode_terabee_frame(sensor_id: u32, inward: u16, outward: u16) -> Vec<u8> {
    let mut frame = vec![0u8; layout::COUNT_FRAME_LEN];
    frame[..2].copy_from_slice(&layout::COUNT_HEADER);
    frame[layout::SENSOR_ID].copy_from_slice(&sensor_id.to_be_bytes());
    let net = i32::from(inward) - i32::from(outward);
    frame[layout::NET_COUNT].copy_from_slice(&net.to_be_bytes());
    frame[layout::COUNT_IN].copy_from_slice(&inward.to_be_bytes());
    frame[layout::COUNT_OUT].copy_from_slice(&outward.to_be_bytes());
    seal(&mut frame);
    frame
}

/// A distance frame (millimetres), which the sensor streams between count frames; lets the
/// simulator send a realistic stream.
pub fn encode_terabee_distance_frame(distance_1_mm: u16, distance_2_mm: u16) -> Vec<u8> {
    let mut frame = vec![0u8; layout::DISTANCE_FRAME_LEN];
    frame[..2].copy_from_slice(&layout::DISTANCE_HEADER);
    frame[layout::DISTANCE_1].copy_from_slice(&distance_1_mm.to_be_bytes());
    frame[layout::DISTANCE_2].copy_from_slice(&distance_2_mm.to_be_bytes());
    seal(&mut frame);
    frame
}

/// Writes the CRC of all bytes before the last into the last.
fn seal(frame: &mut [u8]) {
    if let Some((crc, body)) = frame.split_last_mut() {
        *crc = crc8(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reading(sensor: u32, inward: u64, outward: u64) -> StreamReading {
        StreamReading {
            sensor_id: Some(sensor),
            inward,
            outward,
        }
    }

    fn decode_all(chunks: &[&[u8]]) -> (Vec<StreamReading>, StreamStats) {
        let mut d = TerabeeDecoder::new();
        let readings = chunks.iter().flat_map(|c| d.push(c)).collect();
        (readings, d.stats())
    }

    #[test]
    fn crc8_reproduces_the_crcs_printed_in_terabee_documents() {
        // Manual Table 10: reset counters, binary parameters, text parameters.
        assert_eq!(crc8(&[0x00, 0x55, 0x08, 0x00, 0x00, 0x00, 0x00]), 0x7C);
        assert_eq!(crc8(&[0x00, 0x61, 0x01]), 0xE7);
        assert_eq!(crc8(&[0x00, 0x61, 0x02]), 0xEE);
        // Terabee sample code: "binary mode" command.
        assert_eq!(crc8(&[0x00, 0x11, 0x02]), 0x4C);
    }

    #[test]
    fn a_count_frame_written_out_by_hand_decodes() {
        // "PC", id 7, net 3, IN 5, OUT 2, CRC computed independently (Python, poly 0x07).
        let frame = [
            0x50, 0x43, 0, 0, 0, 7, 0, 0, 0, 3, 0x00, 0x05, 0x00, 0x02, 0xD5,
        ];
        let (readings, stats) = decode_all(&[&frame]);
        assert_eq!(readings, vec![reading(7, 5, 2)]);
        assert_eq!(stats.readings, 1);
        assert_eq!(stats.garbage_bytes, 0);
        assert_eq!(encode_terabee_frame(7, 5, 2), frame);
    }

    #[test]
    fn big_endian_totals_use_both_bytes() {
        let frame = encode_terabee_frame(0x0102_0304, 0xABCD, 0x1234);
        assert_eq!(&frame[layout::SENSOR_ID], &[1, 2, 3, 4]);
        assert_eq!(&frame[layout::COUNT_IN], &[0xAB, 0xCD]);
        let (readings, _) = decode_all(&[&frame]);
        assert_eq!(readings, vec![reading(0x0102_0304, 0xABCD, 0x1234)]);
    }

    #[test]
    fn a_frame_split_into_single_bytes_decodes_once_complete() {
        let frame = encode_terabee_frame(1, 10, 4);
        let mut d = TerabeeDecoder::new();
        for (i, byte) in frame.iter().enumerate() {
            let got = d.push(std::slice::from_ref(byte));
            if i + 1 < frame.len() {
                assert!(got.is_empty(), "reading before the frame was complete");
            } else {
                assert_eq!(got, vec![reading(1, 10, 4)]);
            }
        }
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn many_frames_in_one_push_come_out_in_order() {
        let mut bytes = Vec::new();
        for n in 0..20u16 {
            bytes.extend(encode_terabee_frame(3, n, n / 2));
        }
        let (readings, stats) = decode_all(&[&bytes]);
        let expected: Vec<_> = (0..20u16)
            .map(|n| reading(3, u64::from(n), u64::from(n / 2)))
            .collect();
        assert_eq!(readings, expected);
        assert_eq!(stats.garbage_bytes, 0);
    }

    #[test]
    fn distance_frames_are_skipped_without_counting_them_as_garbage() {
        let mut bytes = encode_terabee_distance_frame(1200, 1350);
        bytes.extend(encode_terabee_frame(9, 1, 0));
        bytes.extend(encode_terabee_distance_frame(800, 1350));
        let (readings, stats) = decode_all(&[&bytes]);
        assert_eq!(readings, vec![reading(9, 1, 0)]);
        assert_eq!(stats.ignored, 2);
        assert_eq!(stats.garbage_bytes, 0);
        assert_eq!(stats.crc_errors, 0);
    }

    #[test]
    fn garbage_before_and_between_frames_is_counted_and_skipped() {
        let mut bytes = b"\x00\xffhello P".to_vec();
        bytes.extend(encode_terabee_frame(1, 1, 0));
        bytes.extend(b"xyzD");
        bytes.extend(encode_terabee_frame(1, 2, 0));
        let (readings, stats) = decode_all(&[&bytes]);
        assert_eq!(readings, vec![reading(1, 1, 0), reading(1, 2, 0)]);
        // 9 bytes before the first frame ("P" then "PC" is not a header), 4 between.
        assert_eq!(stats.garbage_bytes, 13);
    }

    #[test]
    fn a_corrupted_frame_is_rejected_and_counted_and_the_next_one_recovered() {
        let mut bad = encode_terabee_frame(1, 5, 5);
        bad[layout::COUNT_IN.start] ^= 0x10;
        let mut bytes = bad;
        bytes.extend(encode_terabee_frame(1, 6, 5));
        let (readings, stats) = decode_all(&[&bytes]);
        assert_eq!(readings, vec![reading(1, 6, 5)]);
        assert!(stats.crc_errors >= 1);
        assert_eq!(stats.readings, 1);
    }

    #[test]
    fn a_false_header_just_before_a_frame_does_not_hide_it() {
        // "PC" + 3 bytes of noise, then a real frame: the false candidate spans into the
        // real one, fails its CRC, and the real one is found one byte at a time.
        let mut bytes = b"PC\x01\x02\x03".to_vec();
        bytes.extend(encode_terabee_frame(2, 7, 1));
        let (readings, stats) = decode_all(&[&bytes]);
        assert_eq!(readings, vec![reading(2, 7, 1)]);
        assert_eq!(stats.crc_errors, 1);
        assert_eq!(stats.garbage_bytes, 5);
    }

    #[test]
    fn a_truncated_frame_followed_by_a_whole_one_loses_only_the_truncated_one() {
        let first = encode_terabee_frame(1, 1, 1);
        let mut bytes = first[..9].to_vec();
        bytes.extend(encode_terabee_frame(1, 2, 1));
        let (readings, _) = decode_all(&[&bytes]);
        assert_eq!(readings, vec![reading(1, 2, 1)]);
    }

    #[test]
    fn a_large_push_of_noise_keeps_the_buffer_bounded() {
        let noise: Vec<u8> = (0..100_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let mut d = TerabeeDecoder::new();
        d.push(&noise);
        assert!(d.buffered() < layout::COUNT_FRAME_LEN);
        // And the stream is usable straight after.
        assert_eq!(
            d.push(&encode_terabee_frame(4, 3, 2)),
            vec![reading(4, 3, 2)]
        );
    }

    #[test]
    fn the_net_count_field_is_in_minus_out() {
        let frame = encode_terabee_frame(1, 2, 5);
        assert_eq!(&frame[layout::NET_COUNT], &(-3i32).to_be_bytes());
    }

    /// Cuts `bytes` into chunks whose sizes cycle through `cuts`.
    fn chunked<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut rest = bytes;
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts.get(i % cuts.len().max(1)).copied().unwrap_or(1).max(1);
            let (a, b) = rest.split_at(n.min(rest.len()));
            out.push(a);
            rest = b;
            i += 1;
        }
        out
    }

    /// True when a frame with a good CRC starts at `at` in `stream`.
    fn valid_frame_at(stream: &[u8], at: usize) -> bool {
        let rest = &stream[at..];
        matches!(classify(rest), Front::Count | Front::Distance) && crc_ok(frame_of(rest))
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_in_arbitrary_chunks_never_panic_and_stay_bounded(
            bytes in proptest::collection::vec(any::<u8>(), 0..2000),
            cuts in proptest::collection::vec(1usize..200, 1..10),
        ) {
            let mut d = TerabeeDecoder::new();
            for chunk in chunked(&bytes, &cuts) {
                d.push(chunk);
                prop_assert!(d.buffered() < layout::COUNT_FRAME_LEN);
            }
            let s = d.stats();
            prop_assert!(s.garbage_bytes <= bytes.len() as u64);
        }

        /// Header-rich noise (many "P", "C", "D") exercises the resynchronisation paths.
        #[test]
        fn header_rich_noise_never_panics(
            bytes in proptest::collection::vec(
                prop_oneof![Just(b'P'), Just(b'C'), Just(b'D'), any::<u8>()], 0..2000),
            cuts in proptest::collection::vec(1usize..40, 1..10),
        ) {
            let mut d = TerabeeDecoder::new();
            for chunk in chunked(&bytes, &cuts) {
                d.push(chunk);
                prop_assert!(d.buffered() < layout::COUNT_FRAME_LEN);
            }
        }

        /// Valid frames (count and distance) with garbage between them, cut anywhere, give
        /// exactly the count frames' readings in order — as long as no valid frame starts
        /// inside the garbage (then it is not garbage).
        #[test]
        fn valid_frames_are_recovered_exactly_from_any_garbage_and_chunking(
            items in proptest::collection::vec(
                (any::<u32>(), any::<u16>(), any::<u16>(), any::<bool>(),
                 proptest::collection::vec(
                     prop_oneof![1 => Just(b'P'), 1 => Just(b'C'), 1 => Just(b'D'), 5 => any::<u8>()],
                     0..40)),
                0..30),
            cuts in proptest::collection::vec(1usize..50, 1..10),
        ) {
            let mut stream = Vec::new();
            let mut garbage_spans = Vec::new();
            let mut expected = Vec::new();
            for (id, inward, outward, distance, garbage) in &items {
                garbage_spans.push(stream.len()..stream.len() + garbage.len());
                stream.extend(garbage);
                if *distance {
                    stream.extend(encode_terabee_distance_frame(*inward, *outward));
                } else {
                    stream.extend(encode_terabee_frame(*id, *inward, *outward));
                    expected.push(reading(*id, u64::from(*inward), u64::from(*outward)));
                }
            }
            for span in &garbage_spans {
                for at in span.clone() {
                    prop_assume!(!valid_frame_at(&stream, at));
                }
            }
            let mut d = TerabeeDecoder::new();
            let got: Vec<_> = chunked(&stream, &cuts).into_iter().flat_map(|c| d.push(c)).collect();
            prop_assert_eq!(got, expected);
        }
    }
}

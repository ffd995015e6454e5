//! The engine state and the bookings tracker as stored: JSON, zlib-compressed.
//!
//! Both blobs are rewritten whole at every commit that carries them, and at a busy hall the
//! engine state is 60–200 KB of JSON (per-room figures for the quarter and the day, the
//! day's member hashes), so its size is most of what the gateway writes to the SD card. It is
//! repetitive text and deflates to a fraction (docs/performance.md). Compressed in the outbox's
//! own thread, at the fast level: the write saved matters more than the last percent.
//!
//! A blob written before compression (plain JSON, starting with `{`) reads back as it is, so
//! an existing database needs no migration. A blob that is neither is handed on unchanged,
//! for the reader's JSON error to name it.

use std::io::{Read as _, Write as _};

use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;

/// Inflated blobs larger than this are refused (handed on as they are): the state of any
/// real hall is far smaller, and a damaged length must not exhaust the box's memory.
const MAX_UNPACKED_BYTES: u64 = 64 * 1024 * 1024;

/// The stored form of a JSON blob.
pub fn pack(json: &[u8]) -> Vec<u8> {
    let mut encoder = ZlibEncoder::new(Vec::with_capacity(json.len() / 4), Compression::fast());
    // Writing to a Vec cannot fail.
    encoder
        .write_all(json)
        .and_then(|()| encoder.finish())
        .unwrap_or_else(|_| json.to_vec())
}

/// The JSON of a stored blob: inflated, or as it is when it was stored plain (or is damaged).
pub fn unpack(stored: Vec<u8>) -> Vec<u8> {
    if stored.first() == Some(&b'{') {
        return stored;
    }
    let mut json = Vec::with_capacity(stored.len() * 6);
    let inflated = ZlibDecoder::new(stored.as_slice())
        .take(MAX_UNPACKED_BYTES + 1)
        .read_to_end(&mut json);
    match inflated {
        Ok(n) if (n as u64) <= MAX_UNPACKED_BYTES => json,
        _ => stored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_state_unpacks_to_the_same_bytes_and_is_smaller() {
        let rooms: Vec<String> = (0..64)
            .map(|i| {
                format!(
                    r#"{{"id":"room-{i}","entries":{},"exits":{},"peak":3}}"#,
                    i * 7,
                    i * 5
                )
            })
            .collect();
        let json = format!(r#"{{"rooms":[{}],"revision":9}}"#, rooms.join(",")).into_bytes();
        let packed = pack(&json);
        assert!(
            packed.len() * 3 < json.len(),
            "{} of {} bytes",
            packed.len(),
            json.len()
        );
        assert_ne!(packed.first(), Some(&b'{'));
        assert_eq!(unpack(packed), json);
    }

    #[test]
    fn a_state_stored_before_compression_reads_as_it_is() {
        let json = br#"{"day":"2026-12-01","rooms":[]}"#.to_vec();
        assert_eq!(unpack(json.clone()), json);
    }

    #[test]
    fn a_damaged_blob_is_handed_on_unchanged_for_the_json_reader_to_name() {
        let damaged = vec![0x78, 0x01, 0xff, 0x00, 0x13];
        assert_eq!(unpack(damaged.clone()), damaged);
        let mut cut = pack(br#"{"day":"2026-12-01"}"#);
        cut.truncate(cut.len() / 2);
        assert_eq!(unpack(cut.clone()), cut);
    }
}

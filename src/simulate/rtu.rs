//! Modbus RTU framing for the simulated slaves: bytes in, requests out, answers back to bytes.
//!
//! The pure core of [`super::serial`], which owns the pty and the timers. What a slave on an
//! RS-485 line has to do with the bytes it hears:
//!
//! - **Find the requests.** [`RequestFramer`] collects what arrives and picks out complete
//!   request frames by their length (known from the function code) and their CRC. Bytes that
//!   are not part of a valid frame are dropped, so the slave resynchronises after junk instead
//!   of giving up; a partial frame left over after a silence is junk too.
//! - **Answer them.** [`answer`] is a device's reply to a request addressed to it, in RTU
//!   framing: the registers, or the Modbus exception the device gives. Whether to answer at
//!   all (the unit is ours) is the caller's decision.
//! - **Garbage on the line.** [`NoiseSource`] is seeded random junk in bursts, written by the
//!   shell between answers, so a gateway sees the corrupt frames a noisy bus gives.
//!
//! No I/O and no clock: time comes in as an argument.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_modbus::ExceptionCode;

use super::registers::SimulatedCounter;
use crate::config::profile::FunctionCode;

/// The longest RTU frame the protocol allows (Modbus over Serial Line V1.02, 2.5.1.1). More
/// than this unframed in the buffer cannot all belong to one request.
pub const MAX_FRAME_BYTES: usize = 256;

/// Address, function code and CRC around a PDU.
const ENVELOPE_BYTES: usize = 4;

/// CRC-16/MODBUS (reflected polynomial 0xA001, initial value 0xFFFF). On the wire it follows
/// the frame low byte first.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &byte in bytes {
        crc ^= u16::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// `frame` with its CRC appended.
fn seal(mut frame: Vec<u8>) -> Vec<u8> {
    let crc = crc16(&frame);
    frame.extend_from_slice(&crc.to_le_bytes());
    frame
}

/// One request frame, CRC checked and stripped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtuRequest {
    /// The slave address; 0 is a broadcast, which no slave answers.
    pub unit: u8,
    pub function: u8,
    /// The PDU after the function code.
    pub data: Vec<u8>,
}

/// The length of the request frame at the start of `bytes`, CRC included, if its function
/// code says how long it is and enough of it is there to tell. Only the public function codes
/// a people counter could be sent are known; anything else is treated as junk, which a slave
/// that resynchronises by CRC can afford.
fn request_len(bytes: &[u8]) -> Option<usize> {
    match *bytes.get(1)? {
        // Reads and single writes: address, quantity or value.
        0x01..=0x06 => Some(ENVELOPE_BYTES + 4),
        // Multiple writes: address, quantity, byte count, the bytes.
        0x0F | 0x10 => bytes
            .get(6)
            .map(|&count| ENVELOPE_BYTES + 5 + usize::from(count)),
        _ => None,
    }
}

/// Finds request frames in the bytes a slave hears.
#[derive(Debug)]
pub struct RequestFramer {
    buffer: Vec<u8>,
    last_input: Option<Instant>,
    /// After this long without a byte, what is left unframed is junk.
    silence: Duration,
    /// Bytes dropped because they were not part of any valid request.
    discarded: u64,
}

impl RequestFramer {
    pub fn new(silence: Duration) -> Self {
        RequestFramer {
            buffer: Vec::with_capacity(MAX_FRAME_BYTES),
            last_input: None,
            silence,
            discarded: 0,
        }
    }

    /// Bytes dropped so far because they belonged to no valid request.
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    /// Adds `bytes` received at `now`.
    pub fn push(&mut self, bytes: &[u8], now: Instant) {
        // A frame is sent in one go; whatever was left waiting across a silence was the tail
        // of junk and would only delay finding the next request.
        if let Some(last) = self.last_input
            && now.saturating_duration_since(last) > self.silence
        {
            self.discard(self.buffer.len());
        }
        self.last_input = Some(now);
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete request with a good CRC, dropping any junk before it.
    pub fn next_request(&mut self) -> Option<RtuRequest> {
        for start in 0..self.buffer.len() {
            let candidate = &self.buffer[start..];
            let Some(len) = request_len(candidate) else {
                continue;
            };
            if len > candidate.len() {
                continue;
            }
            let (frame, crc) = candidate[..len].split_at(len - 2);
            if crc16(frame).to_le_bytes() != [crc[0], crc[1]] {
                continue;
            }
            let request = RtuRequest {
                unit: frame[0],
                function: frame[1],
                data: frame[2..].to_vec(),
            };
            self.discard(start);
            self.buffer.drain(..len);
            return Some(request);
        }
        // Nothing complete yet. Keep at most one frame's worth, the newest bytes: an older
        // start could only be part of a frame longer than the protocol allows.
        self.discard(self.buffer.len().saturating_sub(MAX_FRAME_BYTES));
        None
    }

    fn discard(&mut self, n: usize) {
        self.buffer.drain(..n);
        self.discarded += n as u64;
    }
}

/// The answer of `counter` to `request`, a complete RTU frame: the registers for a read it
/// serves, otherwise the exception the device gives.
pub fn answer(request: &RtuRequest, counter: &mut SimulatedCounter) -> Vec<u8> {
    let unit = request.unit;
    let function = match request.function {
        0x03 => FunctionCode::HoldingRegisters,
        0x04 => FunctionCode::InputRegisters,
        other => return exception(unit, other, ExceptionCode::IllegalFunction),
    };
    let &[a0, a1, c0, c1] = request.data.as_slice() else {
        return exception(unit, request.function, ExceptionCode::IllegalDataValue);
    };
    let (address, count) = (u16::from_be_bytes([a0, a1]), u16::from_be_bytes([c0, c1]));
    match counter.read(function, address, count) {
        Ok(registers) => {
            // A read is at most 125 registers (`SimulatedCounter::read` refuses more), so the
            // byte count fits its one byte.
            let byte_count = u8::try_from(registers.len() * 2).unwrap_or(u8::MAX);
            let mut frame = vec![unit, request.function, byte_count];
            for register in registers {
                frame.extend_from_slice(&register.to_be_bytes());
            }
            seal(frame)
        }
        Err(code) => exception(unit, request.function, code),
    }
}

fn exception(unit: u8, function: u8, code: ExceptionCode) -> Vec<u8> {
    seal(vec![unit, function | 0x80, u8::from(code)])
}

/// Longest burst of junk. Real line noise comes in bursts (a relay switching, a motor
/// starting); bursts longer than a client's resynchronisation window are what make a frame
/// undecodable, short ones what make it merely late.
const MAX_BURST_BYTES: usize = 48;

/// Seeded random junk for a serial line, `bytes_per_sec` on average, in bursts.
#[derive(Debug)]
pub struct NoiseSource {
    rng: StdRng,
    bytes_per_sec: u32,
}

impl NoiseSource {
    /// `None` for a quiet line.
    pub fn new(seed: u64, bytes_per_sec: u32) -> Option<Self> {
        (bytes_per_sec > 0).then(|| NoiseSource {
            rng: StdRng::seed_from_u64(seed),
            bytes_per_sec,
        })
    }

    /// The next burst: how long to wait before sending it, and its bytes. The waits average
    /// the burst length over the rate, so the line carries `bytes_per_sec` on average.
    pub fn next_burst(&mut self) -> (Duration, Vec<u8>) {
        let len = self.rng.random_range(1..=MAX_BURST_BYTES);
        let bytes = (0..len).map(|_| self.rng.random::<u8>()).collect();
        let mean = len as f64 / f64::from(self.bytes_per_sec);
        let wait = Duration::from_secs_f64(mean * self.rng.random_range(0.5..1.5));
        (wait, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::profile::{CounterProfile, CounterProfileConfig};

    fn profile() -> CounterProfile {
        toml::from_str::<CounterProfileConfig>(
            r#"
            name = "t"
            function_code = 3
            in_register = 0
            out_register = 2
            value_type = "u32"
            word_order = "high_first"
            "#,
        )
        .expect("profile parses")
        .resolve()
        .expect("profile is valid")
    }

    fn read_holding(unit: u8, address: u16, count: u16) -> Vec<u8> {
        let mut frame = vec![unit, 0x03];
        frame.extend_from_slice(&address.to_be_bytes());
        frame.extend_from_slice(&count.to_be_bytes());
        seal(frame)
    }

    #[test]
    fn the_crc_is_the_one_in_the_modbus_specification() {
        // Modbus over Serial Line V1.02, appendix B: "01 03 00 00 00 0A" is sealed "C5 CD".
        assert_eq!(
            read_holding(1, 0, 10),
            vec![0x01, 0x03, 0x00, 0x00, 0x00, 0x0A, 0xC5, 0xCD]
        );
    }

    #[test]
    fn a_request_split_across_reads_is_framed_once_complete() {
        let t = Instant::now();
        let mut framer = RequestFramer::new(Duration::from_millis(20));
        let frame = read_holding(3, 0, 4);
        framer.push(&frame[..3], t);
        assert_eq!(framer.next_request(), None);
        framer.push(&frame[3..], t);
        assert_eq!(
            framer.next_request(),
            Some(RtuRequest {
                unit: 3,
                function: 3,
                data: vec![0, 0, 0, 4]
            })
        );
        assert_eq!(framer.next_request(), None);
        assert_eq!(framer.discarded(), 0);
    }

    #[test]
    fn junk_before_a_request_is_dropped_and_the_request_found() {
        let t = Instant::now();
        let mut framer = RequestFramer::new(Duration::from_millis(20));
        // 0x10 with a large byte count announces a long frame that never comes.
        let mut bytes = vec![0x07, 0x10, 0x00, 0x00, 0x00, 0x01, 0xF0, 0xAA, 0x55];
        bytes.extend(read_holding(2, 0, 4));
        framer.push(&bytes, t);
        let request = framer.next_request().expect("the request behind the junk");
        assert_eq!((request.unit, request.function), (2, 3));
        assert_eq!(framer.discarded(), 9);
    }

    #[test]
    fn a_partial_frame_left_over_a_silence_is_dropped() {
        let t = Instant::now();
        let mut framer = RequestFramer::new(Duration::from_millis(20));
        framer.push(&[0x01, 0x03, 0x00], t);
        assert_eq!(framer.next_request(), None);
        let later = t + Duration::from_millis(100);
        framer.push(&read_holding(1, 0, 4), later);
        assert_eq!(framer.next_request().map(|r| r.unit), Some(1));
        assert_eq!(framer.discarded(), 3);
    }

    #[test]
    fn a_corrupted_request_is_never_framed() {
        let t = Instant::now();
        let mut framer = RequestFramer::new(Duration::from_millis(20));
        let mut frame = read_holding(1, 0, 4);
        frame[4] ^= 0x01;
        framer.push(&frame, t);
        assert_eq!(framer.next_request(), None);
    }

    #[test]
    fn endless_junk_never_grows_the_buffer_past_one_frame() {
        let t = Instant::now();
        let mut framer = RequestFramer::new(Duration::from_millis(20));
        let mut noise = NoiseSource::new(3, 1000).expect("noisy");
        for _ in 0..200 {
            framer.push(&noise.next_burst().1, t);
            let _ = framer.next_request();
            assert!(framer.buffer.len() <= MAX_FRAME_BYTES);
        }
    }

    #[test]
    fn a_read_is_answered_with_the_registers_and_a_good_crc() {
        let mut counter = SimulatedCounter::new(profile(), 0x0001_0002, 7);
        let request = RtuRequest {
            unit: 5,
            function: 3,
            data: vec![0, 0, 0, 4],
        };
        let frame = answer(&request, &mut counter);
        assert_eq!(&frame[..3], &[5, 3, 8]);
        assert_eq!(&frame[3..11], &[0, 1, 0, 2, 0, 0, 0, 7]);
        assert_eq!(crc16(&frame[..11]).to_le_bytes(), [frame[11], frame[12]]);
    }

    #[test]
    fn a_read_the_device_does_not_serve_gets_its_exception() {
        let mut counter = SimulatedCounter::new(profile(), 1, 2);
        let wrong_table = RtuRequest {
            unit: 1,
            function: 4,
            data: vec![0, 0, 0, 4],
        };
        assert_eq!(
            answer(&wrong_table, &mut counter),
            seal(vec![1, 0x84, u8::from(ExceptionCode::IllegalFunction)])
        );
        let too_far = RtuRequest {
            unit: 1,
            function: 3,
            data: vec![0, 2, 0, 4],
        };
        assert_eq!(
            answer(&too_far, &mut counter),
            seal(vec![1, 0x83, u8::from(ExceptionCode::IllegalDataAddress)])
        );
        let write = RtuRequest {
            unit: 1,
            function: 6,
            data: vec![0, 0, 0, 1],
        };
        assert_eq!(answer(&write, &mut counter)[1], 0x86);
    }

    #[test]
    fn the_same_seed_gives_the_same_noise_at_about_the_asked_rate() {
        let mut a = NoiseSource::new(9, 500).expect("noisy");
        let mut b = NoiseSource::new(9, 500).expect("noisy");
        let (mut bytes, mut time) = (0usize, Duration::ZERO);
        for _ in 0..2000 {
            let burst = a.next_burst();
            assert_eq!(burst, b.next_burst());
            bytes += burst.1.len();
            time += burst.0;
        }
        let rate = bytes as f64 / time.as_secs_f64();
        assert!((450.0..550.0).contains(&rate), "{rate} bytes/s");
        assert!(NoiseSource::new(9, 0).is_none());
    }
}

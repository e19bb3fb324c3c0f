//! dlib's shape predictor (an ensemble of regression trees, Kazemi and Sullivan 2014), read
//! from `shape_predictor_5_face_landmarks.dat`: the corners of both eyes and the bottom of the
//! nose, in dlib's order (right eye outer, right eye inner, left eye outer, left eye inner,
//! nose), as integer pixels like `full_object_detection::part`.

use image::RgbImage;

use super::dlib_format::Reader;
use super::resample::{Affine, affine_from_3, similarity_transform};
use crate::error::Result;

struct Split {
    idx1: usize,
    idx2: usize,
    thresh: f32,
}

struct Tree {
    splits: Vec<Split>,
    leaves: Vec<Vec<f32>>,
}

/// A loaded shape predictor.
pub(crate) struct ShapePredictor {
    initial: Vec<f32>,
    forests: Vec<Vec<Tree>>,
    anchors: Vec<Vec<usize>>,
    deltas: Vec<Vec<[f32; 2]>>,
}

/// A face box in dlib's inclusive corners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rect {
    pub left: i64,
    pub top: i64,
    pub right: i64,
    pub bottom: i64,
}

impl ShapePredictor {
    pub(crate) fn read(bytes: &[u8], file: &str) -> Result<Self> {
        let mut r = Reader::new(bytes, file);
        let version = r.int("the shape predictor version")?;
        if version != 1 {
            return Err(r.error(&format!("shape predictor version {version}")));
        }
        let (_, nc, initial) = r.float_matrix("the initial shape")?;
        if nc != 1 || initial.is_empty() || initial.len() % 2 != 0 {
            return Err(r.error("the initial shape is not a column of (x, y) pairs"));
        }
        let parts = initial.len();
        let cascades = r.count("the number of cascades", 1000)?;
        let mut forests = Vec::with_capacity(cascades);
        for _ in 0..cascades {
            let trees = r.count("the number of trees", 100_000)?;
            let mut forest = Vec::with_capacity(trees);
            for _ in 0..trees {
                let n = r.count("the number of splits", 1 << 16)?;
                let mut splits = Vec::with_capacity(n);
                for _ in 0..n {
                    let idx1 = r.count("a split's first pixel", 1 << 20)?;
                    let idx2 = r.count("a split's second pixel", 1 << 20)?;
                    let thresh = r.float("a split's threshold")? as f32;
                    splits.push(Split { idx1, idx2, thresh });
                }
                let n = r.count("the number of leaves", 1 << 17)?;
                if n != splits.len() + 1 {
                    return Err(r.error("a tree's leaves do not match its splits"));
                }
                let mut leaves = Vec::with_capacity(n);
                for _ in 0..n {
                    let (_, _, leaf) = r.float_matrix("a leaf")?;
                    if leaf.len() != parts {
                        return Err(r.error("a leaf does not match the shape"));
                    }
                    leaves.push(leaf);
                }
                forest.push(Tree { splits, leaves });
            }
            forests.push(forest);
        }
        let n = r.count("the number of anchor lists", 1000)?;
        let mut anchors = Vec::with_capacity(n);
        for _ in 0..n {
            let m = r.count("the number of anchors", 1 << 20)?;
            let mut a = Vec::with_capacity(m);
            for _ in 0..m {
                let idx = r.count("an anchor", parts / 2 - 1)?;
                a.push(idx);
            }
            anchors.push(a);
        }
        let n = r.count("the number of delta lists", 1000)?;
        let mut deltas = Vec::with_capacity(n);
        for _ in 0..n {
            let m = r.count("the number of deltas", 1 << 20)?;
            let mut d = Vec::with_capacity(m);
            for _ in 0..m {
                let x = r.float("a delta")? as f32;
                let y = r.float("a delta")? as f32;
                d.push([x, y]);
            }
            deltas.push(d);
        }
        if anchors.len() != forests.len() || deltas.len() != forests.len() {
            return Err(r.error("cascades, anchors and deltas differ in number"));
        }
        for ((forest, a), d) in forests.iter().zip(&anchors).zip(&deltas) {
            let pixels = a.len();
            if d.len() != pixels || forest.iter().any(|t| t.splits.iter().any(|s| s.idx1 >= pixels || s.idx2 >= pixels))
            {
                return Err(r.error("a split reads a pixel the cascade does not sample"));
            }
        }
        if !r.at_end() {
            return Err(r.error("bytes after the shape predictor"));
        }
        Ok(Self { initial, forests, anchors, deltas })
    }

    pub(crate) fn num_parts(&self) -> usize {
        self.initial.len() / 2
    }

    /// The landmarks of the face in `rect`, in pixels (rounded like dlib's `point`).
    pub(crate) fn predict(&self, img: &RgbImage, rect: Rect) -> Vec<[i64; 2]> {
        let mut shape = self.initial.clone();
        let to_img = unnormalizing(rect);
        let (w, h) = (img.width() as i64, img.height() as i64);
        let raw = img.as_raw();
        let mut features: Vec<f32> = Vec::new();
        for ((forest, anchors), deltas) in self.forests.iter().zip(&self.anchors).zip(&self.deltas) {
            // Where the reference shape's sample pixels fall relative to the current shape.
            let tform = shape_transform(&self.initial, &shape);
            features.clear();
            for (&a, d) in anchors.iter().zip(deltas) {
                let qx = tform[0][0] * d[0] + tform[0][1] * d[1] + shape[2 * a];
                let qy = tform[1][0] * d[0] + tform[1][1] * d[1] + shape[2 * a + 1];
                let p = to_img.apply([qx as f64, qy as f64]);
                let (x, y) = ((p[0] + 0.5).floor() as i64, (p[1] + 0.5).floor() as i64);
                let v = if x >= 0 && y >= 0 && x < w && y < h {
                    let i = ((y * w + x) * 3) as usize;
                    ((raw[i] as u32 + raw[i + 1] as u32 + raw[i + 2] as u32) / 3) as f32
                } else {
                    0.0
                };
                features.push(v);
            }
            for tree in forest {
                let mut i = 0;
                while i < tree.splits.len() {
                    let s = &tree.splits[i];
                    i = if features[s.idx1] - features[s.idx2] > s.thresh { 2 * i + 1 } else { 2 * i + 2 };
                }
                for (v, l) in shape.iter_mut().zip(&tree.leaves[i - tree.splits.len()]) {
                    *v += l;
                }
            }
        }
        (0..self.num_parts())
            .map(|i| {
                let p = to_img.apply([shape[2 * i] as f64, shape[2 * i + 1] as f64]);
                [(p[0] + 0.5).floor() as i64, (p[1] + 0.5).floor() as i64]
            })
            .collect()
    }
}

/// The similarity transform's 2x2 part from the reference shape to the current one, in float
/// as dlib keeps it (`matrix_cast<float>`).
fn shape_transform(from: &[f32], to: &[f32]) -> [[f32; 2]; 2] {
    let pts = |s: &[f32]| s.chunks_exact(2).map(|p| [p[0] as f64, p[1] as f64]).collect::<Vec<_>>();
    // dlib computes this from float points; the double arithmetic here differs only in the
    // last bits.
    let t = similarity_transform(&pts(from), &pts(to));
    [[t.m[0][0] as f32, t.m[0][1] as f32], [t.m[1][0] as f32, t.m[1][1] as f32]]
}

/// dlib's `unnormalizing_tform`: (0,0), (1,0), (1,1) onto the box's top left, top right and
/// bottom right corners.
fn unnormalizing(rect: Rect) -> Affine {
    let (l, t, r, b) = (rect.left as f64, rect.top as f64, rect.right as f64, rect.bottom as f64);
    affine_from_3([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]], [[l, t], [r, t], [r, b]])
}

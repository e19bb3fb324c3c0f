//! SigLIP 2 NaFlex's geometry (`model_type` `siglip2`), as transformers computes it: the patch
//! grid a photo is resized to (its aspect kept, at most `max_num_patches` patches) and the
//! position table resized to that grid. These are the first pieces of NaFlex support; the
//! network (a linear patch embedding, attention masked over the padded patches) and its
//! loading are not built yet, so nothing loads a `siglip2` checkpoint so far.

/// The size in pixels, `(height, width)`, that `Siglip2ImageProcessor` resizes a
/// `height` × `width` photo to: both sides multiples of `patch` (at least one patch), scaled by
/// one factor found by transformers' binary search (`get_image_size_for_max_num_patches`, with
/// its `eps` 1e-5 and scale range) so that the patch count is at most `max_patches`.
pub fn naflex_size(height: u32, width: u32, patch: u32, max_patches: u32) -> (u32, u32) {
    let p = f64::from(patch);
    let scaled = |scale: f64, size: u32| -> u32 { ((f64::from(size) * scale / p).ceil() * p).max(p) as u32 };
    let eps = 1e-5;
    let (mut low, mut high) = (eps / 10.0, 100.0);
    while high - low >= eps {
        let scale = (low + high) / 2.0;
        let patches = (f64::from(scaled(scale, height)) / p) * (f64::from(scaled(scale, width)) / p);
        if patches <= f64::from(max_patches) {
            low = scale;
        } else {
            high = scale;
        }
    }
    (scaled(low, height), scaled(low, width))
}

/// The position table `[side², d]` (row-major over a `side` × `side` grid) resized to
/// `height` × `width` positions, `[height · width, d]`, as `Siglip2VisionEmbeddings` does it:
/// torch's bilinear interpolation with `antialias=True` and `align_corners=False` (a triangle
/// filter widened by the scale when shrinking, weights normalised to sum 1).
pub fn resize_positions(table: &[f32], side: usize, d: usize, height: usize, width: usize) -> Vec<f32> {
    let mut rows = axis_weights(side, height);
    if width == 1 && height != side {
        // torch 2.9's antialiased kernel, given an output one column wide, gives every output
        // row the first row's weights (measured: a 5x5 table to 7x1 repeats row 0's value);
        // transformers' embeddings are what that kernel computes, so this does the same.
        let first = rows[0].clone();
        rows.iter_mut().for_each(|r| *r = first.clone());
    }
    let cols = axis_weights(side, width);
    // Along the width first: [side, width, d], then along the height: [height, width, d].
    let mut across = vec![0f64; side * width * d];
    for y in 0..side {
        for (x, (start, weights)) in cols.iter().enumerate() {
            let out = &mut across[(y * width + x) * d..][..d];
            for (k, w) in weights.iter().enumerate() {
                let src = &table[(y * side + start + k) * d..][..d];
                for (o, s) in out.iter_mut().zip(src) {
                    *o += w * f64::from(*s);
                }
            }
        }
    }
    let mut out = vec![0f32; height * width * d];
    for (y, (start, weights)) in rows.iter().enumerate() {
        for x in 0..width {
            let dst = &mut out[(y * width + x) * d..][..d];
            for (c, o) in dst.iter_mut().enumerate() {
                let v: f64 =
                    weights.iter().enumerate().map(|(k, w)| w * across[((start + k) * width + x) * d + c]).sum();
                *o = v as f32;
            }
        }
    }
    out
}

/// For each of `output` positions along an axis of `input`, the first input position it reads
/// and the weights of the positions from there (torch's `_compute_weights_aa` for bilinear).
fn axis_weights(input: usize, output: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = input as f64 / output as f64;
    let (support, inverse) = if scale >= 1.0 { (scale, 1.0 / scale) } else { (1.0, 1.0) };
    (0..output)
        .map(|i| {
            let centre = scale * (i as f64 + 0.5);
            // Truncation toward zero, as C++'s cast to an integer.
            let start = ((centre - support + 0.5) as i64).max(0) as usize;
            let end = ((centre + support + 0.5) as i64).min(input as i64).max(start as i64) as usize;
            let mut weights: Vec<f64> =
                (start..end).map(|j| (1.0 - ((j as f64 - centre + 0.5) * inverse).abs()).max(0.0)).collect();
            let total: f64 = weights.iter().sum();
            if total != 0.0 {
                weights.iter_mut().for_each(|w| *w /= total);
            }
            (start, weights)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden() -> serde_json::Value {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/siglip2-naflex-math.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn n(v: &serde_json::Value) -> usize {
        v.as_u64().unwrap() as usize
    }

    #[test]
    fn photos_get_transformers_patch_grid() {
        for case in golden()["sizes"].as_array().unwrap() {
            let got = naflex_size(
                n(&case["height"]) as u32,
                n(&case["width"]) as u32,
                n(&case["patch"]) as u32,
                n(&case["max_patches"]) as u32,
            );
            let want = (n(&case["target"][0]) as u32, n(&case["target"][1]) as u32);
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn position_tables_resize_as_torch_antialiased_bilinear() {
        for case in golden()["resizes"].as_array().unwrap() {
            let (side, d) = (n(&case["side"]), n(&case["channels"]));
            let (h, w) = (n(&case["target"][0]), n(&case["target"][1]));
            let floats = |v: &serde_json::Value| -> Vec<f32> {
                v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
            };
            let got = resize_positions(&floats(&case["table"]), side, d, h, w);
            let want = floats(&case["resized"]);
            // The golden is padded with two copies of the first position, as transformers pads.
            assert_eq!(want.len(), (h * w + 2) * d);
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-5, "{side}x{side} -> {h}x{w}: off by {worst}");
        }
    }
}

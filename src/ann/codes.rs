//! 8-bit copies of the vectors for walking the graph.
//!
//! A graph search over a large library is bound by memory, not arithmetic: at a million
//! 512-d vectors each distance reads a 2 KB vector that is not in cache. The walk only has to
//! rank candidates, so it reads a byte per dimension instead (a quarter of the traffic) and
//! multiplies bytes by the query's bytes in integers (32 dimensions per instruction); the few
//! nodes it ends with are scored again with the full vectors, so results carry exact cosines.
//!
//! Each vector is stored as `round(x / s)` with its own scale `s = max |x| / 127`, and so is
//! the query. For unit vectors in 512 dimensions the rounding moves a cosine by about 1e-3,
//! below the gaps between neighbours the walk has to tell apart.

use rayon::prelude::*;

/// Vectors as signed bytes with a scale each, in node order.
#[derive(Default)]
pub struct Codes {
    dim: usize,
    bytes: Vec<i8>,
    scales: Vec<f32>,
}

impl Codes {
    /// Encodes `rows` (each `dim` long; any other row encodes as zeros).
    pub fn encode<'a>(dim: usize, rows: impl IndexedParallelIterator<Item = &'a [f32]>) -> Self {
        let rows: Vec<&[f32]> = rows.collect();
        if dim == 0 {
            return Codes { dim, bytes: Vec::new(), scales: vec![0.0; rows.len()] };
        }
        let mut bytes = vec![0i8; rows.len() * dim];
        let scales = bytes.par_chunks_mut(dim).zip(rows.par_iter()).map(|(out, v)| encode_into(v, out)).collect();
        Codes { dim, bytes, scales }
    }

    /// The bytes of row `i`.
    pub fn row(&self, i: usize) -> &[i8] {
        &self.bytes[i * self.dim..(i + 1) * self.dim]
    }

    /// The dot product of `query` with row `i`, approximately: both in bytes, so the
    /// arithmetic is on integers, 32 dimensions per instruction.
    #[inline]
    pub fn dot(&self, query: &Query, i: usize) -> f32 {
        self.scales[i] * query.scale * dot_i8_i8(&query.bytes, self.row(i)) as f32
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes.len() + 4 * self.scales.len()
    }

    /// Row `i` decoded back to floats (each entry within half a scale step of the original).
    pub fn decode(&self, i: usize) -> Vec<f32> {
        self.row(i).iter().map(|b| *b as f32 * self.scales[i]).collect()
    }

    /// The codes' parts: every row's bytes, one after the other, and the scales.
    pub fn parts(&self) -> (&[i8], &[f32]) {
        (&self.bytes, &self.scales)
    }

    /// Codes from their parts (`None` when they do not fit together).
    pub fn from_parts(dim: usize, bytes: Vec<i8>, scales: Vec<f32>) -> Option<Self> {
        (bytes.len() == dim * scales.len()).then_some(Codes { dim, bytes, scales })
    }
}

/// A query encoded like the rows.
pub struct Query {
    bytes: Vec<i8>,
    scale: f32,
}

impl Query {
    /// Encodes `query`.
    pub fn new(query: &[f32]) -> Self {
        let mut bytes = vec![0; query.len()];
        let scale = encode_into(query, &mut bytes);
        Query { bytes, scale }
    }
}

/// Writes `v`'s bytes into `out` and returns its scale (zeros and 0 for a zero, non-finite
/// or wrongly sized vector).
fn encode_into(v: &[f32], out: &mut [i8]) -> f32 {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if v.len() != out.len() || max == 0.0 || !max.is_finite() {
        out.fill(0);
        return 0.0;
    }
    let scale = max / 127.0;
    for (o, x) in out.iter_mut().zip(v) {
        *o = (x / scale).round().clamp(-127.0, 127.0) as i8;
    }
    scale
}

/// `Σ a[i] · b[i]` in integers (entries in -127..=127, so no pair of products overflows 16 bits).
pub fn dot_i8_i8(a: &[i8], b: &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has the feature the function is compiled for.
        return unsafe { dot_i8_i8_avx2(a, b) };
    }
    dot_i8_i8_portable(a, b)
}

fn dot_i8_i8_portable(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(x, y)| *x as i32 * *y as i32).sum()
}

/// 32 bytes at a time: `maddubs` multiplies unsigned by signed bytes, so `a`'s sign moves onto
/// `b` first (`|a| · sign(a)·b`), then pairs of 16-bit products are summed into 32 bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_i8_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_si256();
    let mut i = 0;
    // SAFETY (all loads): i + 32 <= n bounds both slices.
    while i + 32 <= n {
        let x = unsafe { _mm256_loadu_si256(pa.add(i) as *const __m256i) };
        let y = unsafe { _mm256_loadu_si256(pb.add(i) as *const __m256i) };
        let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
        i += 32;
    }
    let mut lanes = [0i32; 8];
    // SAFETY: `lanes` holds eight 32-bit integers.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, acc) };
    lanes.iter().sum::<i32>() + dot_i8_i8_portable(&a[i..n], &b[i..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(n: usize, seed: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..n).map(|i| (((i + seed) * 37 % 101) as f32 - 50.0) / 50.0).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect()
    }

    #[test]
    fn the_simd_integer_product_equals_the_portable_one() {
        for n in [0, 1, 31, 32, 33, 512, 515] {
            let a: Vec<i8> = (0..n).map(|i| (i * 37 % 255 - 127) as i8).collect();
            let b: Vec<i8> = (0..n).map(|i| (i * 53 % 255 - 127) as i8).collect();
            assert_eq!(dot_i8_i8(&a, &b), dot_i8_i8_portable(&a, &b), "n {n}");
        }
        // The extremes: 127 · 127 and -127 · -127 in every pair.
        let (hi, lo) = (vec![127i8; 64], vec![-127i8; 64]);
        assert_eq!(dot_i8_i8(&hi, &hi), 64 * 127 * 127);
        assert_eq!(dot_i8_i8(&lo, &lo), 64 * 127 * 127);
        assert_eq!(dot_i8_i8(&hi, &lo), -64 * 127 * 127);
    }

    #[test]
    fn codes_keep_cosines_to_two_thousandths() {
        let rows: Vec<Vec<f32>> = (0..20).map(|s| unit(512, s * 11)).collect();
        let codes = Codes::encode(512, rows.par_iter().map(Vec::as_slice));
        assert_eq!(codes.bytes(), 20 * (512 + 4));
        for (i, r) in rows.iter().enumerate() {
            for q in &rows {
                let exact: f32 = q.iter().zip(r).map(|(a, b)| a * b).sum();
                let approx = codes.dot(&Query::new(q), i);
                assert!((approx - exact).abs() < 2e-3, "row {i}: {approx} vs {exact}");
            }
        }
        // A zero or malformed row encodes to zeros instead of dividing by zero.
        let odd = [vec![0f32; 512], vec![1f32; 3]];
        let codes = Codes::encode(512, odd.par_iter().map(Vec::as_slice));
        let q = Query::new(&rows[0]);
        assert_eq!(codes.dot(&q, 0), 0.0);
        assert_eq!(codes.dot(&q, 1), 0.0);
    }
}

//! Products of a few rows with a layer's weight: one text query (a dozen tokens), or a
//! decoder's step (one row per beam). With so few rows the work is reading the weight once;
//! a general matrix multiplication first copies the weight into its own layout on every call,
//! which at these shapes costs as much as the product. Here the weight is laid out once, in
//! panels of 32 columns each contiguous over the whole input width, and each panel is
//! streamed once through registers that hold the rows' 32 outputs (AVX-512, detected at run
//! time; elsewhere, and for more rows, the general multiplication is used).
//!
//! `CLIPDEX_SKINNY=0` switches it off (to compare).

use rayon::prelude::*;

/// Rows per pass over a panel (12 rows × 2 registers of outputs, plus the weight's two).
const BLOCK: usize = 12;

/// The most rows taken: four passes, the later ones reading the panel from the cache.
pub(crate) const MAX_ROWS: usize = 4 * BLOCK;

/// Columns per panel: two AVX-512 registers.
const PANEL: usize = 32;

/// Whether this CPU runs the kernel (and it is not switched off).
pub(crate) fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let off = std::env::var("CLIPDEX_SKINNY").is_ok_and(|v| v == "0");
        #[cfg(target_arch = "x86_64")]
        {
            !off && std::arch::is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = off;
            false
        }
    })
}

/// A weight `[k, n]` laid out as `⌈n / 32⌉` panels, each `[k, 32]` contiguous (the last one
/// padded with zeros).
pub(crate) struct Panels {
    data: Vec<f32>,
    k: usize,
    n: usize,
}

impl Panels {
    /// Lays out `weight_t` (`[k, n]`, row-major); `None` when its length is not `k × n`.
    pub(crate) fn pack(weight_t: &[f32], k: usize, n: usize) -> Option<Self> {
        if weight_t.len() != k * n || k == 0 || n == 0 {
            return None;
        }
        let mut data = vec![0f32; k * n.div_ceil(PANEL) * PANEL];
        for (p, panel) in data.chunks_exact_mut(k * PANEL).enumerate() {
            let width = PANEL.min(n - p * PANEL);
            for (kk, dst) in panel.chunks_exact_mut(PANEL).enumerate() {
                dst[..width].copy_from_slice(&weight_t[kk * n + p * PANEL..][..width]);
            }
        }
        Some(Panels { data, k, n })
    }

    /// `x` (`[m, k]`, row-major, `1 ≤ m ≤ MAX_ROWS`) times the weight: `[m, n]`. Callers check
    /// [`available`] first.
    pub(crate) fn product(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert!((1..=MAX_ROWS).contains(&m) && x.len() == m * self.k, "rows {m}, input {}", x.len());
        let (k, n) = (self.k, self.n);
        let panels: Vec<[f32; MAX_ROWS * PANEL]> = self
            .data
            .par_chunks(k * PANEL)
            .map(|panel| {
                let mut out = [0f32; MAX_ROWS * PANEL];
                for first in (0..m).step_by(BLOCK) {
                    let rows = BLOCK.min(m - first);
                    panel_product(panel, &x[first * k..], k, rows, &mut out[first * PANEL..]);
                }
                out
            })
            .collect();
        let mut ys = vec![0f32; m * n];
        for (p, out) in panels.iter().enumerate() {
            let width = PANEL.min(n - p * PANEL);
            for r in 0..m {
                ys[r * n + p * PANEL..][..width].copy_from_slice(&out[r * PANEL..][..width]);
            }
        }
        ys
    }
}

/// One panel times `m` rows, into `out` (`[m, 32]`).
fn panel_product(panel: &[f32], x: &[f32], k: usize, m: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! rows {
            ($($r:literal)*) => {
                match m {
                    // SAFETY: `available()` (checked by the caller) found AVX-512F; the panel
                    // holds k × 32 values, `x` m × k and `out` at least m × 32.
                    $($r => unsafe { panel_avx512::<$r>(panel, x, k, out) },)*
                    _ => unreachable!("at most {BLOCK} rows a pass"),
                }
            };
        }
        rows!(1 2 3 4 5 6 7 8 9 10 11 12)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (panel, x, k, m, out);
        unreachable!("the kernel is only offered on x86-64");
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn panel_avx512<const R: usize>(panel: &[f32], x: &[f32], k: usize, out: &mut [f32]) {
    use std::arch::x86_64::{
        __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
    };
    debug_assert!(panel.len() >= k * PANEL && x.len() >= R * k && out.len() >= R * PANEL);
    let mut acc: [[__m512; 2]; R] = [[_mm512_setzero_ps(); 2]; R];
    let (w, xs) = (panel.as_ptr(), x.as_ptr());
    for kk in 0..k {
        // SAFETY: kk < k, so both loads are inside the panel (k × 32 values) and each row's
        // value inside `x` (R × k values).
        unsafe {
            let w0 = _mm512_loadu_ps(w.add(kk * PANEL));
            let w1 = _mm512_loadu_ps(w.add(kk * PANEL + 16));
            for (r, a) in acc.iter_mut().enumerate() {
                let v = _mm512_set1_ps(*xs.add(r * k + kk));
                a[0] = _mm512_fmadd_ps(v, w0, a[0]);
                a[1] = _mm512_fmadd_ps(v, w1, a[1]);
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        // SAFETY: out holds R × 32 values.
        unsafe {
            _mm512_storeu_ps(out.as_mut_ptr().add(r * PANEL), a[0]);
            _mm512_storeu_ps(out.as_mut_ptr().add(r * PANEL + 16), a[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_times_rows_is_the_matrix_product() {
        if !available() {
            return eprintln!("no AVX-512: the kernel is not used on this CPU");
        }
        for (k, n) in [(77, 96), (16, 40), (5, 7)] {
            check(k, n);
        }
    }

    fn check(k: usize, n: usize) {
        let weight_t: Vec<f32> = (0..k * n).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let panels = Panels::pack(&weight_t, k, n).unwrap();
        for m in 1..=MAX_ROWS {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 104_729) % 997) as f32 / 498.5 - 1.0).collect();
            let ys = panels.product(&x, m);
            for r in 0..m {
                for c in 0..n {
                    let want: f64 = (0..k).map(|j| f64::from(x[r * k + j]) * f64::from(weight_t[j * n + c])).sum();
                    assert!((f64::from(ys[r * n + c]) - want).abs() < 1e-4, "m {m} row {r} column {c}");
                }
            }
        }
        assert!(Panels::pack(&weight_t[1..], k, n).is_none(), "a weight of another size");
    }
}

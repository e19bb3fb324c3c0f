//! Products of a few rows with a layer's weight: one text query (a dozen tokens), or a
//! decoder's step (one row per beam). With so few rows the work is reading the weight once;
//! a general matrix multiplication first copies the weight into its own layout on every call,
//! which at these shapes costs as much as the product. Here the weight is laid out once, in
//! panels of 32 columns each contiguous over the whole input width, and each panel is
//! streamed once through registers that hold a block of rows' 32 outputs (AVX-512: 12 rows a
//! pass; AVX2 + FMA: 3; NEON: 3; picked at run time; elsewhere, and for more rows, the general
//! multiplication is used). Later passes over a panel read it from the cache.
//!
//! `CLIPDEX_SKINNY=0` switches it off and `CLIPDEX_SKINNY=avx2` picks the AVX2 kernel on a CPU
//! that has AVX-512 (to compare).

use rayon::prelude::*;

/// The most rows taken (four AVX-512 passes).
const ROWS_LIMIT: usize = 48;

/// Columns per panel: two AVX-512 registers, four AVX2 ones, eight NEON ones.
const PANEL: usize = 32;
#[cfg(target_arch = "aarch64")]
const _: () = assert!(super::neon::PANEL == PANEL);

/// The kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Avx512,
    Avx2,
    /// aarch64: eight 4-wide registers a row.
    Neon,
}

impl Kernel {
    /// Rows a pass over a panel holds in registers.
    fn block(self) -> usize {
        match self {
            Kernel::Avx512 => 12,
            Kernel::Avx2 | Kernel::Neon => 3,
        }
    }

    /// The most rows worth taking: beyond, the general multiplication is faster.
    fn max_rows(self) -> usize {
        match self {
            Kernel::Avx512 => ROWS_LIMIT,
            // Measured on an AVX-512 machine against gemm's AVX-512 kernels: ahead at 10
            // rows, level at 12, behind at 24.
            Kernel::Avx2 => 12,
            // Not measured (no ARM machine here): the AVX2 kernel's limit, whose registers
            // hold as many rows.
            Kernel::Neon => 12,
        }
    }
}

/// The kernel this CPU runs, if any (and unless switched off).
fn kernel() -> Option<Kernel> {
    static KERNEL: std::sync::OnceLock<Option<Kernel>> = std::sync::OnceLock::new();
    *KERNEL.get_or_init(|| {
        let choice = std::env::var("CLIPDEX_SKINNY").unwrap_or_default();
        let detected = detect();
        match choice.as_str() {
            "0" => None,
            "avx2" => detected.filter(|_| has_avx2()).map(|_| Kernel::Avx2),
            _ => detected,
        }
    })
}

fn has_avx2() -> bool {
    super::cpu::has(super::cpu::Feature::Avx2)
}

fn detect() -> Option<Kernel> {
    if super::cpu::has(super::cpu::Feature::Avx512f) {
        return Some(Kernel::Avx512);
    }
    if super::cpu::has(super::cpu::Feature::Neon) {
        return Some(Kernel::Neon);
    }
    has_avx2().then_some(Kernel::Avx2)
}

/// The most rows the kernel takes on this CPU; 0 when it does not run here.
pub(crate) fn max_rows() -> usize {
    kernel().map_or(0, Kernel::max_rows)
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

    /// The weight back as it was given to [`Panels::pack`]: `[k, n]`, row-major.
    pub(crate) fn unpack(&self) -> Vec<f32> {
        let (k, n) = (self.k, self.n);
        let mut weight_t = vec![0f32; k * n];
        for (p, panel) in self.data.chunks_exact(k * PANEL).enumerate() {
            let width = PANEL.min(n - p * PANEL);
            for (kk, src) in panel.chunks_exact(PANEL).enumerate() {
                weight_t[kk * n + p * PANEL..][..width].copy_from_slice(&src[..width]);
            }
        }
        weight_t
    }

    /// `x` (`[m, k]`, row-major, `1 ≤ m ≤ max_rows()`) times the weight: `[m, n]`.
    pub(crate) fn product(&self, x: &[f32], m: usize) -> Vec<f32> {
        let kernel = kernel().expect("callers check max_rows() first");
        self.product_with(kernel, x, m)
    }

    fn product_with(&self, kernel: Kernel, x: &[f32], m: usize) -> Vec<f32> {
        assert!((1..=ROWS_LIMIT).contains(&m) && x.len() == m * self.k, "rows {m}, input {}", x.len());
        let (k, n, block) = (self.k, self.n, kernel.block());
        let panels: Vec<[f32; ROWS_LIMIT * PANEL]> = self
            .data
            .par_chunks(k * PANEL)
            .map(|panel| {
                let mut out = [0f32; ROWS_LIMIT * PANEL];
                for first in (0..m).step_by(block) {
                    let rows = block.min(m - first);
                    panel_product(kernel, panel, &x[first * k..], k, rows, &mut out[first * PANEL..]);
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

/// One panel times `m` rows (at most the kernel's block), into `out` (`[m, 32]`).
fn panel_product(kernel: Kernel, panel: &[f32], x: &[f32], k: usize, m: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY (every arm): `kernel()` found the CPU features the kernel is compiled for;
        // the panel holds k × 32 values, `x` m × k and `out` at least m × 32.
        macro_rules! rows {
            ($f:ident: $($r:literal)*) => {
                match m {
                    $($r => unsafe { $f::<$r>(panel, x, k, out) },)*
                    _ => unreachable!("at most {} rows a pass", kernel.block()),
                }
            };
        }
        match kernel {
            Kernel::Avx512 => rows!(panel_avx512: 1 2 3 4 5 6 7 8 9 10 11 12),
            Kernel::Avx2 => rows!(panel_avx2: 1 2 3),
            Kernel::Neon => unreachable!("NEON is only detected on aarch64"),
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        use super::neon::skinny_panel;
        // SAFETY (every arm): `kernel()` found NEON; the bounds as above.
        match (kernel, m) {
            (Kernel::Neon, 1) => unsafe { skinny_panel::<1>(panel, x, k, out) },
            (Kernel::Neon, 2) => unsafe { skinny_panel::<2>(panel, x, k, out) },
            (Kernel::Neon, 3) => unsafe { skinny_panel::<3>(panel, x, k, out) },
            _ => unreachable!("{kernel:?} for {m} rows on aarch64"),
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = (kernel, panel, x, k, m, out);
        unreachable!("the kernels are only offered on x86-64 and aarch64");
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn panel_avx2<const R: usize>(panel: &[f32], x: &[f32], k: usize, out: &mut [f32]) {
    use std::arch::x86_64::{
        __m256, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps,
    };
    debug_assert!(panel.len() >= k * PANEL && x.len() >= R * k && out.len() >= R * PANEL);
    let mut acc: [[__m256; 4]; R] = [[_mm256_setzero_ps(); 4]; R];
    let (w, xs) = (panel.as_ptr(), x.as_ptr());
    for kk in 0..k {
        // SAFETY: as in the AVX-512 kernel.
        unsafe {
            let row = w.add(kk * PANEL);
            for (r, a) in acc.iter_mut().enumerate() {
                let v = _mm256_set1_ps(*xs.add(r * k + kk));
                for (j, aj) in a.iter_mut().enumerate() {
                    *aj = _mm256_fmadd_ps(v, _mm256_loadu_ps(row.add(8 * j)), *aj);
                }
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        for (j, aj) in a.iter().enumerate() {
            // SAFETY: out holds R × 32 values.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(r * PANEL + 8 * j), *aj) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_times_rows_is_the_matrix_product_with_each_kernel() {
        let kernels: Vec<Kernel> = [detect(), has_avx2().then_some(Kernel::Avx2)].into_iter().flatten().collect();
        if kernels.is_empty() {
            return eprintln!("neither AVX-512 nor AVX2: the kernels are not used on this CPU");
        }
        for kernel in kernels {
            for (k, n) in [(77, 96), (16, 40), (5, 7)] {
                check(kernel, k, n);
            }
        }
    }

    fn check(kernel: Kernel, k: usize, n: usize) {
        let weight_t: Vec<f32> = (0..k * n).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let panels = Panels::pack(&weight_t, k, n).unwrap();
        assert_eq!(panels.unpack(), weight_t, "unpacked ({k}, {n})");
        for m in 1..=kernel.max_rows() {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 104_729) % 997) as f32 / 498.5 - 1.0).collect();
            let ys = panels.product_with(kernel, &x, m);
            for r in 0..m {
                for c in 0..n {
                    let want: f64 = (0..k).map(|j| f64::from(x[r * k + j]) * f64::from(weight_t[j * n + c])).sum();
                    assert!((f64::from(ys[r * n + c]) - want).abs() < 1e-4, "{kernel:?}: m {m} row {r} column {c}");
                }
            }
        }
        assert!(Panels::pack(&weight_t[1..], k, n).is_none(), "a weight of another size");
    }
}

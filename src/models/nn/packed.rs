//! Linear layers at reduced precision on the CPU (`--precision bf16|int8`). Both formats lay a
//! weight `[k, n]` out once, in panels of 32 output columns; within a panel, each group of
//! input positions (a pair for bf16, four for int8) holds the 32 columns' values side by side,
//! the operand order of the instruction that multiplies them (`vdpbf16ps`, `vpdpbusd`). A
//! product converts a block of input rows to the format, then for each panel runs tiles of up
//! to 12 rows × 32 columns, whose sums stay in 24 registers, over the whole input width; row
//! blocks run in parallel. What differs between the formats (the values, the instruction, how
//! a row's sums become its outputs) is a [`Format`]; the loops are here once.

use rayon::prelude::*;

/// Output columns per panel: two AVX-512 registers of 32-bit sums.
pub(super) const PANEL: usize = 32;

/// The most rows a tile holds in registers (24 accumulators of the 32 registers).
pub(super) const TILE: usize = 12;

/// Bytes of a panel a pass takes at once (whole groups of input positions: 256 inputs of bf16,
/// 512 of int8): that chunk stays in L1 while every tile of a row block passes over it.
const CHUNK_BYTES: usize = 16 * 1024;

/// One reduced-precision format: its values, its tile kernel, and its outputs' scaling.
pub(super) trait Format: Sync {
    /// Input positions one instruction multiplies per column (and a row's values come in).
    const GROUP: usize;
    /// A stored value: bf16 bits, or a byte.
    type Value: Copy + Default + Send + Sync;
    /// A tile's sums: f32, or i32 for int8.
    type Sum: Copy + Default + Send;
    /// What converting an input row leaves for scaling its outputs (int8: the row's scale and
    /// zero point; bf16: nothing).
    type Row: Copy + Default + Send + Sync;

    /// Converts one input row into `dst` (as long as `src`).
    fn convert(&self, src: &[f32], dst: &mut [Self::Value]) -> Self::Row;

    /// `R` rows of `a` (each `GROUP · stride` values), over `count` groups, times a panel's
    /// chunk of `count` groups, into `sums` (`[R, 32]`): added to what `sums` holds when
    /// `accumulate`.
    ///
    /// # Safety
    /// The CPU has the format's instructions (its `pack` checked), and the bounds hold: `chunk`
    /// holds `count · GROUP · 32` values, `sums` `R · 32`, and `a` each row's `count` groups.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    unsafe fn tile<const R: usize>(
        &self,
        chunk: &[Self::Value],
        a: &[Self::Value],
        stride: usize,
        count: usize,
        sums: &mut [Self::Sum],
        accumulate: bool,
    );

    /// Elsewhere no format has a kernel, and `pack` offers none (so this is never called).
    ///
    /// # Safety
    /// None needed: it only panics.
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    unsafe fn tile<const R: usize>(
        &self,
        _chunk: &[Self::Value],
        _a: &[Self::Value],
        _stride: usize,
        _count: usize,
        _sums: &mut [Self::Sum],
        _accumulate: bool,
    ) {
        unreachable!("the kernels are only offered on x86-64 and aarch64");
    }

    /// One row's outputs for the panel's columns from `first` on (`out.len()` of them) from its
    /// sums.
    fn finish(&self, sums: &[Self::Sum], row: Self::Row, first: usize, out: &mut [f32]);
}

/// A weight `[k, n]` laid out as `⌈n / 32⌉` panels of `⌈k / GROUP⌉` groups of input positions
/// × 32 columns × `GROUP` values (zero past `k` and `n`), with its format.
pub(super) struct Panels<F: Format> {
    format: F,
    data: Vec<F::Value>,
    k: usize,
    n: usize,
}

impl<F: Format> Panels<F> {
    /// Lays out the weight whose value at input `kk`, column `j` is `value(kk, j)`.
    pub(super) fn lay_out(format: F, k: usize, n: usize, value: impl Fn(usize, usize) -> F::Value) -> Self {
        let (group, groups) = (F::GROUP, k.div_ceil(F::GROUP));
        let mut data = vec![F::Value::default(); n.div_ceil(PANEL) * groups * PANEL * group];
        for (p, panel) in data.chunks_exact_mut(groups * PANEL * group).enumerate() {
            let width = PANEL.min(n - p * PANEL);
            for (q, values) in panel.chunks_exact_mut(PANEL * group).enumerate() {
                for g in 0..group.min(k - q * group) {
                    for c in 0..width {
                        values[group * c + g] = value(q * group + g, p * PANEL + c);
                    }
                }
            }
        }
        Panels { format, data, k, n }
    }

    /// `x` (`[m, k]`, row-major) times the weight: `[m, n]`, `epilogue` run on each row's
    /// outputs of each panel (and the index of its first column) as soon as they are written,
    /// while they are in the cache (the bias and activation).
    pub(super) fn product(&self, x: &[f32], m: usize, epilogue: &(dyn Fn(&mut [f32], usize) + Sync)) -> Vec<f32> {
        assert_eq!(x.len(), m * self.k, "input is not [{m}, {}]", self.k);
        let (k, n, group) = (self.k, self.n, F::GROUP);
        let groups = k.div_ceil(group);
        let chunk_groups = (CHUNK_BYTES / (PANEL * group * std::mem::size_of::<F::Value>())).max(1);
        let mut ys = vec![0f32; m * n];
        if m == 0 {
            return ys;
        }
        // Blocks of up to 96 rows (their converted copy stays in L2 beside one panel), as many
        // for every thread: each block streams the whole weight, so a small one left over
        // (50 rows in blocks of 24: 24, 24 and 2) costs nearly as long as a full one while
        // the other threads wait.
        let threads = rayon::current_num_threads().max(1);
        let blocks = threads * m.div_ceil(threads * 8 * TILE);
        let block = m.div_ceil(blocks);
        ys.par_chunks_mut(block * n).zip(x.par_chunks(block * k)).for_each(|(ys, x)| {
            let rows = x.len() / k;
            let mut a = vec![F::Value::default(); rows * group * groups];
            let scales: Vec<F::Row> = a
                .chunks_exact_mut(group * groups)
                .zip(x.chunks_exact(k))
                .map(|(dst, src)| self.format.convert(src, &mut dst[..k]))
                .collect();
            let mut sums = vec![F::Sum::default(); rows * PANEL];
            for (p, panel) in self.data.chunks_exact(groups * PANEL * group).enumerate() {
                let width = PANEL.min(n - p * PANEL);
                for first_group in (0..groups).step_by(chunk_groups) {
                    let count = chunk_groups.min(groups - first_group);
                    let chunk = &panel[first_group * group * PANEL..][..count * group * PANEL];
                    for first in (0..rows).step_by(TILE) {
                        let r = TILE.min(rows - first);
                        let a = &a[first * group * groups + group * first_group..];
                        let sums = &mut sums[first * PANEL..][..r * PANEL];
                        tile(&self.format, chunk, a, groups, count, r, sums, first_group > 0);
                    }
                }
                for (i, row) in scales.iter().enumerate() {
                    let out = &mut ys[i * n + p * PANEL..][..width];
                    self.format.finish(&sums[i * PANEL..][..width], *row, p * PANEL, out);
                    epilogue(out, p * PANEL);
                }
            }
        });
        ys
    }
}

/// [`Format::tile`] for `r` (1 to [`TILE`]) rows, after checking its bounds.
#[allow(clippy::too_many_arguments)]
fn tile<F: Format>(
    format: &F,
    chunk: &[F::Value],
    a: &[F::Value],
    stride: usize,
    count: usize,
    r: usize,
    sums: &mut [F::Sum],
    accumulate: bool,
) {
    let group = F::GROUP;
    assert!(chunk.len() >= count * group * PANEL && sums.len() >= r * PANEL, "tile out of bounds");
    assert!(r >= 1 && a.len() >= (r - 1) * group * stride + group * count, "tile rows out of bounds");
    // SAFETY (every arm): the format's `pack` checked the CPU; the bounds were checked above.
    macro_rules! rows {
        ($($r:literal)*) => {
            match r {
                $($r => unsafe { format.tile::<$r>(chunk, a, stride, count, sums, accumulate) },)*
                _ => unreachable!("at most {TILE} rows a tile"),
            }
        };
    }
    rows!(1 2 3 4 5 6 7 8 9 10 11 12)
}

/// Values for the tests: uniform in [-1, 1), from a seed.
#[cfg(test)]
pub(super) fn test_values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Shapes for the tests: odd widths, partial last panels and tiles, more rows than one block,
/// inputs wider than one chunk.
#[cfg(test)]
pub(super) const TEST_SHAPES: [(usize, usize, usize); 7] =
    [(1, 1, 1), (5, 7, 33), (13, 64, 32), (250, 129, 70), (37, 512, 96), (30, 700, 40), (3, 1030, 17)];

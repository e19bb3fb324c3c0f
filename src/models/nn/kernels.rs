//! Fused CPU kernels for the two places where a transformer on a CPU loses most of its time
//! outside matrix multiplication: attention over short sequences (hundreds of tiny per-head
//! matmuls plus permute copies) and the bias + activation after each projection (several
//! single-purpose passes over the largest activations).
//!
//! Both are exact rewrites of the generic tensor code they replace (kept below as the path for
//! other devices and non-f32 tensors), parallel over rows with rayon. The attention kernel is the
//! training one's forward pass ([`super::train_kernels`]) on pre-scaled queries.

use candle_core::{CpuStorage, CustomOp2, D, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::activation::HiddenAct;
use super::precision::Precision;

type CResult<T> = candle_core::Result<T>;

pub(super) fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> CResult<&'a [f32]> {
    let CpuStorage::F32(data) = storage else { candle_core::bail!("{what}: expected f32") };
    if !layout.is_contiguous() {
        candle_core::bail!("{what}: expected a contiguous tensor")
    }
    Ok(&data[layout.start_offset()..layout.start_offset() + layout.shape().elem_count()])
}

pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler vectorise the loop.
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + ar.iter().zip(br).map(|(x, y)| x * y).sum::<f32>()
}

/// Longest sequence for the fused per-row kernel: beyond it (CLIPSeg's 485 tokens at 352 px,
/// BLIP's 577 at 384 px) the per-row dot products lose to the blocked kernel's matrix products.
const FUSED_MAX_TOKENS: usize = 256;

/// Attention from fused `[b, s, 3d]` projections (queries pre-scaled) to `[b, s, d]`. `mask`
/// (`[b, 1, 1, s]`, 0 or -∞) hides padded keys of batched sequences. On the CPU in f32: the
/// fused per-row kernel for short unmasked sequences, the blocked kernel for the rest.
pub(crate) fn attention(qkv: &Tensor, heads: usize, causal: bool, mask: Option<&Tensor>) -> CResult<Tensor> {
    if qkv.device().is_cpu() && qkv.dtype() == candle_core::DType::F32 {
        let (b, s, _) = qkv.dims3()?;
        match mask {
            None if s <= FUSED_MAX_TOKENS => {
                // The training kernel's forward pass with a scale of 1.
                return super::train_kernels::attention_no_grad(qkv, heads, causal, None);
            }
            None => return super::blocked_attention::attention(qkv, heads, causal, None),
            Some(mask) if mask.elem_count() == b * s => {
                let bias = mask.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
                if s <= FUSED_MAX_TOKENS
                    && let Some(lengths) = padding_lengths(&bias, s)
                {
                    return super::train_kernels::attention_no_grad(qkv, heads, causal, Some(lengths));
                }
                return super::blocked_attention::attention(qkv, heads, causal, Some(bias));
            }
            Some(_) => {}
        }
    }
    attention_generic(qkv, heads, causal, mask)
}

/// Each sequence's length when `key_bias` (`[b, s]`) is padding at the end: 0 for its first
/// keys (at least one), -∞ for the rest. `None` for any other bias.
fn padding_lengths(key_bias: &[f32], s: usize) -> Option<Vec<usize>> {
    key_bias
        .chunks_exact(s)
        .map(|row| {
            let len = row.iter().take_while(|&&v| v == 0.0).count();
            (len > 0 && row[len..].iter().all(|&v| v == f32::NEG_INFINITY)).then_some(len)
        })
        .collect()
}

/// The same attention in generic tensor operations (any device, any dtype).
fn attention_generic(qkv: &Tensor, heads: usize, causal: bool, mask: Option<&Tensor>) -> CResult<Tensor> {
    let (b, s, d3) = qkv.dims3()?;
    let (d, hd) = (d3 / 3, d3 / 3 / heads);
    let qkv = qkv.reshape((b, s, 3, heads, hd))?.permute((2, 0, 3, 1, 4))?;
    let (q, k, v) = (qkv.get(0)?.contiguous()?, qkv.get(1)?.contiguous()?, qkv.get(2)?.contiguous()?);
    let mut scores = q.matmul(&k.t()?)?;
    if causal {
        let mask: Vec<f32> =
            (0..s).flat_map(|i| (0..s).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
        scores = scores.broadcast_add(&Tensor::from_vec(mask, (s, s), qkv.device())?.to_dtype(scores.dtype())?)?;
    }
    if let Some(mask) = mask {
        scores = scores.broadcast_add(&mask.to_dtype(scores.dtype())?)?;
    }
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, d))
}

/// `act(x + bias)` over the last dimension in one parallel pass.
struct BiasAct {
    act: Option<HiddenAct>,
}

impl CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "clipdex-bias-act"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, bs: &CpuStorage, bl: &Layout) -> CResult<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl, self.name())?;
        let bias = f32_slice(bs, bl, self.name())?;
        let n = bias.len();
        if xl.shape().dims().last() != Some(&n) {
            candle_core::bail!("{}: bias of {n} for shape {:?}", self.name(), xl.shape());
        }
        let act = self.act;
        let mut out = x.to_vec();
        out.par_chunks_mut(n * 64).for_each(|o| {
            for row in o.chunks_mut(n) {
                bias_act_row(row, bias, act);
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

/// Whether this CPU has AVX-512 F, which the vectorised exponential and the kernels built on
/// it (bias + activation, attention) need; false off x86-64.
pub(super) fn avx512f() -> bool {
    super::cpu::has(super::cpu::Feature::Avx512f)
}

/// Whether this CPU has AVX2 and FMA (and `CLIPDEX_CPU_FEATURES` leaves them on).
pub(super) fn avx2() -> bool {
    super::cpu::has(super::cpu::Feature::Avx2)
}

/// Whether this CPU has NEON (every aarch64 one, unless `CLIPDEX_CPU_FEATURES` says `-neon`).
pub(super) fn neon() -> bool {
    super::cpu::has(super::cpu::Feature::Neon)
}

/// `o = act(o + bias)` for one row (or part of one, with the bias of its columns).
fn bias_act_row(o: &mut [f32], bias: &[f32], act: Option<HiddenAct>) {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512f() && matches!(act, None | Some(HiddenAct::QuickGelu)) {
            // SAFETY: the CPU has AVX-512 F (checked above).
            let done = unsafe { bias_act_row_avx512(o, bias, act.is_some()) };
            bias_act_scalar(&mut o[done..], &bias[done..], act);
            return;
        }
        if avx2() && matches!(act, None | Some(HiddenAct::QuickGelu)) {
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            let done = unsafe { bias_act_row_avx2(o, bias, act.is_some()) };
            bias_act_scalar(&mut o[done..], &bias[done..], act);
            return;
        }
    }
    #[cfg(target_arch = "aarch64")]
    if neon() && matches!(act, None | Some(HiddenAct::QuickGelu)) {
        // SAFETY: the CPU has NEON (checked above).
        let done = unsafe { super::neon::bias_act_row(o, bias, act.is_some()) };
        bias_act_scalar(&mut o[done..], &bias[done..], act);
        return;
    }
    bias_act_scalar(o, bias, act);
}

/// [`bias_act_row`] one value at a time.
fn bias_act_scalar(o: &mut [f32], bias: &[f32], act: Option<HiddenAct>) {
    for (o, &b) in o.iter_mut().zip(bias) {
        let v = *o + b;
        *o = match act {
            None => v,
            Some(HiddenAct::QuickGelu) => v / (1.0 + (-1.702 * v).exp()),
            Some(HiddenAct::Gelu) => {
                0.5 * v * (1.0 + candle_core::cpu::erf::erf_f32(v * std::f32::consts::FRAC_1_SQRT_2))
            }
            Some(HiddenAct::GeluTanh) => {
                0.5 * v * (1.0 + ((2.0 / std::f32::consts::PI).sqrt() * (v + 0.044_715 * v * v * v)).tanh())
            }
            Some(HiddenAct::Relu) => v.max(0.0),
        };
    }
}

/// `e^t` of 16 values: `2ⁿ · e^r` with `|r| ≤ ln 2 / 2` and a degree-6 Taylor polynomial for
/// `e^r` (relative error below 2e-7, as libm's to float rounding). The argument is clamped to
/// [-87, 88], where `e^t` is 0 or huge anyway; −∞ gives ~0 (1.6e-38), not exactly 0.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) fn exp16(t: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::{
        _mm512_fmadd_ps, _mm512_fnmadd_ps, _mm512_max_ps, _mm512_min_ps, _mm512_mul_ps, _mm512_roundscale_ps,
        _mm512_scalef_ps, _mm512_set1_ps,
    };
    let t = _mm512_min_ps(_mm512_max_ps(t, _mm512_set1_ps(-87.0)), _mm512_set1_ps(88.0));
    let n = _mm512_roundscale_ps::<0x08>(_mm512_mul_ps(t, _mm512_set1_ps(std::f32::consts::LOG2_E)));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), t);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm512_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, n)
}

/// Bias plus, when `quick_gelu`, `v · sigmoid(1.702 v)` (its exponential from [`exp16`]), 16
/// values at a time; returns how many values it wrote (the rest, fewer than 16, are the
/// caller's).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn bias_act_row_avx512(o: &mut [f32], bias: &[f32], quick_gelu: bool) -> usize {
    use std::arch::x86_64::{
        _mm512_add_ps, _mm512_div_ps, _mm512_loadu_ps, _mm512_mul_ps, _mm512_set1_ps, _mm512_storeu_ps,
    };
    let len = o.len().min(bias.len());
    let whole = len / 16 * 16;
    for i in (0..whole).step_by(16) {
        // SAFETY: i + 16 <= len for both slices.
        unsafe {
            let v = _mm512_add_ps(_mm512_loadu_ps(o.as_ptr().add(i)), _mm512_loadu_ps(bias.as_ptr().add(i)));
            let y = if quick_gelu {
                let e = exp16(_mm512_mul_ps(v, _mm512_set1_ps(-1.702)));
                _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0), e))
            } else {
                v
            };
            _mm512_storeu_ps(o.as_mut_ptr().add(i), y);
        }
    }
    whole
}

/// [`exp16`] for 8 values with AVX2 and FMA: the same polynomial, `2ⁿ` built in the exponent
/// bits (n lies in [-126, 127] after the clamp, a normal float's range).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) fn exp8(t: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::{
        _mm256_add_epi32, _mm256_castsi256_ps, _mm256_cvtps_epi32, _mm256_fmadd_ps, _mm256_fnmadd_ps, _mm256_max_ps,
        _mm256_min_ps, _mm256_mul_ps, _mm256_round_ps, _mm256_set1_epi32, _mm256_set1_ps, _mm256_slli_epi32,
    };
    let t = _mm256_min_ps(_mm256_max_ps(t, _mm256_set1_ps(-87.0)), _mm256_set1_ps(88.0));
    let n = _mm256_round_ps::<0x08>(_mm256_mul_ps(t, _mm256_set1_ps(std::f32::consts::LOG2_E)));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_145_75), t);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm256_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let two_n = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)));
    _mm256_mul_ps(p, _mm256_castsi256_ps(two_n))
}

/// [`bias_act_row_avx512`] 8 values at a time, its exponential from [`exp8`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn bias_act_row_avx2(o: &mut [f32], bias: &[f32], quick_gelu: bool) -> usize {
    use std::arch::x86_64::{
        _mm256_add_ps, _mm256_div_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_set1_ps, _mm256_storeu_ps,
    };
    let len = o.len().min(bias.len());
    let whole = len / 8 * 8;
    for i in (0..whole).step_by(8) {
        // SAFETY: i + 8 <= len for both slices.
        unsafe {
            let v = _mm256_add_ps(_mm256_loadu_ps(o.as_ptr().add(i)), _mm256_loadu_ps(bias.as_ptr().add(i)));
            let y = if quick_gelu {
                let e = exp8(_mm256_mul_ps(v, _mm256_set1_ps(-1.702)));
                _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0), e))
            } else {
                v
            };
            _mm256_storeu_ps(o.as_mut_ptr().add(i), y);
        }
    }
    whole
}

/// `act(xs + bias)`, or `xs + bias` when `act` is `None`.
pub(super) fn bias_act(xs: &Tensor, bias: &Tensor, act: Option<HiddenAct>) -> CResult<Tensor> {
    if xs.device().is_cpu() && xs.dtype() == candle_core::DType::F32 && bias.dtype() == candle_core::DType::F32 {
        return xs.contiguous()?.apply_op2_no_bwd(&bias.contiguous()?, &BiasAct { act });
    }
    bias_act_generic(xs, bias, act)
}

fn bias_act_generic(xs: &Tensor, bias: &Tensor, act: Option<HiddenAct>) -> CResult<Tensor> {
    let ys = xs.broadcast_add(bias)?;
    match act {
        None => Ok(ys),
        Some(a) => a.apply(&ys),
    }
}

/// A dense layer with its weight stored transposed (`[in, out]`) for a contiguous matmul, and,
/// from the first product of a few rows on, laid out once more for those (see `skinny`); at
/// `bf16` or `int8` precision, from the first product of many rows on, laid out in that format
/// (see `packed`).
///
/// Once the few-rows layout holds an f32 weight on the CPU, the transposed copy is given up,
/// and rebuilt from that layout only when a product of many rows needs it: a process that only
/// embeds a short text query (a one-shot `clipdex search`) keeps one copy of the text tower's
/// weights, not two.
pub(crate) struct Dense {
    /// `[in, out]`; `None` while only `panels` holds the weight.
    weight_t: std::sync::RwLock<Option<Tensor>>,
    /// `(in, out)`.
    dims: (usize, usize),
    /// Whether the weight is f32 on the CPU (what the kernels here take).
    cpu_f32: bool,
    bias: Option<Tensor>,
    panels: std::sync::OnceLock<Option<super::skinny::Panels>>,
    precision: Precision,
    reduced: std::sync::OnceLock<Option<Reduced>>,
}

/// A weight laid out at a reduced precision.
enum Reduced {
    Bf16(super::bf16::Bf16Panels),
    Int8(super::int8::Int8Panels),
}

impl Dense {
    pub(crate) fn new(weight: &Tensor, bias: Option<Tensor>) -> CResult<Self> {
        let weight_t = weight.t()?.contiguous()?;
        Ok(Dense {
            dims: weight_t.dims2()?,
            cpu_f32: weight_t.device().is_cpu() && weight_t.dtype() == candle_core::DType::F32,
            weight_t: std::sync::RwLock::new(Some(weight_t)),
            bias,
            panels: Default::default(),
            precision: Precision::F32,
            reduced: Default::default(),
        })
    }

    /// Computes products of many rows at `precision` from now on (where the CPU runs it).
    pub(crate) fn set_precision(&mut self, precision: Precision) {
        self.precision = precision.effective();
        self.reduced = Default::default();
    }

    /// The transposed weight, rebuilt from the few-rows layout when that alone holds it.
    fn weight_t(&self) -> CResult<Tensor> {
        if let Some(w) = self.weight_t.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Ok(w.clone());
        }
        let Some(Some(panels)) = self.panels.get() else {
            candle_core::bail!("a dense layer lost its weight");
        };
        let rebuilt = Tensor::from_vec(panels.unpack(), self.dims, &candle_core::Device::Cpu)?;
        let mut slot = self.weight_t.write().unwrap_or_else(|p| p.into_inner());
        Ok(slot.get_or_insert(rebuilt).clone())
    }

    /// The product on the CPU in f32 with the bias and `act` applied: through the few-rows
    /// kernel (see `skinny`) for up to its row limit, else through the layer's reduced-precision
    /// layout when it has one, which applies them to each block of outputs as it is written;
    /// `None` when neither applies (or an activation comes without a bias). Each lays the weight
    /// out on first use; the input is read where it lies.
    fn kernel_forward(&self, xs: &Tensor, rows: usize, act: Option<HiddenAct>) -> CResult<Option<Tensor>> {
        use super::{bf16, int8, skinny};
        use candle_core::DType::F32;
        if !xs.device().is_cpu() || xs.dtype() != F32 || !self.cpu_f32 {
            return Ok(None);
        }
        let bias = match &self.bias {
            Some(b) if b.dtype() == F32 => Some(b.to_vec1::<f32>()?),
            None if act.is_none() => None,
            _ => return Ok(None),
        };
        let epilogue = |out: &mut [f32], first: usize| {
            if let Some(bias) = &bias {
                bias_act_row(out, &bias[first..first + out.len()], act);
            }
        };
        let (k, n) = self.dims;
        let weight_t = || self.weight_t().and_then(|w| w.flatten_all()?.to_vec1::<f32>()).ok();
        let xs = xs.contiguous()?;
        let (storage, layout) = xs.storage_and_layout();
        let candle_core::Storage::Cpu(storage) = &*storage else { return Ok(None) };
        let x = f32_slice(storage, layout, "dense")?;
        let ys = if (1..=skinny::max_rows()).contains(&rows) {
            let Some(panels) = self.panels.get_or_init(|| {
                let packed = skinny::Panels::pack(&weight_t()?, k, n)?;
                *self.weight_t.write().unwrap_or_else(|p| p.into_inner()) = None;
                Some(packed)
            }) else {
                return Ok(None);
            };
            let mut ys = panels.product(x, rows);
            ys.chunks_mut(n).for_each(|row| epilogue(row, 0));
            ys
        } else {
            let reduced = self.reduced.get_or_init(|| match self.precision {
                Precision::F32 | Precision::Auto => None,
                Precision::Bf16 => bf16::pack(&weight_t()?, k, n).map(Reduced::Bf16),
                Precision::Int8 => int8::pack(&weight_t()?, k, n).map(Reduced::Int8),
            });
            match reduced {
                None => return Ok(None),
                Some(Reduced::Bf16(panels)) => panels.product(x, rows, &epilogue),
                Some(Reduced::Int8(panels)) => panels.product(x, rows, &epilogue),
            }
        };
        Ok(Some(Tensor::from_vec(ys, (rows, n), xs.device())?))
    }

    /// Output width.
    pub(crate) fn out_dim(&self) -> usize {
        self.dims.1
    }

    /// `act(xs · Wᵀ + b)` for `xs` of shape `[.., in]`.
    pub(crate) fn forward(&self, xs: &Tensor, act: Option<HiddenAct>) -> CResult<Tensor> {
        let dims = xs.dims().to_vec();
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let xs = xs.reshape((rows, dims[dims.len() - 1]))?;
        let ys = match self.kernel_forward(&xs, rows, act)? {
            Some(ys) => ys,
            None => {
                let ys = xs.matmul(&self.weight_t()?)?;
                match (&self.bias, act) {
                    (Some(b), act) => bias_act(&ys, b, act)?,
                    (None, Some(a)) => a.apply(&ys)?,
                    (None, None) => ys,
                }
            }
        };
        let mut out_dims = dims;
        *out_dims.last_mut().expect("at least one dimension") = ys.dim(D::Minus1)?;
        ys.reshape(out_dims)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn fused_attention_equals_the_generic_path() {
        // Short (the per-row kernel), long (the blocked kernel); padded at the end (with the
        // short one, the per-row kernel given lengths) and masked elsewhere (the blocked one).
        for s in [7, FUSED_MAX_TOKENS + 45] {
            let qkv = Tensor::randn(0f32, 1.0, (3, s, 3 * 12), &Device::Cpu).unwrap();
            let padded: Vec<f32> =
                (0..3 * s).map(|i| if i % s > s / 2 + i / s { f32::NEG_INFINITY } else { 0.0 }).collect();
            let padded = Tensor::from_vec(padded, (3, 1, 1, s), &Device::Cpu).unwrap();
            let holes: Vec<f32> = (0..3 * s).map(|i| if i % 3 == 1 { f32::NEG_INFINITY } else { 0.0 }).collect();
            let holes = Tensor::from_vec(holes, (3, 1, 1, s), &Device::Cpu).unwrap();
            let cases =
                [(false, None), (true, None), (false, Some(&padded)), (true, Some(&padded)), (false, Some(&holes))];
            for (causal, mask) in cases {
                let fused = attention(&qkv, 3, causal, mask).unwrap();
                let generic = attention_generic(&qkv, 3, causal, mask).unwrap();
                assert_eq!(fused.dims(), &[3, s, 12]);
                assert!(
                    max_abs_diff(&fused, &generic) < 1e-5,
                    "{s} tokens, causal {causal}, masked {}",
                    mask.is_some()
                );
            }
        }
    }

    #[test]
    fn padding_lengths_only_for_padding_at_the_end() {
        let inf = f32::NEG_INFINITY;
        assert_eq!(padding_lengths(&[0.0, 0.0, inf, 0.0, 0.0, 0.0], 3), Some(vec![2, 3]));
        assert_eq!(padding_lengths(&[0.0, inf, 0.0], 3), None, "a hole");
        assert_eq!(padding_lengths(&[inf, inf, inf], 3), None, "nothing visible");
        assert_eq!(padding_lengths(&[0.0, -1e4, -1e4], 3), None, "a finite bias");
    }

    #[test]
    fn a_dense_layer_gives_its_weight_to_the_few_rows_layout_and_gets_it_back() {
        let weight = Tensor::randn(0f32, 1.0, (70, 50), &Device::Cpu).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 70, &Device::Cpu).unwrap();
        let dense = Dense::new(&weight, Some(bias.clone())).unwrap();
        let want = |xs: &Tensor| xs.matmul(&weight.t().unwrap()).unwrap().broadcast_add(&bias).unwrap();
        let few = Tensor::randn(0f32, 1.0, (2, 50), &Device::Cpu).unwrap();
        let many = Tensor::randn(0f32, 1.0, (200, 50), &Device::Cpu).unwrap();
        assert!(max_abs_diff(&dense.forward(&few, None).unwrap(), &want(&few)) < 1e-4);
        if super::super::skinny::max_rows() >= 2 {
            assert!(dense.weight_t.read().unwrap().is_none(), "the transposed copy is kept beside the panels");
        }
        // A product of many rows rebuilds the transposed weight from the panels.
        assert!(max_abs_diff(&dense.forward(&many, None).unwrap(), &want(&many)) < 1e-3);
        assert!(max_abs_diff(&dense.forward(&few, None).unwrap(), &want(&few)) < 1e-4);
        assert_eq!(dense.out_dim(), 70);
    }

    #[test]
    fn fused_bias_activation_equals_the_generic_path() {
        // Widths with and without a tail past the 16-wide vectors; values up to where the
        // exponential saturates.
        for (width, scale) in [(33, 2.0), (64, 2.0), (47, 40.0)] {
            let xs = Tensor::randn(0f32, scale, (5, 130, width), &Device::Cpu).unwrap();
            let bias = Tensor::randn(0f32, 1.0, width, &Device::Cpu).unwrap();
            let acts = [
                None,
                Some(HiddenAct::QuickGelu),
                Some(HiddenAct::Gelu),
                Some(HiddenAct::GeluTanh),
                Some(HiddenAct::Relu),
            ];
            for act in acts {
                let fused = bias_act(&xs, &bias, act).unwrap();
                let generic = bias_act_generic(&xs, &bias, act).unwrap();
                let err = max_abs_diff(&fused, &generic);
                assert!(err < 1e-5 * scale, "{act:?} width {width}: {err}");
            }
        }
    }
}

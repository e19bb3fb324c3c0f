//! Reparameterisation at load time: the training-time branches that MobileCLIP's hub
//! checkpoints hold (a convolution followed by BatchNorm, a parallel 1×1 "scale" branch, a
//! BatchNorm "identity" branch, a large kernel beside a small one) summed into one convolution
//! with a bias, as timm's `reparameterize()` does. Convolution is linear, and BatchNorm at
//! inference is a per-channel affine map, so the sum of the branches is one convolution whose
//! kernel is the sum of the branches' kernels (the smaller ones padded to the centre, the
//! identity a centred one) scaled by `γ / √(var + ε)`, and whose bias is the sum of
//! `β − mean · γ / √(var + ε)`. Computed in f64, kept in f32.

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

type CResult<T> = candle_core::Result<T>;

/// torch's `BatchNorm2d` default, which timm's FastViT keeps.
const BN_EPS: f64 = 1e-5;

/// A convolution's weight as torch lays it out (`[cout, cin / groups, k, k]`) and its bias.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Kernel {
    pub(super) w: Vec<f32>,
    pub(super) bias: Vec<f32>,
    pub(super) cout: usize,
    pub(super) cin_g: usize,
    pub(super) k: usize,
}

/// A stored tensor as f32 values with its shape.
pub(super) fn read(vb: &VarBuilder, name: &str) -> CResult<(Vec<f32>, Vec<usize>)> {
    let t = vb.get_unchecked(name)?.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
    let dims = t.dims().to_vec();
    Ok((t.flatten_all()?.to_vec1::<f32>()?, dims))
}

/// A stored vector of `n` values.
pub(super) fn read_vec(vb: &VarBuilder, name: &str, n: usize) -> CResult<Vec<f32>> {
    let (v, dims) = read(vb, name)?;
    if v.len() != n {
        candle_core::bail!("{name} has shape {dims:?}, expected {n} values");
    }
    Ok(v)
}

/// A BatchNorm's inference map `x · scale + shift`, per channel.
pub(super) fn batch_norm(vb: &VarBuilder, n: usize) -> CResult<(Vec<f32>, Vec<f32>)> {
    let gamma = read_vec(vb, "weight", n)?;
    let beta = read_vec(vb, "bias", n)?;
    let mean = read_vec(vb, "running_mean", n)?;
    let var = read_vec(vb, "running_var", n)?;
    let mut scale = Vec::with_capacity(n);
    let mut shift = Vec::with_capacity(n);
    for i in 0..n {
        let s = f64::from(gamma[i]) / (f64::from(var[i]) + BN_EPS).sqrt();
        scale.push(s as f32);
        shift.push((f64::from(beta[i]) - f64::from(mean[i]) * s) as f32);
    }
    Ok((scale, shift))
}

impl Kernel {
    /// A plain convolution with its bias (`weight`, `bias`).
    pub(super) fn conv(vb: &VarBuilder) -> CResult<Self> {
        let (w, dims) = read(vb, "weight")?;
        let &[cout, cin_g, k, k2] = dims.as_slice() else {
            candle_core::bail!("convolution weight of shape {dims:?}, expected 4 dimensions")
        };
        if k != k2 {
            candle_core::bail!("convolution weight of shape {dims:?}: only square kernels are read");
        }
        let bias = if vb.contains_tensor("bias") { read_vec(vb, "bias", cout)? } else { vec![0.0; cout] };
        Ok(Kernel { w, bias, cout, cin_g, k })
    }

    /// timm's `ConvNormAct` without its activation: `conv` then `bn`, fused.
    pub(super) fn conv_bn(vb: &VarBuilder) -> CResult<Self> {
        let mut kernel = Self::conv(&vb.pp("conv"))?;
        let (scale, shift) = batch_norm(&vb.pp("bn"), kernel.cout)?;
        let per_out = kernel.cin_g * kernel.k * kernel.k;
        for (o, chunk) in kernel.w.chunks_mut(per_out).enumerate() {
            chunk.iter_mut().for_each(|v| *v *= scale[o]);
        }
        for (b, (s, t)) in kernel.bias.iter_mut().zip(scale.iter().zip(&shift)) {
            *b = *b * s + t;
        }
        Ok(kernel)
    }

    /// The identity as a `k`×`k` convolution of `c` channels, `cin_g` inputs per group,
    /// times `scale[o]` (1 when `None`), with bias `shift`.
    pub(super) fn identity(c: usize, cin_g: usize, k: usize, scale: Option<&[f32]>, shift: Vec<f32>) -> Self {
        let mut w = vec![0f32; c * cin_g * k * k];
        let centre = (k / 2) * k + k / 2;
        for o in 0..c {
            w[(o * cin_g + o % cin_g) * k * k + centre] = scale.map_or(1.0, |s| s[o]);
        }
        Kernel { w, bias: shift, cout: c, cin_g, k }
    }

    /// The same convolution with its kernel zero-padded to `k`×`k` about the centre.
    pub(super) fn padded_to(self, k: usize) -> CResult<Self> {
        if k < self.k || !(k - self.k).is_multiple_of(2) {
            candle_core::bail!("a {0}x{0} kernel cannot be centred in a {k}x{k} one", self.k);
        }
        let off = (k - self.k) / 2;
        let mut w = vec![0f32; self.cout * self.cin_g * k * k];
        for oc in 0..self.cout * self.cin_g {
            for y in 0..self.k {
                for x in 0..self.k {
                    w[oc * k * k + (y + off) * k + x + off] = self.w[oc * self.k * self.k + y * self.k + x];
                }
            }
        }
        Ok(Kernel { w, k, ..self })
    }

    /// `self + other` (the same shapes).
    pub(super) fn add(mut self, other: &Kernel) -> CResult<Self> {
        if (self.cout, self.cin_g, self.k) != (other.cout, other.cin_g, other.k) {
            candle_core::bail!(
                "parallel branches of different shapes ({:?} and {:?}) cannot be fused",
                (self.cout, self.cin_g, self.k),
                (other.cout, other.cin_g, other.k)
            );
        }
        self.w.iter_mut().zip(&other.w).for_each(|(a, b)| *a += b);
        self.bias.iter_mut().zip(&other.bias).for_each(|(a, b)| *a += b);
        Ok(self)
    }
}

/// timm's `MobileOneBlock` (before its squeeze-excite and activation) over `cin` channels with
/// a `k`×`k` kernel: its `conv_kxk.N` branches, its 1×1 `conv_scale` branch and its BatchNorm
/// `identity` branch, whichever it has, fused. `groups` is only read when the block has the
/// identity branch alone (RepMixer's `norm`).
pub(super) fn mobileone(vb: &VarBuilder, cin: usize, k: usize, groups: usize) -> CResult<Kernel> {
    let mut total: Option<Kernel> = None;
    fn push(total: &mut Option<Kernel>, branch: Kernel) -> CResult<()> {
        *total = Some(match total.take() {
            None => branch,
            Some(t) => t.add(&branch)?,
        });
        Ok(())
    }
    for i in 0.. {
        let branch = vb.pp(format!("conv_kxk.{i}"));
        if !branch.contains_tensor("conv.weight") {
            break;
        }
        push(&mut total, Kernel::conv_bn(&branch)?)?;
    }
    if vb.contains_tensor("conv_scale.conv.weight") {
        push(&mut total, Kernel::conv_bn(&vb.pp("conv_scale"))?.padded_to(k)?)?;
    }
    if vb.contains_tensor("identity.weight") {
        let cin_g = match &total {
            Some(t) => t.cin_g,
            None if groups > 0 && cin.is_multiple_of(groups) => cin / groups,
            None => candle_core::bail!("{cin} channels do not split into {groups} groups"),
        };
        let (scale, shift) = batch_norm(&vb.pp("identity"), cin)?;
        push(&mut total, Kernel::identity(cin, cin_g, k, Some(&scale), shift))?;
    }
    let Some(kernel) = total else {
        candle_core::bail!("a MobileOne block without any branch (no conv_kxk.0.conv.weight)")
    };
    if kernel.k != k || !cin.is_multiple_of(kernel.cin_g) {
        candle_core::bail!(
            "a MobileOne block of kernel {} and {} inputs per group where {k}x{k} over {cin} channels was expected",
            kernel.k,
            kernel.cin_g
        );
    }
    Ok(kernel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_centres_and_identity_sits_in_each_channels_group() {
        let one = Kernel { w: vec![2.0, 3.0], bias: vec![0.5, 0.0], cout: 2, cin_g: 1, k: 1 };
        let p = one.clone().padded_to(3).unwrap();
        assert_eq!(p.w[4], 2.0);
        assert_eq!(p.w[9 + 4], 3.0);
        assert_eq!(p.w.iter().filter(|&&v| v != 0.0).count(), 2);
        // Two groups of two input channels: channel o reads its own input o % 2 of its group.
        let id = Kernel::identity(4, 2, 1, None, vec![0.0; 4]);
        assert_eq!(id.w, [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0]);
        assert!(Kernel::identity(2, 1, 3, None, vec![0.0; 2]).add(&one).is_err());
    }
}

//! Grouped 2-D convolution over channels-last (`[b, h, w, c]`) f32 tensors on the CPU: the
//! dense, depthwise and depthwise-with-multiplier convolutions of convolutional towers
//! (FastViT's stem, token mixers, downsamplers and positional encodings). Channels last, so
//! that a 1×1 convolution is a plain [`super::Dense`] on the same tensor and the inner loop of
//! this one runs over contiguous output channels. Zero padding, square kernels, one stride.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

type CResult<T> = candle_core::Result<T>;

/// A convolution with its weights laid out for channels-last inputs.
pub(crate) struct GroupedConv {
    k: usize,
    stride: usize,
    pad: usize,
    cin: usize,
    cout: usize,
    groups: usize,
    /// `[k·k][cin / groups][cout]`.
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl GroupedConv {
    /// From a torch `Conv2d` weight (`[cout, cin / groups, k, k]`, row-major in `weight`) and
    /// its bias, over `cin` input channels; padding `k / 2` as timm's odd kernels have it.
    pub(crate) fn from_torch(
        weight: &[f32],
        bias: Vec<f32>,
        (cout, cin_g, k): (usize, usize, usize),
        cin: usize,
        stride: usize,
    ) -> CResult<Self> {
        if cin_g == 0 || !cin.is_multiple_of(cin_g) || k == 0 || stride == 0 {
            candle_core::bail!("a convolution of {cin} input channels cannot take {cin_g} per group");
        }
        let groups = cin / cin_g;
        if cout % groups != 0 || weight.len() != cout * cin_g * k * k || bias.len() != cout {
            candle_core::bail!(
                "convolution weight of {} values and bias of {} for {cout} outputs, {cin_g} inputs per group, \
                 kernel {k}: shapes do not agree",
                weight.len(),
                bias.len()
            );
        }
        let mut laid = vec![0f32; weight.len()];
        for o in 0..cout {
            for ci in 0..cin_g {
                for t in 0..k * k {
                    laid[(t * cin_g + ci) * cout + o] = weight[(o * cin_g + ci) * k * k + t];
                }
            }
        }
        Ok(GroupedConv { k, stride, pad: k / 2, cin, cout, groups, weight: laid, bias })
    }

    /// Output channels.
    pub(crate) fn out_channels(&self) -> usize {
        self.cout
    }

    /// `[b, h, w, cin]` → `[b, h', w', cout]`.
    pub(crate) fn forward(&self, xs: &Tensor) -> CResult<Tensor> {
        let (b, h, w, c) = xs.dims4()?;
        if c != self.cin {
            candle_core::bail!("convolution of {} input channels given {c}", self.cin);
        }
        let x = xs.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let (k, s, p) = (self.k, self.stride, self.pad);
        if h + 2 * p < k || w + 2 * p < k {
            candle_core::bail!("a {h}x{w} input is smaller than the {k}x{k} kernel");
        }
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let (cin, cout) = (self.cin, self.cout);
        let cin_g = cin / self.groups;
        let cout_g = cout / self.groups;
        let mut out = vec![0f32; b * oh * ow * cout];
        out.par_chunks_mut(ow * cout).enumerate().for_each(|(row, orow)| {
            let (bi, oy) = (row / oh, row % oh);
            for ox in 0..ow {
                let acc = &mut orow[ox * cout..(ox + 1) * cout];
                acc.copy_from_slice(&self.bias);
                for ky in 0..k {
                    let Some(iy) = (oy * s + ky).checked_sub(p).filter(|&y| y < h) else { continue };
                    for kx in 0..k {
                        let Some(ix) = (ox * s + kx).checked_sub(p).filter(|&x| x < w) else { continue };
                        let xp = &x[((bi * h + iy) * w + ix) * cin..][..cin];
                        let wk = &self.weight[(ky * k + kx) * cin_g * cout..][..cin_g * cout];
                        if cin_g == 1 && cout_g == 1 {
                            for ((a, &wv), &xv) in acc.iter_mut().zip(wk).zip(xp) {
                                *a += wv * xv;
                            }
                        } else {
                            for ci in 0..cin_g {
                                let wrow = &wk[ci * cout..(ci + 1) * cout];
                                for (o, (a, &wv)) in acc.iter_mut().zip(wrow).enumerate() {
                                    *a += wv * xp[(o / cout_g) * cin_g + ci];
                                }
                            }
                        }
                    }
                }
            }
        });
        Tensor::from_vec(out, (b, oh, ow, cout), &Device::Cpu)?.to_device(xs.device())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same convolution in candle's NCHW `conv2d`.
    fn reference(x: &Tensor, w: &Tensor, bias: &[f32], stride: usize, groups: usize) -> Tensor {
        let k = w.dim(2).unwrap();
        let y = x.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap().conv2d(w, k / 2, stride, 1, groups).unwrap();
        let b = Tensor::new(bias, &Device::Cpu).unwrap().reshape((1, bias.len(), 1, 1)).unwrap();
        y.broadcast_add(&b).unwrap().permute((0, 2, 3, 1)).unwrap().contiguous().unwrap()
    }

    #[test]
    fn dense_depthwise_and_multiplied_depthwise_match_conv2d() {
        let dev = Device::Cpu;
        // (cin, cout, groups, k, stride, h, w)
        for (cin, cout, groups, k, stride, h, w) in [
            (3, 5, 1, 3, 2, 9, 6),
            (6, 6, 6, 3, 1, 5, 7),
            (4, 8, 4, 7, 2, 5, 3),
            (4, 8, 4, 1, 1, 2, 3),
            (6, 6, 6, 7, 1, 3, 3),
        ] {
            let x = Tensor::randn(0f32, 1.0, (2, h, w, cin), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1.0, (cout, cin / groups, k, k), &dev).unwrap();
            let bias: Vec<f32> = (0..cout).map(|i| i as f32 * 0.1 - 0.2).collect();
            let conv = GroupedConv::from_torch(
                &wt.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                bias.clone(),
                (cout, cin / groups, k),
                cin,
                stride,
            )
            .unwrap();
            let got = conv.forward(&x).unwrap();
            let want = reference(&x, &wt, &bias, stride, groups);
            assert_eq!(got.dims(), want.dims(), "{cin} {cout} {groups} {k}");
            let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-4, "{cin} {cout} {groups} {k} {stride}: {diff}");
        }
    }
}

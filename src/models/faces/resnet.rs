//! dlib's face embedding network (`dlib_face_recognition_resnet_model_v1.dat`): a 29-layer
//! ResNet over a 150x150 chip, ending in a 128-d vector (not normalised, as dlib returns it).
//!
//! ```text
//! loss_metric<fc_no_bias<128, avg_pool_everything<
//!   alevel0<alevel1<alevel2<alevel3<alevel4<
//!   max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>>>>
//! ```
//!
//! Each residual block is `con 3x3 -> affine -> relu -> con 3x3 -> affine`, added to its input
//! (through a 2x2 average pool when the block strides by 2; channels and sizes that differ are
//! zero-padded at the end, as dlib's `add_prev` does), then relu. The file's layers are read
//! in order from the input up and the blocks recognised by their shape.

use candle_core::{D, Device, Tensor};
use image::RgbImage;

use super::dlib_format::{Layer, Reader, read_network};
use crate::error::{Error, Result};

enum Op {
    Con { weight: Tensor, bias: Tensor, stride: usize, padding: usize },
    Affine { gamma: Tensor, beta: Tensor },
    Relu,
    MaxPool { size: usize, stride: usize },
    AvgPool { size: usize, stride: usize },
    AvgAll,
    AddPrev,
    Fc { weight: Tensor },
}

/// A loaded face embedding network.
pub(crate) struct FaceEmbedder {
    avg: [f32; 3],
    ops: Vec<Op>,
}

fn bad(reason: &str) -> Error {
    Error::Model { model: "dlib_face_recognition_resnet_model_v1.dat".into(), reason: reason.into() }
}

impl FaceEmbedder {
    pub(crate) fn read(bytes: &[u8], file: &str) -> Result<Self> {
        let mut r = Reader::new(bytes, file);
        if r.int("the loss layer version")? != 1 {
            return Err(r.error("loss layer version"));
        }
        let loss = r.expect_string(&["loss_metric_", "loss_metric_2"], "the metric loss")?;
        if loss == "loss_metric_2" {
            r.float("margin")?;
            r.float("dist_thresh")?;
        }
        let net = read_network(&mut r)?;
        if !r.at_end() {
            return Err(r.error("bytes after the network"));
        }
        let dev = Device::Cpu;
        let mut ops = Vec::new();
        for layer in net.layers {
            ops.push(match layer {
                Layer::Con { filters, bias, stride, padding } => {
                    let [o, i, kh, kw] = filters.shape;
                    if stride.0 != stride.1 || padding.0 != padding.1 {
                        return Err(r.error("a non-square convolution"));
                    }
                    Op::Con {
                        weight: Tensor::from_vec(filters.data, (o, i, kh, kw), &dev)?,
                        bias: Tensor::from_vec(bias, (1, o, 1, 1), &dev)?,
                        stride: stride.0,
                        padding: padding.0,
                    }
                }
                Layer::Affine { gamma, beta } => {
                    let n = gamma.len();
                    Op::Affine {
                        gamma: Tensor::from_vec(gamma, (1, n, 1, 1), &dev)?,
                        beta: Tensor::from_vec(beta, (1, n, 1, 1), &dev)?,
                    }
                }
                Layer::Relu => Op::Relu,
                Layer::Pool { max, size, stride, padding } => {
                    if padding != (0, 0) || size.0 != size.1 || stride.0 != stride.1 {
                        return Err(r.error("a padded or non-square pooling layer"));
                    }
                    match (max, size.0) {
                        (false, 0) => Op::AvgAll,
                        (true, s) => Op::MaxPool { size: s, stride: stride.0 },
                        (false, s) => Op::AvgPool { size: s, stride: stride.0 },
                    }
                }
                Layer::AddPrev => Op::AddPrev,
                Layer::Fc { inputs, outputs, weights, bias } => {
                    if bias.is_some() {
                        return Err(r.error("an fc layer with a bias (the embedding has none)"));
                    }
                    Op::Fc { weight: Tensor::from_vec(weights, (inputs, outputs), &dev)? }
                }
            });
        }
        Ok(Self { avg: net.input.avg, ops })
    }

    /// The 128-d descriptors of 150x150 chips.
    pub(crate) fn embed(&self, chips: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        if chips.is_empty() {
            return Ok(Vec::new());
        }
        let (w, h) = (chips[0].width() as usize, chips[0].height() as usize);
        let plane = w * h;
        let mut data = vec![0f32; chips.len() * 3 * plane];
        for (n, chip) in chips.iter().enumerate() {
            if chip.width() as usize != w || chip.height() as usize != h {
                return Err(bad("chips of different sizes"));
            }
            for (i, p) in chip.pixels().enumerate() {
                for ch in 0..3 {
                    data[(n * 3 + ch) * plane + i] = (p[ch] as f32 - self.avg[ch]) / 256.0;
                }
            }
        }
        let mut x = Tensor::from_vec(data, (chips.len(), 3, h, w), &Device::Cpu)?;
        // The block input (tag1) and, in a strided block, the block's output (tag2).
        let mut block_input = x.clone();
        let mut convs_in_block = 0;
        let mut pooled_shortcut: Option<Tensor> = None;
        for op in &self.ops {
            x = match op {
                Op::Con { weight, bias, stride, padding } => {
                    if convs_in_block == 0 {
                        block_input = x.clone();
                    }
                    convs_in_block += 1;
                    x.conv2d(weight, *padding, *stride, 1, 1)?.broadcast_add(bias)?
                }
                Op::Affine { gamma, beta } => x.broadcast_mul(gamma)?.broadcast_add(beta)?,
                Op::Relu => x.relu()?,
                Op::MaxPool { size, stride } => {
                    convs_in_block = 0;
                    x.max_pool2d_with_stride((*size, *size), (*stride, *stride))?
                }
                Op::AvgPool { size, stride } => {
                    // skip1<tag2<block>>: the pool reads the block's input; the block's output
                    // waits to be added.
                    pooled_shortcut = Some(x.clone());
                    block_input.avg_pool2d_with_stride((*size, *size), (*stride, *stride))?
                }
                Op::AddPrev => {
                    let (a, b) = match pooled_shortcut.take() {
                        Some(block_out) => (x.clone(), block_out),
                        None => (x.clone(), block_input.clone()),
                    };
                    convs_in_block = 0;
                    add_padded(&a, &b)?
                }
                Op::AvgAll => {
                    convs_in_block = 0;
                    x.mean(D::Minus1)?.mean(D::Minus1)?
                }
                Op::Fc { weight } => x.flatten_from(1)?.matmul(weight)?,
            };
        }
        let (n, d) = x.dims2()?;
        if n != chips.len() || d == 0 {
            return Err(bad("the network did not end in one vector per chip"));
        }
        Ok(x.to_vec2::<f32>()?)
    }
}

/// `a + b` with the result as large as the larger of each dimension and the smaller padded with
/// zeros at the end (dlib's `tt::add` for tensors of different shapes).
fn add_padded(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (da, db) = (a.dims4()?, b.dims4()?);
    let target = (da.0.max(db.0), da.1.max(db.1), da.2.max(db.2), da.3.max(db.3));
    let pad = |t: &Tensor, d: (usize, usize, usize, usize)| -> Result<Tensor> {
        let mut t = t.clone();
        if d.1 < target.1 {
            t = t.pad_with_zeros(1, 0, target.1 - d.1)?;
        }
        if d.2 < target.2 {
            t = t.pad_with_zeros(2, 0, target.2 - d.2)?;
        }
        if d.3 < target.3 {
            t = t.pad_with_zeros(3, 0, target.3 - d.3)?;
        }
        Ok(t)
    };
    Ok((pad(a, da)? + pad(b, db)?)?)
}

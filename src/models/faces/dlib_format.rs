//! Reading dlib's own serialisation (`dlib/serialize.h`): the byte stream that
//! `dlib::serialize` writes for integers, floats, strings, matrices and the DNN tensors and
//! layers (`dlib/dnn/{core,layers,input,loss}.h`, `dlib/cuda/tensor.h`).
//!
//! Integers are a control byte (low nibble: byte count, 0x80: negative) then that many bytes,
//! little-endian. Floats are an integer mantissa and an integer exponent (`float_details`).
//! Tensors are 4-byte little-endian IEEE floats after their shape. A network is stored from
//! the outside in: the loss, then one version number per layer down to the input layer, then
//! each layer's parameters from the input layer up (a layer writes its subnetwork first).

use crate::error::{Error, Result};

/// A cursor over a dlib file's bytes; every read names what it expected when it fails.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    file: String,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], file: &str) -> Self {
        Self { bytes, pos: 0, file: file.to_string() }
    }

    pub(crate) fn error(&self, what: &str) -> Error {
        Error::Model {
            model: self.file.clone(),
            reason: format!(
                "not a dlib model of the expected kind: {what} at byte {} (fetch the files again with \
                 `clipdex models download faces`)",
                self.pos
            ),
        }
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos == self.bytes.len()
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.bytes.len() - self.pos < n {
            return Err(self.error(&format!("file ends inside {what}")));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// A signed integer (`pack_int`).
    pub(crate) fn int(&mut self, what: &str) -> Result<i64> {
        let control = self.take(1, what)?[0];
        let size = (control & 0x0f) as usize;
        if size == 0 || size > 8 || control & 0x70 != 0 {
            return Err(self.error(&format!("bad integer control byte {control:#x} for {what}")));
        }
        let mut value: u64 = 0;
        for (i, b) in self.take(size, what)?.iter().enumerate() {
            value |= (*b as u64) << (8 * i);
        }
        let value = value as i64;
        Ok(if control & 0x80 != 0 { -value } else { value })
    }

    /// An unsigned or small integer that must fit `usize`.
    pub(crate) fn count(&mut self, what: &str, max: usize) -> Result<usize> {
        let v = self.int(what)?;
        if v < 0 || v as u64 > max as u64 {
            return Err(self.error(&format!("{what} = {v} is out of range")));
        }
        Ok(v as usize)
    }

    /// A float as `float_details` (mantissa, exponent).
    pub(crate) fn float(&mut self, what: &str) -> Result<f64> {
        if self.peek().is_some_and(|b| b & 0x70 != 0) {
            return Err(self.error(&format!("{what} uses dlib's old text float format")));
        }
        let mantissa = self.int(what)?;
        let exponent = self.int(what)?;
        // dlib's markers for infinities and NaN (float_details::is_inf and friends).
        const IS_INF: i64 = 32000;
        const IS_NINF: i64 = 32001;
        const IS_NAN: i64 = 32002;
        Ok(match exponent {
            IS_INF => f64::INFINITY,
            IS_NINF => f64::NEG_INFINITY,
            IS_NAN => f64::NAN,
            e if e > IS_INF => return Err(self.error(&format!("bad float exponent for {what}"))),
            e => mantissa as f64 * 2f64.powi(e as i32),
        })
    }

    pub(crate) fn boolean(&mut self, what: &str) -> Result<bool> {
        match self.take(1, what)?[0] {
            b'1' => Ok(true),
            b'0' => Ok(false),
            b => Err(self.error(&format!("bad bool byte {b:#x} for {what}"))),
        }
    }

    pub(crate) fn string(&mut self, what: &str) -> Result<String> {
        let len = self.count(what, 1 << 16)?;
        let bytes = self.take(len, what)?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    pub(crate) fn expect_string(&mut self, expected: &[&str], what: &str) -> Result<String> {
        let s = self.string(what)?;
        if expected.contains(&s.as_str()) {
            Ok(s)
        } else {
            Err(self.error(&format!("found {s:?} where {what} ({}) was expected", expected.join(" or "))))
        }
    }

    /// A `matrix<float>` (negated dimensions, then floats row by row).
    pub(crate) fn float_matrix(&mut self, what: &str) -> Result<(usize, usize, Vec<f32>)> {
        let nr = -self.int(what)?;
        let nc = -self.int(what)?;
        if nr < 0 || nc < 0 || nr * nc > 1 << 24 {
            return Err(self.error(&format!("bad matrix size {nr}x{nc} for {what}")));
        }
        let mut data = Vec::with_capacity((nr * nc) as usize);
        for _ in 0..nr * nc {
            data.push(self.float(what)? as f32);
        }
        Ok((nr as usize, nc as usize, data))
    }

    /// A `resizable_tensor`: version 2, shape, raw little-endian floats.
    pub(crate) fn tensor(&mut self, what: &str) -> Result<Tensor4> {
        let version = self.int(what)?;
        if version != 2 {
            return Err(self.error(&format!("tensor version {version} for {what}")));
        }
        let mut shape = [0usize; 4];
        for s in &mut shape {
            *s = self.count(what, 1 << 28)?;
        }
        let n = shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b)).filter(|&n| n <= 1 << 28);
        let Some(n) = n else { return Err(self.error(&format!("tensor {what} is too large"))) };
        let raw = self.take(n * 4, what)?;
        let data = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Ok(Tensor4 { shape, data })
    }

    /// An `alias_tensor` (version 1 and a shape, no data).
    pub(crate) fn alias_tensor(&mut self, what: &str) -> Result<[usize; 4]> {
        let version = self.int(what)?;
        if version != 1 {
            return Err(self.error(&format!("alias tensor version {version} for {what}")));
        }
        let mut shape = [0usize; 4];
        for s in &mut shape {
            *s = self.count(what, 1 << 28)?;
        }
        Ok(shape)
    }
}

/// A dlib tensor: (samples, k, rows, cols) and its floats.
#[derive(Debug, Clone)]
pub(crate) struct Tensor4 {
    pub shape: [usize; 4],
    pub data: Vec<f32>,
}

/// One computational layer of a dlib network, as far as inference needs it.
#[derive(Debug, Clone)]
pub(crate) enum Layer {
    /// `con_`: filters (out, in, kh, kw), biases, strides and paddings (y, x).
    Con {
        filters: Tensor4,
        bias: Vec<f32>,
        stride: (usize, usize),
        padding: (usize, usize),
    },
    /// `affine_` (or a `bn_con` turned into one): per-channel gamma and beta.
    Affine {
        gamma: Vec<f32>,
        beta: Vec<f32>,
    },
    Relu,
    /// `max_pool_`/`avg_pool_`: window (rows, cols; 0 = everything), stride, padding.
    Pool {
        max: bool,
        size: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    },
    /// `fc_`: weights (inputs x outputs) and optional bias.
    Fc {
        inputs: usize,
        outputs: usize,
        weights: Vec<f32>,
        bias: Option<Vec<f32>>,
    },
    /// `add_prev_`: adds a tagged layer's output.
    AddPrev,
}

/// What a network file holds besides the layers: the input layer's settings.
#[derive(Debug, Clone)]
pub(crate) struct InputLayer {
    pub kind: String,
    pub avg: [f32; 3],
    pub pyramid_padding: usize,
    pub pyramid_outer_padding: usize,
}

/// A network as stored: one entry per header (layer, tag or skip), from the input up.
#[derive(Debug)]
pub(crate) struct Network {
    pub input: InputLayer,
    /// Computational layers from the input up; tags and skips are left out (the model's code
    /// knows where they are).
    pub layers: Vec<Layer>,
}

/// Reads everything after the loss layer: the headers, the input layer, then the layers'
/// details from the input up.
pub(crate) fn read_network(r: &mut Reader) -> Result<Network> {
    // Headers from the outside in: add_layer is version 2 (3 for the one over the input, from
    // 2017 on), tag and skip layers version 1.
    let mut headers = Vec::new();
    loop {
        // The input layer's version string starts with its length (>= 10), never 1..=3.
        let save = r.pos;
        let v = r.int("a layer header")?;
        if (1..=3).contains(&v) {
            headers.push(v);
            if headers.len() > 10_000 {
                return Err(r.error("too many layers"));
            }
        } else {
            r.pos = save;
            break;
        }
    }
    let input = read_input_layer(r)?;
    let mut layers = Vec::new();
    // The innermost header belongs to the add_layer that holds the input layer.
    for (i, &v) in headers.iter().enumerate().rev() {
        let innermost = i + 1 == headers.len();
        if v == 1 && !innermost {
            continue; // a tag or skip layer: nothing stored after its subnetwork
        }
        layers.push(read_layer(r)?);
        // add_layer's state after its details.
        r.boolean("this_layer_setup_called")?;
        r.boolean("gradient_input_is_stale")?;
        r.boolean("get_output_and_gradient_input_disabled")?;
        r.tensor("x_grad")?;
        r.tensor("cached_output")?;
        if innermost {
            r.tensor("grad_final")?;
            if v >= 3 {
                r.int("sample_expansion_factor")?;
            }
        } else if v == 2 {
            r.tensor("params_grad")?;
        }
    }
    Ok(Network { input, layers })
}

fn read_input_layer(r: &mut Reader) -> Result<InputLayer> {
    let kind = r.expect_string(
        &["input_rgb_image_pyramid", "input_rgb_image_pyramid2", "input_rgb_image_sized", "input_rgb_image"],
        "an input layer",
    )?;
    let mut avg = [0f32; 3];
    for a in &mut avg {
        *a = r.float("input mean")? as f32;
    }
    let (mut pyramid_padding, mut pyramid_outer_padding) = (10, 11);
    match kind.as_str() {
        "input_rgb_image_pyramid2" => {
            pyramid_padding = r.count("pyramid padding", 1 << 16)?;
            pyramid_outer_padding = r.count("pyramid outer padding", 1 << 16)?;
        }
        "input_rgb_image_sized" => {
            r.int("input rows")?;
            r.int("input columns")?;
        }
        _ => {}
    }
    Ok(InputLayer { kind, avg, pyramid_padding, pyramid_outer_padding })
}

fn read_layer(r: &mut Reader) -> Result<Layer> {
    let version = r.string("a layer's version")?;
    match version.as_str() {
        "con_4" | "con_5" | "con_6" => {
            let params = r.tensor("con params")?;
            let num_filters = r.count("num_filters", 1 << 16)?;
            let nr = r.count("con rows", 64)?;
            let nc = r.count("con cols", 64)?;
            let sy = r.count("stride", 64)?;
            let sx = r.count("stride", 64)?;
            let py = r.count("padding", 64)?;
            let px = r.count("padding", 64)?;
            let fshape = r.alias_tensor("filters")?;
            let bshape = r.alias_tensor("biases")?;
            for _ in 0..4 {
                r.float("multiplier")?;
            }
            let mut use_bias = true;
            if version != "con_4" {
                use_bias = r.boolean("use_bias")?;
            }
            if version == "con_6" {
                r.boolean("use_relu")?;
            }
            let fsize: usize = fshape.iter().product();
            if fshape[0] != num_filters || fshape[2] != nr || fshape[3] != nc || params.data.len() < fsize {
                return Err(r.error("con filters do not match its parameters"));
            }
            let bias = if use_bias {
                let bsize: usize = bshape.iter().product();
                if params.data.len() < fsize + bsize || bsize != num_filters {
                    return Err(r.error("con biases do not match its parameters"));
                }
                params.data[fsize..fsize + bsize].to_vec()
            } else {
                vec![0.0; num_filters]
            };
            let filters = Tensor4 { shape: fshape, data: params.data[..fsize].to_vec() };
            Ok(Layer::Con { filters, bias, stride: (sy, sx), padding: (py, px) })
        }
        "affine_" | "affine_2" => {
            let params = r.tensor("affine params")?;
            let g = r.alias_tensor("gamma")?;
            r.alias_tensor("beta")?;
            let _mode = r.int("affine mode")?;
            if version == "affine_2" && r.boolean("disabled")? {
                return Ok(Layer::Affine { gamma: Vec::new(), beta: Vec::new() });
            }
            let n: usize = g.iter().product();
            if params.data.len() != 2 * n {
                return Err(r.error("affine parameters do not match gamma and beta"));
            }
            Ok(Layer::Affine { gamma: params.data[..n].to_vec(), beta: params.data[n..].to_vec() })
        }
        "bn_con2" => {
            // Batch normalisation as trained; at inference it is the affine map dlib's
            // affine_(const bn_&) derives from the running statistics.
            let params = r.tensor("bn params")?;
            let g = r.alias_tensor("gamma")?;
            r.alias_tensor("beta")?;
            r.tensor("means")?;
            r.tensor("invstds")?;
            let running_means = r.tensor("running means")?;
            let running_variances = r.tensor("running variances")?;
            r.int("num_updates")?;
            r.int("running_stats_window_size")?;
            for _ in 0..4 {
                r.float("multiplier")?;
            }
            let eps = r.float("eps")?;
            let n: usize = g.iter().product();
            if params.data.len() != 2 * n || running_means.data.len() != n || running_variances.data.len() != n {
                return Err(r.error("bn parameters do not match"));
            }
            let mut gamma = Vec::with_capacity(n);
            let mut beta = Vec::with_capacity(n);
            for i in 0..n {
                let gi = params.data[i] / (running_variances.data[i] + eps as f32).sqrt();
                gamma.push(gi);
                beta.push(params.data[n + i] - gi * running_means.data[i]);
            }
            Ok(Layer::Affine { gamma, beta })
        }
        "relu_" => Ok(Layer::Relu),
        "relu_2" => {
            r.boolean("disabled")?;
            Ok(Layer::Relu)
        }
        "max_pool_2" | "avg_pool_2" => {
            let nr = r.count("pool rows", 1 << 16)?;
            let nc = r.count("pool cols", 1 << 16)?;
            let sy = r.count("stride", 64)?;
            let sx = r.count("stride", 64)?;
            let py = r.count("padding", 64)?;
            let px = r.count("padding", 64)?;
            Ok(Layer::Pool { max: version == "max_pool_2", size: (nr, nc), stride: (sy, sx), padding: (py, px) })
        }
        "fc_2" | "fc_3" => {
            let outputs = r.count("fc outputs", 1 << 20)?;
            let inputs = r.count("fc inputs", 1 << 24)?;
            let params = r.tensor("fc params")?;
            let w = r.alias_tensor("weights")?;
            let b = r.alias_tensor("biases")?;
            let bias_mode = r.int("fc bias mode")?;
            for _ in 0..4 {
                r.float("multiplier")?;
            }
            let mut use_bias = bias_mode == 0;
            if version == "fc_3" {
                use_bias &= r.boolean("use_bias")?;
            }
            let wsize: usize = w.iter().product();
            if wsize != inputs * outputs || params.data.len() < wsize {
                return Err(r.error("fc weights do not match its parameters"));
            }
            let bias = if use_bias && bias_mode == 0 {
                let bsize: usize = b.iter().product();
                Some(params.data[wsize..wsize + bsize.min(params.data.len() - wsize)].to_vec())
            } else {
                None
            };
            Ok(Layer::Fc { inputs, outputs, weights: params.data[..wsize].to_vec(), bias })
        }
        "add_prev_" => Ok(Layer::AddPrev),
        other => Err(r.error(&format!("unsupported layer {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_floats_decode_as_dlib_writes_them() {
        // 1, -4 (0x81 0x04), 300 (0x02 0x2c 0x01), and 1.0 as mantissa 16, exponent -4.
        let bytes = [0x01, 0x01, 0x81, 0x04, 0x02, 0x2c, 0x01, 0x01, 0x10, 0x81, 0x04, b'1'];
        let mut r = Reader::new(&bytes, "test");
        assert_eq!(r.int("a").unwrap(), 1);
        assert_eq!(r.int("b").unwrap(), -4);
        assert_eq!(r.int("c").unwrap(), 300);
        assert_eq!(r.float("d").unwrap(), 1.0);
        assert!(r.boolean("e").unwrap());
        assert!(r.at_end());
        assert!(r.int("past the end").is_err());
    }
}

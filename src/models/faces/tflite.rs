//! Reading a TensorFlow Lite model (`.tflite`) and running it, for exactly the operators
//! MediaPipe's BlazeFace detectors use: CONV_2D, DEPTHWISE_CONV_2D, ADD, MAX_POOL_2D, PAD,
//! RESHAPE, CONCATENATION, RELU, RESIZE_BILINEAR and DEQUANTIZE (of fp16 weights). Anything
//! else (another operator, a custom one, int8 quantisation, sparse tensors) is refused when the
//! file is read, with its name.
//!
//! The file is a FlatBuffer of TensorFlow Lite's `schema.fbs` (file identifier `TFL3`). The few
//! tables needed (Model, OperatorCode, SubGraph, Tensor, Buffer, Operator and the options of
//! the operators above) are read here by hand: every offset, length and vtable is checked
//! against the file's bounds before it is followed, so a truncated or altered file gives an
//! error naming the byte, never a panic or an allocation larger than the file. Weights stored
//! as fp16 behind a DEQUANTIZE are widened to f32 once, when the file is read.
//!
//! Tensors are NHWC f32 as in TensorFlow Lite's reference kernels (`tensorflow/lite/kernels/
//! internal/reference/`), whose arithmetic the loops below follow: SAME padding puts the odd
//! pixel after, max pooling ignores padding, bilinear resizing clamps its neighbours.

use crate::error::{Error, Result};

/// The most elements one tensor may have (bounds memory on hostile files): 64 M.
const MAX_ELEMENTS: usize = 1 << 26;

/// A cursor-free view of a FlatBuffer whose every access is bounds-checked.
struct Fb<'a> {
    b: &'a [u8],
    file: &'a str,
}

/// A table: its position and its vtable's.
#[derive(Clone, Copy)]
struct Table {
    pos: usize,
    vt: usize,
    vt_len: usize,
}

impl<'a> Fb<'a> {
    fn error(&self, what: &str, at: usize) -> Error {
        Error::model(
            self.file,
            format!(
                "not a TensorFlow Lite model clipdex can read: {what} at byte {at} (fetch the file again with \
                 `clipdex models download faces`)"
            ),
        )
    }

    fn bytes(&self, pos: usize, n: usize) -> Result<&'a [u8]> {
        pos.checked_add(n).and_then(|end| self.b.get(pos..end)).ok_or_else(|| self.error("the file ends early", pos))
    }

    fn u8_at(&self, pos: usize) -> Result<u8> {
        Ok(self.bytes(pos, 1)?[0])
    }

    fn u16_at(&self, pos: usize) -> Result<u16> {
        let s = self.bytes(pos, 2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }

    fn u32_at(&self, pos: usize) -> Result<u32> {
        let s = self.bytes(pos, 4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    /// Follows the unsigned offset stored at `pos`.
    fn indirect(&self, pos: usize) -> Result<usize> {
        let target = pos as u64 + self.u32_at(pos)? as u64;
        if target >= self.b.len() as u64 {
            return Err(self.error("an offset points past the end", pos));
        }
        Ok(target as usize)
    }

    fn table(&self, pos: usize) -> Result<Table> {
        let soffset = self.u32_at(pos)? as i32 as i64;
        let vt = pos as i64 - soffset;
        if vt < 0 || vt as u64 >= self.b.len() as u64 {
            return Err(self.error("a table's vtable is out of the file", pos));
        }
        let vt = vt as usize;
        let vt_len = self.u16_at(vt)? as usize;
        if vt_len < 4 || !vt_len.is_multiple_of(2) {
            return Err(self.error("a malformed vtable", vt));
        }
        self.bytes(vt, vt_len)?;
        Ok(Table { pos, vt, vt_len })
    }

    /// Where field `id` of `t` is stored, if it is.
    fn field(&self, t: Table, id: usize) -> Result<Option<usize>> {
        let slot = 4 + 2 * id;
        if slot + 2 > t.vt_len {
            return Ok(None);
        }
        let off = self.u16_at(t.vt + slot)? as usize;
        if off == 0 {
            return Ok(None);
        }
        Ok(Some(t.pos + off))
    }

    fn u8_field(&self, t: Table, id: usize, default: u8) -> Result<u8> {
        self.field(t, id)?.map_or(Ok(default), |p| self.u8_at(p))
    }

    fn i32_field(&self, t: Table, id: usize, default: i32) -> Result<i32> {
        self.field(t, id)?.map_or(Ok(default), |p| Ok(self.u32_at(p)? as i32))
    }

    fn table_field(&self, t: Table, id: usize) -> Result<Option<Table>> {
        match self.field(t, id)? {
            Some(p) => Ok(Some(self.table(self.indirect(p)?)?)),
            None => Ok(None),
        }
    }

    /// A vector field: where its elements start and how many there are, checked to fit the file.
    fn vector(&self, t: Table, id: usize, elem: usize) -> Result<Option<(usize, usize)>> {
        let Some(p) = self.field(t, id)? else { return Ok(None) };
        let v = self.indirect(p)?;
        let len = self.u32_at(v)? as usize;
        self.bytes(v + 4, len.checked_mul(elem).ok_or_else(|| self.error("a vector too long", v))?)?;
        Ok(Some((v + 4, len)))
    }

    fn tables(&self, t: Table, id: usize) -> Result<Vec<Table>> {
        let Some((start, len)) = self.vector(t, id, 4)? else { return Ok(Vec::new()) };
        (0..len).map(|i| self.table(self.indirect(start + 4 * i)?)).collect()
    }

    fn i32s(&self, t: Table, id: usize) -> Result<Vec<i32>> {
        let Some((start, len)) = self.vector(t, id, 4)? else { return Ok(Vec::new()) };
        (0..len).map(|i| Ok(self.u32_at(start + 4 * i)? as i32)).collect()
    }

    fn ubytes(&self, t: Table, id: usize) -> Result<&'a [u8]> {
        let Some((start, len)) = self.vector(t, id, 1)? else { return Ok(&[]) };
        self.bytes(start, len)
    }

    fn string(&self, t: Table, id: usize) -> Result<Option<String>> {
        let Some((start, len)) = self.vector(t, id, 1)? else { return Ok(None) };
        Ok(Some(String::from_utf8_lossy(self.bytes(start, len)?).into_owned()))
    }
}

/// A fused activation (TensorFlow Lite's `ActivationFunctionType`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Activation {
    None,
    Relu,
    ReluN1To1,
    Relu6,
}

impl Activation {
    fn apply(self, x: f32) -> f32 {
        match self {
            Activation::None => x,
            Activation::Relu => x.max(0.0),
            Activation::ReluN1To1 => x.clamp(-1.0, 1.0),
            Activation::Relu6 => x.clamp(0.0, 6.0),
        }
    }
}

/// SAME or VALID, with stride, dilation and (for pooling) the window.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Window {
    same: bool,
    stride: (usize, usize),
    dilation: (usize, usize),
}

/// The operators this interpreter runs.
#[derive(Debug, Clone, PartialEq)]
enum OpKind {
    Conv2d { window: Window, act: Activation },
    DepthwiseConv2d { window: Window, act: Activation },
    Add { act: Activation },
    MaxPool2d { window: Window, filter: (usize, usize), act: Activation },
    Pad,
    Reshape { new_shape: Vec<i32> },
    Concatenation { axis: i32, act: Activation },
    Relu,
    Dequantize,
    ResizeBilinear { align_corners: bool, half_pixel_centers: bool },
}

#[derive(Debug, Clone)]
struct Op {
    kind: OpKind,
    inputs: Vec<Option<usize>>,
    outputs: Vec<usize>,
}

/// A tensor's values: the interpreter computes in f32; int32 carries shapes and paddings.
#[derive(Debug, Clone, PartialEq)]
enum Data {
    F32(Vec<f32>),
    I32(Vec<i32>),
}

/// A tensor: its shape and values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Value {
    pub shape: Vec<usize>,
    data: Data,
}

impl Value {
    /// An f32 tensor; `data.len()` must be the product of `shape`.
    pub(crate) fn f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        Self { shape, data: Data::F32(data) }
    }

    /// Its values, when they are f32.
    pub(crate) fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            Data::F32(v) => Some(v),
            Data::I32(_) => None,
        }
    }
}

struct TensorInfo {
    name: String,
    shape: Vec<usize>,
}

/// A TensorFlow Lite model's first subgraph, read and ready to run.
pub(crate) struct TfliteModel {
    file: String,
    tensors: Vec<TensorInfo>,
    constants: Vec<Option<Value>>,
    ops: Vec<Op>,
    inputs: Vec<usize>,
    outputs: Vec<usize>,
}

fn builtin_name(code: i32) -> String {
    let known = [
        (0, "ADD"),
        (1, "AVERAGE_POOL_2D"),
        (2, "CONCATENATION"),
        (3, "CONV_2D"),
        (4, "DEPTHWISE_CONV_2D"),
        (5, "DEPTH_TO_SPACE"),
        (6, "DEQUANTIZE"),
        (9, "FULLY_CONNECTED"),
        (14, "LOGISTIC"),
        (17, "MAX_POOL_2D"),
        (18, "MUL"),
        (19, "RELU"),
        (21, "RELU6"),
        (22, "RESHAPE"),
        (23, "RESIZE_BILINEAR"),
        (25, "SOFTMAX"),
        (34, "PAD"),
        (54, "PRELU"),
        (124, "DENSIFY"),
    ];
    known.iter().find(|(c, _)| *c == code).map_or_else(|| format!("builtin operator {code}"), |(_, n)| n.to_string())
}

impl TfliteModel {
    /// Reads a `.tflite` file's bytes; `file` names it in errors.
    pub(crate) fn read(bytes: &[u8], file: &str) -> Result<Self> {
        let fb = Fb { b: bytes, file };
        if bytes.len() < 8 || &bytes[4..8] != b"TFL3" {
            return Err(Error::model(
                file,
                "not a TensorFlow Lite model (no TFL3 identifier at byte 4); give the .tflite file of a face detector",
            ));
        }
        let unsupported = |what: String| {
            Error::model(
                file,
                format!("{what}: clipdex runs only the operators of MediaPipe's BlazeFace face detectors"),
            )
        };
        let root = fb.table(fb.indirect(0)?)?;
        let version = fb.i32_field(root, 0, 0)?;
        if version != 3 {
            return Err(fb.error(&format!("schema version {version} (3 expected)"), root.pos));
        }
        let mut codes = Vec::new();
        for oc in fb.tables(root, 1)? {
            if let Some(custom) = fb.string(oc, 1)? {
                return Err(unsupported(format!("the custom operator {custom:?}")));
            }
            let deprecated = fb.u8_field(oc, 0, 0)? as i8 as i32;
            codes.push(deprecated.max(fb.i32_field(oc, 3, 0)?));
        }
        let buffers = fb.tables(root, 4)?;
        let subgraphs = fb.tables(root, 2)?;
        let Some(&graph) = subgraphs.first() else {
            return Err(fb.error("no subgraph", root.pos));
        };

        let mut tensors = Vec::new();
        let mut constants = Vec::new();
        for t in fb.tables(graph, 0)? {
            let name = fb.string(t, 3)?.unwrap_or_default();
            let mut shape = Vec::new();
            for d in fb.i32s(t, 0)? {
                if d < 0 {
                    return Err(fb.error(&format!("tensor {name:?} has a negative dimension"), t.pos));
                }
                shape.push(d as usize);
            }
            let count = shape
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d).filter(|&n| n <= MAX_ELEMENTS))
                .ok_or_else(|| fb.error(&format!("tensor {name:?} is too large"), t.pos))?;
            let dtype = fb.u8_field(t, 1, 0)?;
            if fb.field(t, 6)?.is_some() {
                return Err(unsupported(format!("tensor {name:?} is sparse")));
            }
            if let Some(q) = fb.table_field(t, 4)?
                && fb.vector(q, 2, 4)?.is_some_and(|(_, n)| n > 0)
                && dtype != 1
                && dtype != 0
            {
                return Err(unsupported(format!("tensor {name:?} is int8/uint8 quantised")));
            }
            let buffer = fb.i32_field(t, 2, 0)? as u32 as usize;
            let data = match buffer {
                0 => &[][..],
                b => {
                    let buf = *buffers.get(b).ok_or_else(|| fb.error(&format!("tensor {name:?}'s buffer"), t.pos))?;
                    if fb.field(buf, 1)?.is_some() && fb.ubytes(buf, 0)?.is_empty() {
                        return Err(unsupported(format!("tensor {name:?} is stored outside the flatbuffer")));
                    }
                    fb.ubytes(buf, 0)?
                }
            };
            let constant = if data.is_empty() {
                None
            } else {
                let (size, values) = match dtype {
                    0 => (
                        4,
                        Data::F32(data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
                    ),
                    1 => (
                        2,
                        Data::F32(
                            data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
                        ),
                    ),
                    2 => (
                        4,
                        Data::I32(data.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
                    ),
                    other => return Err(unsupported(format!("tensor {name:?} has element type {other}"))),
                };
                if data.len() != count * size {
                    return Err(
                        fb.error(&format!("tensor {name:?} holds {} bytes for {count} elements", data.len()), t.pos)
                    );
                }
                Some(Value { shape: shape.clone(), data: values })
            };
            tensors.push(TensorInfo { name, shape });
            constants.push(constant);
        }
        let index = |i: i32, what: &str| -> Result<usize> {
            usize::try_from(i)
                .ok()
                .filter(|&i| i < tensors.len())
                .ok_or_else(|| fb.error(&format!("{what} names tensor {i}, which does not exist"), graph.pos))
        };
        let inputs = fb.i32s(graph, 1)?.into_iter().map(|i| index(i, "an input")).collect::<Result<Vec<_>>>()?;
        let outputs = fb.i32s(graph, 2)?.into_iter().map(|i| index(i, "an output")).collect::<Result<Vec<_>>>()?;

        let mut ops = Vec::new();
        for o in fb.tables(graph, 3)? {
            let code_index = fb.i32_field(o, 0, 0)? as u32 as usize;
            let code = *codes.get(code_index).ok_or_else(|| fb.error("an operator's code", o.pos))?;
            let op_inputs = fb
                .i32s(o, 1)?
                .into_iter()
                .map(|i| if i < 0 { Ok(None) } else { index(i, "an operator").map(Some) })
                .collect::<Result<Vec<_>>>()?;
            let op_outputs = fb.i32s(o, 2)?.into_iter().map(|i| index(i, "an operator")).collect::<Result<Vec<_>>>()?;
            let options_type = fb.u8_field(o, 3, 0)?;
            let options = fb.table_field(o, 4)?;
            // The options table, checked to be of the operator's own type.
            let opts = |expected: u8| -> Result<Option<Table>> {
                match options {
                    Some(_) if options_type != expected => {
                        Err(fb.error(&format!("{} has options of type {options_type}", builtin_name(code)), o.pos))
                    }
                    other => Ok(other),
                }
            };
            let act = |t: Option<Table>, id: usize| -> Result<Activation> {
                let a = match t {
                    Some(t) => fb.u8_field(t, id, 0)?,
                    None => 0,
                };
                match a {
                    0 => Ok(Activation::None),
                    1 => Ok(Activation::Relu),
                    2 => Ok(Activation::ReluN1To1),
                    3 => Ok(Activation::Relu6),
                    a => Err(unsupported(format!("{} fuses activation {a}", builtin_name(code)))),
                }
            };
            let positive = |t: Option<Table>, id: usize, default: i32| -> Result<usize> {
                let v = match t {
                    Some(t) => fb.i32_field(t, id, default)?,
                    None => default,
                };
                if !(1..=4096).contains(&v) {
                    return Err(fb.error(&format!("{} has a stride, size or factor of {v}", builtin_name(code)), o.pos));
                }
                Ok(v as usize)
            };
            let same = |t: Option<Table>| -> Result<bool> {
                Ok(match t {
                    Some(t) => fb.u8_field(t, 0, 0)?,
                    None => 0,
                } == 0)
            };
            let kind = match code {
                3 => {
                    let t = opts(1)?;
                    let window = Window {
                        same: same(t)?,
                        stride: (positive(t, 2, 1)?, positive(t, 1, 1)?),
                        dilation: (positive(t, 5, 1)?, positive(t, 4, 1)?),
                    };
                    OpKind::Conv2d { window, act: act(t, 3)? }
                }
                4 => {
                    let t = opts(2)?;
                    let window = Window {
                        same: same(t)?,
                        stride: (positive(t, 2, 1)?, positive(t, 1, 1)?),
                        dilation: (positive(t, 6, 1)?, positive(t, 5, 1)?),
                    };
                    OpKind::DepthwiseConv2d { window, act: act(t, 4)? }
                }
                0 => OpKind::Add { act: act(opts(11)?, 0)? },
                17 => {
                    let t = opts(5)?;
                    let window =
                        Window { same: same(t)?, stride: (positive(t, 2, 1)?, positive(t, 1, 1)?), dilation: (1, 1) };
                    OpKind::MaxPool2d { window, filter: (positive(t, 4, 1)?, positive(t, 3, 1)?), act: act(t, 5)? }
                }
                34 => OpKind::Pad,
                22 => {
                    let new_shape = match opts(17)? {
                        Some(t) => fb.i32s(t, 0)?,
                        None => Vec::new(),
                    };
                    OpKind::Reshape { new_shape }
                }
                2 => {
                    let t = opts(10)?;
                    let axis = match t {
                        Some(t) => fb.i32_field(t, 0, 0)?,
                        None => 0,
                    };
                    OpKind::Concatenation { axis, act: act(t, 1)? }
                }
                19 => OpKind::Relu,
                6 => OpKind::Dequantize,
                23 => {
                    let t = opts(15)?;
                    let flag =
                        |id| -> Result<bool> { Ok(t.map(|t| fb.u8_field(t, id, 0)).transpose()?.unwrap_or(0) != 0) };
                    OpKind::ResizeBilinear { align_corners: flag(2)?, half_pixel_centers: flag(3)? }
                }
                other => return Err(unsupported(format!("the operator {}", builtin_name(other)))),
            };
            let (min_in, n_out) = match kind {
                OpKind::Conv2d { .. } | OpKind::DepthwiseConv2d { .. } => (2, 1),
                OpKind::Add { .. } | OpKind::Pad | OpKind::ResizeBilinear { .. } => (2, 1),
                OpKind::Concatenation { .. } | OpKind::Reshape { .. } => (1, 1),
                _ => (1, 1),
            };
            if op_inputs.len() < min_in || op_inputs[..min_in].iter().any(Option::is_none) || op_outputs.len() != n_out
            {
                return Err(
                    fb.error(&format!("{} has the wrong number of inputs or outputs", builtin_name(code)), o.pos)
                );
            }
            ops.push(Op { kind, inputs: op_inputs, outputs: op_outputs });
        }
        let mut model = Self { file: file.to_string(), tensors, constants, ops, inputs, outputs };
        model.fold_constants()?;
        Ok(model)
    }

    /// Runs the DEQUANTIZE operators whose input is a weight once, now, so that weights are f32.
    fn fold_constants(&mut self) -> Result<()> {
        let ops = std::mem::take(&mut self.ops);
        for op in ops {
            if op.kind == OpKind::Dequantize
                && let Some(Some(c)) = op.inputs[0].map(|i| self.constants[i].clone())
            {
                self.constants[op.outputs[0]] = Some(c);
                continue;
            }
            self.ops.push(op);
        }
        Ok(())
    }

    /// The shape of input `i`, as the file declares it (NHWC).
    pub(crate) fn input_shape(&self, i: usize) -> Option<&[usize]> {
        self.inputs.get(i).map(|&t| self.tensors[t].shape.as_slice())
    }

    /// The names of the outputs, in order.
    pub(crate) fn output_names(&self) -> Vec<&str> {
        self.outputs.iter().map(|&t| self.tensors[t].name.as_str()).collect()
    }

    fn error(&self, reason: String) -> Error {
        Error::model(&self.file, reason)
    }

    /// Runs the graph on one f32 input of the declared shape; returns the outputs in order.
    pub(crate) fn run(&self, input: Value) -> Result<Vec<Value>> {
        let Some(&input_id) = self.inputs.first() else {
            return Err(self.error("the model has no input".into()));
        };
        if input.shape != self.tensors[input_id].shape
            || input.as_f32().map(<[f32]>::len) != Some(input.shape.iter().product())
        {
            return Err(Error::Invalid(format!(
                "{}: an input of shape {:?} given; the model takes {:?}",
                self.file, input.shape, self.tensors[input_id].shape
            )));
        }
        let mut values: Vec<Option<Value>> = vec![None; self.tensors.len()];
        values[input_id] = Some(input);
        for op in &self.ops {
            let out = {
                let get = |k: usize| -> Result<&Value> {
                    let id = op
                        .inputs
                        .get(k)
                        .copied()
                        .flatten()
                        .ok_or_else(|| self.error("an operator input is missing".into()))?;
                    values[id].as_ref().or(self.constants[id].as_ref()).ok_or_else(|| {
                        self.error(format!("tensor {:?} is used before it is computed", self.tensors[id].name))
                    })
                };
                let optional = |k: usize| -> Option<&Value> {
                    let id = op.inputs.get(k).copied().flatten()?;
                    values[id].as_ref().or(self.constants[id].as_ref())
                };
                self.run_op(op, &get, &optional).map_err(|e| match e {
                    Error::Model { model, reason } => {
                        Error::Model { model, reason: format!("{reason} (at {:?})", self.tensors[op.outputs[0]].name) }
                    }
                    other => other,
                })?
            };
            values[op.outputs[0]] = Some(out);
        }
        self.outputs
            .iter()
            .map(|&o| {
                values[o]
                    .take()
                    .or_else(|| self.constants[o].clone())
                    .ok_or_else(|| self.error(format!("output {:?} is never computed", self.tensors[o].name)))
            })
            .collect()
    }

    fn run_op<'v>(
        &self,
        op: &Op,
        get: &dyn Fn(usize) -> Result<&'v Value>,
        optional: &dyn Fn(usize) -> Option<&'v Value>,
    ) -> Result<Value> {
        let f32s = |v: &Value| -> Result<Vec<f32>> {
            v.as_f32()
                .map(<[f32]>::to_vec)
                .ok_or_else(|| self.error("an int32 tensor where floats are expected".into()))
        };
        let ints = |v: &Value| -> Result<Vec<i32>> {
            match &v.data {
                Data::I32(d) => Ok(d.clone()),
                Data::F32(_) => Err(self.error("a float tensor where int32 is expected".into())),
            }
        };
        let nhwc = |v: &Value| -> Result<[usize; 4]> {
            match v.shape[..] {
                [n, h, w, c] => Ok([n, h, w, c]),
                _ => Err(self.error(format!("a tensor of shape {:?} where NHWC is expected", v.shape))),
            }
        };
        match &op.kind {
            OpKind::Conv2d { window, act } | OpKind::DepthwiseConv2d { window, act, .. } => {
                let (x, w) = (get(0)?, get(1)?);
                let [n, h, wd, c] = nhwc(x)?;
                let [wo, kh, kw, wi] = nhwc(w)?;
                let depthwise = matches!(op.kind, OpKind::DepthwiseConv2d { .. });
                // TensorFlow Lite takes the depth multiplier from the shapes, not the options.
                let (oc, groups, kernel_shape) = if depthwise {
                    if wo != 1 || wi % c != 0 || wi == 0 {
                        return Err(self.error(format!("a depthwise filter of shape {:?} for {c} channels", w.shape)));
                    }
                    (wi, c, (wi, 1, kh, kw))
                } else {
                    if wi != c {
                        return Err(self.error(format!("a grouped convolution ({c} channels, filters of {wi})")));
                    }
                    (wo, 1, (wo, wi, kh, kw))
                };
                if window.stride.0 != window.stride.1 || window.dilation.0 != window.dilation.1 {
                    return Err(self.error("a convolution with different strides or dilations across and down".into()));
                }
                let bias = self.bias(optional(2), oc)?;
                let (oh, ow, pt, pl) = self.out_size((h, wd), (kh, kw), *window)?;
                self.count(&[n, oh, ow, oc])?;
                // On candle (NCHW): the padding TensorFlow Lite puts after the odd pixel is
                // added explicitly, as candle pads both sides alike.
                let eff = |k: usize, d: usize| (k - 1) * d + 1;
                let (pb, pr) = (
                    ((oh - 1) * window.stride.0 + eff(kh, window.dilation.0)).saturating_sub(h + pt),
                    ((ow - 1) * window.stride.1 + eff(kw, window.dilation.1)).saturating_sub(wd + pl),
                );
                // The padded input and candle's unfolded patches stay within the bound too.
                self.count(&[n, h + pt + pb, wd + pl + pr, c])?;
                self.count(&[n, oh, ow, kh * kw * if depthwise { 1 } else { wi }])?;
                let cpu = &candle_core::Device::Cpu;
                let input = candle_core::Tensor::from_slice(self.floats(x)?, (n, h, wd, c), cpu)?
                    .permute((0, 3, 1, 2))?
                    .pad_with_zeros(2, pt, pb)?
                    .pad_with_zeros(3, pl, pr)?
                    .contiguous()?;
                let kernel = candle_core::Tensor::from_slice(self.floats(w)?, (wo, kh, kw, wi), cpu)?;
                let kernel = if depthwise { kernel.permute((3, 0, 1, 2))? } else { kernel.permute((0, 3, 1, 2))? }
                    .contiguous()?
                    .reshape(kernel_shape)?;
                let out = input
                    .conv2d(&kernel, 0, window.stride.0, window.dilation.0, groups)?
                    .broadcast_add(&candle_core::Tensor::from_slice(&bias, (1, oc, 1, 1), cpu)?)?;
                let out = match act {
                    Activation::None => out,
                    Activation::Relu => out.relu()?,
                    Activation::ReluN1To1 => out.clamp(-1f32, 1f32)?,
                    Activation::Relu6 => out.clamp(0f32, 6f32)?,
                };
                let out = out.permute((0, 2, 3, 1))?.flatten_all()?.to_vec1::<f32>()?;
                if out.len() != n * oh * ow * oc {
                    return Err(self.error(format!("a convolution gave {} values for {n}x{oh}x{ow}x{oc}", out.len())));
                }
                Ok(Value::f32(vec![n, oh, ow, oc], out))
            }
            OpKind::Add { act } => {
                let (a, b) = (get(0)?, get(1)?);
                if a.shape != b.shape {
                    return Err(self.error(format!(
                        "ADD of shapes {:?} and {:?} (broadcasting is not supported)",
                        a.shape, b.shape
                    )));
                }
                let (xa, xb) = (f32s(a)?, b.as_f32().ok_or_else(|| self.error("ADD of int32".into()))?);
                Ok(Value::f32(a.shape.clone(), xa.iter().zip(xb).map(|(x, y)| act.apply(x + y)).collect()))
            }
            OpKind::Relu => {
                let x = get(0)?;
                Ok(Value::f32(x.shape.clone(), f32s(x)?.into_iter().map(|v| v.max(0.0)).collect()))
            }
            OpKind::Dequantize => {
                let x = get(0)?;
                Ok(Value::f32(x.shape.clone(), f32s(x)?))
            }
            OpKind::MaxPool2d { window, filter, act } => {
                let x = get(0)?;
                let [n, h, wd, c] = nhwc(x)?;
                let (oh, ow, pt, pl) = self.out_size((h, wd), *filter, *window)?;
                let xs = self.floats(x)?;
                let mut out = vec![f32::MIN; self.count(&[n, oh, ow, c])?];
                for b in 0..n {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let o = &mut out[((b * oh + oy) * ow + ox) * c..][..c];
                            for ky in 0..filter.0 {
                                let iy = (oy * window.stride.0 + ky) as isize - pt as isize;
                                if iy < 0 || iy >= h as isize {
                                    continue;
                                }
                                for kx in 0..filter.1 {
                                    let ix = (ox * window.stride.1 + kx) as isize - pl as isize;
                                    if ix < 0 || ix >= wd as isize {
                                        continue;
                                    }
                                    let px = &xs[((b * h + iy as usize) * wd + ix as usize) * c..][..c];
                                    o.iter_mut().zip(px).for_each(|(m, v)| *m = m.max(*v));
                                }
                            }
                            o.iter_mut().for_each(|v| *v = act.apply(*v));
                        }
                    }
                }
                Ok(Value::f32(vec![n, oh, ow, c], out))
            }
            OpKind::Pad => {
                let (x, p) = (get(0)?, get(1)?);
                let pads = ints(p)?;
                let rank = x.shape.len();
                if pads.len() != 2 * rank || pads.iter().any(|&v| !(0..=4096).contains(&v)) {
                    return Err(self.error(format!("PAD with paddings {pads:?} for rank {rank}")));
                }
                let shape: Vec<usize> =
                    x.shape.iter().enumerate().map(|(d, &s)| s + (pads[2 * d] + pads[2 * d + 1]) as usize).collect();
                let count: usize = shape.iter().product();
                if count > MAX_ELEMENTS {
                    return Err(self.error("PAD makes too large a tensor".into()));
                }
                let xs = f32s(x)?;
                let mut out = vec![0f32; count];
                let strides = |s: &[usize]| -> Vec<usize> {
                    let mut st = vec![1; s.len()];
                    for d in (0..s.len().saturating_sub(1)).rev() {
                        st[d] = st[d + 1] * s[d + 1];
                    }
                    st
                };
                let (si, so) = (strides(&x.shape), strides(&shape));
                for (i, v) in xs.iter().enumerate() {
                    let j: usize = (0..rank).map(|d| ((i / si[d]) % x.shape[d] + pads[2 * d] as usize) * so[d]).sum();
                    out[j] = *v;
                }
                Ok(Value::f32(shape, out))
            }
            OpKind::Reshape { new_shape } => {
                let x = get(0)?;
                let target = match optional(1) {
                    Some(s) => ints(s)?,
                    None => new_shape.clone(),
                };
                let count: usize = x.shape.iter().product();
                let known: usize = target.iter().filter(|&&d| d >= 0).map(|&d| d as usize).product();
                let unknown = target.iter().filter(|&&d| d < 0).count();
                let shape: Vec<usize> = target
                    .iter()
                    .map(|&d| if d < 0 { count.checked_div(known).unwrap_or(0) } else { d as usize })
                    .collect();
                if unknown > 1 || shape.iter().product::<usize>() != count {
                    return Err(self.error(format!("RESHAPE of {:?} to {target:?}", x.shape)));
                }
                Ok(Value { shape, data: x.data.clone() })
            }
            OpKind::Concatenation { axis, act } => {
                let parts: Vec<&Value> = (0..op.inputs.len()).map(get).collect::<Result<_>>()?;
                let first = parts[0];
                let rank = first.shape.len() as i32;
                let axis = if *axis < 0 { axis + rank } else { *axis };
                if !(0..rank).contains(&axis) {
                    return Err(self.error(format!("CONCATENATION on axis {axis} of rank {rank}")));
                }
                let axis = axis as usize;
                let outer: usize = first.shape[..axis].iter().product();
                let mut shape = first.shape.clone();
                shape[axis] = 0;
                for p in &parts {
                    if p.shape.len() != first.shape.len()
                        || p.shape.iter().zip(&first.shape).enumerate().any(|(d, (a, b))| d != axis && a != b)
                    {
                        return Err(self.error(format!("CONCATENATION of {:?} and {:?}", first.shape, p.shape)));
                    }
                    shape[axis] += p.shape[axis];
                }
                let mut out = Vec::with_capacity(shape.iter().product());
                for o in 0..outer {
                    for p in &parts {
                        let inner: usize = p.shape[axis..].iter().product();
                        let xs = p.as_f32().ok_or_else(|| self.error("CONCATENATION of int32".into()))?;
                        out.extend(xs[o * inner..(o + 1) * inner].iter().map(|v| act.apply(*v)));
                    }
                }
                Ok(Value::f32(shape, out))
            }
            OpKind::ResizeBilinear { align_corners, half_pixel_centers } => {
                let (x, s) = (get(0)?, get(1)?);
                let [n, h, wd, c] = nhwc(x)?;
                let size = ints(s)?;
                let (oh, ow) = match size[..] {
                    [oh, ow] if (1..=4096).contains(&oh) && (1..=4096).contains(&ow) => (oh as usize, ow as usize),
                    _ => return Err(self.error(format!("RESIZE_BILINEAR to {size:?}"))),
                };
                let scale = |i: usize, o: usize| {
                    if *align_corners && o > 1 { (i as f32 - 1.0) / (o as f32 - 1.0) } else { i as f32 / o as f32 }
                };
                // TensorFlow Lite's ComputeInterpolationValues.
                let interp = |v: usize, scale: f32, size: usize| -> (f32, usize, usize) {
                    let s = if *half_pixel_centers { (v as f32 + 0.5) * scale - 0.5 } else { v as f32 * scale };
                    let lower = (s.floor() as i64).max(0) as usize;
                    let upper = (s.ceil() as i64).min(size as i64 - 1).max(0) as usize;
                    (s, lower, upper)
                };
                let (hs, ws) = (scale(h, oh), scale(wd, ow));
                let xs = self.floats(x)?;
                let at = |b: usize, y: usize, xx: usize, ch: usize| xs[((b * h + y) * wd + xx) * c + ch];
                let mut out = Vec::with_capacity(self.count(&[n, oh, ow, c])?);
                for b in 0..n {
                    for y in 0..oh {
                        let (iy, y0, y1) = interp(y, hs, h);
                        let dy = iy - y0 as f32;
                        for xx in 0..ow {
                            let (ix, x0, x1) = interp(xx, ws, wd);
                            let dx = ix - x0 as f32;
                            for ch in 0..c {
                                out.push(
                                    at(b, y0, x0, ch) * (1.0 - dy) * (1.0 - dx)
                                        + at(b, y1, x0, ch) * dy * (1.0 - dx)
                                        + at(b, y0, x1, ch) * (1.0 - dy) * dx
                                        + at(b, y1, x1, ch) * dy * dx,
                                );
                            }
                        }
                    }
                }
                Ok(Value::f32(vec![n, oh, ow, c], out))
            }
        }
    }

    fn floats<'v>(&self, v: &'v Value) -> Result<&'v [f32]> {
        v.as_f32().ok_or_else(|| self.error("an int32 tensor where floats are expected".into()))
    }

    /// The element count of an output shape, refused past [`MAX_ELEMENTS`].
    fn count(&self, shape: &[usize]) -> Result<usize> {
        shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d).filter(|&n| n <= MAX_ELEMENTS))
            .ok_or_else(|| self.error(format!("an output of shape {shape:?} is too large")))
    }

    /// A convolution's bias (zeros when it has none).
    fn bias(&self, b: Option<&Value>, channels: usize) -> Result<Vec<f32>> {
        match b {
            None => Ok(vec![0.0; channels]),
            Some(b) => match b.as_f32() {
                Some(v) if v.len() == channels => Ok(v.to_vec()),
                _ => Err(self.error(format!("a bias of shape {:?} for {channels} channels", b.shape))),
            },
        }
    }

    /// Output height and width and the padding before (top, left), as TensorFlow Lite computes them.
    fn out_size(
        &self,
        input: (usize, usize),
        filter: (usize, usize),
        w: Window,
    ) -> Result<(usize, usize, usize, usize)> {
        let one = |size: usize, k: usize, stride: usize, dilation: usize| -> Result<(usize, usize)> {
            if k == 0 || size == 0 {
                return Err(self.error("an empty convolution window or input".into()));
            }
            let eff = (k - 1) * dilation + 1;
            let out = if w.same {
                size.div_ceil(stride)
            } else if size >= eff {
                (size - eff) / stride + 1
            } else {
                return Err(self.error(format!("a window of {eff} over {size} pixels")));
            };
            let total = ((out.max(1) - 1) * stride + eff).saturating_sub(size);
            Ok((out, if w.same { total / 2 } else { 0 }))
        };
        let (oh, pt) = one(input.0, filter.0, w.stride.0, w.dilation.0)?;
        let (ow, pl) = one(input.1, filter.1, w.stride.1, w.dilation.1)?;
        Ok((oh, ow, pt, pl))
    }
}

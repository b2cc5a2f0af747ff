//! Bytes -> validated [`Plan`]. Everything read from the file is checked here, so that a
//! damaged or hand-edited artifact is a [`RuntimeError`], never a panic in a kernel.

mod fixed;

use crate::error::invalid;
use crate::plan::{
    Activation, ActivationUnit, Conv, Dense, EltwiseKind, Fixed, FixedChannels, Format, Hardware, Layer, Op, Plan,
    Pool, PoolKind,
};
use crate::sparse_rows::SparseRows;
use crate::RuntimeError;
use hass_proto as pb;
use hass_proto::geometry::{broadcast_shapes, window_output_len};

/// Largest per-image tensor the runtime accepts (values), against absurd shapes.
const MAX_VALUES_PER_IMAGE: usize = 1 << 30;
/// Largest folding factor: far above any real stage's parallelism, and small enough that
/// the simulation's products of factors cannot overflow.
const MAX_FACTOR: u32 = 1 << 16;

/// Read and validate an artifact file.
pub fn load_file(path: &std::path::Path) -> Result<Plan, RuntimeError> {
    let bytes = std::fs::read(path)
        .map_err(|e| RuntimeError::Input(format!("cannot read artifact {}: {e}", path.display())))?;
    load_bytes(&bytes)
}

/// Validate artifact bytes and build the executable plan.
pub fn load_bytes(bytes: &[u8]) -> Result<Plan, RuntimeError> {
    let (schedule, weights) = hass_proto::decode(bytes)?;
    let input = schedule.input.as_ref().ok_or_else(|| invalid("<schedule>", "no input type"))?;
    let input_shape = tensor_shape("<input>", input)?;
    let mut shapes: Vec<Vec<usize>> = vec![input_shape.clone()];
    // The fixed-point datapath: every value's format, the input's first.
    let input_format = match &schedule.input_format {
        Some(f) => Some(fixed::data_format("<input>", "input", Some(f))?),
        None => None,
    };
    let mut formats: Vec<Format> = input_format.into_iter().collect();
    // Per value: whether no input can make it negative (the input can be), and whether it
    // is declared unsigned.
    let (mut non_negative, mut unsigned) = (vec![false], vec![false]);
    let mut layers = Vec::with_capacity(schedule.layers.len());
    for layer in &schedule.layers {
        let inputs: Vec<usize> = layer.inputs.iter().map(|&i| i as usize).collect();
        if let Some(&bad) = inputs.iter().find(|&&i| i >= shapes.len()) {
            return Err(invalid(&layer.name, format!("reads value {bad}, which is not computed before it")));
        }
        let in_shapes: Vec<&[usize]> = inputs.iter().map(|&i| shapes[i].as_slice()).collect();
        let declared =
            tensor_shape(&layer.name, layer.output.as_ref().ok_or_else(|| invalid(&layer.name, "no output type"))?)?;
        let op = layer.op.as_ref().ok_or_else(|| invalid(&layer.name, "no operation (written by a newer hassc?)"))?;
        if layer.fixed.is_some() != input_format.is_some() {
            return Err(invalid(&layer.name, "mixes the fixed-point and float datapaths"));
        }
        let input_formats: Vec<Format> =
            if input_format.is_some() { inputs.iter().map(|&i| formats[i]).collect() } else { Vec::new() };
        let l = LayerIn {
            name: &layer.name,
            ins: &in_shapes,
            declared: &declared,
            weights,
            fixed: layer.fixed.as_ref(),
            input_formats: &input_formats,
            input_unsigned: inputs.first().is_some_and(|&i| unsigned[i]),
        };
        let (op, computed, channels) = lower_op(&l, op)?;
        non_negative.push(op.output_is_non_negative(inputs.iter().map(|&i| non_negative[i])));
        unsigned.push(layer.fixed.as_ref().is_some_and(|f| f.unsigned_output));
        if unsigned[unsigned.len() - 1] && !non_negative[non_negative.len() - 1] {
            return Err(invalid(&layer.name, "declares an unsigned output, but its inputs can make it negative"));
        }
        let fixed = match &layer.fixed {
            Some(record) => Some(fixed_layer(&l, record, &op, channels)?),
            None => None,
        };
        let hardware = check_folding(&layer.name, layer.folding.as_ref(), &op, &in_shapes)?;
        if computed != declared {
            return Err(invalid(&layer.name, format!("declares output {declared:?} but its inputs give {computed:?}")));
        }
        shapes.push(declared.clone());
        formats.extend(fixed.as_ref().map(|f| f.unit.out()));
        layers.push(Layer { name: layer.name.clone(), inputs, output_shape: declared, op, hardware, fixed });
    }
    let outputs: Vec<usize> = schedule.outputs.iter().map(|&i| i as usize).collect();
    if outputs.is_empty() || outputs.iter().any(|&o| o >= shapes.len()) {
        return Err(invalid("<schedule>", format!("outputs {outputs:?} do not name computed values")));
    }
    let (board, clock_mhz) = schedule.board.map(|b| (b.name, b.clock_mhz)).unwrap_or_default();
    Ok(Plan { model: schedule.model, board, clock_mhz, input_shape, layers, outputs, input_format })
}

/// A fixed-point layer's formats and activation unit, checked: its output format, and the
/// pre-activation format where its activation reads one (a stand-alone activation reads its
/// input's). A Reshape keeps its input's format.
fn fixed_layer(
    l: &LayerIn,
    record: &pb::FixedPoint,
    op: &Op,
    channels: Option<FixedChannels>,
) -> Result<Fixed, RuntimeError> {
    let out = fixed::data_format(l.name, "output", record.output.as_ref())?;
    let activation = op.activation();
    let pre = match op {
        Op::Activation(_) => l.input_formats[0],
        _ if hass_proto::fixed::reads_pre_activation(activation) => {
            fixed::data_format(l.name, "pre-activation", record.pre_activation.as_ref())?
        }
        _ => out,
    };
    if matches!(op, Op::Reshape) && out != l.input_formats[0] {
        return Err(invalid(l.name, "a reshape must keep its input's format"));
    }
    if matches!(op, Op::Conv(_) | Op::Dense(_) | Op::ScaleShift { .. }) != channels.is_some() {
        return Err(invalid(l.name, "has no fixed-point weights"));
    }
    Ok(Fixed { unit: ActivationUnit::new(activation, pre, out), channels, unsigned_output: record.unsigned_output })
}

/// The hardware record is not used to compute, but the cycle simulation reads it, so a
/// corrupt one must not pass: factors are in range, and a conv's or fully connected layer's
/// channel-to-stream map names an existing stream for every input channel.
fn check_folding(
    layer: &str,
    folding: Option<&pb::Folding>,
    op: &Op,
    inputs: &[&[usize]],
) -> Result<Hardware, RuntimeError> {
    let f = folding.ok_or_else(|| invalid(layer, "no folding record"))?;
    if [f.coarse_in, f.coarse_out, f.coarse_group, f.fine, f.spatial].iter().any(|&x| x == 0 || x > MAX_FACTOR) {
        return Err(invalid(layer, format!("folding factors must be between 1 and {MAX_FACTOR}")));
    }
    if matches!(op, Op::Conv(_) | Op::Dense(_)) && !f.channel_stream.is_empty() {
        let streams = f.coarse_in.saturating_mul(f.coarse_group);
        if f.channel_stream.len() != inputs[0][0] || f.channel_stream.iter().any(|&s| s >= streams) {
            return Err(invalid(layer, "channel-to-stream map does not fit the folding"));
        }
    }
    Ok(Hardware {
        coarse_in: f.coarse_in as usize,
        coarse_out: f.coarse_out as usize,
        coarse_group: f.coarse_group as usize,
        fine: f.fine as usize,
        spatial: f.spatial as usize,
        channel_stream: f.channel_stream.iter().map(|&s| s as usize).collect(),
        sparse: f.sparse,
    })
}

fn tensor_shape(layer: &str, t: &pb::TensorType) -> Result<Vec<usize>, RuntimeError> {
    if t.dtype != pb::DataType::F32 as i32 {
        return Err(invalid(layer, format!("data type {} is not supported by this runtime", t.dtype)));
    }
    let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    let count = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    match count {
        Some(n) if n > 0 && n <= MAX_VALUES_PER_IMAGE => Ok(shape),
        _ => Err(invalid(layer, format!("shape {shape:?} is empty or too large"))),
    }
}

/// A tensor's reference, encoding and bytes, its shape checked against `expected`.
fn tensor_bytes<'a>(
    l: &LayerIn<'a>,
    what: &str,
    r: Option<&'a pb::WeightRef>,
    expected: &[usize],
) -> Result<(&'a pb::WeightRef, pb::WeightEncoding, &'a [u8]), RuntimeError> {
    let r = r.ok_or_else(|| invalid(l.name, format!("missing {what}")))?;
    let shape: Vec<usize> = r.shape.iter().map(|&d| d as usize).collect();
    if shape != expected {
        return Err(invalid(l.name, format!("{what} has shape {shape:?}, expected {expected:?}")));
    }
    let count: usize = expected.iter().product();
    let encoding = pb::WeightEncoding::try_from(r.encoding)
        .map_err(|_| invalid(l.name, format!("{what} has unknown encoding {}", r.encoding)))?;
    // Format 1 wrote dense tensors without a length.
    let length =
        if r.byte_length == 0 && encoding == pb::WeightEncoding::Dense { (count * 4) as u64 } else { r.byte_length };
    let start = usize::try_from(r.byte_offset).ok();
    let end = start.zip(usize::try_from(length).ok()).and_then(|(s, l)| s.checked_add(l));
    match (start, end) {
        (Some(s), Some(e)) if e <= l.weights.len() => Ok((r, encoding, &l.weights[s..e])),
        _ => Err(invalid(l.name, format!("{what} lies outside the weights section"))),
    }
}

/// A float32 tensor of the float datapath.
fn weights_f32(
    l: &LayerIn,
    what: &str,
    r: Option<&pb::WeightRef>,
    expected: &[usize],
) -> Result<Vec<f32>, RuntimeError> {
    let (r, encoding, bytes) = tensor_bytes(l, what, r, expected)?;
    if r.dtype != pb::DataType::F32 as i32 {
        return Err(invalid(l.name, format!("{what} has data type {}; a float layer needs float32", r.dtype)));
    }
    let count: usize = expected.iter().product();
    hass_proto::encoding::decode(encoding, bytes, count, expected.first().copied().unwrap_or(1))
        .map_err(|e| invalid(l.name, format!("{what}: {e}")))
}

/// A layer's weights and biases on either datapath.
struct Weighted {
    /// The weights as `f32` (exact dequantized integers on the fixed-point datapath).
    weight: Vec<f32>,
    /// The biases as `f32`.
    bias: Vec<f32>,
    /// The fixed-point accumulator side.
    channels: Option<FixedChannels>,
}

/// A layer's weights and biases (`shape` output channels first) on either datapath.
fn weights_and_biases(
    l: &LayerIn,
    names: (&str, &str),
    weight: Option<&pb::WeightRef>,
    bias: Option<&pb::WeightRef>,
    shape: &[usize],
) -> Result<Weighted, RuntimeError> {
    if l.fixed.is_some() {
        return fixed::channels(l, names, weight, bias, shape);
    }
    let weight = weights_f32(l, names.0, weight, shape)?;
    Ok(Weighted { weight, bias: weights_f32(l, names.1, bias, &shape[..1])?, channels: None })
}

fn activation(layer: &str, a: Option<&pb::Activation>) -> Result<Option<Activation>, RuntimeError> {
    use pb::activation::Kind;
    let Some(a) = a else { return Ok(None) };
    // Clip bounds may be infinite (no bound); nothing may be NaN.
    let bad = |name: &str, v: &[f32], ok: fn(f32) -> bool| match v.iter().find(|x| !ok(**x)) {
        Some(x) => Err(invalid(layer, format!("{name} activation has a parameter of {x}"))),
        None => Ok(()),
    };
    match &a.kind {
        Some(Kind::Clip(c)) => bad("clip", &[c.min, c.max], |x| !x.is_nan())?,
        Some(Kind::HardSigmoid(h)) => bad("hard-sigmoid", &[h.alpha, h.beta], f32::is_finite)?,
        _ => {}
    }
    Ok(Some(match a.kind.as_ref().ok_or_else(|| invalid(layer, "activation of unknown kind"))? {
        Kind::Relu(_) => Activation::Relu,
        Kind::Clip(c) => Activation::Clip { min: c.min, max: c.max },
        Kind::HardSigmoid(h) => Activation::HardSigmoid { alpha: h.alpha, beta: h.beta },
        Kind::HardSwish(_) => Activation::HardSwish,
        Kind::Sigmoid(_) => Activation::Sigmoid,
    }))
}

fn finite_threshold(layer: &str, t: Option<f32>) -> Result<Option<f32>, RuntimeError> {
    match t {
        Some(v) if !v.is_finite() => Err(invalid(layer, format!("input threshold {v} is not finite"))),
        t => Ok(t),
    }
}

fn pair(layer: &str, what: &str, v: &[u32]) -> Result<[usize; 2], RuntimeError> {
    match v {
        [a, b] if *a > 0 && *b > 0 => Ok([*a as usize, *b as usize]),
        _ => Err(invalid(layer, format!("{what} must be two positive values, got {v:?}"))),
    }
}

fn pads(layer: &str, v: &[u32]) -> Result<[usize; 4], RuntimeError> {
    match v {
        [a, b, c, d] => Ok([*a as usize, *b as usize, *c as usize, *d as usize]),
        _ => Err(invalid(layer, format!("pads must be four values, got {v:?}"))),
    }
}

fn arity(layer: &str, inputs: &[&[usize]], n: usize) -> Result<(), RuntimeError> {
    if inputs.len() != n {
        return Err(invalid(layer, format!("takes {n} input(s), has {}", inputs.len())));
    }
    Ok(())
}

fn chw(layer: &str, s: &[usize]) -> Result<[usize; 3], RuntimeError> {
    match s {
        [c, h, w] => Ok([*c, *h, *w]),
        _ => Err(invalid(layer, format!("needs a C x H x W input, got {s:?}"))),
    }
}

fn window(
    layer: &str,
    hw: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    p: [usize; 4],
    ceil: bool,
) -> Result<[usize; 2], RuntimeError> {
    let oh = window_output_len(hw[0], kernel[0], stride[0], dilation[0], p[0], p[2], ceil);
    let ow = window_output_len(hw[1], kernel[1], stride[1], dilation[1], p[1], p[3], ceil);
    match (oh, ow) {
        (Some(h), Some(w)) => Ok([h, w]),
        _ => Err(invalid(layer, format!("window {kernel:?} does not fit input {hw:?}"))),
    }
}

/// A lowered layer, the per-image output shape its inputs give, and its fixed-point
/// weights.
type Lowered = Result<(Op, Vec<usize>, Option<FixedChannels>), RuntimeError>;
/// A lowered layer without weights and its output shape.
type Shaped = Result<(Op, Vec<usize>), RuntimeError>;

/// What lowering one layer reads.
struct LayerIn<'a> {
    /// The layer's name, for errors.
    name: &'a str,
    /// Per-image shapes of its inputs.
    ins: &'a [&'a [usize]],
    /// Its declared per-image output shape.
    declared: &'a [usize],
    /// The artifact's weights section.
    weights: &'a [u8],
    /// Its fixed-point record (the fixed-point datapath only).
    fixed: Option<&'a pb::FixedPoint>,
    /// Its inputs' formats (the fixed-point datapath only).
    input_formats: &'a [Format],
    /// Whether its first input is declared unsigned (its accumulator counts one bit less).
    input_unsigned: bool,
}

/// Check one layer's operation against its input shapes and declared output, and decode
/// its weights: one function per layer kind below.
fn lower_op(l: &LayerIn, op: &pb::layer::Op) -> Lowered {
    use pb::layer::Op as P;
    let plain = |r: Shaped| r.map(|(op, shape)| (op, shape, None));
    match op {
        P::Conv(x) => lower_conv(l, x),
        P::Dense(x) => lower_dense(l, x),
        P::Pool(x) => plain(lower_pool(l, x)),
        P::GlobalAveragePool(x) => plain(lower_global_average_pool(l, x)),
        P::Eltwise(x) => plain(lower_eltwise(l, x)),
        P::ScaleShift(x) => lower_scale_shift(l, x),
        P::Activation(x) => plain(lower_activation_layer(l, x)),
        P::Concat(x) => plain(lower_concat(l, x)),
        P::Reshape(x) => plain(lower_reshape(l, x)),
    }
}

fn lower_conv(l: &LayerIn, c: &pb::Conv) -> Lowered {
    arity(l.name, l.ins, 1)?;
    let [c_in, h, w] = chw(l.name, l.ins[0])?;
    let kernel = pair(l.name, "kernel", &c.kernel)?;
    let stride = pair(l.name, "stride", &c.stride)?;
    let dilation = pair(l.name, "dilation", &c.dilation)?;
    let pads = pads(l.name, &c.pads)?;
    let groups = c.groups as usize;
    let c_out = *l.declared.first().unwrap_or(&0);
    if groups == 0 || c_in % groups != 0 || !c_out.is_multiple_of(groups) {
        return Err(invalid(l.name, format!("groups {groups} must divide C_in {c_in} and C_out {c_out}")));
    }
    let shape = [c_out, c_in / groups, kernel[0], kernel[1]];
    let Weighted { weight, bias, channels } =
        weights_and_biases(l, ("weight", "bias"), c.weight.as_ref(), c.bias.as_ref(), &shape)?;
    let [oh, ow] = window(l.name, [h, w], kernel, stride, dilation, pads, false)?;
    let activation = activation(l.name, c.activation.as_ref())?;
    let input_threshold = finite_threshold(l.name, c.input_threshold)?;
    Ok((
        Op::Conv(Conv {
            sparse_weight: SparseRows::for_conv(&weight, c_out, kernel),
            winograd: true,
            derived: Default::default(),
            weight,
            bias,
            c_in,
            c_out,
            kernel,
            stride,
            dilation,
            pads,
            groups,
            activation,
            input_threshold,
        }),
        vec![c_out, oh, ow],
        channels,
    ))
}

fn lower_dense(l: &LayerIn, d: &pb::Dense) -> Lowered {
    arity(l.name, l.ins, 1)?;
    let &[inputs] = l.ins[0] else {
        return Err(invalid(l.name, format!("needs a flat input, got {:?}", l.ins[0])));
    };
    let outputs = *l.declared.first().unwrap_or(&0);
    let Weighted { weight, bias, channels } =
        weights_and_biases(l, ("weight", "bias"), d.weight.as_ref(), d.bias.as_ref(), &[outputs, inputs])?;
    let activation = activation(l.name, d.activation.as_ref())?;
    let input_threshold = finite_threshold(l.name, d.input_threshold)?;
    let sparse_weight = SparseRows::from_dense(&weight, outputs);
    let dense = Dense { weight, bias, inputs, outputs, activation, input_threshold, sparse_weight };
    Ok((Op::Dense(dense), vec![outputs], channels))
}

fn lower_pool(l: &LayerIn, p: &pb::Pool) -> Shaped {
    arity(l.name, l.ins, 1)?;
    let [c, h, w] = chw(l.name, l.ins[0])?;
    let kind = match pb::PoolKind::try_from(p.kind) {
        Ok(pb::PoolKind::Max) => PoolKind::Max,
        Ok(pb::PoolKind::Average) => PoolKind::Average,
        _ => return Err(invalid(l.name, format!("unknown pool kind {}", p.kind))),
    };
    let pool = Pool {
        kind,
        kernel: pair(l.name, "kernel", &p.kernel)?,
        stride: pair(l.name, "stride", &p.stride)?,
        dilation: pair(l.name, "dilation", &p.dilation)?,
        pads: pads(l.name, &p.pads)?,
        ceil_mode: p.ceil_mode,
        count_include_pad: p.count_include_pad,
    };
    let [oh, ow] = window(l.name, [h, w], pool.kernel, pool.stride, pool.dilation, pool.pads, pool.ceil_mode)?;
    Ok((Op::Pool(pool), vec![c, oh, ow]))
}

fn lower_global_average_pool(l: &LayerIn, _: &pb::GlobalAveragePool) -> Shaped {
    arity(l.name, l.ins, 1)?;
    let [c, _, _] = chw(l.name, l.ins[0])?;
    let out = if l.declared.len() == 1 { vec![c] } else { vec![c, 1, 1] };
    Ok((Op::GlobalAveragePool, out))
}

fn lower_eltwise(l: &LayerIn, e: &pb::Eltwise) -> Shaped {
    arity(l.name, l.ins, 2)?;
    let kind = match pb::EltwiseKind::try_from(e.kind) {
        Ok(pb::EltwiseKind::Add) => EltwiseKind::Add,
        Ok(pb::EltwiseKind::Mul) => EltwiseKind::Mul,
        _ => return Err(invalid(l.name, format!("unknown element-wise kind {}", e.kind))),
    };
    let out = broadcast_shapes(l.ins[0], l.ins[1])
        .ok_or_else(|| invalid(l.name, format!("cannot broadcast {:?} with {:?}", l.ins[0], l.ins[1])))?;
    Ok((Op::Eltwise { kind, activation: activation(l.name, e.activation.as_ref())? }, out))
}

fn lower_scale_shift(l: &LayerIn, s: &pb::ScaleShift) -> Lowered {
    arity(l.name, l.ins, 1)?;
    let c = *l.ins[0].first().ok_or_else(|| invalid(l.name, "needs a channel axis"))?;
    let Weighted { weight: scale, bias: shift, channels } =
        weights_and_biases(l, ("scale", "shift"), s.scale.as_ref(), s.shift.as_ref(), &[c])?;
    let activation = activation(l.name, s.activation.as_ref())?;
    Ok((Op::ScaleShift { scale, shift, activation }, l.ins[0].to_vec(), channels))
}

fn lower_activation_layer(l: &LayerIn, a: &pb::Activation) -> Shaped {
    arity(l.name, l.ins, 1)?;
    let act = activation(l.name, Some(a))?.ok_or_else(|| invalid(l.name, "activation of unknown kind"))?;
    Ok((Op::Activation(act), l.ins[0].to_vec()))
}

fn lower_concat(l: &LayerIn, _: &pb::Concat) -> Shaped {
    if l.ins.is_empty() {
        return Err(invalid(l.name, "concatenates nothing"));
    }
    let [_, h, w] = chw(l.name, l.ins[0])?;
    let mut channels = 0;
    for s in l.ins {
        let [c, h2, w2] = chw(l.name, s)?;
        if (h2, w2) != (h, w) {
            return Err(invalid(l.name, format!("inputs differ in H x W: {:?}", l.ins)));
        }
        channels += c;
    }
    Ok((Op::Concat, vec![channels, h, w]))
}

fn lower_reshape(l: &LayerIn, _: &pb::Reshape) -> Shaped {
    arity(l.name, l.ins, 1)?;
    let from: usize = l.ins[0].iter().product();
    let to: usize = l.declared.iter().product();
    if from != to {
        return Err(invalid(
            l.name,
            format!("reshapes {:?} ({from} values) to {:?} ({to} values)", l.ins[0], l.declared),
        ));
    }
    Ok((Op::Reshape, l.declared.to_vec()))
}

#[cfg(test)]
mod tests {
    //! Each check of the loader, one broken field at a time, on a small schedule built by
    //! hand: input `[2, 4, 4]` -> 3x3 conv (pad 1) to 3 channels -> reshape to 48 -> dense 5.
    use super::*;

    fn folding() -> pb::Folding {
        pb::Folding { coarse_in: 1, coarse_out: 1, coarse_group: 1, fine: 1, spatial: 1, ..Default::default() }
    }

    fn tensor(shape: &[u32]) -> Option<pb::TensorType> {
        Some(pb::TensorType { shape: shape.to_vec(), dtype: pb::DataType::F32 as i32 })
    }

    /// The valid schedule and its weights section.
    fn valid() -> (pb::Schedule, Vec<u8>) {
        let mut w = hass_proto::WeightsWriter::default();
        let conv = (w.push_f32(&[3, 2, 3, 3], &[0.5; 54]), w.push_f32(&[3], &[0.0; 3]));
        let dense = (w.push_f32(&[5, 48], &[0.25; 240]), w.push_f32(&[5], &[1.0; 5]));
        (small_network(conv, dense, Default::default()), w.into_bytes())
    }

    /// The tests' network with the given (weight, bias) of its conv and dense layers and the
    /// fixed-point records of its three layers (the fixed-point tests use it too).
    pub(super) fn small_network(
        (conv_weight, conv_bias): (pb::WeightRef, pb::WeightRef),
        (dense_weight, dense_bias): (pb::WeightRef, pb::WeightRef),
        [conv_fixed, flat_fixed, dense_fixed]: [Option<pb::FixedPoint>; 3],
    ) -> pb::Schedule {
        let conv = pb::Conv {
            weight: Some(conv_weight),
            bias: Some(conv_bias),
            kernel: vec![3, 3],
            stride: vec![1, 1],
            dilation: vec![1, 1],
            pads: vec![1; 4],
            groups: 1,
            activation: None,
            input_threshold: None,
        };
        let dense =
            pb::Dense { weight: Some(dense_weight), bias: Some(dense_bias), activation: None, input_threshold: None };
        use pb::layer::Op as P;
        let layer = |name: &str, inputs: u32, output: &[u32], op: P, fixed| pb::Layer {
            name: name.into(),
            inputs: vec![inputs],
            output: tensor(output),
            folding: Some(folding()),
            op: Some(op),
            fixed,
        };
        pb::Schedule {
            model: "m".into(),
            input: tensor(&[2, 4, 4]),
            layers: vec![
                layer("conv", 0, &[3, 4, 4], P::Conv(conv), conv_fixed),
                layer("flat", 1, &[48], P::Reshape(pb::Reshape {}), flat_fixed),
                layer("fc", 2, &[5], P::Dense(dense), dense_fixed),
            ],
            outputs: vec![3],
            ..Default::default()
        }
    }

    fn load(schedule: &pb::Schedule, weights: &[u8]) -> Result<Plan, RuntimeError> {
        load_bytes(&hass_proto::encode(schedule, weights))
    }

    fn conv(s: &mut pb::Schedule) -> &mut pb::Conv {
        match s.layers[0].op.as_mut() {
            Some(pb::layer::Op::Conv(c)) => c,
            _ => unreachable!("layer 0 is the conv"),
        }
    }

    #[test]
    fn the_valid_schedule_loads_and_runs() {
        let (s, w) = valid();
        let plan = load(&s, &w).unwrap();
        assert_eq!(plan.layers.len(), 3);
        let out = crate::run(&plan, &crate::Tensor::new(vec![1, 2, 4, 4], vec![1.0; 32]).unwrap()).unwrap();
        assert_eq!(out[0].shape(), &[1, 5]);
    }

    #[test]
    fn every_inconsistency_is_named_with_its_layer() {
        type Break = fn(&mut pb::Schedule, &mut Vec<u8>);
        let cases: &[(&str, Break, &str)] = &[
            ("no input type", |s, _| s.input = None, "no input type"),
            ("empty input", |s, _| s.input = tensor(&[2, 0, 4]), "is empty or too large"),
            ("huge input", |s, _| s.input = tensor(&[1 << 16, 1 << 16, 4]), "is empty or too large"),
            ("reads ahead", |s, _| s.layers[0].inputs = vec![2], "reads value 2, which is not computed before it"),
            ("no op", |s, _| s.layers[1].op = None, "no operation"),
            ("no output type", |s, _| s.layers[0].output = None, "no output type"),
            ("wrong output", |s, _| s.layers[0].output = tensor(&[3, 5, 4]), "declares output [3, 5, 4]"),
            ("outputs", |s, _| s.outputs = vec![9], "do not name computed values"),
            ("no folding", |s, _| s.layers[0].folding = None, "no folding record"),
            ("zero factor", |s, _| s.layers[0].folding.as_mut().unwrap().fine = 0, "folding factors must be between 1"),
            ("huge factor", |s, _| s.layers[2].folding.as_mut().unwrap().spatial = u32::MAX, "between 1 and 65536"),
            (
                "dense stream map",
                |s, _| s.layers[2].folding.as_mut().unwrap().channel_stream = vec![3; 48],
                "channel-to-stream map does not fit the folding",
            ),
            (
                "stream map",
                |s, _| s.layers[0].folding.as_mut().unwrap().channel_stream = vec![0, 1],
                "channel-to-stream map does not fit the folding",
            ),
            ("kernel", |s, _| conv(s).kernel = vec![3], "kernel must be two positive values"),
            ("pads", |s, _| conv(s).pads = vec![1, 1], "pads must be four values"),
            ("groups", |s, _| conv(s).groups = 2, "groups 2 must divide C_in 2 and C_out 3"),
            ("window", |s, _| conv(s).pads = vec![0; 4], "declares output [3, 4, 4] but its inputs give [3, 2, 2]"),
            ("weight shape", |s, _| conv(s).weight.as_mut().unwrap().shape = vec![3, 2, 9], "weight has shape"),
            ("no bias", |s, _| conv(s).bias = None, "missing bias"),
            (
                "weights outside",
                |s, _| conv(s).weight.as_mut().unwrap().byte_offset = 1 << 40,
                "weight lies outside the weights section",
            ),
            ("encoding", |s, _| conv(s).weight.as_mut().unwrap().encoding = 9, "weight has unknown encoding 9"),
            ("threshold", |s, _| conv(s).input_threshold = Some(f32::NAN), "input threshold NaN is not finite"),
            (
                "activation parameter",
                |s, _| {
                    let clip = pb::Clip { min: 0.0, max: f32::NAN };
                    conv(s).activation = Some(pb::Activation { kind: Some(pb::activation::Kind::Clip(clip)) })
                },
                "clip activation has a parameter of NaN",
            ),
            (
                "activation",
                |s, _| conv(s).activation = Some(pb::Activation { kind: None }),
                "activation of unknown kind",
            ),
            ("reshape", |s, _| s.layers[1].output = tensor(&[47]), "reshapes [3, 4, 4] (48 values) to [47]"),
            ("dense input", |s, _| s.layers[2].inputs = vec![1], "needs a flat input"),
            ("truncated weights", |_, w| w.truncate(100), "lies outside the weights section"),
        ];
        for (case, break_it, expected) in cases {
            let (mut s, mut w) = valid();
            break_it(&mut s, &mut w);
            let err = load(&s, &w).expect_err(case).to_string();
            assert!(err.contains(expected), "{case}: {err}");
        }
    }
}

//! Bytes -> validated [`Plan`]. Everything read from the file is checked here, so that a
//! damaged or hand-edited artifact is a [`RuntimeError`], never a panic in a kernel.

use crate::error::invalid;
use crate::geometry::{broadcast_shapes, window_output_len};
use crate::kernels::sparse::SparseRows;
use crate::plan::{Activation, Conv, Dense, EltwiseKind, Hardware, Layer, Op, Plan, Pool, PoolKind};
use crate::RuntimeError;
use hass_proto as pb;

/// Largest per-image tensor the runtime accepts (values), against absurd shapes.
const MAX_VALUES_PER_IMAGE: usize = 1 << 30;

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
        let (op, computed) = lower_op(&layer.name, op, &in_shapes, &declared, weights)?;
        let hardware = check_folding(&layer.name, layer.folding.as_ref(), &op, &in_shapes)?;
        if computed != declared {
            return Err(invalid(&layer.name, format!("declares output {declared:?} but its inputs give {computed:?}")));
        }
        shapes.push(declared.clone());
        layers.push(Layer { name: layer.name.clone(), inputs, output_shape: declared, op, hardware });
    }
    let outputs: Vec<usize> = schedule.outputs.iter().map(|&i| i as usize).collect();
    if outputs.is_empty() || outputs.iter().any(|&o| o >= shapes.len()) {
        return Err(invalid("<schedule>", format!("outputs {outputs:?} do not name computed values")));
    }
    let (board, clock_mhz) = schedule.board.map(|b| (b.name, b.clock_mhz)).unwrap_or_default();
    Ok(Plan { model: schedule.model, board, clock_mhz, input_shape, layers, outputs })
}

/// The hardware record is not used to compute, but a corrupt one must not pass: factors
/// are positive and a conv's channel-to-stream map names a stream for every input channel.
fn check_folding(
    layer: &str,
    folding: Option<&pb::Folding>,
    op: &Op,
    inputs: &[&[usize]],
) -> Result<Hardware, RuntimeError> {
    let f = folding.ok_or_else(|| invalid(layer, "no folding record"))?;
    if [f.coarse_in, f.coarse_out, f.coarse_group, f.fine, f.spatial].contains(&0) {
        return Err(invalid(layer, "folding factors must be positive"));
    }
    if let (Op::Conv(_), false) = (op, f.channel_stream.is_empty()) {
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

fn weights_f32(
    layer: &str,
    what: &str,
    r: Option<&pb::WeightRef>,
    expected: &[usize],
    section: &[u8],
) -> Result<Vec<f32>, RuntimeError> {
    let r = r.ok_or_else(|| invalid(layer, format!("missing {what}")))?;
    let shape: Vec<usize> = r.shape.iter().map(|&d| d as usize).collect();
    if shape != expected {
        return Err(invalid(layer, format!("{what} has shape {shape:?}, expected {expected:?}")));
    }
    if r.dtype != pb::DataType::F32 as i32 {
        return Err(invalid(layer, format!("{what} has unsupported data type {}", r.dtype)));
    }
    let count: usize = expected.iter().product();
    let encoding = pb::WeightEncoding::try_from(r.encoding)
        .map_err(|_| invalid(layer, format!("{what} has unknown encoding {}", r.encoding)))?;
    // Format 1 wrote dense tensors without a length.
    let length =
        if r.byte_length == 0 && encoding == pb::WeightEncoding::Dense { (count * 4) as u64 } else { r.byte_length };
    let start = usize::try_from(r.byte_offset).ok();
    let end = start.zip(usize::try_from(length).ok()).and_then(|(s, l)| s.checked_add(l));
    let bytes = match (start, end) {
        (Some(s), Some(e)) if e <= section.len() => &section[s..e],
        _ => return Err(invalid(layer, format!("{what} lies outside the weights section"))),
    };
    hass_proto::encoding::decode(encoding, bytes, count, expected.first().copied().unwrap_or(1))
        .map_err(|e| invalid(layer, format!("{what}: {e}")))
}

fn activation(layer: &str, a: Option<&pb::Activation>) -> Result<Option<Activation>, RuntimeError> {
    use pb::activation::Kind;
    let Some(a) = a else { return Ok(None) };
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

fn lower_op(
    name: &str,
    op: &pb::layer::Op,
    ins: &[&[usize]],
    declared: &[usize],
    weights: &[u8],
) -> Result<(Op, Vec<usize>), RuntimeError> {
    use pb::layer::Op as P;
    Ok(match op {
        P::Conv(c) => {
            arity(name, ins, 1)?;
            let [c_in, h, w] = chw(name, ins[0])?;
            let kernel = pair(name, "kernel", &c.kernel)?;
            let stride = pair(name, "stride", &c.stride)?;
            let dilation = pair(name, "dilation", &c.dilation)?;
            let pads = pads(name, &c.pads)?;
            let groups = c.groups as usize;
            let c_out = *declared.first().unwrap_or(&0);
            if groups == 0 || c_in % groups != 0 || !c_out.is_multiple_of(groups) {
                return Err(invalid(name, format!("groups {groups} must divide C_in {c_in} and C_out {c_out}")));
            }
            let weight =
                weights_f32(name, "weight", c.weight.as_ref(), &[c_out, c_in / groups, kernel[0], kernel[1]], weights)?;
            let bias = weights_f32(name, "bias", c.bias.as_ref(), &[c_out], weights)?;
            let [oh, ow] = window(name, [h, w], kernel, stride, dilation, pads, false)?;
            let activation = activation(name, c.activation.as_ref())?;
            let input_threshold = finite_threshold(name, c.input_threshold)?;
            (
                Op::Conv(Conv {
                    sparse_weight: SparseRows::from_dense(&weight, c_out),
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
            )
        }
        P::Dense(d) => {
            arity(name, ins, 1)?;
            let &[inputs] = ins[0] else {
                return Err(invalid(name, format!("needs a flat input, got {:?}", ins[0])));
            };
            let outputs = *declared.first().unwrap_or(&0);
            let weight = weights_f32(name, "weight", d.weight.as_ref(), &[outputs, inputs], weights)?;
            let bias = weights_f32(name, "bias", d.bias.as_ref(), &[outputs], weights)?;
            let activation = activation(name, d.activation.as_ref())?;
            let input_threshold = finite_threshold(name, d.input_threshold)?;
            let sparse_weight = SparseRows::from_dense(&weight, outputs);
            (
                Op::Dense(Dense { weight, bias, inputs, outputs, activation, input_threshold, sparse_weight }),
                vec![outputs],
            )
        }
        P::Pool(p) => {
            arity(name, ins, 1)?;
            let [c, h, w] = chw(name, ins[0])?;
            let kind = match pb::PoolKind::try_from(p.kind) {
                Ok(pb::PoolKind::Max) => PoolKind::Max,
                Ok(pb::PoolKind::Average) => PoolKind::Average,
                _ => return Err(invalid(name, format!("unknown pool kind {}", p.kind))),
            };
            let pool = Pool {
                kind,
                kernel: pair(name, "kernel", &p.kernel)?,
                stride: pair(name, "stride", &p.stride)?,
                dilation: pair(name, "dilation", &p.dilation)?,
                pads: pads(name, &p.pads)?,
                ceil_mode: p.ceil_mode,
                count_include_pad: p.count_include_pad,
            };
            let [oh, ow] = window(name, [h, w], pool.kernel, pool.stride, pool.dilation, pool.pads, pool.ceil_mode)?;
            (Op::Pool(pool), vec![c, oh, ow])
        }
        P::GlobalAveragePool(_) => {
            arity(name, ins, 1)?;
            let [c, _, _] = chw(name, ins[0])?;
            let out = if declared.len() == 1 { vec![c] } else { vec![c, 1, 1] };
            (Op::GlobalAveragePool, out)
        }
        P::Eltwise(e) => {
            arity(name, ins, 2)?;
            let kind = match pb::EltwiseKind::try_from(e.kind) {
                Ok(pb::EltwiseKind::Add) => EltwiseKind::Add,
                Ok(pb::EltwiseKind::Mul) => EltwiseKind::Mul,
                _ => return Err(invalid(name, format!("unknown element-wise kind {}", e.kind))),
            };
            let out = broadcast_shapes(ins[0], ins[1])
                .ok_or_else(|| invalid(name, format!("cannot broadcast {:?} with {:?}", ins[0], ins[1])))?;
            (Op::Eltwise { kind, activation: activation(name, e.activation.as_ref())? }, out)
        }
        P::ScaleShift(s) => {
            arity(name, ins, 1)?;
            let c = *ins[0].first().ok_or_else(|| invalid(name, "needs a channel axis"))?;
            let scale = weights_f32(name, "scale", s.scale.as_ref(), &[c], weights)?;
            let shift = weights_f32(name, "shift", s.shift.as_ref(), &[c], weights)?;
            let activation = activation(name, s.activation.as_ref())?;
            (Op::ScaleShift { scale, shift, activation }, ins[0].to_vec())
        }
        P::Activation(a) => {
            arity(name, ins, 1)?;
            let act = activation(name, Some(a))?.expect("Some in, Some out");
            (Op::Activation(act), ins[0].to_vec())
        }
        P::Concat(_) => {
            if ins.is_empty() {
                return Err(invalid(name, "concatenates nothing"));
            }
            let [_, h, w] = chw(name, ins[0])?;
            let mut channels = 0;
            for s in ins {
                let [c, h2, w2] = chw(name, s)?;
                if (h2, w2) != (h, w) {
                    return Err(invalid(name, format!("inputs differ in H x W: {:?}", ins)));
                }
                channels += c;
            }
            (Op::Concat, vec![channels, h, w])
        }
        P::Reshape(_) => {
            arity(name, ins, 1)?;
            let from: usize = ins[0].iter().product();
            let to: usize = declared.iter().product();
            if from != to {
                return Err(invalid(
                    name,
                    format!("reshapes {:?} ({from} values) to {declared:?} ({to} values)", ins[0]),
                ));
            }
            (Op::Reshape, declared.to_vec())
        }
    })
}

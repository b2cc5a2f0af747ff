//! The closed set of layer kinds, and each one's shape rule.
//!
//! A new op is a compile error in every `match` over [`Op`] (shape inference, the verifier,
//! the backend, reports) until each handles it.

use super::{Activation, EltwiseKind, Shape, WeightId, WeightPool};
use hass_proto::geometry::{broadcast_shapes, window_output_len, Pads};

/// Spatial padding before `infer_shapes` resolves ONNX `auto_pad`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// `[top, left, bottom, right]`.
    Explicit(Pads),
    /// Output `ceil(in / stride)`, odd pixel at the end.
    SameUpper,
    /// Output `ceil(in / stride)`, odd pixel at the start.
    SameLower,
}

/// 2-D convolution. Weight `[C_out, C_in / groups, K_h, K_w]`, bias `[C_out]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv {
    /// Filter weights.
    pub weight: WeightId,
    /// Bias, if any.
    pub bias: Option<WeightId>,
    /// `[S_h, S_w]`.
    pub stride: [usize; 2],
    /// `[D_h, D_w]`.
    pub dilation: [usize; 2],
    /// Spatial padding.
    pub padding: Padding,
    /// Channel groups.
    pub groups: usize,
    /// Fused activation.
    pub activation: Option<Activation>,
    /// Activation threshold on the input: values at or below it read as zero (set by
    /// `sparsity`, never by the frontend).
    pub input_threshold: Option<f32>,
}

/// Fully connected: weight `[out, in]`, bias `[out]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    /// Weights.
    pub weight: WeightId,
    /// Bias, if any.
    pub bias: Option<WeightId>,
    /// Fused activation.
    pub activation: Option<Activation>,
    /// Activation threshold on the input, as for [`Conv`].
    pub input_threshold: Option<f32>,
}

pub use hass_proto::semantics::PoolKind;

/// Max or average pooling.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    /// Max or average.
    pub kind: PoolKind,
    /// `[K_h, K_w]`.
    pub kernel: [usize; 2],
    /// `[S_h, S_w]`.
    pub stride: [usize; 2],
    /// `[D_h, D_w]`.
    pub dilation: [usize; 2],
    /// Spatial padding.
    pub padding: Padding,
    /// Count a last partial window.
    pub ceil_mode: bool,
    /// Average divisor includes padding.
    pub count_include_pad: bool,
}

/// `x[c] * scale[c] + shift[c]` per channel; both factors have shape `[C]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleShift {
    /// Multiplier, `[C]`.
    pub scale: WeightId,
    /// Addend, `[C]`.
    pub shift: WeightId,
    /// Fused activation.
    pub activation: Option<Activation>,
}

/// Target of a reshape.
#[derive(Clone, Debug, PartialEq)]
pub enum ReshapeTarget {
    /// ONNX `Flatten` with axis 1: one feature vector per image.
    Flatten,
    /// ONNX `Flatten` with a negative axis, counted from the end of the batched shape: the
    /// same as [`Self::Flatten`] when it lands on axis 1, which only the input's rank tells;
    /// `infer_shapes` checks it and rewrites it as `Flatten`.
    FlattenFrom(i64),
    /// ONNX `Reshape` dims, batch included (0 copies, -1 infers).
    Dims(Vec<i64>),
}

/// What a node computes.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// The model's input.
    Input {
        /// Per-image shape.
        shape: Shape,
    },
    /// 2-D convolution.
    Conv(Conv),
    /// Fully connected.
    Dense(Dense),
    /// Pooling.
    Pool(Pool),
    /// Mean over H and W.
    GlobalAveragePool {
        /// Keep H and W as 1 x 1.
        keep_dims: bool,
    },
    /// Broadcasting Add or Mul of two computed values.
    Eltwise {
        /// Add or Mul.
        kind: EltwiseKind,
        /// Fused activation.
        activation: Option<Activation>,
    },
    /// Per-channel affine (BatchNorm; a per-channel constant Add/Mul after `infer_shapes`).
    ScaleShift(ScaleShift),
    /// Add or Mul with a constant operand in ONNX broadcast layout, as imported.
    /// `infer_shapes` turns it into a [`ScaleShift`] when the constant is a scalar or
    /// per-channel for the input's rank, and rejects it otherwise.
    BroadcastConst {
        /// Add or Mul.
        kind: EltwiseKind,
        /// The constant operand, with its ONNX shape.
        constant: WeightId,
    },
    /// Stand-alone activation.
    Activation(Activation),
    /// Concatenation along an axis (must be channels).
    Concat {
        /// ONNX axis, batch included.
        axis: i64,
    },
    /// Same data, new shape.
    Reshape(ReshapeTarget),
    /// Identity or Dropout at inference; removed by `remove_plumbing`.
    Identity,
}

impl Op {
    /// Short name for tables and reports.
    pub fn kind_name(&self) -> String {
        let with = |base: &str, act: &Option<Activation>| match act {
            Some(a) => format!("{base}+{}", a.name()),
            None => base.to_string(),
        };
        match self {
            Op::Input { .. } => "Input".into(),
            Op::Conv(c) => with("Conv", &c.activation),
            Op::Dense(d) => with("Dense", &d.activation),
            Op::Pool(p) => match p.kind {
                PoolKind::Max => "MaxPool".into(),
                PoolKind::Average => "AvgPool".into(),
            },
            Op::GlobalAveragePool { .. } => "GlobalAvgPool".into(),
            Op::Eltwise { kind, activation } => with(
                match kind {
                    EltwiseKind::Add => "Add",
                    EltwiseKind::Mul => "Mul",
                },
                activation,
            ),
            Op::ScaleShift(s) => with("ScaleShift", &s.activation),
            Op::BroadcastConst { kind: EltwiseKind::Add, .. } => "AddConst".into(),
            Op::BroadcastConst { kind: EltwiseKind::Mul, .. } => "MulConst".into(),
            Op::Activation(a) => a.name().to_string(),
            Op::Concat { .. } => "Concat".into(),
            Op::Reshape(_) => "Reshape".into(),
            Op::Identity => "Identity".into(),
        }
    }

    /// The activation the op applies (fused, or the op itself).
    pub fn activation(&self) -> Option<Activation> {
        match self {
            Op::Conv(c) => c.activation,
            Op::Dense(d) => d.activation,
            Op::Eltwise { activation, .. } => *activation,
            Op::ScaleShift(s) => s.activation,
            Op::Activation(a) => Some(*a),
            _ => None,
        }
    }

    /// How many inputs the op takes: `None` means one or more.
    pub fn arity(&self) -> Option<usize> {
        match self {
            Op::Input { .. } => Some(0),
            Op::Eltwise { .. } => Some(2),
            Op::Concat { .. } => None,
            _ => Some(1),
        }
    }

    /// Weight tensors the op references.
    pub fn weight_ids(&self) -> Vec<WeightId> {
        match self {
            Op::Conv(c) => [Some(c.weight), c.bias].into_iter().flatten().collect(),
            Op::Dense(d) => [Some(d.weight), d.bias].into_iter().flatten().collect(),
            Op::ScaleShift(s) => vec![s.scale, s.shift],
            Op::BroadcastConst { constant, .. } => vec![*constant],
            _ => Vec::new(),
        }
    }

    /// The output shape for these input shapes, or why they do not fit.
    ///
    /// Windowed ops need explicit padding here: `infer_shapes` resolves `auto_pad` first.
    pub fn output_shape(&self, inputs: &[&[usize]], weights: &WeightPool) -> Result<Shape, String> {
        let shape = self.unchecked_output_shape(inputs, weights)?;
        match super::checked_elements(&shape) {
            Some(_) => Ok(shape),
            None => Err(format!("output shape {shape:?} has more than {} values per image", super::MAX_ELEMENTS)),
        }
    }

    /// [`Self::output_shape`] before the size bound.
    fn unchecked_output_shape(&self, inputs: &[&[usize]], weights: &WeightPool) -> Result<Shape, String> {
        let chw = |s: &[usize]| match s {
            [c, h, w] => Ok([*c, *h, *w]),
            _ => Err(format!("needs a C x H x W input, got {s:?}")),
        };
        let explicit = |p: &Padding| match p {
            Padding::Explicit(p) => Ok(*p),
            _ => Err("auto_pad is not resolved".to_string()),
        };
        let tensor = |id: WeightId| weights.get(id).ok_or_else(|| format!("weight {} does not exist", id.0));
        match self {
            Op::Input { shape } => Ok(shape.clone()),
            Op::Conv(c) => {
                let [c_in, h, w] = chw(inputs[0])?;
                let wt = tensor(c.weight)?;
                let &[c_out, per_group, kh, kw] = wt.shape.as_slice() else {
                    return Err(format!("weight must be 4-D, is {:?}", wt.shape));
                };
                if c.groups == 0 || c_in % c.groups != 0 || c_out % c.groups != 0 || per_group * c.groups != c_in {
                    return Err(format!(
                        "weight {:?} with {} groups does not fit {c_in} input channels",
                        wt.shape, c.groups
                    ));
                }
                if let Some(b) = c.bias {
                    if tensor(b)?.shape != [c_out] {
                        return Err(format!("bias shape {:?} is not [{c_out}]", tensor(b)?.shape));
                    }
                }
                let [oh, ow] = window(h, w, [kh, kw], c.stride, c.dilation, explicit(&c.padding)?, false)?;
                Ok(vec![c_out, oh, ow])
            }
            Op::Dense(d) => {
                let &[features] = inputs[0] else {
                    return Err(format!("needs a flat input, got {:?} (flatten first)", inputs[0]));
                };
                let wt = tensor(d.weight)?;
                let &[out, inp] = wt.shape.as_slice() else {
                    return Err(format!("weight must be 2-D, is {:?}", wt.shape));
                };
                if inp != features {
                    return Err(format!("weight {:?} expects {inp} features, input has {features}", wt.shape));
                }
                if let Some(b) = d.bias {
                    if tensor(b)?.shape != [out] {
                        return Err(format!("bias shape {:?} is not [{out}]", tensor(b)?.shape));
                    }
                }
                Ok(vec![out])
            }
            Op::Pool(p) => {
                let [c, h, w] = chw(inputs[0])?;
                let [oh, ow] = window(h, w, p.kernel, p.stride, p.dilation, explicit(&p.padding)?, p.ceil_mode)?;
                Ok(vec![c, oh, ow])
            }
            Op::GlobalAveragePool { keep_dims } => {
                let [c, _, _] = chw(inputs[0])?;
                Ok(if *keep_dims { vec![c, 1, 1] } else { vec![c] })
            }
            Op::Eltwise { .. } => broadcast_shapes(inputs[0], inputs[1])
                .ok_or_else(|| format!("cannot broadcast {:?} with {:?}", inputs[0], inputs[1])),
            Op::ScaleShift(s) => {
                let channels = *inputs[0].first().ok_or("needs a channel axis")?;
                for id in [s.scale, s.shift] {
                    if tensor(id)?.shape != [channels] {
                        return Err(format!("factor of shape {:?} is not [{channels}]", tensor(id)?.shape));
                    }
                }
                Ok(inputs[0].to_vec())
            }
            Op::BroadcastConst { constant, .. } => {
                let shape = &tensor(*constant)?.shape;
                match per_channel_len(shape, inputs[0]) {
                    Some(_) => Ok(inputs[0].to_vec()),
                    None => Err(format!("constant of shape {shape:?} is neither a scalar nor per-channel for input {:?}; only per-channel constants are supported", inputs[0])),
                }
            }
            Op::Activation(_) | Op::Identity => Ok(inputs[0].to_vec()),
            Op::Concat { axis } => {
                let rank = inputs[0].len() as i64 + 1;
                if *axis != 1 && *axis != 1 - rank {
                    return Err(format!(
                        "concatenation along axis {axis} is not supported, only along channels (axis 1)"
                    ));
                }
                let mut out = inputs[0].to_vec();
                out[0] = 0;
                for s in inputs {
                    if s.len() != out.len() || s[1..] != out[1..] {
                        return Err(format!("inputs {inputs:?} differ outside the channel axis"));
                    }
                    out[0] = out[0].checked_add(s[0]).ok_or("too many channels")?;
                }
                Ok(out)
            }
            Op::Reshape(target) => reshape(inputs[0], target),
        }
    }
}

/// Number of distinct values a constant of `shape` holds when broadcast over `input`
/// (a per-image shape), if it varies at most along the channel axis: 1 or C.
pub fn per_channel_len(shape: &[usize], input: &[usize]) -> Option<usize> {
    let full_rank = input.len() + 1; // with the batch axis
    if shape.len() > full_rank {
        return None;
    }
    let offset = full_rank - shape.len();
    let mut len = 1;
    for (i, &d) in shape.iter().enumerate() {
        let axis = i + offset;
        match (axis, d) {
            (_, 1) => {}
            (1, d) if d == input[0] => len = d,
            _ => return None,
        }
    }
    Some(len)
}

fn window(
    h: usize,
    w: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    p: Pads,
    ceil: bool,
) -> Result<[usize; 2], String> {
    let oh = window_output_len(h, kernel[0], stride[0], dilation[0], p[0], p[2], ceil);
    let ow = window_output_len(w, kernel[1], stride[1], dilation[1], p[1], p[3], ceil);
    match (oh, ow) {
        (Some(a), Some(b)) => Ok([a, b]),
        _ => Err(format!(
            "window {kernel:?} (stride {stride:?}, dilation {dilation:?}, pads {p:?}) does not fit a {h} x {w} input"
        )),
    }
}

fn reshape(input: &[usize], target: &ReshapeTarget) -> Result<Shape, String> {
    let count: usize = input.iter().product();
    let dims = match target {
        ReshapeTarget::Flatten => return Ok(vec![count]),
        &ReshapeTarget::FlattenFrom(axis) => {
            let rank = input.len() as i64 + 1;
            return match axis + rank {
                1 => Ok(vec![count]),
                _ => Err(format!("Flatten at axis {axis} of a rank-{rank} value does not keep the batch axis")),
            };
        }
        ReshapeTarget::Dims(d) => d,
    };
    // Resolve against the full shape with batch 1: the batch axis must stay the batch.
    let full: Vec<usize> = std::iter::once(1).chain(input.iter().copied()).collect();
    let mut out = Vec::with_capacity(dims.len());
    let mut infer_at = None;
    for (i, &d) in dims.iter().enumerate() {
        out.push(match d {
            0 => *full.get(i).ok_or_else(|| format!("dim 0 at position {i} copies a missing input dim"))?,
            -1 if infer_at.is_none() => {
                infer_at = Some(i);
                1
            }
            d if d > 0 => d as usize,
            _ => return Err(format!("invalid target shape {dims:?}")),
        });
    }
    let overflow = || format!("target shape {dims:?} has more than {} values", super::MAX_ELEMENTS);
    let known = super::checked_elements(&out).ok_or_else(overflow)?;
    if let Some(i) = infer_at {
        if known == 0 || !count.is_multiple_of(known) {
            return Err(format!("cannot reshape {input:?} to {dims:?}"));
        }
        out[i] = count / known;
    }
    if out.first() != Some(&1) || super::checked_elements(&out) != Some(count) {
        return Err(format!("reshape of {input:?} to {dims:?} must keep the batch axis and the value count"));
    }
    Ok(out[1..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_resolves_batch_and_inferred_dims() {
        let t = |d: &[i64]| reshape(&[32, 7, 7], &ReshapeTarget::Dims(d.to_vec()));
        assert_eq!(t(&[1, -1]), Ok(vec![1568]));
        assert_eq!(t(&[-1, 1568]), Ok(vec![1568]));
        assert_eq!(t(&[0, 32, 49]), Ok(vec![32, 49]));
        assert!(t(&[2, -1]).is_err(), "moving values into the batch axis must be refused");
        assert!(t(&[1, 1000]).is_err());
    }

    #[test]
    fn per_channel_constants() {
        assert_eq!(per_channel_len(&[1, 16, 1, 1], &[16, 8, 8]), Some(16));
        assert_eq!(per_channel_len(&[16, 1, 1], &[16, 8, 8]), Some(16));
        assert_eq!(per_channel_len(&[], &[16, 8, 8]), Some(1));
        assert_eq!(per_channel_len(&[10], &[10]), Some(10));
        // [16] against [16, 8, 8] broadcasts along W, not channels.
        assert_eq!(per_channel_len(&[16], &[16, 8, 16]), None);
    }
}

//! Add, Mul, BatchNormalization and the activations.
//!
//! Add/Mul of two computed values is an element-wise layer; with one constant operand it
//! is a `BroadcastConst`, which `infer_shapes` turns into a per-channel ScaleShift once the
//! operand's rank is known. BatchNormalization is a [`ScaleShift`] straight away.

use crate::error::Result;
use crate::frontend::{Lowered, NodeCtx};
use crate::ir::{Activation, EltwiseKind, Op, ScaleShift, WeightPool};

pub(super) fn binary(ctx: &NodeCtx, weights: &mut WeightPool) -> Result<Lowered> {
    let is_add = ctx.op_type() == "Add";
    match (ctx.input_either(0)?, ctx.input_either(1)?) {
        (Ok(a), Ok(b)) => {
            let kind = if is_add { EltwiseKind::Add } else { EltwiseKind::Mul };
            Ok(Lowered::Op(Op::Eltwise { kind, activation: None }, vec![a, b]))
        }
        (Ok(x), Err(c)) | (Err(c), Ok(x)) => {
            let constant = weights.add(legacy_broadcast_dims(ctx, &c.dims)?, c.to_f32());
            let kind = if is_add { EltwiseKind::Add } else { EltwiseKind::Mul };
            Ok(Lowered::Op(Op::BroadcastConst { kind, constant }, vec![x]))
        }
        (Err(_), Err(_)) => Err(ctx.err("both operands are constants; fold them before export")),
    }
}

/// Before opset 7, Add and Mul broadcast only with `broadcast = 1`, aligning the second
/// operand at `axis` (by default at the end, as numpy does). The constant's dims, padded
/// with trailing 1s, express the same alignment in numpy's rule.
fn legacy_broadcast_dims(ctx: &NodeCtx, dims: &[usize]) -> Result<Vec<usize>> {
    if ctx.opset() >= 7 || ctx.attr_int("broadcast", 0) == 0 {
        return Ok(dims.to_vec());
    }
    let Some(axis) = ctx.attr_int_opt("axis") else { return Ok(dims.to_vec()) };
    // The rank of the computed operand is not known here; axis 1 (channels, the case
    // exporters wrote) is spelled `[C, 1, 1]` for a C x H x W image, i.e. batch included.
    match (axis, dims) {
        (1, &[c]) => Ok(vec![c, 1, 1]),
        _ => Err(ctx.err(format!(
            "legacy broadcast along axis {axis} of a {dims:?} constant is not supported; only per-channel (axis 1)"
        ))),
    }
}

pub(super) fn batch_norm(ctx: &NodeCtx, weights: &mut WeightPool) -> Result<Lowered> {
    let x = ctx.input_node(0)?;
    if ctx.opset() < 9 && ctx.attr_int("spatial", 1) == 0 {
        return Err(ctx.err("spatial = 0 (statistics per activation, not per channel) is not supported"));
    }
    if ctx.has_output(1) {
        return Err(ctx.err("training-mode outputs (running mean/var) are not supported"));
    }
    let param = |i: usize, what: &str| -> Result<Vec<f32>> {
        Ok(ctx.input_const(i)?.ok_or_else(|| ctx.err(format!("has no {what} input")))?.to_f32())
    };
    let (gamma, beta, mean, var) = (param(1, "scale")?, param(2, "bias")?, param(3, "mean")?, param(4, "var")?);
    let c = gamma.len();
    if [beta.len(), mean.len(), var.len()] != [c; 3] {
        return Err(ctx.err("scale, bias, mean and var must have the same length"));
    }
    if ctx.attr_int("training_mode", 0) != 0 {
        return Err(ctx.err("training_mode=1 normalises with the batch's statistics, which an inference accelerator does not have; export the model in eval mode"));
    }
    let eps = ctx.attr_float("epsilon", 1e-5);
    if let Some(c) = var.iter().position(|&v| (v + eps).is_nan() || v + eps <= 0.0) {
        return Err(ctx.err(format!("variance + epsilon of channel {c} is {}, not positive", var[c] + eps)));
    }
    let scale: Vec<f32> = gamma.iter().zip(&var).map(|(g, v)| g / (v + eps).sqrt()).collect();
    let shift: Vec<f32> = beta.iter().zip(&mean).zip(&scale).map(|((b, m), s)| b - m * s).collect();
    let op = ScaleShift { scale: weights.add(vec![c], scale), shift: weights.add(vec![c], shift), activation: None };
    Ok(Lowered::Op(Op::ScaleShift(op), vec![x]))
}

pub(super) fn activation(ctx: &NodeCtx) -> Result<Lowered> {
    let x = ctx.input_node(0)?;
    let act = match ctx.op_type() {
        "Relu" => Activation::Relu,
        "Sigmoid" => Activation::Sigmoid,
        "HardSwish" => Activation::HardSwish,
        "HardSigmoid" => {
            Activation::HardSigmoid { alpha: ctx.attr_float("alpha", 0.2), beta: ctx.attr_float("beta", 0.5) }
        }
        "Clip" => clip(ctx)?,
        other => return Err(ctx.err(format!("{other} is not an activation"))),
    };
    Ok(Lowered::Op(Op::Activation(act), vec![x]))
}

/// Clip bounds: attributes before opset 11, optional constant inputs from 11 on.
fn clip(ctx: &NodeCtx) -> Result<Activation> {
    let (min, max) = if ctx.opset() < 11 {
        (ctx.attr_float("min", f32::MIN), ctx.attr_float("max", f32::MAX))
    } else {
        let bound = |i: usize, default: f32| -> Result<f32> {
            match ctx.input_const(i)? {
                None => Ok(default),
                Some(c) => c.scalar_f32().ok_or_else(|| ctx.err(format!("bound {i} must be a scalar"))),
            }
        };
        (bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?)
    };
    if min == 0.0 && max == f32::INFINITY {
        return Ok(Activation::Relu);
    }
    Ok(Activation::Clip { min, max })
}

//! Conv, MaxPool, AveragePool: the windowed ops and their ONNX padding attributes.

use crate::error::Result;
use crate::frontend::tensor::ConstData;
use crate::frontend::{Lowered, NodeCtx};
use crate::ir::{Conv, Op, Padding, Pool, PoolKind, WeightPool};

/// Two positive values for a 2-D attribute, or the default.
fn pair(ctx: &NodeCtx, name: &str, default: [usize; 2]) -> Result<[usize; 2]> {
    match ctx.attr_ints(name).as_deref() {
        None => Ok(default),
        Some(&[a, b]) if a > 0 && b > 0 => Ok([a as usize, b as usize]),
        Some(v) => Err(ctx.err(format!("{name} {v:?} must be two positive values (only 2-D windows are supported)"))),
    }
}

fn padding(ctx: &NodeCtx) -> Result<Padding> {
    let auto_pad = ctx.attr_string("auto_pad");
    if auto_pad.as_deref().is_some_and(|a| !matches!(a, "NOTSET" | "")) && ctx.attr_ints("pads").is_some() {
        return Err(ctx.err("sets both auto_pad and pads; ONNX allows one or the other"));
    }
    match auto_pad.as_deref().unwrap_or("NOTSET") {
        "NOTSET" | "" => match ctx.attr_ints("pads").as_deref() {
            None => Ok(Padding::Explicit([0; 4])),
            Some(&[t, l, b, r]) if [t, l, b, r].iter().all(|&p| p >= 0) => {
                Ok(Padding::Explicit([t as usize, l as usize, b as usize, r as usize]))
            }
            Some(v) => Err(ctx.err(format!("pads {v:?} must be four non-negative values"))),
        },
        "VALID" => Ok(Padding::Explicit([0; 4])),
        "SAME_UPPER" => Ok(Padding::SameUpper),
        "SAME_LOWER" => Ok(Padding::SameLower),
        other => Err(ctx.err(format!("unknown auto_pad {other:?}"))),
    }
}

pub(super) fn conv(ctx: &NodeCtx, weights: &mut WeightPool) -> Result<Lowered> {
    let x = ctx.input_node(0)?;
    let w = ctx.input_const(1)?.ok_or_else(|| ctx.err("has no weight input"))?;
    let &[_, _, kh, kw] = w.dims.as_slice() else {
        return Err(
            ctx.err(format!("weight has shape {:?}; only 2-D convolutions (4-D weights) are supported", w.dims))
        );
    };
    if matches!(w.data, ConstData::I64(_)) {
        return Err(ctx.err("integer weights are not supported"));
    }
    if let Some(k) = ctx.attr_ints("kernel_shape") {
        if k != [kh as i64, kw as i64] {
            return Err(ctx.err(format!("kernel_shape {k:?} disagrees with the weight shape {:?}", w.dims)));
        }
    }
    let groups = ctx.attr_int("group", 1);
    if groups < 1 {
        return Err(ctx.err(format!("group {groups} must be positive")));
    }
    let weight = weights.add(w.dims.clone(), w.to_f32());
    let bias = ctx.input_const(2)?.map(|b| weights.add(b.dims.clone(), b.to_f32()));
    let op = Conv {
        weight,
        bias,
        stride: pair(ctx, "strides", [1, 1])?,
        dilation: pair(ctx, "dilations", [1, 1])?,
        padding: padding(ctx)?,
        groups: groups as usize,
        activation: None,
        input_threshold: None,
    };
    Ok(Lowered::Op(Op::Conv(op), vec![x]))
}

pub(super) fn pool(ctx: &NodeCtx) -> Result<Lowered> {
    let x = ctx.input_node(0)?;
    if ctx.has_output(1) {
        return Err(ctx.err("the Indices output is not supported"));
    }
    let kind = if ctx.op_type() == "MaxPool" { PoolKind::Max } else { PoolKind::Average };
    let kernel = match ctx.attr_ints("kernel_shape").as_deref() {
        Some(&[a, b]) if a > 0 && b > 0 => [a as usize, b as usize],
        other => {
            return Err(
                ctx.err(format!("kernel_shape {other:?} must be two positive values (only 2-D pooling is supported)"))
            )
        }
    };
    let op = Pool {
        kind,
        kernel,
        stride: pair(ctx, "strides", [1, 1])?,
        dilation: pair(ctx, "dilations", [1, 1])?,
        padding: padding(ctx)?,
        ceil_mode: ctx.attr_int("ceil_mode", 0) != 0,
        count_include_pad: ctx.attr_int("count_include_pad", 0) != 0,
    };
    Ok(Lowered::Op(Op::Pool(op), vec![x]))
}

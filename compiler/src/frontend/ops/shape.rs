//! Flatten, Reshape, Concat, GlobalAveragePool/ReduceMean, and the plumbing ops Identity,
//! Dropout and Constant.

use crate::error::Result;
use crate::frontend::tensor::{self, Const, ConstData};
use crate::frontend::{Lowered, NodeCtx};
use crate::ir::{Op, ReshapeTarget};

pub(super) fn reshape(ctx: &NodeCtx) -> Result<Lowered> {
    let x = ctx.input_node(0)?;
    let target = if ctx.op_type() == "Flatten" {
        match ctx.attr_int("axis", 1) {
            1 => ReshapeTarget::Flatten,
            axis if axis < 0 => ReshapeTarget::FlattenFrom(axis),
            axis => {
                return Err(ctx.err(format!("axis {axis} is not supported; only Flatten(axis=1) keeps the batch axis")))
            }
        }
    } else {
        let shape = ctx.input_const(1)?.ok_or_else(|| ctx.err("has no shape input"))?;
        let mut dims = shape.as_i64().ok_or_else(|| ctx.err("shape input must be int64"))?.to_vec();
        // A model exported at a fixed batch B spells the batch axis B; the IR is per image.
        if ctx.batch() > 1 && dims.first() == Some(&(ctx.batch() as i64)) {
            dims[0] = 0;
        }
        if ctx.attr_int("allowzero", 0) != 0 && dims.contains(&0) {
            return Err(ctx.err("allowzero with a zero dimension is not supported"));
        }
        ReshapeTarget::Dims(dims)
    };
    Ok(Lowered::Op(Op::Reshape(target), vec![x]))
}

pub(super) fn concat(ctx: &NodeCtx) -> Result<Lowered> {
    let inputs = (0..ctx.input_count()).map(|i| ctx.input_node(i)).collect::<Result<Vec<_>>>()?;
    let axis = ctx.attr_int("axis", i64::MIN);
    if axis == i64::MIN {
        return Err(ctx.err("has no axis attribute"));
    }
    Ok(Lowered::Op(Op::Concat { axis }, inputs))
}

/// GlobalAveragePool, or ReduceMean over exactly H and W.
pub(super) fn global_average(ctx: &NodeCtx) -> Result<Lowered> {
    let x = ctx.input_node(0)?;
    if ctx.op_type() == "GlobalAveragePool" {
        return Ok(Lowered::Op(Op::GlobalAveragePool { keep_dims: true }, vec![x]));
    }
    let axes = if ctx.opset() >= 18 {
        ctx.input_const(1)?
            .map(|c| c.as_i64().map(<[i64]>::to_vec).ok_or_else(|| ctx.err("axes must be int64")))
            .transpose()?
    } else {
        ctx.attr_ints("axes")
    };
    let mut axes = axes.unwrap_or_default();
    axes.sort_unstable();
    if axes != [2, 3] && axes != [-2, -1] {
        return Err(ctx.err(format!("ReduceMean over axes {axes:?} is not supported; only over H and W (axes [2, 3])")));
    }
    Ok(Lowered::Op(Op::GlobalAveragePool { keep_dims: ctx.attr_int("keepdims", 1) != 0 }, vec![x]))
}

pub(super) fn identity(ctx: &NodeCtx) -> Result<Lowered> {
    if ctx.op_type() == "Dropout" {
        let training = ctx.input_const(2)?.and_then(|t| t.as_i64().map(|v| v.iter().any(|&x| x != 0)));
        if training == Some(true) {
            return Err(ctx.err(
                "training_mode is true: Dropout would drop values at random, which inference does not do; export the model in eval mode",
            ));
        }
        if ctx.has_output(1) {
            return Err(ctx.err("the mask output is not supported"));
        }
    }
    match ctx.input_either(0)? {
        Ok(x) => Ok(Lowered::Op(Op::Identity, vec![x])),
        Err(c) => Ok(Lowered::Const(c.clone())),
    }
}

pub(super) fn constant(ctx: &NodeCtx) -> Result<Lowered> {
    if let Some(t) = ctx.attr_tensor("value") {
        return tensor::decode(t, None).map(Lowered::Const).map_err(|e| ctx.err(e));
    }
    let value = if let Some(f) = ctx.attr_float_opt("value_float") {
        Const { dims: vec![], data: ConstData::F32(vec![f]) }
    } else if let Some(fs) = ctx.attr_floats("value_floats") {
        Const { dims: vec![fs.len()], data: ConstData::F32(fs) }
    } else if let Some(i) = ctx.attr_ints("value_ints") {
        Const { dims: vec![i.len()], data: ConstData::I64(i) }
    } else if ctx.attr_int("value_int", i64::MIN) != i64::MIN {
        Const { dims: vec![], data: ConstData::I64(vec![ctx.attr_int("value_int", 0)]) }
    } else {
        return Err(ctx.err("has no value hassc can read (value, value_float(s), value_int(s))"));
    };
    Ok(Lowered::Const(value))
}

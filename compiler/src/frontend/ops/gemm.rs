//! Gemm and MatMul -> a Dense layer with weights `[out, in]`. A MatMul's following bias
//! Add becomes a ScaleShift that `fold_batchnorm` merges into the Dense bias.

use crate::error::Result;
use crate::frontend::{Lowered, NodeCtx};
use crate::ir::{Dense, Op, WeightPool};

/// `[rows, cols]` row-major -> `[cols, rows]`.
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

pub(super) fn gemm(ctx: &NodeCtx, weights: &mut WeightPool) -> Result<Lowered> {
    let x = ctx.input_node(0)?;
    if ctx.attr_int("transA", 0) != 0 {
        return Err(ctx.err("transA = 1 is not supported (the batch must stay the first axis)"));
    }
    let b = ctx.input_const(1)?.ok_or_else(|| ctx.err("has no B input"))?;
    let &[rows, cols] = b.dims.as_slice() else {
        return Err(ctx.err(format!("B has shape {:?}; it must be 2-D", b.dims)));
    };
    let alpha = ctx.attr_float("alpha", 1.0);
    let beta = ctx.attr_float("beta", 1.0);
    let (out, inp, mut w) = if ctx.attr_int("transB", 0) != 0 {
        (rows, cols, b.to_f32())
    } else {
        (cols, rows, transpose(&b.to_f32(), rows, cols))
    };
    w.iter_mut().for_each(|v| *v *= alpha);
    let weight = weights.add(vec![out, inp], w);
    let bias = match ctx.input_const(2)? {
        None => None,
        Some(c) => {
            let values = c.to_f32();
            let per_output = match c.dims.as_slice() {
                [] | [1] | [1, 1] => vec![values[0]; out],
                [n] | [1, n] if *n == out => values,
                other => {
                    return Err(ctx
                        .err(format!("C has shape {other:?}; only a bias of shape [{out}] or a scalar is supported")))
                }
            };
            Some(weights.add(vec![out], per_output.into_iter().map(|v| v * beta).collect()))
        }
    };
    Ok(Lowered::Op(Op::Dense(Dense { weight, bias, activation: None, input_threshold: None }), vec![x]))
}

pub(super) fn matmul(ctx: &NodeCtx, weights: &mut WeightPool) -> Result<Lowered> {
    let x = ctx.input_node(0)?;
    let b = ctx.input_const(1)?.ok_or_else(|| ctx.err("has no B input"))?;
    let &[rows, cols] = b.dims.as_slice() else {
        return Err(ctx.err(format!("B has shape {:?}; only a constant 2-D B is supported", b.dims)));
    };
    let weight = weights.add(vec![cols, rows], transpose(&b.to_f32(), rows, cols));
    Ok(Lowered::Op(Op::Dense(Dense { weight, bias: None, activation: None, input_threshold: None }), vec![x]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn transpose_swaps_axes() {
        assert_eq!(super::transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }
}

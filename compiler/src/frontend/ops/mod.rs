//! One builder per ONNX op family: `op_type` -> [`Lowered`].

mod conv;
mod elementwise;
mod gemm;
mod shape;

use super::{Lowered, NodeCtx};
use crate::error::Result;
use crate::ir::WeightPool;

/// Lower one node (its op type is known to be supported).
pub(crate) fn lower(ctx: &NodeCtx, weights: &mut WeightPool) -> Result<Lowered> {
    match ctx.op_type() {
        "Conv" => conv::conv(ctx, weights),
        "MaxPool" | "AveragePool" => conv::pool(ctx),
        "GlobalAveragePool" | "ReduceMean" => shape::global_average(ctx),
        "Gemm" => gemm::gemm(ctx, weights),
        "MatMul" => gemm::matmul(ctx, weights),
        "Add" | "Mul" => elementwise::binary(ctx, weights),
        "BatchNormalization" => elementwise::batch_norm(ctx, weights),
        "Relu" | "Sigmoid" | "HardSigmoid" | "HardSwish" | "Clip" => elementwise::activation(ctx),
        "Flatten" | "Reshape" => shape::reshape(ctx),
        "Concat" => shape::concat(ctx),
        "Identity" | "Dropout" => shape::identity(ctx),
        "Constant" => shape::constant(ctx),
        other => Err(ctx.err(format!("no builder for {other} (listed as supported: a hassc bug)"))),
    }
}

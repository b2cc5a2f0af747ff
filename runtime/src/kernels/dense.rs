//! Fully connected layer over a whole batch: `Y = X W^T + b` as one SGEMM.

use crate::plan::Dense;
use ndarray::{linalg::general_mat_mul, ArrayView2, ArrayViewMut2};

/// `input` is [batch, inputs], `out` is [batch, outputs].
pub fn dense_batch(dense: &Dense, input: &[f32], batch: usize, out: &mut [f32]) {
    let x = ArrayView2::from_shape((batch, dense.inputs), input).expect("validated input shape");
    if let Some(sparse) = dense.sparse_weight.as_ref().filter(|s| s.product_pays()) {
        // Y^T = W X^T over the non-zero weights only.
        let xt: Vec<f32> = x.t().iter().copied().collect();
        let mut yt = vec![0.0f32; dense.outputs * batch];
        sparse.matmul_rows(0, &xt, batch, &mut yt);
        for (o, row) in yt.chunks_exact(batch).enumerate() {
            for (b, v) in row.iter().enumerate() {
                out[b * dense.outputs + o] = *v;
            }
        }
    } else {
        let w = ArrayView2::from_shape((dense.outputs, dense.inputs), &dense.weight).expect("validated weight shape");
        let mut y = ArrayViewMut2::from_shape((batch, dense.outputs), &mut *out).expect("validated output shape");
        general_mat_mul(1.0, &x, &w.t(), 0.0, &mut y);
    }
    for row in out.chunks_exact_mut(dense.outputs) {
        for (v, b) in row.iter_mut().zip(&dense.bias) {
            *v += b;
            if let Some(act) = dense.activation {
                *v = act.apply(*v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Activation;

    #[test]
    fn matches_hand_computed_values() {
        let dense = Dense {
            weight: vec![1.0, 2.0, 3.0, -1.0, 0.0, 1.0],
            bias: vec![0.5, -10.0],
            inputs: 3,
            outputs: 2,
            activation: Some(Activation::Clip { min: -1.0, max: 5.0 }),
            input_threshold: None,
            sparse_weight: None,
        };
        let mut out = vec![0.0; 4];
        dense_batch(&dense, &[1.0, 1.0, 1.0, 2.0, 0.0, -1.0], 2, &mut out);
        // clip([6.5, -10]) and clip([2 - 3 + 0.5, -2 - 1 - 10]) to [-1, 5].
        assert_eq!(out, vec![5.0, -1.0, -0.5, -1.0]);
    }
}

//! Fully connected layer over a whole batch: `Y = X W^T + b`, as dot products of each
//! weight row with each image in turn for small batches (the weights, read once, are
//! the cost: packing them for a GEMM would read them twice), else as one SGEMM.

use crate::plan::Dense;
use ndarray::{linalg::general_mat_mul, ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

/// Largest batch computed as dot products.
const DOT_MAX_BATCH: usize = 8;
/// Lanes of each dot product's partial sums.
const DOT_LANES: usize = 16;

/// `input` is [batch, inputs], `out` is [batch, outputs].
pub fn dense_batch(dense: &Dense, input: &[f32], batch: usize, out: &mut [f32]) {
    let x = ArrayView2::from_shape((batch, dense.inputs), input).expect("validated input shape");
    if let Some(sparse) = dense.sparse_weight.as_ref().filter(|s| s.product_pays()) {
        // Y^T = W X^T over the non-zero weights only.
        let xt: Vec<f32> = x.t().iter().copied().collect();
        let mut yt = vec![0.0f32; dense.outputs * batch];
        sparse.matmul_rows(0, &xt, batch, &mut yt);
        transpose_into(&yt, batch, out);
    } else if batch <= DOT_MAX_BATCH {
        dot_rows(dense, input, batch, out);
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

/// `out[b][o]` = weight row `o` · image `b`, in parallel over runs of outputs. Each dot
/// product sums [`DOT_LANES`] interleaved partial sums with fused multiply-adds, then the
/// lanes and the tail in order: the same floats on every processor and thread count.
fn dot_rows(dense: &Dense, input: &[f32], batch: usize, out: &mut [f32]) {
    let (inputs, outputs) = (dense.inputs, dense.outputs);
    let mut yt = vec![0.0f32; outputs * batch];
    yt.par_chunks_mut(batch).zip(dense.weight.par_chunks_exact(inputs)).with_min_len(16).for_each(|(y, w)| {
        super::with_simd(
            #[inline(always)]
            || {
                // The row stays in L1 from one image to the next.
                for (y, image) in y.iter_mut().zip(input.chunks_exact(inputs)) {
                    *y = dot(w, image);
                }
            },
        )
    });
    transpose_into(&yt, batch, out);
}

/// `yt` ([outputs, batch]) into `out` ([batch, outputs]).
pub(crate) fn transpose_into<T: Copy>(yt: &[T], batch: usize, out: &mut [T]) {
    let outputs = yt.len() / batch.max(1);
    for (o, row) in yt.chunks_exact(batch).enumerate() {
        for (b, &v) in row.iter().enumerate() {
            out[b * outputs + o] = v;
        }
    }
}

/// `w` · `x`: [`DOT_LANES`] interleaved partial sums, then the lanes and the tail in order.
#[inline(always)]
fn dot(w: &[f32], x: &[f32]) -> f32 {
    let mut acc = [0.0f32; DOT_LANES];
    let whole = w.len() / DOT_LANES * DOT_LANES;
    for (ws, xs) in w[..whole].chunks_exact(DOT_LANES).zip(x.chunks_exact(DOT_LANES)) {
        for ((s, &w), &x) in acc.iter_mut().zip(ws).zip(xs) {
            *s = w.mul_add(x, *s);
        }
    }
    let tail = w[whole..].iter().zip(&x[whole..]).fold(0.0f32, |s, (&w, &x)| w.mul_add(x, s));
    acc.iter().sum::<f32>() + tail
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

    /// The dot products of small batches and the SGEMM of large ones agree, at every
    /// batch size around the switch and input lengths around the lanes.
    #[test]
    fn small_batches_agree_with_the_sgemm() {
        for inputs in [1, 15, 16, 17, 100] {
            let outputs = 37;
            let weight: Vec<f32> = (0..outputs * inputs).map(|i| ((i * 7919) % 201) as f32 / 100.0 - 1.0).collect();
            let dense = Dense {
                weight,
                bias: (0..outputs).map(|o| o as f32 / 10.0).collect(),
                inputs,
                outputs,
                activation: None,
                input_threshold: None,
                sparse_weight: None,
            };
            for batch in [1, 3, 4, 5, DOT_MAX_BATCH] {
                let x: Vec<f32> = (0..batch * inputs).map(|i| ((i * 104729) % 301) as f32 / 150.0 - 1.0).collect();
                let mut dots = vec![f32::NAN; batch * outputs];
                dense_batch(&dense, &x, batch, &mut dots);
                // The same images inside a batch too large for dot products.
                let mut wide_x = x.clone();
                wide_x.resize((DOT_MAX_BATCH + 1) * inputs, 0.0);
                let mut gemm = vec![0.0; (DOT_MAX_BATCH + 1) * outputs];
                dense_batch(&dense, &wide_x, DOT_MAX_BATCH + 1, &mut gemm);
                for (i, (a, b)) in dots.iter().zip(&gemm).enumerate() {
                    assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{inputs} inputs, batch {batch}, {i}: {a} vs {b}");
                }
            }
        }
    }
}

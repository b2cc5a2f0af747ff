//! Fully connected layer over a whole batch: `Y = X W^T + b`, as dot products of each
//! weight row with each image in turn, [`DOT_MAX_BATCH`] images at a time (the weights,
//! read once per such run, are the cost: packing them for a GEMM would read them twice).
//! Every image gets the same floats at every batch size, so that a float run's outputs do
//! not depend on how many images a thread's share holds (as an SGEMM over larger batches,
//! ResNet-18's logits moved by up to 5e-6 between one thread and two on 12 images).

use crate::plan::Dense;
use ndarray::ArrayView2;
use rayon::prelude::*;

/// Images whose dot products with a weight row are taken while the row is in L1.
const DOT_MAX_BATCH: usize = 8;
/// Lanes of each dot product's partial sums.
const DOT_LANES: usize = 16;

/// `input` is [batch, inputs], `out` is [batch, outputs].
pub fn dense_batch(dense: &Dense, input: &[f32], batch: usize, out: &mut [f32]) {
    if let Some(sparse) = dense.sparse_weight.as_ref().filter(|s| s.product_pays()) {
        // Y^T = W X^T over the non-zero weights only.
        let x = ArrayView2::from_shape((batch, dense.inputs), input).expect("validated input shape");
        let xt: Vec<f32> = x.t().iter().copied().collect();
        let mut yt = vec![0.0f32; dense.outputs * batch];
        sparse.matmul_rows(0, &xt, batch, &mut yt);
        transpose_into(&yt, batch, out);
    } else {
        let (inputs, outputs) = (dense.inputs, dense.outputs);
        for first in (0..batch).step_by(DOT_MAX_BATCH) {
            let images = (batch - first).min(DOT_MAX_BATCH);
            let out = &mut out[first * outputs..(first + images) * outputs];
            dot_rows(&dense.weight, inputs, &input[first * inputs..(first + images) * inputs], images, out);
        }
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

/// `out[b][o]` = row `o` of `weight` (`[outputs, inputs]`) · image `b`, in parallel over
/// runs of outputs. Each dot product sums [`DOT_LANES`] interleaved partial sums with fused
/// multiply-adds, then the lanes and the tail in order: the same floats on every processor
/// and thread count, and at every batch.
pub(crate) fn dot_rows(weight: &[f32], inputs: usize, input: &[f32], batch: usize, out: &mut [f32]) {
    let outputs = weight.len() / inputs.max(1);
    let mut yt = vec![0.0f32; outputs * batch];
    // Four rows at once in explicit vectors: at batch 8 0.6x the time of one row at a
    // time; at batch 1 as fast on weights streamed from memory, and faster on the small
    // ones a squeeze-and-excite conv reads from cache (144 -> 576 channels: 0.018 -> 0.015
    // ms).
    let four_dots = four_dots();
    let rows = yt.par_chunks_mut(DOT_ROWS * batch).zip(weight.par_chunks(DOT_ROWS * inputs));
    rows.with_min_len(4).for_each(|(y, w)| {
        super::with_simd(
            #[inline(always)]
            || {
                // The rows stay in L1 from one image to the next.
                for (b, image) in input.chunks_exact(inputs).enumerate() {
                    if let Some(four_dots) = four_dots.filter(|_| w.len() == DOT_ROWS * inputs) {
                        for (r, sum) in four_dots(w, image).into_iter().enumerate() {
                            y[r * batch + b] = sum;
                        }
                        continue;
                    }
                    for (r, row) in w.chunks_exact(inputs).enumerate() {
                        y[r * batch + b] = dot(row, image);
                    }
                }
            },
        )
    });
    transpose_into(&yt, batch, out);
}

/// Weight rows whose dot products with an image run together (four chains of additions in
/// flight where one row's are a single chain).
const DOT_ROWS: usize = 4;

/// [`dot`] of [`DOT_ROWS`] consecutive rows (of `x.len()` each) with `x`, in explicit
/// vectors, where the processor has them: the compiler kept the generic form's sums on the
/// stack, a lane at a time.
type FourDots = fn(w: &[f32], x: &[f32]) -> [f32; DOT_ROWS];

/// The processor's [`FourDots`], if any.
fn four_dots() -> Option<FourDots> {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512::available() {
            return Some(avx512::four_dots);
        }
        if avx2::available() {
            return Some(avx2::four_dots);
        }
    }
    None
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
    lanes_then_tail(&acc, &w[whole..], &x[whole..])
}

/// A dot product's end, the same in every build: its [`DOT_LANES`] partial sums added in
/// lane order, then the products of the values past the last whole block of lanes
/// (`w_tail`, `x_tail`), fused in order from zero, added to that.
#[inline(always)]
fn lanes_then_tail(lanes: &[f32; DOT_LANES], w_tail: &[f32], x_tail: &[f32]) -> f32 {
    let tail = w_tail.iter().zip(x_tail).fold(0.0f32, |s, (&w, &x)| w.mul_add(x, s));
    lanes.iter().sum::<f32>() + tail
}

/// The AVX-512 build of [`FourDots`].
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512 {
    use super::{DOT_LANES, DOT_ROWS};
    use std::arch::x86_64::*;

    /// Whether this processor has the instructions (and `HASS_AVX2_ONLY` leaves them in use).
    pub(super) use crate::kernels::avx512::available;

    /// See [`super::FourDots`]; call only when [`available`].
    pub(super) fn four_dots(w: &[f32], x: &[f32]) -> [f32; DOT_ROWS] {
        assert!(available() && w.len() == DOT_ROWS * x.len(), "four rows as long as x");
        // SAFETY: the features `compiled` enables were detected just above, and it reads
        // `w` and `x` only within the lengths checked there.
        unsafe { compiled(w, x) }
    }

    #[target_feature(enable = "avx512f,fma")]
    unsafe fn compiled(w: &[f32], x: &[f32]) -> [f32; DOT_ROWS] {
        let n = x.len();
        let whole = n / DOT_LANES * DOT_LANES;
        let (w_at, x_at) = (w.as_ptr(), x.as_ptr());
        let mut acc = [_mm512_setzero_ps(); DOT_ROWS];
        for i in (0..whole).step_by(DOT_LANES) {
            let xs = _mm512_loadu_ps(x_at.add(i));
            for (r, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(_mm512_loadu_ps(w_at.add(r * n + i)), xs, *acc);
            }
        }
        let mut sums = [0.0f32; DOT_ROWS];
        for (r, (sum, acc)) in sums.iter_mut().zip(acc).enumerate() {
            let mut lanes = [0.0f32; DOT_LANES];
            _mm512_storeu_ps(lanes.as_mut_ptr(), acc);
            *sum = super::lanes_then_tail(&lanes, &w[r * n + whole..][..n - whole], &x[whole..]);
        }
        sums
    }
}

/// The AVX2 and FMA build of [`FourDots`]: each row's [`DOT_LANES`] partial sums in two
/// registers of 8, the same floats as the AVX-512 build's one of 16.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use super::{DOT_LANES, DOT_ROWS};
    use std::arch::x86_64::*;

    pub(super) use crate::kernels::avx2_available as available;

    /// See [`super::FourDots`]; call only when [`available`].
    pub(super) fn four_dots(w: &[f32], x: &[f32]) -> [f32; DOT_ROWS] {
        assert!(available() && w.len() == DOT_ROWS * x.len(), "four rows as long as x");
        // SAFETY: the features `compiled` enables were detected just above, and it reads
        // `w` and `x` only within the lengths checked there.
        unsafe { compiled(w, x) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn compiled(w: &[f32], x: &[f32]) -> [f32; DOT_ROWS] {
        let n = x.len();
        let whole = n / DOT_LANES * DOT_LANES;
        let (w_at, x_at) = (w.as_ptr(), x.as_ptr());
        let mut acc = [[_mm256_setzero_ps(); 2]; DOT_ROWS];
        for i in (0..whole).step_by(DOT_LANES) {
            let xs = [_mm256_loadu_ps(x_at.add(i)), _mm256_loadu_ps(x_at.add(i + 8))];
            for (r, acc) in acc.iter_mut().enumerate() {
                for (h, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps(_mm256_loadu_ps(w_at.add(r * n + i + 8 * h)), xs[h], *acc);
                }
            }
        }
        let mut sums = [0.0f32; DOT_ROWS];
        for (r, (sum, acc)) in sums.iter_mut().zip(acc).enumerate() {
            let mut lanes = [0.0f32; DOT_LANES];
            _mm256_storeu_ps(lanes.as_mut_ptr(), acc[0]);
            _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc[1]);
            *sum = super::lanes_then_tail(&lanes, &w[r * n + whole..][..n - whole], &x[whole..]);
        }
        sums
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

    /// Every image gets the same floats at every batch size, runs of [`DOT_MAX_BATCH`]
    /// and a short last one included, as alone: input lengths around the lanes.
    #[test]
    fn each_image_gets_the_same_floats_at_every_batch() {
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
            let most = 2 * DOT_MAX_BATCH + 3;
            let x: Vec<f32> = (0..most * inputs).map(|i| ((i * 104729) % 301) as f32 / 150.0 - 1.0).collect();
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            let mut alone = Vec::new();
            for image in x.chunks_exact(inputs) {
                let mut y = vec![f32::NAN; outputs];
                dense_batch(&dense, image, 1, &mut y);
                alone.extend(bits(&y));
            }
            for batch in [2, 3, DOT_MAX_BATCH - 1, DOT_MAX_BATCH, DOT_MAX_BATCH + 1, 12, most] {
                let mut y = vec![f32::NAN; batch * outputs];
                dense_batch(&dense, &x[..batch * inputs], batch, &mut y);
                assert_eq!(bits(&y), alone[..batch * outputs], "{inputs} inputs, batch {batch}");
            }
            // And the reference's values.
            for (i, &y) in alone.iter().enumerate() {
                let (b, o) = (i / outputs, i % outputs);
                let row = &dense.weight[o * inputs..][..inputs];
                let want: f32 =
                    row.iter().zip(&x[b * inputs..][..inputs]).map(|(w, x)| w * x).sum::<f32>() + dense.bias[o];
                let y = f32::from_bits(y);
                assert!(
                    (y - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{inputs} inputs, image {b}, {o}: {y} vs {want}"
                );
            }
        }
    }

    /// Four rows at once in explicit vectors give each row's [`dot`] bit for bit: lengths
    /// around the lanes, with and without a tail. Checks nothing where the processor lacks
    /// the instructions.
    #[test]
    fn four_dots_sum_as_one_dot_each() {
        let Some(four_dots) = four_dots() else { return };
        for n in [1, 15, 16, 17, 100, 1280] {
            let w: Vec<f32> = (0..DOT_ROWS * n).map(|i| ((i * 7919 % 201) as f32 - 100.0) / 7.0).collect();
            let x: Vec<f32> = (0..n).map(|i| ((i * 104729 % 301) as f32 - 150.0) / 3.0).collect();
            let want: Vec<u32> = w.chunks_exact(n).map(|row| dot(row, &x).to_bits()).collect();
            let got: Vec<u32> = four_dots(&w, &x).iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "{n} inputs");
        }
    }
}

//! Weight reconstruction after pruning (OBC / SparseGPT's layer-wise least squares, solved
//! exactly per output row): the weights that survive pruning, and the bias, are re-fitted so
//! that the layer reproduces its dense outputs on calibration inputs.
//!
//! For output row `r` with kept positions `S` (plus the bias, as an input that is always 1),
//! the best weights minimise `|| X_S^T w - X^T [W_r, b_r] ||^2 + lambda || w - [W_r, b_r]_S ||^2`
//! over the input patches `X`: `(H_SS + lambda I) w = (H [W_r, b_r])_S + lambda [W_r, b_r]_S`
//! with `H = X X^T`. Only `H` (per channel group) is
//! needed, so the inputs are read once per layer.
//!
//! A layer whose input is thresholded reads `X_t` (its inputs at or below the threshold
//! zeroed), not `X`: its weights, pruned or not, are re-fitted so that the thresholded
//! inputs give the dense outputs, `(H_t,SS + lambda I) w = (X_t Y_r)_S + lambda
//! [W_r, b_r]_S` with `H_t = X_t X_t^T` and `Y_r = X^T [W_r, b_r]` the dense row's outputs.
//! Zeroing small inputs removes a mean from every output (the bias makes up for it) and
//! what correlated neighbours still carry (the weights do). `X_t Y` is worked out from the
//! outputs, not as `(X_t X^T) [W, b]^T`: a layer has fewer rows than inputs, and the
//! product over all the patches is the cost.
//!
//! The inputs are the **dense float** model's, on at most [`RECONSTRUCTION_IMAGES`] of the
//! calibration images (the first ones): a layer's refit then depends on its own knobs alone,
//! not on the order in which a search pruned the others, and a compile given the same knobs
//! and images reproduces the search's weights exactly.
//!
//! On the fixed-point datapath the re-fit also absorbs the weights' rounding (GPTQ, OBQ):
//! the kept weights are rounded to their row's grid one at a time, the ones not yet
//! rounded and the bias moving to make up for each (see [`FittedRow::round_in_turn`]). At
//! 4 to 8 bits this adds a sixth of the output error that rounding each weight alone adds
//! (tested below); the backend then writes the weights as they are.

use super::SparsityConfig;
use crate::board::Board;
use crate::design::Widths;
use crate::error::{CompileError, Result};
use crate::ir::{Graph, NodeId, Op as IrOp, WeightId};
use crate::quantize::weight_format;
use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::linalg::solvers::{Llt, Solve};
use faer::{Accum, ColRef, Mat, Par, Side};
use hass_proto::fixed::Format;
use hass_runtime::plan::Op;
use hass_runtime::trace::Trace;
use hass_runtime::Tensor;
use rayon::prelude::*;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Calibration images the Gram matrices are accumulated over (the first ones): second
/// moments of a few hundred images' patches are well settled, and more only costs time.
pub const RECONSTRUCTION_IMAGES: usize = 256;

/// Largest `rows x fan_in^3` re-fitted: each row's solve costs up to `fan_in^3 / 3`, and a
/// search re-fits a layer at every move of its weights. Every layer of the bundled models
/// fits (the largest, fmnist_cnn's classifier, 10 x 1568^3 = 3.9e10); ResNet-18's first
/// stage fits, its wider 3x3 stages and its classifier do not and keep magnitude pruning (a
/// shared-inverse update in the manner of SparseGPT would scale to them).
pub const MAX_REFIT_WORK: f64 = 6.9e10;

/// Patch rows multiplied at a time when accumulating a Gram matrix.
const PATCH_ROWS_PER_BLOCK: usize = 2048;

/// Parts a Gram matrix's blocks are summed in, in parallel (then added in order).
const GRAM_PARTS: usize = 8;

/// Ridge term, as a fraction of the mean diagonal of `H_SS` (as GPTQ and SparseGPT damp),
/// pulling towards the dense weights: keeps the solve well conditioned where inputs are
/// correlated or always zero, and leaves weights the inputs say nothing about as they were.
pub const DAMPING: f64 = 0.01;

/// Second moments of one layer's input patches, per channel group, with a constant 1
/// appended (the bias's input): `(fan_in + 1)` square per group, and what the re-fit aims
/// at, the dense layer's outputs seen through those patches. At an input threshold the
/// patches are the ones the layer reads once its input is thresholded: the system is
/// `X_t X_t^T` and the aim `X_t Y`, `Y` what the dense layer computed on its own inputs.
#[derive(Clone, Debug)]
pub struct Gram {
    /// Worked out on the first re-fit: a search keeps every layer's Gram matrices at hand,
    /// and re-fits most layers only at an input threshold (matrices of their own, from
    /// `source`), so many layers' plain ones are never read (ResNet-18's capped search:
    /// 12 of 21).
    matrices: std::sync::OnceLock<Matrices>,
    /// The input threshold the patches are read at (inputs at or below it read as zero).
    threshold: Option<f32>,
    /// The dense inputs, to work the matrices out at another threshold.
    source: Arc<Source>,
}

/// A [`Gram`]'s matrices.
#[derive(Clone, Debug)]
struct Matrices {
    /// One matrix per group: the thresholded patches' second moments.
    groups: Vec<Mat<f64>>,
    /// Per group, `(fan_in + 1) x rows_per_group`: column `r` is the thresholded patches
    /// against the dense row `r`'s outputs, `X_t X^T [W_r, b_r]`.
    aims: Vec<Mat<f64>>,
}

/// What a [`Gram`] was worked out from.
#[derive(Debug)]
struct Source {
    patches: Patches,
    /// Per group, the dense layer's rows `[W_r, b_r]` as columns: `(fan_in + 1) x
    /// rows_per_group`.
    dense: Vec<Mat<f64>>,
    /// The first [`RECONSTRUCTION_IMAGES`] images' inputs, one after the other.
    inputs: Vec<f32>,
    per_image: usize,
}

/// Geometry of a layer's patches: what [`Gram::of_layer`] reads of a runtime layer.
#[derive(Clone, Debug)]
struct Patches {
    groups: usize,
    channels_per_group: usize,
    in_hw: [usize; 2],
    out_hw: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    /// Top and left padding.
    pad: [usize; 2],
    rows_per_group: usize,
}

impl Patches {
    fn of(op: &Op, input_shape: &[usize], output_shape: &[usize]) -> Option<Patches> {
        match op {
            Op::Conv(c) => Some(Patches {
                groups: c.groups,
                channels_per_group: c.c_in / c.groups,
                in_hw: [*input_shape.get(1)?, *input_shape.get(2)?],
                out_hw: [*output_shape.get(1)?, *output_shape.get(2)?],
                kernel: c.kernel,
                stride: c.stride,
                dilation: c.dilation,
                pad: [c.pads[0], c.pads[1]],
                rows_per_group: c.c_out / c.groups,
            }),
            // A fully connected layer: one patch per image, a 1x1 window over a 1x1 map.
            Op::Dense(d) => Some(Patches {
                groups: 1,
                channels_per_group: d.inputs,
                in_hw: [1, 1],
                out_hw: [1, 1],
                kernel: [1, 1],
                stride: [1, 1],
                dilation: [1, 1],
                pad: [0, 0],
                rows_per_group: d.outputs,
            }),
            _ => None,
        }
    }

    fn fan_in(&self) -> usize {
        self.channels_per_group * self.kernel[0] * self.kernel[1]
    }

    /// Group `g`'s patches of one image (`[C, H, W]`), one row per output pixel, the
    /// constant 1 last.
    #[cfg(test)]
    fn of_image(&self, image: &[f32], g: usize) -> Mat<f64> {
        self.of_images(&[image], g)
    }

    /// Group `g`'s patches of several images, one after the other.
    #[cfg(test)]
    fn of_images(&self, images: &[&[f32]], g: usize) -> Mat<f64> {
        let mut m = Mat::<f32>::zeros(images.len() * self.out_hw[0] * self.out_hw[1], self.fan_in() + 1);
        self.fill(images, g, &mut m);
        m.as_ref().map(|&v| f64::from(v))
    }

    /// [`Self::of_images`] into `m`, every value written (a Gram matrix's blocks reuse one
    /// matrix: fresh ones of a 56x56 layer's patches, 14 MB each, cost more in page faults
    /// than the products took). Filled a column (one channel and tap) at a time: the
    /// matrix is column-major, and along a column only the output position moves.
    fn fill(&self, images: &[&[f32]], g: usize, m: &mut Mat<f32>) {
        let ([h, w], [oh, ow], [kh, kw]) = (self.in_hw, self.out_hw, self.kernel);
        let (fan_in, per_image) = (self.fan_in(), oh * ow);
        assert_eq!(m.shape(), (images.len() * per_image, fan_in + 1), "patch matrix's shape");
        m.col_as_slice_mut(fan_in).fill(1.0);
        // The input row or column a tap at offset `k` reads from output position `o`, if
        // inside the map.
        let at = |o: usize, k: usize, axis: usize, size: usize| {
            (o * self.stride[axis] + k * self.dilation[axis]).checked_sub(self.pad[axis]).filter(|&v| v < size)
        };
        // Per tap column `kx`, the outputs whose column lies inside the map (a run: the
        // column grows with the output's) and the first one's column. Copied as runs, not
        // value by value with a bounds check each (2 % of the ResNet-18 search's samples).
        let columns: Vec<(std::ops::Range<usize>, usize)> = (0..kw)
            .map(|kx| {
                let first = (0..ow).find(|&ox| at(ox, kx, 1, w).is_some()).unwrap_or(ow);
                let end = (first..ow).find(|&ox| at(ox, kx, 1, w).is_none()).unwrap_or(ow);
                (first..end, at(first, kx, 1, w).unwrap_or(0))
            })
            .collect();
        let sx = self.stride[1];
        for j in 0..fan_in {
            let (c, ky, kx) = (j / (kh * kw), j / kw % kh, j % kw);
            let (inside, x0) = columns[kx].clone();
            let column = m.col_as_slice_mut(j);
            for (image, out) in images.iter().zip(column.chunks_exact_mut(per_image)) {
                let plane = &image[(g * self.channels_per_group + c) * h * w..][..h * w];
                for (oy, out_row) in out.chunks_exact_mut(ow).enumerate() {
                    let Some(y) = at(oy, ky, 0, h) else {
                        out_row.fill(0.0);
                        continue;
                    };
                    let (before, rest) = out_row.split_at_mut(inside.start);
                    let (run, after) = rest.split_at_mut(inside.len());
                    before.fill(0.0);
                    after.fill(0.0);
                    let row = &plane[y * w..][..w];
                    if sx == 1 {
                        run.copy_from_slice(&row[x0..][..run.len()]);
                    } else {
                        run.iter_mut().zip(row[x0..].iter().step_by(sx)).for_each(|(v, &x)| *v = x);
                    }
                }
            }
        }
    }
}

impl Gram {
    /// The Gram matrices of a conv or fully connected runtime layer `op` (the dense one its
    /// re-fits aim at), from its input values `input` (a batch of `input_shape` each, at
    /// most [`RECONSTRUCTION_IMAGES`] read), unthresholded. `None` for any other op, and for
    /// layers beyond [`MAX_REFIT_WORK`].
    pub fn of_layer(op: &Op, input: &[f32], input_shape: &[usize], output_shape: &[usize]) -> Option<Gram> {
        let patches = Patches::of(op, input_shape, output_shape)?;
        let rows = (patches.rows_per_group * patches.groups) as f64;
        if rows * (patches.fan_in() as f64).powi(3) > MAX_REFIT_WORK {
            return None;
        }
        let (weight, bias) = match op {
            Op::Conv(c) => (&c.weight, &c.bias),
            Op::Dense(d) => (&d.weight, &d.bias),
            _ => return None,
        };
        let (fan_in, per_group) = (patches.fan_in(), patches.rows_per_group);
        let dense = (0..patches.groups)
            .map(|g| {
                Mat::from_fn(fan_in + 1, per_group, |j, r| {
                    let r = g * per_group + r;
                    f64::from(if j < fan_in { weight[r * fan_in + j] } else { bias[r] })
                })
            })
            .collect();
        let per_image: usize = input_shape.iter().product::<usize>().max(1);
        let images = (input.len() / per_image).min(RECONSTRUCTION_IMAGES);
        let source = Arc::new(Source { patches, dense, inputs: input[..images * per_image].to_vec(), per_image });
        Some(Gram::of_source(source, None))
    }

    /// The matrices at the patches' threshold, worked out on first use.
    fn matrices(&self) -> &Matrices {
        self.matrices.get_or_init(|| {
            let _span = tracing::debug_span!("gram", threshold = ?self.threshold).entered();
            Matrices::of_source(&self.source, self.threshold)
        })
    }

    /// The same layer's matrices with its input thresholded at `threshold` (`None`: not
    /// thresholded): these, if that is the threshold they are at, else matrices of their own
    /// (worked out on their first re-fit).
    pub fn at_threshold(&self, threshold: Option<f32>) -> Cow<'_, Gram> {
        if threshold.map(f32::to_bits) == self.threshold.map(f32::to_bits) {
            return Cow::Borrowed(self);
        }
        Cow::Owned(Gram::of_source(self.source.clone(), threshold))
    }

    /// The input threshold these matrices are at.
    pub fn threshold(&self) -> Option<f32> {
        self.threshold
    }

    /// The matrices of `source`'s patches read at `threshold`, not yet worked out.
    fn of_source(source: Arc<Source>, threshold: Option<f32>) -> Gram {
        Gram { matrices: std::sync::OnceLock::new(), threshold, source }
    }
}

impl Matrices {
    /// The matrices of `source`'s patches read at `threshold`.
    fn of_source(source: &Source, threshold: Option<f32>) -> Matrices {
        let patches = &source.patches;
        let n = patches.fan_in() + 1;
        let images: Vec<&[f32]> = source.inputs.chunks_exact(source.per_image).collect();
        // Patches of several images at a time: one product per block, not one (and one
        // n x n temporary) per image.
        let per_block = (PATCH_ROWS_PER_BLOCK / (patches.out_hw[0] * patches.out_hw[1]).max(1)).max(1);
        let blocks: Vec<&[&[f32]]> = images.chunks(per_block).collect();
        // Blocks in a fixed number of parts, summed in order: the same sums whatever the
        // number of threads.
        let part_len = blocks.len().div_ceil(GRAM_PARTS).max(1);
        let mut groups = Vec::with_capacity(patches.groups);
        let mut aims = Vec::with_capacity(patches.groups);
        for (g, dense) in source.dense.iter().enumerate() {
            // Each block's products in f32 (twice as many lanes as f64), added to the f64
            // sums: a block's rows (PATCH_ROWS_PER_BLOCK, or one image's patches where
            // those are more: 3136 on a 56x56 map) are few enough that its f32 sums keep
            // about five digits, where the ridge term damps at two.
            let dense32 = Mat::<f32>::from_fn(dense.nrows(), dense.ncols(), |j, r| dense[(j, r)] as f32);
            let parts: Vec<(Mat<f64>, Option<Mat<f64>>)> = blocks
                .par_chunks(part_len)
                .map(|part| {
                    // The product is symmetric: its lower half is worked out, mirrored below.
                    let mut h = Mat::<f64>::zeros(n, n);
                    let mut h_block = Mat::<f32>::zeros(n, n);
                    let mut aim = threshold.map(|_| Mat::<f64>::zeros(n, dense.ncols()));
                    let mut aim_block = Mat::<f32>::zeros(n, dense.ncols());
                    // The block's patches, and thresholded, in matrices kept while blocks
                    // are as long.
                    let (mut x, mut xt) = (Mat::<f32>::zeros(0, n), threshold.map(|_| Mat::<f32>::zeros(0, n)));
                    for block in part {
                        let rows = block.len() * patches.out_hw[0] * patches.out_hw[1];
                        if x.nrows() != rows {
                            x = Mat::zeros(rows, n);
                            xt = xt.map(|_| Mat::zeros(rows, n));
                        }
                        patches.fill(block, g, &mut x);
                        if let (Some(xt), Some(t)) = (xt.as_mut(), threshold) {
                            threshold_into(&x, patches.fan_in(), t, xt);
                        }
                        let (x, xt) = (&x, xt.as_ref());
                        let seen = xt.unwrap_or(x);
                        triangular::matmul(
                            h_block.as_mut(),
                            BlockStructure::TriangularLower,
                            Accum::Replace,
                            seen.transpose(),
                            BlockStructure::Rectangular,
                            seen,
                            BlockStructure::Rectangular,
                            1.0,
                            Par::Seq,
                        );
                        for j in 0..n {
                            for i in j..n {
                                h[(i, j)] += f64::from(h_block[(i, j)]);
                            }
                        }
                        if let (Some(aim), Some(xt)) = (aim.as_mut(), xt.as_ref()) {
                            // The dense rows' outputs on these patches, then seen through
                            // the thresholded ones.
                            let outputs = x * &dense32;
                            matmul(aim_block.as_mut(), Accum::Replace, xt.transpose(), &outputs, 1.0, Par::Seq);
                            for j in 0..aim.ncols() {
                                for i in 0..n {
                                    aim[(i, j)] += f64::from(aim_block[(i, j)]);
                                }
                            }
                        }
                    }
                    (h, aim)
                })
                .collect();
            let mut parts = parts.into_iter();
            let (mut h, mut aim) = parts.next().unwrap_or_else(|| (Mat::zeros(n, n), None));
            for (ph, pa) in parts {
                h += ph;
                if let (Some(aim), Some(pa)) = (aim.as_mut(), pa) {
                    *aim += pa;
                }
            }
            for j in 1..n {
                for i in 0..j {
                    h[(i, j)] = h[(j, i)];
                }
            }
            // Unthresholded, the patches the row reads are the dense ones: `H [W_r, b_r]`.
            let aim = aim.unwrap_or_else(|| &h * dense);
            groups.push(h);
            aims.push(aim);
        }
        Matrices { groups, aims }
    }
}

impl Gram {
    /// Re-fit the weights `pruned` keeps (non-zero) and, when `with_bias`, the bias, so that
    /// each row reproduces the dense layer's outputs (the one the matrices were read from;
    /// weights `[rows, fan_in]` row-major). Pruned positions stay exactly zero. A row whose
    /// system cannot be solved keeps its pruned weights and its dense bias.
    ///
    /// With `bits` (the fixed-point datapath), the re-fit also absorbs rounding: the kept
    /// weights are rounded to their row's grid (the format [`weight_format`] chooses for
    /// the re-fitted row) one at a time, each from its best value given the ones already
    /// rounded, while the later ones and the bias move to make up for it (GPTQ, OBQ). The
    /// weights come back on the grid, so the backend's quantization keeps them as they
    /// are; a weight that rounds to zero is then pruned too.
    pub fn refit(&self, pruned: &[f32], with_bias: bool, bits: Option<u32>) -> Result<(Vec<f32>, Vec<f32>)> {
        // Weights per output row (input channels per group times the window), rows per group.
        let (fan_in, rows_per_group) = (self.source.patches.fan_in(), self.source.patches.rows_per_group);
        let rows = rows_per_group * self.source.patches.groups;
        if pruned.len() != rows * fan_in {
            return Err(CompileError::internal(format!(
                "reconstruction: {} weights for {rows} rows of {} inputs",
                pruned.len(),
                fan_in
            )));
        }
        let Matrices { groups, aims } = self.matrices();
        // The dense row `r`, `[W_r, b_r]`.
        let dense_row = |r: usize| self.source.dense[r / rows_per_group].col(r % rows_per_group);
        // Rows in parallel: each is its own system.
        let fitted: Vec<Option<(Vec<usize>, FittedRow)>> = (0..rows)
            .into_par_iter()
            .map(|r| {
                let (g, in_group) = (r / rows_per_group, r % rows_per_group);
                let row = r * fan_in..(r + 1) * fan_in;
                // The kept positions, and the bias's (index fan_in, last) when it is fitted.
                let kept: Vec<usize> =
                    (0..fan_in).filter(|&j| pruned[row.start + j] != 0.0).chain(with_bias.then_some(fan_in)).collect();
                let mut fitted = solve_row(&groups[g], aims[g].col(in_group), &kept, dense_row(r))?;
                let kept_weights = kept.len() - usize::from(with_bias);
                if let Some(bits) = bits {
                    let mut values = pruned[row].to_vec();
                    for (&j, v) in kept[..kept_weights].iter().zip(&fitted.values) {
                        values[j] = *v as f32;
                    }
                    fitted.round_in_turn(kept_weights, weight_format(&values, bits));
                }
                Some((kept, fitted))
            })
            .collect();
        let mut weights = pruned.to_vec();
        let mut biases: Vec<f32> = (0..rows).map(|r| dense_row(r)[fan_in] as f32).collect();
        for ((r, new_bias), fitted) in biases.iter_mut().enumerate().zip(fitted) {
            let Some((kept, fitted)) = fitted else { continue };
            let row = r * fan_in..(r + 1) * fan_in;
            for (&j, &v) in kept.iter().zip(&fitted.values) {
                let v = v as f32;
                if !v.is_finite() {
                    continue;
                }
                if j == fan_in {
                    *new_bias = v;
                } else if v != 0.0 || bits.is_some() {
                    // (Without rounding, an exact zero would read as pruned: the position
                    // keeps its old value.)
                    weights[row.start + j] = v;
                }
            }
        }
        Ok((weights, biases))
    }
}

/// `x` (patches, the constant 1 last) with every input at or below `threshold` zeroed, as
/// the layer reads it.
#[cfg(test)]
fn thresholded(x: &Mat<f64>, fan_in: usize, threshold: f32) -> Mat<f64> {
    let t = f64::from(threshold);
    Mat::from_fn(x.nrows(), x.ncols(), |i, j| if j < fan_in && x[(i, j)] <= t { 0.0 } else { x[(i, j)] })
}

/// [`thresholded`] into `read` (as large as `x`), every value written.
fn threshold_into(x: &Mat<f32>, fan_in: usize, threshold: f32, read: &mut Mat<f32>) {
    // Column by column: the matrix is column-major.
    for j in 0..x.ncols() {
        let (from, to) = (x.col_as_slice(j), read.col_as_slice_mut(j));
        if j < fan_in {
            to.iter_mut().zip(from).for_each(|(r, &v)| *r = if v <= threshold { 0.0 } else { v });
        } else {
            to.copy_from_slice(from);
        }
    }
}

/// One row's least-squares answer over its kept positions, with the factor that ranks how
/// the positions trade error.
struct FittedRow {
    /// The kept positions' values, in the order of `kept`.
    values: Vec<f64>,
    /// Lower Cholesky factor of the damped system with its positions in reverse order:
    /// `A = V V^T` with `V = J L J` upper triangular (`J` the reversal), which is what
    /// rounding the positions in their own order needs.
    factor: Llt<f64>,
}

/// Solve one row's damped least-squares system over `kept` (positions into `[W_r, b_r]`):
/// `h` the second moments of the inputs the row reads, `aim` those inputs against the
/// dense row's outputs, `dense` the row `[W_r, b_r]`; `None` when it is not positive
/// definite.
fn solve_row(h: &Mat<f64>, aim: ColRef<'_, f64>, kept: &[usize], dense: ColRef<'_, f64>) -> Option<FittedRow> {
    let k = kept.len();
    if k == 0 {
        return None;
    }
    let mean_diagonal = kept.iter().map(|&i| h[(i, i)]).sum::<f64>() / k as f64;
    let damping = DAMPING * mean_diagonal.max(f64::MIN_POSITIVE);
    // Positions in reverse (see `FittedRow::factor`). The ridge pulls towards the dense
    // values, not towards zero: with nothing pruned the answer is the dense row exactly.
    let at = |i: usize| kept[k - 1 - i];
    let rhs = Mat::from_fn(k, 1, |i, _| aim[at(i)] + damping * dense[at(i)]);
    let system = Mat::from_fn(k, k, |a, b| h[(at(a), at(b))] + if a == b { damping } else { 0.0 });
    let llt = Llt::new(system.as_ref(), Side::Lower).ok()?;
    let solution = llt.solve(&rhs);
    Some(FittedRow { values: (0..k).map(|i| solution[(k - 1 - i, 0)]).collect(), factor: llt })
}

impl FittedRow {
    /// Round the first `count` values to `format` in order, each from its best value given
    /// those before it rounded and those after it free; the rest (the bias) take their best
    /// value given all the rounded ones.
    ///
    /// Why this works: the error of values `w` against the least-squares answer `w*` is
    /// `|V^T (w - w*)|^2`, and `V^T` is lower triangular, so its `i`-th term involves
    /// positions up to `i` only. With the positions before `i` fixed, the later ones can
    /// zero every later term, and the best `w_i` zeroes its own: one pass over the factor.
    fn round_in_turn(&mut self, count: usize, format: Format) {
        let k = self.values.len();
        let l = self.factor.L();
        // Moves from the least-squares answer so far, by reversed position.
        let mut moved = vec![0.0; k];
        for i in 0..k {
            let m = k - 1 - i;
            let shift: f64 = (m + 1..k).map(|p| l[(p, m)] * moved[p]).sum();
            let best = self.values[i] - shift / l[(m, m)];
            let value = if i < count { format.to_f64(format.quantize(best)) } else { best };
            moved[m] = value - self.values[i];
            self.values[i] = value;
        }
    }
}

/// The first [`RECONSTRUCTION_IMAGES`] of `images`.
pub fn reconstruction_images(images: &Tensor) -> Result<Tensor> {
    let n = images.batch().min(RECONSTRUCTION_IMAGES);
    let per_image: usize = images.shape()[1..].iter().product();
    let mut shape = images.shape().to_vec();
    shape[0] = n;
    Tensor::new(shape, images.data()[..n * per_image].to_vec())
        .map_err(|e| CompileError::internal(format!("reconstruction images: {e}")))
}

/// The Gram matrix of every conv and fully connected layer of the dense float `graph` that
/// `wanted` names, from its inputs on `images` (see [`reconstruction_images`]), by layer name.
pub fn grams(
    graph: &Graph,
    board: &Board,
    images: &Tensor,
    wanted: impl Fn(&str) -> bool,
) -> Result<BTreeMap<String, Gram>> {
    let images = reconstruction_images(images)?;
    let plan = super::statistics::calibration_plan(graph, board, &images, None)?;
    let trace = Trace::new(&plan, &images)
        .map_err(|e| CompileError::internal(format!("running the dense model for reconstruction: {e}")))?;
    Ok(grams_of_run(&plan, &trace, wanted))
}

/// [`grams`] from a run of the dense float plan that is already done: `trace` holds every
/// value of `plan` on the images (only the first [`RECONSTRUCTION_IMAGES`] are read), e.g.
/// the run that measured the activation ranges.
pub fn grams_of_run(plan: &hass_runtime::Plan, trace: &Trace, wanted: impl Fn(&str) -> bool) -> BTreeMap<String, Gram> {
    // Layers in parallel: the result does not depend on the order.
    let layers: Vec<_> = plan.layers.iter().filter(|l| wanted(&l.name)).collect();
    layers
        .into_par_iter()
        .filter_map(|layer| {
            let input = layer.inputs[0];
            let gram = Gram::of_layer(&layer.op, trace.value(input), plan.value_shape(input), &layer.output_shape)?;
            Some((layer.name.clone(), gram))
        })
        .collect()
}

/// Re-fit every pruned layer of `graph` whose knobs in `config` ask for it, against the
/// unpruned `dense` graph (the same graph before [`super::prune::apply`]) on `images`; on
/// the fixed-point datapath (`widths`), rounded to each layer's weight width as it goes.
/// `known` holds Gram matrices already worked out by [`grams`] from `dense` and `images`;
/// the others are.
pub fn apply(
    graph: &mut Graph,
    dense: &Graph,
    config: &SparsityConfig,
    board: &Board,
    images: &Tensor,
    widths: Option<&Widths>,
    mut known: BTreeMap<String, Gram>,
) -> Result<()> {
    let refitted: Vec<(NodeId, String)> = graph
        .layers()
        .into_iter()
        .filter(|&id| matches!(graph.node(id).op, IrOp::Conv(_) | IrOp::Dense(_)))
        .map(|id| (id, graph.node(id).name.clone()))
        .filter(|(id, name)| {
            let knobs = config.layers.get(name).copied().unwrap_or_default().or(config.global);
            knobs.reconstruct == Some(true) && (knobs.prunes() || input_threshold(&graph.node(*id).op).is_some())
        })
        .collect();
    if refitted.is_empty() {
        return Ok(());
    }
    let _span = tracing::info_span!("reconstruct", layers = refitted.len()).entered();
    let missing = |name: &str| refitted.iter().any(|(_, n)| n == name) && !known.contains_key(name);
    if refitted.iter().any(|(_, name)| missing(name)) {
        let computed = grams(dense, board, images, missing)?;
        known.extend(computed);
    }
    for (id, name) in refitted {
        let threshold = input_threshold(&graph.node(id).op);
        let gram = known.get(&name).ok_or_else(|| CompileError::internal(format!("no inputs for layer {name}")))?;
        let gram = gram.at_threshold(threshold);
        let (weight, bias) = weight_and_bias(&graph.node(id).op);
        let shape = graph.weights.tensor(weight).shape.clone();
        let (w, b) =
            gram.refit(&graph.weights.tensor(weight).data, bias.is_some(), widths.map(|w| w.of(&name).weight_bits))?;
        let new_weight = graph.weights.add(shape, w);
        let new_bias = bias.map(|old| {
            let shape = graph.weights.tensor(old).shape.clone();
            graph.weights.add(shape, b)
        });
        match &mut graph.node_mut(id).op {
            IrOp::Conv(c) => (c.weight, c.bias) = (new_weight, new_bias),
            IrOp::Dense(d) => (d.weight, d.bias) = (new_weight, new_bias),
            _ => unreachable!("filtered above"),
        }
    }
    Ok(())
}

/// The threshold [`super::prune::apply`] set on a layer's input.
fn input_threshold(op: &IrOp) -> Option<f32> {
    match op {
        IrOp::Conv(c) => c.input_threshold,
        IrOp::Dense(d) => d.input_threshold,
        _ => None,
    }
}

fn weight_and_bias(op: &IrOp) -> (WeightId, Option<WeightId>) {
    match op {
        IrOp::Conv(c) => (c.weight, c.bias),
        IrOp::Dense(d) => (d.weight, d.bias),
        _ => unreachable!("conv or fully connected"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hass_runtime::plan::{Conv, Dense};

    /// How far a product summed in f32 over a block (then in f64 over blocks) may be from
    /// the f64 sum, where `scale` bounds the sum of its terms' magnitudes (by Cauchy-Schwarz,
    /// the product of the two columns' norms): a rounding of each of a block's additions,
    /// and of the products feeding them.
    fn f32_sums_tolerance(scale: f64) -> f64 {
        (PATCH_ROWS_PER_BLOCK + 64) as f64 * f64::from(f32::EPSILON) * scale
    }

    /// A deterministic pseudo-random sequence in [-1, 1).
    fn values(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Squared error of `weights`/`bias` against the dense layer on `x` (`[n, fan_in]`).
    fn error(x: &[f32], fan_in: usize, dense: &[f32], bias: &[f32], weights: &[f32], new_bias: &[f32]) -> f64 {
        let rows = bias.len();
        x.chunks(fan_in)
            .map(|xi| {
                (0..rows)
                    .map(|r| {
                        let dot = |w: &[f32], b: f32| {
                            w[r * fan_in..][..fan_in].iter().zip(xi).map(|(a, b)| (a * b) as f64).sum::<f64>()
                                + b as f64
                        };
                        (dot(dense, bias[r]) - dot(weights, new_bias[r])).powi(2)
                    })
                    .sum::<f64>()
            })
            .sum()
    }

    fn magnitude_pruned(w: &[f32], threshold: f32) -> Vec<f32> {
        w.iter().map(|&v| if v.abs() < threshold { 0.0 } else { v }).collect()
    }

    fn dense_layer(inputs: usize, outputs: usize, weight: &[f32], bias: &[f32]) -> Op {
        Op::Dense(Dense {
            weight: weight.to_vec(),
            bias: bias.to_vec(),
            inputs,
            outputs,
            activation: None,
            input_threshold: None,
            sparse_weight: None,
        })
    }

    #[test]
    fn refit_makes_up_for_what_correlated_inputs_carry_and_keeps_the_zeros() {
        let (inputs, outputs, n) = (24, 6, 300);
        // Inputs in identical pairs: whatever a pruned input carried, its twin carries too.
        let base = values(1, n * inputs / 2);
        let x: Vec<f32> = (0..n * inputs).map(|i| base[i / 2] + 0.3).collect();
        let dense = values(2, outputs * inputs);
        let bias = values(3, outputs);
        let gram = Gram::of_layer(&dense_layer(inputs, outputs, &dense, &bias), &x, &[inputs], &[outputs]).unwrap();
        // Prune the smaller of each pair (half the weights).
        let pruned: Vec<f32> =
            dense.chunks(2).flat_map(|p| if p[0].abs() < p[1].abs() { [0.0, p[1]] } else { [p[0], 0.0] }).collect();
        let (refit, new_bias) = gram.refit(&pruned, true, None).unwrap();
        for (p, r) in pruned.iter().zip(&refit) {
            assert_eq!(*p == 0.0, *r == 0.0, "the zero pattern is kept");
        }
        let before = error(&x, inputs, &dense, &bias, &pruned, &bias);
        let after = error(&x, inputs, &dense, &bias, &refit, &new_bias);
        // Exact but for the damping's shrinkage.
        assert!(after < 1e-3 * before, "refit error {after} vs magnitude pruning {before}");
    }

    #[test]
    fn refit_never_does_worse_than_magnitude_pruning() {
        let (inputs, outputs, n) = (24, 6, 300);
        let x: Vec<f32> = values(4, n * inputs).iter().map(|v| v + 0.3).collect();
        let dense = values(5, outputs * inputs);
        let bias = values(6, outputs);
        let gram = Gram::of_layer(&dense_layer(inputs, outputs, &dense, &bias), &x, &[inputs], &[outputs]).unwrap();
        for threshold in [0.2, 0.5, 0.9] {
            let pruned = magnitude_pruned(&dense, threshold);
            let (refit, new_bias) = gram.refit(&pruned, true, None).unwrap();
            let before = error(&x, inputs, &dense, &bias, &pruned, &bias);
            let after = error(&x, inputs, &dense, &bias, &refit, &new_bias);
            assert!(after < before, "threshold {threshold}: {after} vs {before}");
        }
        // Nothing pruned: the dense layer is already the least-squares answer.
        let (same, same_bias) = gram.refit(&dense, true, None).unwrap();
        let scale = error(&x, inputs, &dense, &bias, &magnitude_pruned(&dense, 0.5), &bias);
        assert!(error(&x, inputs, &dense, &bias, &same, &same_bias) < 1e-3 * scale);
    }

    #[test]
    fn a_thresholded_layer_is_re_fitted_from_the_inputs_it_reads() {
        let (inputs, outputs, n) = (24, 6, 400);
        // Non-negative inputs, as after a ReLU, with a shared component: what a zeroed input
        // carried, its neighbours partly still carry.
        let shared = values(21, n);
        let noise = values(22, n * inputs);
        let x: Vec<f32> = (0..n * inputs).map(|i| (0.6 * shared[i / inputs] + 0.5 * noise[i] + 0.3).max(0.0)).collect();
        let threshold = 0.35;
        let read: Vec<f32> = x.iter().map(|&v| if v <= threshold { 0.0 } else { v }).collect();
        let dense = values(23, outputs * inputs);
        let bias = values(24, outputs);
        let op = dense_layer(inputs, outputs, &dense, &bias);
        let plain = Gram::of_layer(&op, &x, &[inputs], &[outputs]).unwrap();
        let gram = plain.at_threshold(Some(threshold));
        assert_eq!(gram.threshold(), Some(threshold));
        // The error against the dense layer on its own inputs, of weights that read `read`.
        let error_reading = |w: &[f32], b: &[f32]| {
            (0..n)
                .map(|i| {
                    let (xi, ri) = (&x[i * inputs..][..inputs], &read[i * inputs..][..inputs]);
                    (0..outputs)
                        .map(|r| {
                            let dot = |v: &[f32], w: &[f32], b: f32| {
                                w[r * inputs..][..inputs].iter().zip(v).map(|(a, v)| (a * v) as f64).sum::<f64>()
                                    + b as f64
                            };
                            (dot(xi, &dense, bias[r]) - dot(ri, w, b[r])).powi(2)
                        })
                        .sum::<f64>()
                })
                .sum::<f64>()
        };
        let untouched = error_reading(&dense, &bias);
        // Not pruned: every weight and the bias move to make up for the zeroed inputs.
        let (w, b) = gram.refit(&dense, true, None).unwrap();
        assert!(error_reading(&w, &b) < 0.7 * untouched, "{} vs {untouched}", error_reading(&w, &b));
        // Pruned too: better than a re-fit that ignores the threshold.
        let pruned = magnitude_pruned(&dense, 0.4);
        let (w, b) = gram.refit(&pruned, true, None).unwrap();
        let (pw, pb) = plain.refit(&pruned, true, None).unwrap();
        assert!(
            error_reading(&w, &b) < 0.85 * error_reading(&pw, &pb),
            "{} vs {}",
            error_reading(&w, &b),
            error_reading(&pw, &pb)
        );
        // Back at no threshold: the plain matrices again.
        let back = gram.at_threshold(None);
        assert!(back.matrices().groups == plain.matrices().groups && back.matrices().aims == plain.matrices().aims);
        assert!(back.threshold().is_none());
    }

    #[test]
    fn aims_are_the_dense_outputs_seen_through_the_patches_read() {
        // A grouped conv with padding, more images than one block: each aim against
        // `X_t X^T [W, b]` and, unthresholded, `X X^T [W, b]`, worked out here.
        let (c_in, c_out, n) = (4, 6, 150);
        let conv = Conv {
            pads: [1; 4],
            groups: 2,
            bias: values(31, c_out),
            ..Conv::new(values(32, c_out * 2 * 9), c_in, c_out, [3, 3])
        };
        let op = Op::Conv(conv.clone());
        let input: Vec<f32> = values(33, n * c_in * 16).iter().map(|v| v.max(0.0)).collect();
        let plain = Gram::of_layer(&op, &input, &[c_in, 4, 4], &[c_out, 4, 4]).unwrap();
        let patches = Patches::of(&op, &[c_in, 4, 4], &[c_out, 4, 4]).unwrap();
        let images: Vec<&[f32]> = input.chunks_exact(c_in * 16).collect();
        for threshold in [None, Some(0.25)] {
            let gram = plain.at_threshold(threshold);
            for g in 0..2 {
                let x = patches.of_images(&images, g);
                let xt = threshold.map_or_else(|| x.clone(), |t| thresholded(&x, 18, t));
                let dense = Mat::from_fn(19, 3, |j, r| {
                    let r = g * 3 + r;
                    f64::from(if j < 18 { conv.weight[r * 18 + j] } else { conv.bias[r] })
                });
                let outputs = &x * &dense;
                let expected = xt.transpose() * &outputs;
                let aim = &gram.matrices().aims[g];
                for (i, j) in (0..19).flat_map(|i| (0..3).map(move |j| (i, j))) {
                    let (a, e) = (aim[(i, j)], expected[(i, j)]);
                    let scale = xt.col(i).norm_l2() * outputs.col(j).norm_l2();
                    assert!(
                        (a - e).abs() <= f32_sums_tolerance(scale),
                        "{threshold:?} group {g} ({i}, {j}): {a} vs {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn rounding_in_turn_lands_on_the_grid_and_beats_rounding_each_weight_alone() {
        let (inputs, outputs, n) = (32, 8, 400);
        // Correlated inputs (a shared component), as a layer's neighbouring taps are.
        let shared = values(11, n);
        let noise = values(12, n * inputs);
        let x: Vec<f32> = (0..n * inputs).map(|i| shared[i / inputs] + 0.5 * noise[i] + 0.2).collect();
        let dense = values(13, outputs * inputs);
        let bias = values(14, outputs);
        let gram = Gram::of_layer(&dense_layer(inputs, outputs, &dense, &bias), &x, &[inputs], &[outputs]).unwrap();
        let pruned = magnitude_pruned(&dense, 0.3);
        let (float_w, float_b) = gram.refit(&pruned, true, None).unwrap();
        for bits in [4, 6, 8] {
            let (w, b) = gram.refit(&pruned, true, Some(bits)).unwrap();
            // On the grid: the backend's quantization keeps every value as it is.
            let q = crate::quantize::quantize_weights(&w, &b, outputs, bits, (Format { bits: 16, frac: 12 }, false));
            for (row, (ints, f)) in w.chunks(inputs).zip(q.weights.chunks(inputs).zip(&q.formats)) {
                for (&v, &int) in row.iter().zip(ints) {
                    assert_eq!(v as f64, f.to_f64(int), "{bits} bits: {v} is not on its row's grid");
                }
            }
            assert!(pruned.iter().zip(&w).all(|(p, v)| *p != 0.0 || *v == 0.0), "pruned weights stay zero");
            // Rounding the float re-fit weight by weight, as the backend would.
            let q = crate::quantize::quantize_weights(
                &float_w,
                &float_b,
                outputs,
                bits,
                (Format { bits: 16, frac: 12 }, false),
            );
            let rounded: Vec<f32> = float_w
                .chunks(inputs)
                .zip(q.weights.chunks(inputs).zip(&q.formats))
                .flat_map(|(row, (ints, f))| row.iter().zip(ints).map(|(_, &i)| f.to_f32(i)).collect::<Vec<_>>())
                .collect();
            // The error rounding adds to the float re-fit's.
            let floor = error(&x, inputs, &dense, &bias, &float_w, &float_b);
            let in_turn = error(&x, inputs, &dense, &bias, &w, &b) - floor;
            let alone = error(&x, inputs, &dense, &bias, &rounded, &float_b) - floor;
            assert!(in_turn < 0.5 * alone, "{bits} bits: rounding in turn {in_turn} vs each alone {alone}");
        }
    }

    #[test]
    fn the_gram_matrix_sums_every_image_s_patches_across_blocks() {
        // 300 images (the first 256 read) of 16 patches: more than one block of
        // [`PATCH_ROWS_PER_BLOCK`] rows.
        let (c_in, c_out, hw, n) = (2, 3, [4, 4], 300);
        assert!(n.min(RECONSTRUCTION_IMAGES) * 16 > PATCH_ROWS_PER_BLOCK);
        let conv = Conv { pads: [1; 4], ..Conv::new(values(7, c_out * c_in * 9), c_in, c_out, [3, 3]) };
        let op = Op::Conv(conv);
        let input = values(8, n * c_in * hw[0] * hw[1]);
        let gram = Gram::of_layer(&op, &input, &[c_in, 4, 4], &[c_out, 4, 4]).unwrap();
        let patches = Patches::of(&op, &[c_in, 4, 4], &[c_out, 4, 4]).unwrap();
        let images = n.min(RECONSTRUCTION_IMAGES);
        let mut expected = Mat::<f64>::zeros(19, 19);
        for image in input.chunks_exact(c_in * 16).take(images) {
            let x = patches.of_image(image, 0);
            expected += x.transpose() * &x;
        }
        let h = &gram.matrices().groups[0];
        for i in 0..19 {
            for j in 0..19 {
                let scale = (expected[(i, i)] * expected[(j, j)]).sqrt();
                assert!((h[(i, j)] - expected[(i, j)]).abs() <= f32_sums_tolerance(scale), "({i}, {j})");
            }
        }
        // The bias input's diagonal counts the patches: every image, no more.
        assert_eq!(h[(18, 18)], (images * 16) as f64);
    }

    #[test]
    fn gram_matrices_given_re_fit_as_those_worked_out_here() {
        use super::super::LayerKnobs;
        let (dense, board, images) = crate::testing::fmnist_cnn(32);
        let knobs = LayerKnobs { weight_sparsity: Some(0.5), reconstruct: Some(true), ..LayerKnobs::default() };
        let config = SparsityConfig { global: knobs, layers: Default::default() };
        let widths = Widths::default();
        let refitted = |known: BTreeMap<String, Gram>| {
            let mut graph = dense.clone();
            super::super::prune::apply(&mut graph, &config).unwrap();
            apply(&mut graph, &dense, &config, &board, &images, Some(&widths), known).unwrap();
            graph
                .layers()
                .into_iter()
                .filter_map(|id| match graph.node(id).op {
                    IrOp::Conv(_) | IrOp::Dense(_) => {
                        let (w, b) = weight_and_bias(&graph.node(id).op);
                        Some((graph.weights.tensor(w).data.clone(), b.map(|b| graph.weights.tensor(b).data.clone())))
                    }
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        let fresh = refitted(BTreeMap::new());
        let mut known = grams(&dense, &board, &images, |_| true).unwrap();
        assert_eq!(known.len(), 3, "every layer of the CNN fits");
        assert_eq!(refitted(known.clone()), fresh);
        // Some given, the others worked out.
        let first = known.keys().next().unwrap().clone();
        known.remove(&first);
        assert_eq!(refitted(known), fresh);
        // The re-fit moved the weights pruning kept.
        let mut pruned = dense.clone();
        super::super::prune::apply(&mut pruned, &config).unwrap();
        let (w, _) = weight_and_bias(&pruned.node(pruned.layers()[0]).op);
        assert_ne!(pruned.weights.tensor(w).data, fresh[0].0);
    }

    #[test]
    fn patches_of_several_images_read_each_tap_where_the_window_puts_it() {
        // Stride, dilation, padding and groups at once, two images: every entry against
        // the tap's position worked out on its own.
        let (c_in, hw, out) = (4, [6, 5], [3, 3]);
        let conv = Conv {
            pads: [2, 1, 2, 1],
            stride: [2, 1],
            dilation: [2, 2],
            groups: 2,
            ..Conv::new(values(1, 2 * 2 * 9), c_in, 2, [3, 3])
        };
        let patches = Patches::of(&Op::Conv(conv), &[c_in, hw[0], hw[1]], &[2, out[0], out[1]]).unwrap();
        let input = values(7, 2 * c_in * hw[0] * hw[1]);
        let images: Vec<&[f32]> = input.chunks_exact(c_in * hw[0] * hw[1]).collect();
        for g in 0..2 {
            let m = patches.of_images(&images, g);
            assert_eq!((m.nrows(), m.ncols()), (2 * out[0] * out[1], 19));
            for p in 0..m.nrows() {
                let (image, oy, ox) = (p / 9, p % 9 / 3, p % 3);
                for j in 0..18 {
                    let (c, ky, kx) = (g * 2 + j / 9, j / 3 % 3, j % 3);
                    let (y, x) = ((oy * 2 + ky * 2) as isize - 2, (ox + kx * 2) as isize - 1);
                    let inside = (0..hw[0] as isize).contains(&y) && (0..hw[1] as isize).contains(&x);
                    let expected =
                        if inside { images[image][(c * hw[0] + y as usize) * hw[1] + x as usize] as f64 } else { 0.0 };
                    assert_eq!(m[(p, j)], expected, "group {g} row {p} column {j}");
                }
                assert_eq!(m[(p, 18)], 1.0);
            }
        }
    }

    #[test]
    fn conv_patches_follow_the_weight_layout() {
        // A 2-group 3x3 conv with padding and stride 2: its Gram matrix must make the refit of
        // an unpruned layer reproduce it, which holds only if patches line up with weights.
        let (c_in, c_out, hw) = (4, 4, [7, 7]);
        let weight = values(4, c_out * (c_in / 2) * 9);
        let conv = Conv { pads: [1; 4], stride: [2, 2], groups: 2, ..Conv::new(weight.clone(), c_in, c_out, [3, 3]) };
        let input = values(5, 20 * c_in * hw[0] * hw[1]);
        let op = Op::Conv(conv);
        let gram = Gram::of_layer(&op, &input, &[c_in, hw[0], hw[1]], &[c_out, 4, 4]).unwrap();
        let patches = &gram.source.patches;
        assert_eq!((patches.fan_in(), patches.rows_per_group, gram.matrices().groups.len()), (18, 2, 2));
        // Prune one weight per row: the refit moves the rest to make up for it.
        let mut pruned = weight.clone();
        for r in 0..c_out {
            pruned[r * 18 + 4] = 0.0;
        }
        let (refit, _) = gram.refit(&pruned, false, None).unwrap();
        assert!(refit.iter().zip(&pruned).any(|(a, b)| a != b));
        assert!(refit.iter().zip(&pruned).all(|(a, b)| (*a == 0.0) == (*b == 0.0)));
        // The centre tap of output (0, 0) in group 1, its channel 0, reads input channel 2 at (0, 0)
        // (stride 2, pad 1: the window's centre sits on the input's corner).
        let patches = Patches::of(&op, &[c_in, 7, 7], &[c_out, 4, 4]).unwrap();
        let first = patches.of_image(&input[..c_in * 49], 1);
        assert_eq!(first[(0, 4)], input[2 * 49] as f64);
        assert_eq!(first[(0, 0)], 0.0, "padding reads zero");
        assert_eq!(first[(0, 18)], 1.0, "the bias input");
    }

    /// Each patch value is the input its tap reads, or zero where the tap falls in the
    /// padding: strides, dilations, padding on one side or both, windows wider than the map.
    #[test]
    fn patches_read_each_tap_s_input_or_zero() {
        let cases = [
            // kernel, stride, dilation, pads [top, left, bottom, right], input h, w
            ([3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 5, 6),
            ([3, 3], [2, 2], [1, 1], [1, 1, 1, 1], 7, 7),
            ([7, 7], [2, 2], [1, 1], [3, 3, 3, 3], 9, 11),
            ([3, 2], [1, 3], [2, 1], [2, 0, 1, 2], 6, 9),
            ([5, 5], [1, 1], [1, 1], [4, 4, 0, 0], 3, 3),
            ([1, 1], [2, 2], [1, 1], [0; 4], 8, 5),
        ];
        let c_in = 2;
        for (kernel, stride, dilation, pads, h, w) in cases {
            let out_hw = [0, 1].map(|d| {
                let (n, k, s, dl) = ([h, w][d], kernel[d], stride[d], dilation[d]);
                hass_proto::geometry::window_output_len(n, k, s, dl, pads[d], pads[d + 2], false).unwrap()
            });
            let conv = Conv {
                stride,
                dilation,
                pads,
                ..Conv::new(values(9, 3 * c_in * kernel[0] * kernel[1]), c_in, 3, kernel)
            };
            let patches = Patches::of(&Op::Conv(conv), &[c_in, h, w], &[3, out_hw[0], out_hw[1]]).unwrap();
            let images = [values(10, c_in * h * w), values(11, c_in * h * w)];
            let m = patches.of_images(&[&images[0], &images[1]], 0);
            let [oh, ow] = out_hw;
            for (n, image) in images.iter().enumerate() {
                for (o, j) in (0..oh * ow).flat_map(|o| (0..c_in * kernel[0] * kernel[1]).map(move |j| (o, j))) {
                    let (c, ky, kx) = (j / (kernel[0] * kernel[1]), j / kernel[1] % kernel[0], j % kernel[1]);
                    let (y, x) = ((o / ow * stride[0] + ky * dilation[0]), (o % ow * stride[1] + kx * dilation[1]));
                    let inside = y >= pads[0] && y - pads[0] < h && x >= pads[1] && x - pads[1] < w;
                    let want = if inside { image[(c * h + y - pads[0]) * w + x - pads[1]] } else { 0.0 };
                    assert_eq!(m[(n * oh * ow + o, j)], f64::from(want), "{kernel:?} {stride:?} {pads:?}: {o}, {j}");
                }
                assert!((0..oh * ow).all(|o| m[(n * oh * ow + o, c_in * kernel[0] * kernel[1])] == 1.0), "bias input");
            }
        }
    }

    #[test]
    fn grams_of_a_longer_run_read_its_first_images() {
        // The ranges' float run covers every calibration image; Grams taken from it read the
        // first RECONSTRUCTION_IMAGES, exactly what their own run on those images gives.
        let (graph, board, images) = crate::testing::fmnist_cnn(RECONSTRUCTION_IMAGES + 44);
        let own = grams(&graph, &board, &images, |_| true).unwrap();
        let plan = crate::sparsity::statistics::calibration_plan(&graph, &board, &images, None).unwrap();
        let trace = Trace::new(&plan, &images).unwrap();
        let shared = grams_of_run(&plan, &trace, |_| true);
        assert_eq!(own.len(), 3, "two convs and the classifier");
        assert_eq!(own.keys().collect::<Vec<_>>(), shared.keys().collect::<Vec<_>>());
        for (name, gram) in &own {
            assert!(gram.matrices().groups == shared[name].matrices().groups, "{name}");
        }
        // And a run on other images does not give the same.
        let (_, _, fewer) = crate::testing::fmnist_cnn(RECONSTRUCTION_IMAGES / 2);
        let other = grams(&graph, &board, &fewer, |_| true).unwrap();
        let first = own.keys().next().expect("three");
        assert!(other[first].matrices().groups != own[first].matrices().groups);
    }
}

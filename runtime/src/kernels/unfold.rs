//! The right-hand side of the GEMMs ([`super::igemm`], [`super::sgemm`]), which they pack a
//! panel at a time as they go: a matrix, or a convolution's windows.
//!
//! A convolution's windows: row `(c, ky, kx)`,
//! column `(image, oy, ox)` holds that image's input `(c, oy * stride + ky * dilation -
//! pad, ...)`, or zero in the padding. The GEMM asks for a panel of columns at a time and
//! gets it straight from the images: no unfolded matrix is written and read back (im2col's
//! cost on large maps), and the columns of several small maps make one wide GEMM.

use crate::plan::Conv;
use rayon::prelude::*;

/// A GEMM's right-hand side `B`: `k` x `n` values of type `T`, packed a panel at a time as
/// the GEMM goes, so that `B` need never exist whole (a convolution packs its windows
/// straight from the image).
pub trait Columns<T>: Sync {
    /// What [`Columns::row`] needs to know about a run of columns, worked out once for
    /// every row it reads.
    type Span;
    /// `[k, n]`.
    fn shape(&self) -> [usize; 2];
    /// Columns `c0..c0 + len`.
    fn span(&self, c0: usize, len: usize) -> Self::Span;
    /// Row `r`'s values in `span`'s columns into `dst` (every one written).
    fn row(&self, span: &Self::Span, r: usize, dst: &mut [T]);
    /// The values, row-major (`shape()[1]` per row), where `B` is a plain matrix: a GEMM
    /// can then read its panels in place, or pack a row's runs with one copy each rather
    /// than through [`Columns::row`].
    #[inline(always)]
    fn as_matrix(&self) -> Option<&[T]> {
        None
    }
}

/// Pack a block of column panels (`panel_len` values each) over rayon's threads, a few runs
/// of panels per thread: `pack(first, run)` for the run of panels from the block's `first`
/// on, compiled for the widest vectors the processor has (give `pack` as a closure marked
/// `#[inline(always)]`). Without `parallel`, on the caller's thread alone.
pub(crate) fn pack_block<T: Send>(
    block: &mut [T],
    panel_len: usize,
    parallel: bool,
    pack: impl Fn(usize, &mut [T]) + Sync,
) {
    let panels = block.len() / panel_len.max(1);
    let per_task = panels.div_ceil(2 * rayon::current_num_threads()).max(1);
    let min_len = if parallel { 1 } else { usize::MAX };
    block.par_chunks_mut(per_task * panel_len).with_min_len(min_len).enumerate().for_each(|(t, run)| {
        super::with_simd(
            #[inline(always)]
            || pack(t * per_task, run),
        )
    });
}

/// A row-major `k` x `n` matrix as [`Columns`].
pub struct Matrix<'a, T> {
    /// The values, row-major.
    pub values: &'a [T],
    /// Columns per row (`n`).
    pub n: usize,
}

impl<T: Copy + Sync> Columns<T> for Matrix<'_, T> {
    /// The first column.
    type Span = usize;

    fn shape(&self) -> [usize; 2] {
        [self.values.len() / self.n.max(1), self.n]
    }

    fn span(&self, c0: usize, _: usize) -> usize {
        c0
    }

    #[inline(always)]
    fn row(&self, &c0: &usize, r: usize, dst: &mut [T]) {
        dst.copy_from_slice(&self.values[r * self.n + c0..][..dst.len()]);
    }

    #[inline(always)]
    fn as_matrix(&self) -> Option<&[T]> {
        Some(self.values)
    }
}

/// Where row `(c, ky, kx)` reads: its input plane, and the offsets of its window tap.
#[derive(Clone, Copy, Debug)]
struct Tap {
    plane: usize,
    dy: isize,
    dx: isize,
    /// Output columns `lo..hi` read inside the plane's width (padding elsewhere).
    lo: usize,
    hi: usize,
}

/// One group's windows over a batch of images (zeros in the padding: `T::default()`).
pub struct Windows<'a, T> {
    /// The images, `image_len` values apart.
    input: &'a [T],
    image_len: usize,
    images: usize,
    taps: Vec<Tap>,
    stride: [usize; 2],
    in_hw: [usize; 2],
    out_hw: [usize; 2],
}

impl<'a, T> Windows<'a, T> {
    /// The windows `conv` slides over the `channels` planes (of `in_hw`) from `first` on
    /// in each image of `input` (images `image_len` values apart), producing `out_hw`.
    pub fn new(
        conv: &Conv,
        (input, image_len): (&'a [T], usize),
        (first, channels): (usize, usize),
        in_hw: [usize; 2],
        out_hw: [usize; 2],
    ) -> Self {
        let [kh, kw] = conv.kernel;
        let [dh, dw] = conv.dilation;
        let (top, left) = (conv.pads[0] as isize, conv.pads[1] as isize);
        let plane = in_hw[0] * in_hw[1];
        let mut taps = Vec::with_capacity(channels * kh * kw);
        for c in first..first + channels {
            for ky in 0..kh {
                for kx in 0..kw {
                    let dx = (kx * dw) as isize - left;
                    let (lo, hi) = super::conv::valid_range(out_hw[1], conv.stride[1], dx, in_hw[1]);
                    let dy = (ky * dh) as isize - top;
                    taps.push(Tap { plane: c * plane, dy, dx, lo, hi });
                }
            }
        }
        let images = input.len() / image_len.max(1);
        Windows { input, image_len, images, taps, stride: conv.stride, in_hw, out_hw }
    }
}

/// A run of columns within one output row of one image: `len` columns from (`oy`, `ox`)
/// of the image at `image` in the input, at `at` in the span.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    at: usize,
    image: usize,
    oy: usize,
    ox: usize,
    len: usize,
}

impl<T: Copy + Default + Sync> Columns<T> for Windows<'_, T> {
    type Span = Vec<Run>;

    fn shape(&self) -> [usize; 2] {
        [self.taps.len(), self.images * self.out_hw[0] * self.out_hw[1]]
    }

    fn span(&self, c0: usize, len: usize) -> Vec<Run> {
        let ow = self.out_hw[1].max(1);
        let pixels = (self.out_hw[0] * ow).max(1);
        let mut runs = Vec::with_capacity(len / ow + 2);
        let mut at = 0;
        while at < len {
            let (image, pixel) = ((c0 + at) / pixels, (c0 + at) % pixels);
            let (oy, ox) = (pixel / ow, pixel % ow);
            let run = (ow - ox).min(len - at);
            runs.push(Run { at, image: image * self.image_len, oy, ox, len: run });
            at += run;
        }
        runs
    }

    #[inline(always)]
    fn row(&self, runs: &Vec<Run>, r: usize, dst: &mut [T]) {
        let tap = self.taps[r];
        let ([h, w], [sh, sw]) = (self.in_hw, self.stride);
        for &Run { at, image, oy, ox, len } in runs {
            let run = &mut dst[at..][..len];
            let y = (oy * sh) as isize + tap.dy;
            if y < 0 || y >= h as isize {
                clear(run);
                continue;
            }
            let src = &self.input[image + tap.plane + y as usize * w..][..w];
            // Output columns ox..ox + len; those in lo..hi read the plane.
            let lo = tap.lo.clamp(ox, ox + len);
            let hi = tap.hi.clamp(lo, ox + len);
            clear(&mut run[..lo - ox]);
            clear(&mut run[hi - ox..]);
            let first = ((lo * sw) as isize + tap.dx) as usize;
            let inside = &mut run[lo - ox..hi - ox];
            if sw == 1 {
                inside.copy_from_slice(&src[first..][..inside.len()]);
            } else if !inside.is_empty() {
                super::each_strided(inside, &src[first..], sw, |d, v| *d = v);
            }
        }
    }
}

/// `dst` set to zeros (`T::default()`). Padding is mostly a column or three at a row's
/// ends, where a call to `memset` costs more than the stores: those are written in place.
#[inline(always)]
fn clear<T: Copy + Default>(dst: &mut [T]) {
    let zero = T::default();
    match dst {
        [] => {}
        [a] => *a = zero,
        [a, b] => [*a, *b] = [zero; 2],
        [a, b, c] => [*a, *b, *c] = [zero; 3],
        [a, b, c, d] => [*a, *b, *c, *d] = [zero; 4],
        _ => dst.fill(zero),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::group_columns;

    /// Every row of the windows, over any run of columns, is the unfolded matrix's, image by
    /// image: padding, stride, dilation, groups and runs across rows and images included.
    #[test]
    fn windows_are_the_unfolded_matrix() {
        let (c_in, c_out) = (6, 4);
        for (kernel, stride, dilation, pads, groups) in [
            ([3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1),
            ([3, 2], [2, 1], [1, 2], [0, 2, 1, 0], 2),
            ([1, 1], [2, 2], [1, 1], [0; 4], 3),
            ([5, 5], [2, 3], [1, 1], [2, 2, 2, 2], 1),
        ] {
            let conv = Conv {
                stride,
                dilation,
                pads,
                groups,
                ..Conv::new(vec![0.0; c_out * c_in / groups * kernel[0] * kernel[1]], c_in, c_out, kernel)
            };
            let in_hw = [7, 9];
            let out_hw = [0, 1].map(|a| {
                let (h, k, s, d) = (in_hw[a], kernel[a], stride[a], dilation[a]);
                hass_proto::geometry::window_output_len(h, k, s, d, pads[a], pads[a + 2], false).unwrap()
            });
            let image_len = c_in * in_hw[0] * in_hw[1];
            let images: Vec<i16> = (0..2 * image_len).map(|i| ((i * 7919) % 601) as i16 - 300).collect();
            let per_group = c_in / groups;
            let pixels = out_hw[0] * out_hw[1];
            for g in 0..groups {
                let windows = Windows::new(&conv, (&images, image_len), (g * per_group, per_group), in_hw, out_hw);
                let [k, n] = windows.shape();
                assert_eq!(n, 2 * pixels);
                // The reference: each image unfolded on its own (as f32, exact).
                let unfolded: Vec<Vec<f32>> = images
                    .chunks_exact(image_len)
                    .map(|image| {
                        let values: Vec<f32> = image.iter().map(|&v| v as f32).collect();
                        let mut cols = Vec::new();
                        group_columns(&conv, &values, g, in_hw, out_hw, &mut cols).to_vec()
                    })
                    .collect();
                for (c0, len) in [(0, n), (3, 17), (pixels - 2, 5), (n - 1, 1)] {
                    let span = windows.span(c0, len);
                    for r in 0..k {
                        let mut got = vec![i16::MIN; len];
                        windows.row(&span, r, &mut got);
                        let want: Vec<i16> =
                            (c0..c0 + len).map(|c| unfolded[c / pixels][r * pixels + c % pixels] as i16).collect();
                        assert_eq!(
                            got, want,
                            "{kernel:?} {stride:?} {dilation:?} {pads:?} group {g} row {r} from {c0}"
                        );
                    }
                }
            }
        }
    }
}

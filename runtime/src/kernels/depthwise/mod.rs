//! Depthwise convolution (one filter per channel): a direct loop, in one of two layouts.
//!
//! Wide maps, channel by channel, in bands of output rows: the rows a band reads are copied
//! into a zero-padded copy that stays in L1, its rows split into their `stride` phases (`x %
//! stride`), so that every tap reads a contiguous run of a row for any run of output
//! columns. An output row is then summed in blocks of columns held in registers across all
//! the taps.
//!
//! Small maps (up to 14x14, where a channel's rows fill a vector or less), channels last,
//! a block of channels at a time: the block's planes are copied into a zero-padded `[H, W,
//! block]` copy, each output pixel sums the block's channels in registers across all the
//! taps (whole, aligned vectors: no load across two cache lines), and the sums are put back
//! in `[C, OH, OW]` order.
//!
//! Both are compiled for the widest vectors the processor has, and with AVX-512 their inner
//! loops and the channels-last layout's copies run in explicit vectors ([`Vectors`], in
//! `avx512.rs`); with AVX2 the channels-last layout's sums and copies, the padded copies
//! and the whole-grid sums at stride 1 do (`avx2.rs`). In every case each output element
//! sums its taps in row-major tap order, starting from zero, each product fused with its
//! addition: the same floats either way.

use super::conv::Element;
use super::{scratch, with_simd};
use crate::plan::Conv;
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
#[macro_use]
mod grid;
#[cfg(target_arch = "x86_64")]
#[macro_use]
mod pixels;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512;

/// `out` ([C, OH, OW]) = `input` ([C, H, W]) convolved channel by channel with `weight`
/// ([C, K_h, K_w]), without bias; then `finish(c, plane)` on each output channel's plane,
/// on the thread that summed it, while it is in cache (a layer's bias and activation: a
/// pass of their own over the whole output read and wrote it again from memory).
pub fn depthwise<T: Element>(
    conv: &Conv,
    weight: &[T],
    input: &[T],
    [h, w]: [usize; 2],
    out: &mut [T],
    [oh, ow]: [usize; 2],
    finish: impl Fn(usize, &mut [T]) + Sync,
) {
    if ow <= channels_last_max_width::<T>() {
        channels_last(conv, weight, input, [h, w], out, [oh, ow], finish);
    } else {
        by_channel(conv, weight, input, [h, w], out, [oh, ow], finish);
    }
}

/// [`depthwise`] summed in `f64` (exact where `f32` is not: the fixed-point path's 16-bit
/// products) of `f32` input values: the channel-by-channel layout widens each plane as it
/// copies it (a whole widened copy of a large map first cost as much again as its
/// multiply-adds), the channels-last one (small maps) widens the image first.
pub fn depthwise_widened(
    conv: &Conv,
    weight: &[f64],
    input: &[f32],
    [h, w]: [usize; 2],
    out: &mut [f64],
    [oh, ow]: [usize; 2],
) {
    if ow <= channels_last_max_width::<f64>() {
        let mut wide = scratch::take_len(input.len(), 0.0f64);
        with_simd(
            #[inline(always)]
            || {
                for (d, &v) in wide.iter_mut().zip(input) {
                    *d = v as f64;
                }
            },
        );
        channels_last(conv, weight, &wide, [h, w], out, [oh, ow], |_, _| ());
    } else {
        by_channel(conv, weight, input, [h, w], out, [oh, ow], |_, _| ());
    }
}

/// The widest maps that run channels last, for element type `T` on this processor.
fn channels_last_max_width<T: Element>() -> usize {
    if T::depthwise_vectors().is_some() {
        CHANNELS_LAST_MAX_WIDTH
    } else {
        PORTABLE_CHANNELS_LAST_MAX_WIDTH
    }
}

/// What a channel's plane is read from: values of type `Self` that the padded copy holds
/// as `T`.
pub trait Source<T>: Copy + Into<T> + Sync {
    /// Fill `rows` from `plane` as [`Padded::fill`] does, in explicit vectors, if there are
    /// some for this pair of types (`f32`, with AVX-512 or AVX2) and the stride (1 or 2); else
    /// `false`, nothing written. A small map's row is shorter than the compiled loop's
    /// vector steps, which left most of it to a scalar remainder (on mobilenet_v2 the copies
    /// took a third of its depthwise layers' time).
    #[inline(always)]
    fn fill_in_vectors(_: &Padded, _: &[Self], _: &mut [T]) -> bool {
        false
    }
}

impl Source<f32> for f32 {
    #[inline(always)]
    fn fill_in_vectors(padded: &Padded, plane: &[f32], rows: &mut [f32]) -> bool {
        #[cfg(target_arch = "x86_64")]
        if avx512::available() && padded.stride[1] <= 2 {
            avx512::fill_f32(padded, plane, rows);
            return true;
        }
        #[cfg(target_arch = "x86_64")]
        if padded.stride[1] <= 2 && avx2::available() {
            avx2::fill_f32(padded, plane, rows);
            return true;
        }
        false
    }
}

impl Source<f64> for f32 {}

impl Source<f64> for f64 {}

/// [`depthwise`] channel by channel, from zero-padded, phase-split copies.
fn by_channel<T: Element, S: Source<T>>(
    conv: &Conv,
    weight: &[T],
    input: &[S],
    [h, w]: [usize; 2],
    out: &mut [T],
    [oh, ow]: [usize; 2],
    finish: impl Fn(usize, &mut [T]) + Sync,
) {
    let padded = Padded::new(conv, [h, w], [oh, ow]);
    let [kh, kw] = conv.kernel;
    // Channels per task: a small map's channel is a few hundred multiply-adds, less than
    // what a task, its buffers and the instruction-set dispatch cost.
    let per_task = (TASK_OUTPUTS / (oh * ow).max(1)).max(1);
    // Where each tap reads, the same for every channel (worked out once: the integer
    // divisions cost more than a small channel's multiply-adds).
    let offsets: Vec<usize> = (0..kh * kw).map(|t| padded.offset(conv, t / kw, t % kw)).collect();
    // A filter with every tap live runs as a whole grid (see `GridKernel`), if it may.
    let cols: Vec<usize> = (0..kw).map(|kx| padded.offset(conv, 0, kx)).collect();
    let gridded = kh == kw && conv.dilation == [1, 1];
    let grid_kernel = T::depthwise_grid();
    let vectors = T::depthwise_vectors();
    // A channel in bands of output rows, each band's padded rows copied just before its
    // sums: a whole plane's copy (52 KB at 112x112) overflowed L1, and its stores waited on
    // the input's loads (mobilenet_v2's 3x3/2 layer on 96 channels: 0.55 of its 0.75 ms).
    let band_rows = BAND_ROWS.min(oh).max(1);
    let band_len = padded.band(0, band_rows).len();
    out.par_chunks_mut(per_task * oh * ow).enumerate().for_each(|(task, planes)| {
        let mut live = scratch::take::<(usize, T)>();
        let mut rows = scratch::take_len(band_len, T::zero());
        // The padding columns and the slack, which no band's copy writes.
        rows.fill(T::zero());
        with_simd(
            #[inline(always)]
            || {
                for (i, dst) in planes.chunks_exact_mut(oh * ow).enumerate() {
                    let c = task * per_task + i;
                    let taps = &weight[c * kh * kw..][..kh * kw];
                    // Pruned taps are skipped: their multiply-adds are what sparsity saves.
                    live.clear();
                    live.extend(offsets.iter().zip(taps).filter(|(_, &w)| w != T::zero()).map(|(&o, &w)| (o, w)));
                    for (b, dst) in dst.chunks_mut(band_rows * ow).enumerate() {
                        let band = padded.band(b * band_rows, dst.len() / ow);
                        band.fill(&input[c * h * w..][..h * w], &mut rows);
                        let grid = Grid { taps, cols: &cols, row_len: band.row_len(), stride: band.stride[0] };
                        let whole = gridded && live.len() == taps.len();
                        if whole && grid_kernel.is_some_and(|kernel| kernel(grid, &rows, dst, ow)) {
                            // Summed as a whole grid.
                        } else if let Some(kernel) = vectors.as_ref().and_then(|v| v.rows) {
                            kernel(&live, &rows, band.stride[0] * band.row_len(), dst, ow);
                        } else if ow <= 8 {
                            // Two rows of sums fill 4 (f64: 8) AVX2 registers at 16 columns, 8 at 32.
                            channel::<T, 8>(&live, &rows, &band, dst, ow);
                        } else if ow <= 16 || size_of::<T>() > 4 {
                            channel::<T, 16>(&live, &rows, &band, dst, ow);
                        } else {
                            channel::<T, 32>(&live, &rows, &band, dst, ow);
                        }
                    }
                    finish(c, dst);
                }
            },
        );
        scratch::give_back(live);
    });
}

/// Output rows per band of a channel (a multiple of the vector kernel's 8, 4 and 2 rows
/// at once): at 112 columns, stride 2, its padded rows take 15 KB.
const BAND_ROWS: usize = 16;

/// Maps at most this many columns wide run channels last with the AVX-512 kernels
/// ([`Vectors`]). Measured on this machine, one thread, in blocks of [`CHANNEL_BLOCK`]
/// channels, against the channel-by-channel loop: 3x3 over 960 channels of 7x7 0.051-0.068
/// against 0.077 ms, 5x5 over 576 of 7x7 0.041-0.044 against 0.077, 3x3 over 384 of 14x14
/// 0.060 against 0.069, 5x5 over 240 of 14x14 0.053 against 0.078; on 28x28 maps
/// mobilenet_v2's and mobilenet_v3_small's layers were 1.3x slower.
const CHANNELS_LAST_MAX_WIDTH: usize = 14;

/// [`CHANNELS_LAST_MAX_WIDTH`] for the portable loops: they were 0.68-0.9x the
/// channel-by-channel loop at 7x7 and 1.5x at 14x14.
const PORTABLE_CHANNELS_LAST_MAX_WIDTH: usize = 8;

/// Outputs per parallel task of the channel-by-channel layout, at least.
const TASK_OUTPUTS: usize = 4096;

/// [`depthwise`] channels last, a block of [`CHANNEL_BLOCK`] channels at a time (blocks in
/// parallel): the block's image copied into a zero-padded `[H, W, block]` copy, each output
/// pixel's channels summed across the taps, then put back in `[C, OH, OW]`. A block's
/// padded copy is small (7x7, 5x5: 16 KB) and read from L1: over all the channels at once
/// (576 channels of 7x7, 5x5: 25 KB per padded row), each block of channels read its
/// window's lines anew from L2, at a third of the multiply-adds' rate.
fn channels_last<T: Element>(
    conv: &Conv,
    weight: &[T],
    input: &[T],
    [h, w]: [usize; 2],
    out: &mut [T],
    [oh, ow]: [usize; 2],
    finish: impl Fn(usize, &mut [T]) + Sync,
) {
    let (taps, pixels) = (conv.kernel[0] * conv.kernel[1], oh * ow);
    if pixels == 0 {
        return;
    }
    out.par_chunks_mut(CHANNEL_BLOCK * pixels).enumerate().for_each(|(b, planes)| {
        let (c0, c) = (b * CHANNEL_BLOCK, planes.len() / pixels);
        let block = Block { weight: &weight[c0 * taps..][..c * taps], input: &input[c0 * h * w..][..c * h * w], c };
        with_simd(
            #[inline(always)]
            || channel_block(conv, block, [h, w], planes, [oh, ow], |i, plane| finish(c0 + i, plane)),
        )
    });
}

/// Channels per block of [`channels_last`]: two vectors of `f32`, four of `f64`. Blocks of
/// 16 spent more on each block's set-up (576 channels of 7x7, 5x5: 50 us against 44), 64
/// were no faster at 7x7 and overflowed L1 at 14x14.
const CHANNEL_BLOCK: usize = 32;

/// Elements a buffer holds beyond what [`from_line`] takes of it.
const LINE_SLACK: usize = 16;

/// `len` elements of `buffer` (`len + LINE_SLACK` long) from a 64-byte boundary on: a
/// block's copies then hold each pixel's channels on whole cache lines, where a load across
/// two lines costs two (unaligned, the block kernel ran at a fifth of its multiply-adds'
/// rate).
fn from_line<T>(buffer: &mut [T], len: usize) -> &mut [T] {
    let lead = buffer.as_ptr().align_offset(64).min(buffer.len() - len);
    &mut buffer[lead..][..len]
}

/// One block of channels of [`channels_last`]: its weights, its input planes, and how many.
#[derive(Clone, Copy)]
struct Block<'a, T> {
    weight: &'a [T],
    input: &'a [T],
    c: usize,
}

/// [`channels_last`] on one block of channels, into their output planes `out`.
#[inline(always)]
fn channel_block<T: Element>(
    conv: &Conv,
    Block { weight, input, c }: Block<T>,
    [h, w]: [usize; 2],
    out: &mut [T],
    [oh, ow]: [usize; 2],
    finish: impl Fn(usize, &mut [T]),
) {
    let [kh, kw] = conv.kernel;
    let ([sh, sw], [dh, dw]) = (conv.stride, conv.dilation);
    let (top, left) = (conv.pads[0], conv.pads[1]);
    // Every row and column a window reaches.
    let ph = (oh - 1) * sh + (kh - 1) * dh + 1;
    let pw = (ow - 1) * sw + (kw - 1) * dw + 1;
    let vectors = T::depthwise_vectors();
    let transpose = vectors.as_ref().map_or(transpose_portable::<T> as TransposeKernel<T>, |v| v.transpose);
    let mut padded = scratch::take_len(ph * pw * c + LINE_SLACK, T::zero());
    let padded = from_line(&mut padded, ph * pw * c);
    for (py, row) in padded.chunks_exact_mut(pw * c).enumerate() {
        let Some(y) = py.checked_sub(top).filter(|&y| y < h) else {
            row.fill(T::zero());
            continue;
        };
        // The input row's pixels that land inside the copy, channels side by side, and zeros
        // either side of them.
        let pixels = w.min(pw.saturating_sub(left));
        row[..left.min(pw) * c].fill(T::zero());
        row[(left + pixels).min(pw) * c..].fill(T::zero());
        transpose(&input[y * w..], (c, pixels, h * w), &mut row[left.min(pw) * c..], c);
    }
    // Tap-major weights: each tap's channels side by side.
    let taps = kh * kw;
    let mut by_tap = scratch::take_len(taps * c + LINE_SLACK, T::zero());
    let by_tap = from_line(&mut by_tap, taps * c);
    transpose(weight, (c, taps, taps), by_tap, c);
    let mut offsets = scratch::take::<usize>();
    offsets.extend((0..taps).map(|t| ((t / kw) * dh * pw + (t % kw) * dw) * c));
    // Channels in blocks of 8, then one by one.
    let eights = c / 8 * 8;
    let mut sums = scratch::take_len(oh * ow * c + LINE_SLACK, T::zero());
    let sums = from_line(&mut sums, oh * ow * c);
    match &vectors {
        Some(v) => {
            (v.pixels)(padded, by_tap, &offsets, PixelSteps { c, step: sw * c, row_step: sh * pw * c, ow }, sums)
        }
        None => {
            for (oy, row) in sums.chunks_exact_mut(ow * c).enumerate() {
                for (ox, pixel) in row.chunks_exact_mut(c).enumerate() {
                    let at = (oy * sh * pw + ox * sw) * c;
                    pixel_channels::<T, 8>(&padded[at..], by_tap, &offsets, c, 0..eights, pixel);
                    pixel_channels::<T, 1>(&padded[at..], by_tap, &offsets, c, eights..c, pixel);
                }
            }
        }
    }
    // Back to planes.
    let pixels = oh * ow;
    transpose(sums, (pixels, c, c), out, pixels);
    for (ch, plane) in out.chunks_exact_mut(pixels).enumerate() {
        finish(ch, plane);
    }
    scratch::give_back(offsets);
}

/// Channels `range` (a multiple of `L` long) of one output pixel into `pixel`, in blocks of
/// `L` summed across the taps (`offsets` from `window`, its first tap's `[.., C]` values);
/// taps whose block of weights is all zero skipped.
#[inline(always)]
fn pixel_channels<T: Element, const L: usize>(
    window: &[T],
    by_tap: &[T],
    offsets: &[usize],
    c: usize,
    range: std::ops::Range<usize>,
    pixel: &mut [T],
) {
    for c0 in range.step_by(L) {
        let mut acc = [T::zero(); L];
        for (t, &offset) in offsets.iter().enumerate() {
            let ws: &[T; L] = by_tap[t * c + c0..][..L].try_into().expect("L weights");
            if ws.iter().all(|&v| v == T::zero()) {
                continue;
            }
            let xs: &[T; L] = window[offset + c0..][..L].try_into().expect("L values");
            for ((a, &w), &x) in acc.iter_mut().zip(ws).zip(xs) {
                *a = w.fused_mul_add(x, *a);
            }
        }
        pixel[c0..c0 + L].copy_from_slice(&acc);
    }
}

/// The geometry of a channel's zero-padded, phase-split copy.
#[derive(Clone, Copy)]
pub struct Padded {
    /// The input plane's `[h, w]`, the input row of the copy's first row (negative: that
    /// many rows of padding above the input) and the padding to the left of it.
    hw: [usize; 2],
    first_row: isize,
    left: usize,
    /// Rows of the copy: every row a window reaches; and the rows one window spans.
    rows: usize,
    window_rows: usize,
    /// Columns per phase, and the stride (phases per row).
    phase_len: usize,
    stride: [usize; 2],
}

/// Columns read past the last output column's: the last block of an output row may run
/// that far beyond it (into the next row, or this slack), its extra sums discarded.
const SLACK: usize = 32;

impl Padded {
    fn new(conv: &Conv, hw: [usize; 2], [oh, ow]: [usize; 2]) -> Padded {
        let reach = |outputs: usize, axis: usize| {
            (outputs.max(1) - 1) * conv.stride[axis] + (conv.kernel[axis] - 1) * conv.dilation[axis] + 1
        };
        Padded {
            hw,
            first_row: -(conv.pads[0] as isize),
            left: conv.pads[1],
            rows: reach(oh, 0),
            window_rows: reach(1, 0),
            phase_len: reach(ow, 1).div_ceil(conv.stride[1]),
            stride: conv.stride,
        }
    }

    /// The copy of the rows that output rows `first..first + outputs` read: the same
    /// columns and offsets.
    fn band(&self, first: usize, outputs: usize) -> Padded {
        Padded {
            first_row: self.first_row + (first * self.stride[0]) as isize,
            rows: (outputs.max(1) - 1) * self.stride[0] + self.window_rows,
            ..*self
        }
    }

    /// The input row of the copy's row `py`, if inside the input.
    fn input_row(&self, py: usize) -> Option<usize> {
        let y = py as isize + self.first_row;
        (0..self.hw[0] as isize).contains(&y).then_some(y as usize)
    }

    /// For the explicit-vector copies: copy row `py`'s place in `rows` and the rest of the
    /// buffer after it, with the rest of `plane` from its input row on; or, for a row of
    /// padding (or, in a band, a row of padding where the last band had input), `None`,
    /// the row zeroed here.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn row_source<'a>(&self, plane: &'a [f32], rows: &'a mut [f32], py: usize) -> Option<(&'a mut [f32], &'a [f32])> {
        let dst = &mut rows[py * self.row_len()..];
        let Some(y) = self.input_row(py) else {
            dst[..self.row_len()].fill(0.0);
            return None;
        };
        Some((dst, &plane[y * self.hw[1]..]))
    }

    /// At stride 1, the columns of a padded row that take the input row's values, its first
    /// value at the first of them (none past the copy's end: the input may be wider than the
    /// windows reach).
    fn unit_stride_run(&self) -> std::ops::Range<usize> {
        let end = (self.left + self.hw[1]).min(self.phase_len);
        self.left.min(end)..end
    }

    fn row_len(&self) -> usize {
        self.stride[1] * self.phase_len
    }

    fn len(&self) -> usize {
        self.rows * self.row_len() + SLACK
    }

    /// Where tap `(ky, kx)` reads for output `(0, 0)`; output `(oy, ox)` reads
    /// `oy * stride[0] * row_len + ox` further on.
    fn offset(&self, conv: &Conv, ky: usize, kx: usize) -> usize {
        let (dy, dx) = (ky * conv.dilation[0], kx * conv.dilation[1]);
        dy * self.row_len() + (dx % self.stride[1]) * self.phase_len + dx / self.stride[1]
    }

    /// Copy `plane` into the copy's inside, `rows`. Every plane lands on the same elements,
    /// so the padding of a buffer zeroed once stays zero from one channel to the next.
    #[inline(always)]
    fn fill<T: Element, S: Source<T>>(&self, plane: &[S], rows: &mut [T]) {
        if !S::fill_in_vectors(self, plane, rows) {
            self.fill_portable(plane, rows);
        }
    }

    /// [`Padded::fill`] in loops the compiler vectorizes as it can.
    #[inline(always)]
    fn fill_portable<T: Element, S: Source<T>>(&self, plane: &[S], rows: &mut [T]) {
        let w = self.hw[1];
        let (sw, phase_len) = (self.stride[1], self.phase_len);
        for (py, dst) in rows.chunks_exact_mut(self.row_len()).take(self.rows).enumerate() {
            let Some(y) = self.input_row(py) else {
                // Padding, or (in a band) a row of padding where the last band had input.
                dst.fill(T::zero());
                continue;
            };
            let src = &plane[y * w..][..w];
            if sw == 1 {
                for (d, &v) in dst[self.unit_stride_run()].iter_mut().zip(src) {
                    *d = v.into();
                }
                continue;
            }
            if sw == 2 {
                split_pairs(src, self.left, dst.split_at_mut(phase_len));
                continue;
            }
            for (p, phase) in dst.chunks_exact_mut(phase_len).enumerate() {
                // Padded column `p + i * sw` is input column `p + i * sw - left`.
                let offset = p as isize - self.left as isize;
                let (lo, hi) = super::conv::valid_range(phase_len, sw, offset, w);
                let first = (lo * sw) as isize + offset;
                if lo < hi {
                    super::each_strided(&mut phase[lo..hi], &src[first as usize..], sw, |d, v| *d = v.into());
                }
            }
        }
    }
}

/// Input row `src` into the two phases of a stride-2 padded row (`left` columns of padding
/// before it; the padding already zero), in one pass: each pair of input values lands in
/// both phases, one each (a pass per phase read the row twice).
#[inline(always)]
fn split_pairs<T: Element, S: Copy + Into<T>>(src: &[S], left: usize, (even, odd): (&mut [T], &mut [T])) {
    // Padded column `x + left` of input column `x`: phase `(x + left) % 2`, at `(x + left) / 2`.
    let (first, second) = if left.is_multiple_of(2) { (even, odd) } else { (odd, even) };
    let len = first.len();
    let (at_first, at_second, pairs) = pair_geometry(src.len(), left, len);
    let (a, b) = (&mut first[at_first..][..pairs], &mut second[at_second..][..pairs]);
    for ((a, b), pair) in a.iter_mut().zip(b.iter_mut()).zip(src.chunks_exact(2)) {
        *a = pair[0].into();
        *b = pair[1].into();
    }
    // An odd last value (or the first past a copy too short for its pair).
    if 2 * pairs < src.len() && at_first + pairs < len {
        first[at_first + pairs] = src[2 * pairs].into();
    }
}

/// Where [`split_pairs`] puts a row of `w` values after `left` columns of padding, in
/// phases of `len`: the first pair's places in the phase that takes even input columns
/// and in the other, and how many pairs land inside the copy whole.
fn pair_geometry(w: usize, left: usize, len: usize) -> (usize, usize, usize) {
    let (at_first, at_second) = (left / 2, left.div_ceil(2));
    (at_first, at_second, (w / 2).min(len.saturating_sub(at_first)).min(len.saturating_sub(at_second)))
}

/// The depthwise loops in explicit vectors for element type `T` (`avx512.rs`, `avx2.rs`;
/// the compiler vectorizes the portable loops poorly): each computes the same floats as the
/// loop it stands for.
pub struct Vectors<T> {
    /// A channel's rows: AVX-512 only (with AVX2, [`channel`]'s loops, compiled wide).
    rows: Option<RowsKernel<T>>,
    pixels: PixelsKernel<T>,
    transpose: TransposeKernel<T>,
}

/// [`channel`]: output `(y, x)` of a channel sums `tap * rows[y * row_step + offset + x]`
/// over its live `(offset, tap)` pairs, in order, into `dst`'s rows of `ow`:
/// `(live, rows, row_step, dst, ow)`.
type RowsKernel<T> = fn(&[(usize, T)], &[T], usize, &mut [T], usize);

/// [`channel`] for a channel whose filter has every tap live (no dilation), each padded row
/// loaded once for all the output rows it serves; `false` (nothing written) where it has no
/// build for the filter's size or stride: `(grid, rows, dst, ow)`.
pub type GridKernel<T> = fn(Grid<T>, &[T], &mut [T], usize) -> bool;

/// A whole filter over a channel's padded copy: its taps (row-major), where each column of
/// taps reads in a padded row (`cols[kx]`, for output column 0), the padded rows' length
/// and the padded rows between output rows.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // Only the x86 builds read it.
pub struct Grid<'a, T> {
    taps: &'a [T],
    cols: &'a [usize],
    row_len: usize,
    stride: usize,
}

/// [`pixel_channels`] for rows of output pixels in `window`, `c` channels each: pixel `(oy,
/// ox)`, channel `ch` sums `by_tap[t * c + ch] * window[oy * row_step + ox * step +
/// offsets[t] + ch]` over the taps, in order: `(window, by_tap, offsets, steps, dst)`,
/// `dst` holding rows of `ow` pixels.
type PixelsKernel<T> = fn(&[T], &[T], &[usize], PixelSteps, &mut [T]);

/// Where [`PixelsKernel`]'s pixels lie: channels per pixel, the steps between pixels of a
/// row and between rows in the window, and pixels per row.
#[derive(Clone, Copy)]
pub(super) struct PixelSteps {
    c: usize,
    step: usize,
    row_step: usize,
    ow: usize,
}

/// Every read stays in `window` and `by_tap` and `dst` is whole rows of whole pixels.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // Only the x86 builds call it.
pub(super) fn check_pixels(window: usize, by_tap: usize, offsets: &[usize], steps: PixelSteps, dst: usize) {
    let PixelSteps { c, step, row_step, ow } = steps;
    assert!(c > 0 && ow > 0 && dst.is_multiple_of(c * ow), "whole rows of whole pixels");
    assert!(by_tap >= offsets.len() * c, "a weight per tap and channel");
    let (rows, furthest) = (dst / (c * ow), offsets.iter().copied().max().unwrap_or(0));
    assert!(
        rows == 0 || (rows - 1) * row_step + (ow - 1) * step + furthest + c <= window,
        "taps read inside the padded copy"
    );
}

/// `dst[j * dst_stride + i] = src[i * src_stride + j]` for `i < rows`, `j < cols`:
/// `(src, (rows, cols, src_stride), dst, dst_stride)`.
type TransposeKernel<T> = fn(&[T], (usize, usize, usize), &mut [T], usize);

/// The last element a [`TransposeKernel`] reads and writes lies inside `src` and `dst`
/// (lengths): what the explicit-vector builds check before they index without bounds.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // Only the x86 builds call it.
pub(super) fn check_transpose(
    src: usize,
    (rows, cols, src_stride): (usize, usize, usize),
    dst: usize,
    dst_stride: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!((rows - 1) * src_stride + cols <= src, "reads inside the source");
    assert!((cols - 1) * dst_stride + rows <= dst, "writes inside the destination");
}

/// [`TransposeKernel`] in plain loops: where there are no explicit vectors, and for the
/// AVX2 build's last rows short of a square.
#[inline(always)]
pub(super) fn transpose_portable<T: Copy>(
    src: &[T],
    (rows, cols, src_stride): (usize, usize, usize),
    dst: &mut [T],
    dst_stride: usize,
) {
    for i in 0..rows {
        for (j, &v) in src[i * src_stride..][..cols].iter().enumerate() {
            dst[j * dst_stride + i] = v;
        }
    }
}

/// The whole-grid kernel for `f32` on this processor: AVX-512's, else AVX2's (stride 1),
/// else none.
pub(super) fn grid_f32() -> Option<GridKernel<f32>> {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512::available() {
            return Some(avx512::grid_f32);
        }
        if avx2::available() {
            return Some(avx2::grid_f32);
        }
    }
    None
}

/// [`grid_f32`] for `f64`.
pub(super) fn grid_f64() -> Option<GridKernel<f64>> {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512::available() {
            return Some(avx512::grid_f64);
        }
        if avx2::available() {
            return Some(avx2::grid_f64);
        }
    }
    None
}

/// The `f32` kernels, with AVX-512, else AVX2 (channels last only).
pub(super) fn vectors_f32() -> Option<Vectors<f32>> {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512::available() {
            return Some(Vectors {
                rows: Some(avx512::channel_f32),
                pixels: avx512::pixels_f32,
                transpose: avx512::transpose_f32,
            });
        }
        if avx2::available() {
            return Some(Vectors { rows: None, pixels: avx2::pixels_f32, transpose: avx2::transpose_f32 });
        }
    }
    None
}

/// The `f64` kernels, with AVX-512, else AVX2 (channels last only).
pub(super) fn vectors_f64() -> Option<Vectors<f64>> {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512::available() {
            return Some(Vectors {
                rows: Some(avx512::channel_f64),
                pixels: avx512::pixels_f64,
                transpose: avx512::transpose_f64,
            });
        }
        if avx2::available() {
            return Some(Vectors { rows: None, pixels: avx2::pixels_f64, transpose: avx2::transpose_f64 });
        }
    }
    None
}

/// One channel's output rows from its padded copy `rows`, two rows at a time (twice the
/// independent sums in flight), in blocks of `L` columns.
#[inline(always)]
fn channel<T: Element, const L: usize>(live: &[(usize, T)], rows: &[T], padded: &Padded, dst: &mut [T], ow: usize) {
    let row_step = padded.stride[0] * padded.row_len();
    // Rows in pairs; the last, if their number is odd, at `paired * row_step`.
    let paired = dst.len() / ow.max(1) / 2 * 2;
    let mut pairs = dst.chunks_exact_mut(2 * ow);
    for (pair, two) in (&mut pairs).enumerate() {
        let (top, bottom) = two.split_at_mut(ow);
        let base = 2 * pair * row_step;
        for x in (0..ow).step_by(L) {
            let (mut upper, mut lower) = ([T::zero(); L], [T::zero(); L]);
            for &(offset, tap) in live {
                let above = &rows[base + offset + x..][..L];
                let below = &rows[base + row_step + offset + x..][..L];
                for ((u, l), (&a, &b)) in upper.iter_mut().zip(lower.iter_mut()).zip(above.iter().zip(below)) {
                    *u = tap.fused_mul_add(a, *u);
                    *l = tap.fused_mul_add(b, *l);
                }
            }
            store(&mut top[x..], &upper);
            store(&mut bottom[x..], &lower);
        }
    }
    let last = pairs.into_remainder();
    if last.is_empty() {
        return;
    }
    let base = paired * row_step;
    for x in (0..ow).step_by(L) {
        let mut acc = [T::zero(); L];
        for &(offset, tap) in live {
            for (a, &s) in acc.iter_mut().zip(&rows[base + offset + x..][..L]) {
                *a = tap.fused_mul_add(s, *a);
            }
        }
        store(&mut last[x..], &acc);
    }
}

/// The first `dst.len()` (at most `L`) sums of `block` into `dst`; a whole block as one
/// copy of constant length (inlined, not a call).
#[inline(always)]
fn store<T: Copy, const L: usize>(dst: &mut [T], block: &[T; L]) {
    match dst.first_chunk_mut::<L>() {
        Some(whole) => *whole = *block,
        None => {
            let n = dst.len();
            dst.copy_from_slice(&block[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both layouts compute the same floats: strides, dilation, asymmetric padding, pruned
    /// taps (one channel all zero) and channel counts around the blocks of 8 and 32.
    #[test]
    fn both_layouts_compute_the_same_floats() {
        for (channels, kernel, stride, dilation, pads, hw) in [
            (72, 3, 1, 1, [1, 1, 1, 1], 7),
            (40, 5, 2, 1, [2, 1, 2, 2], 14),
            (33, 3, 2, 2, [2, 0, 1, 3], 11),
            (7, 3, 1, 1, [0; 4], 5),
            // Stride 2 with even and odd left padding over odd and even widths: where the
            // pairs of input values split between the phases.
            (24, 3, 2, 1, [1, 2, 0, 0], 9),
            (16, 3, 2, 1, [0, 3, 0, 1], 8),
            (9, 5, 2, 1, [2, 2, 2, 2], 13),
        ] {
            let weight: Vec<f32> = (0..channels * kernel * kernel)
                .map(
                    |i| if i % 5 == 2 || i / (kernel * kernel) == 3 { 0.0 } else { ((i * 37 % 11) as f32 - 5.0) / 7.0 },
                )
                .collect();
            let conv = Conv {
                stride: [stride; 2],
                dilation: [dilation; 2],
                pads,
                groups: channels,
                ..Conv::new(weight.clone(), channels, channels, [kernel; 2])
            };
            let input: Vec<f32> = (0..channels * hw * hw).map(|i| ((i * 13 % 17) as f32 - 8.0) / 5.0).collect();
            let out_hw = [0, 1].map(|a| {
                hass_proto::geometry::window_output_len(hw, kernel, stride, dilation, pads[a], pads[a + 2], false)
                    .unwrap()
            });
            let len = channels * out_hw[0] * out_hw[1];
            let (mut last, mut each) = (vec![f32::NAN; len], vec![f32::NAN; len]);
            channels_last(&conv, &weight, &input, [hw, hw], &mut last, out_hw, |_, _| ());
            by_channel(&conv, &weight, &input, [hw, hw], &mut each, out_hw, |_, _| ());
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&last), bits(&each), "{channels} channels, kernel {kernel}, stride {stride}");
        }
    }

    /// The padded copies in explicit vectors put the values where the portable loops do:
    /// strides 1 and 2 (and 3, which has no vector build), even and odd left padding, rows
    /// shorter and longer than a vector, copies that end before the row does.
    #[test]
    fn vector_fills_match_the_portable_loops() {
        for (kernel, stride, pads, [h, w]) in [
            (3, 1, [1, 1, 1, 1], [14, 14]),
            (5, 1, [2, 2, 2, 2], [9, 37]),
            (3, 2, [1, 1, 1, 1], [28, 28]),
            (3, 2, [0, 0, 1, 1], [7, 33]),
            (3, 2, [1, 2, 0, 0], [9, 9]),
            (5, 2, [2, 3, 2, 0], [12, 70]),
            (3, 3, [1, 1, 1, 1], [10, 19]),
        ] {
            let conv = Conv {
                stride: [stride; 2],
                pads,
                groups: 1,
                ..Conv::new(vec![1.0; kernel * kernel], 1, 1, [kernel; 2])
            };
            let out_hw = [0, 1].map(|a| {
                hass_proto::geometry::window_output_len([h, w][a], kernel, stride, 1, pads[a], pads[a + 2], false)
                    .unwrap()
            });
            let padded = Padded::new(&conv, [h, w], out_hw);
            let plane: Vec<f32> = (0..h * w).map(|i| i as f32 + 1.0).collect();
            let mut want = vec![0.0f32; padded.len()];
            padded.fill_portable(&plane, &mut want);
            let mut got = vec![0.0f32; padded.len()];
            if !<f32 as Source<f32>>::fill_in_vectors(&padded, &plane, &mut got) {
                continue;
            }
            assert_eq!(got, want, "kernel {kernel}, stride {stride}, pads {pads:?}, {h} x {w}");
        }
    }

    /// The explicit-vector kernel sums exactly as the portable loop: every tile shape (one
    /// block wide, rows in eights and every leftover count; wider, rows in fours and twos
    /// and ones; one, two and four blocks of columns; a masked last block), in both element
    /// types. Checks nothing where the processor lacks the instructions.
    #[test]
    fn vector_rows_match_the_portable_loop() {
        fn case<T: Element + From<f32>>() {
            let shapes = [(1, 1), (3, 5), (7, 14), (4, 16), (8, 16), (10, 14), (15, 9), (9, 17), (5, 31), (2, 33)];
            for (oh, ow) in shapes.into_iter().chain([(6, 64), (3, 70), (1, 100)]) {
                let row_step = ow + 6;
                let rows: Vec<T> = (0..(oh + 3) * row_step + SLACK)
                    .map(|i| T::from((i * 29 % 23) as f32 - 11.0) / T::from(7.0))
                    .collect();
                let live: Vec<(usize, T)> = [(0, 0.5), (1, -1.25), (row_step + 2, 3.0), (2 * row_step + 5, -0.375)]
                    .map(|(o, w)| (o, T::from(w) / T::from(3.0)))
                    .to_vec();
                let padded = Padded {
                    hw: [0, 0],
                    first_row: 0,
                    left: 0,
                    rows: oh + 3,
                    window_rows: 4,
                    phase_len: row_step,
                    stride: [1, 1],
                };
                let mut want = vec![T::zero(); oh * ow];
                channel::<T, 16>(&live, &rows, &padded, &mut want, ow);
                let mut got = vec![T::zero(); oh * ow];
                let Some(kernel) = T::depthwise_vectors().and_then(|v| v.rows) else { return };
                kernel(&live, &rows, row_step, &mut got, ow);
                assert!(want == got, "{oh} x {ow}");
            }
        }
        case::<f32>();
        case::<f64>();
    }

    /// The whole-grid kernel sums exactly as the portable loop over the same taps: 3x3 and
    /// 5x5, strides 1 and 2, columns of taps in two phases, output rows in fours and every
    /// leftover count, one and two blocks of columns, a short last block; and it declines
    /// the filters it has no build for.
    #[test]
    fn vector_grids_match_the_portable_loop() {
        fn case<T: Element + From<f32>>() {
            let Some(kernel) = T::depthwise_grid() else { return };
            for (k, stride) in [(3, 1), (3, 2), (5, 1), (5, 2)] {
                for (oh, ow) in [(1, 15), (2, 16), (3, 17), (4, 31), (5, 33), (7, 48), (9, 56), (6, 100)] {
                    // Stride 2: taps `kx` read phase `kx % 2` (`phase` values each) at `kx / 2`.
                    let phase = ow + k;
                    let (row_len, cols): (usize, Vec<usize>) = match stride {
                        1 => (phase, (0..k).collect()),
                        _ => (2 * phase, (0..k).map(|kx| kx % 2 * phase + kx / 2).collect()),
                    };
                    let rows: Vec<T> = (0..((oh - 1) * stride + k) * row_len + SLACK)
                        .map(|i| T::from((i * 29 % 23) as f32 - 11.0) / T::from(7.0))
                        .collect();
                    let taps: Vec<T> = (0..k * k).map(|t| T::from((t * 7 % 13) as f32 - 6.5) / T::from(5.0)).collect();
                    let live: Vec<(usize, T)> = (0..k * k).map(|t| (t / k * row_len + cols[t % k], taps[t])).collect();
                    let padded = Padded {
                        hw: [0, 0],
                        first_row: 0,
                        left: 0,
                        rows: (oh - 1) * stride + k,
                        window_rows: k,
                        phase_len: row_len,
                        stride: [stride, 1],
                    };
                    let mut want = vec![T::zero(); oh * ow];
                    channel::<T, 16>(&live, &rows, &padded, &mut want, ow);
                    let mut got = vec![T::zero(); oh * ow];
                    let grid = Grid { taps: &taps, cols: &cols, row_len, stride };
                    if kernel(grid, &rows, &mut got, ow) {
                        assert!(want == got, "{k}x{k}/{stride}, {oh} x {ow}");
                    } else {
                        // Only the AVX2 build leaves stride 2 to the row kernel.
                        assert!(stride == 2 && !avx512::available(), "{k}x{k}/{stride} has a build");
                        assert!(got.iter().all(|&v| v == T::zero()), "nothing written");
                    }
                }
            }
            let (taps, cols) = ([T::from(1.0); 49], [0, 1, 2, 3, 4, 5, 6]);
            let grid = Grid { taps: &taps, cols: &cols, row_len: 40, stride: 1 };
            assert!(!kernel(grid, &[T::zero(); 400], &mut [T::zero(); 16], 16), "no 7x7 build");
        }
        case::<f32>();
        case::<f64>();
    }

    /// The channels-last kernels in explicit vectors compute what the portable loops do:
    /// channel counts around the blocks of 16 and 8, rows of 1 to 9 pixels and more, pixels
    /// further apart than their channels; the transpose over strides wider than its block;
    /// in both element types.
    #[test]
    fn vector_pixels_and_transposes_match_the_portable_loops() {
        fn case<T: Element + From<f32>>() {
            let Some(v) = T::depthwise_vectors() else { return };
            let value = |i: usize| T::from((i * 29 % 23) as f32 - 11.0) / T::from(7.0);
            let shapes =
                [(1, 1, 1), (3, 2, 5), (7, 3, 7), (8, 6, 8), (24, 7, 24), (16, 8, 32), (24, 9, 24), (40, 5, 80)];
            for (c, ow, step) in shapes.into_iter().chain([(130, 12, 130), (16, 15, 40), (33, 4, 33)]) {
                // Three rows, each a pixel further on than the last one's end.
                let (offsets, row_step) = ([0, c, 3 * c, 7 * step + 2 * c], ow * step + c);
                let window: Vec<T> = (0..2 * row_step + (ow + 7) * step + 4 * c).map(value).collect();
                let by_tap: Vec<T> = (0..offsets.len() * c).map(|i| value(3 * i + 1) / T::from(3.0)).collect();
                let mut want = vec![T::zero(); 3 * ow * c];
                for (p, pixel) in want.chunks_exact_mut(c).enumerate() {
                    let at = p / ow * row_step + p % ow * step;
                    pixel_channels::<T, 1>(&window[at..], &by_tap, &offsets, c, 0..c, pixel);
                }
                let mut got = vec![T::zero(); 3 * ow * c];
                (v.pixels)(&window, &by_tap, &offsets, PixelSteps { c, step, row_step, ow }, &mut got);
                assert!(want == got, "{c} channels, {ow} pixels");
            }
            for (rows, cols, src_stride, dst_stride) in [
                (1, 1, 1, 1),
                (17, 3, 5, 20),
                (40, 49, 49, 40),
                (9, 2, 300, 11),
                (16, 16, 16, 16),
                (32, 17, 19, 33),
                (32, 7, 49, 39),
            ] {
                let src: Vec<T> = (0..rows * src_stride + cols).map(value).collect();
                // The build's kernel and the plain loops the other paths use.
                for transpose in [v.transpose, transpose_portable::<T>] {
                    let mut got = vec![T::zero(); cols * dst_stride + rows];
                    transpose(&src, (rows, cols, src_stride), &mut got, dst_stride);
                    for i in 0..rows {
                        for j in 0..cols {
                            assert!(got[j * dst_stride + i] == src[i * src_stride + j], "{rows} x {cols}: ({i}, {j})");
                        }
                    }
                    let written =
                        (0..cols).flat_map(|j| (0..rows).map(move |i| j * dst_stride + i)).collect::<Vec<_>>();
                    assert!(
                        got.iter().enumerate().all(|(k, &x)| written.contains(&k) || x == T::zero()),
                        "nothing else"
                    );
                }
            }
        }
        case::<f32>();
        case::<f64>();
    }
}

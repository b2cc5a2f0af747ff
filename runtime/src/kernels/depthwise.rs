//! Depthwise convolution (one filter per channel): a direct loop, parallel over channels.
//!
//! Each channel's plane is first copied into a zero-padded one, its rows split into their
//! `stride` phases (`x % stride`), so that every tap reads a contiguous run of a row for any
//! run of output columns. An output row is then summed in blocks of columns held in
//! registers across all the taps, compiled for AVX2 where the processor has it. Every output
//! element sums its taps in row-major tap order, starting from zero.

use super::conv::Element;
use super::{scratch, with_avx2};
use crate::plan::Conv;
use rayon::prelude::*;

/// `out` ([C, OH, OW]) = `input` ([C, H, W]) convolved channel by channel with `weight`
/// ([C, K_h, K_w]), without bias.
pub fn depthwise<T: Element>(
    conv: &Conv,
    weight: &[T],
    input: &[T],
    [h, w]: [usize; 2],
    out: &mut [T],
    [oh, ow]: [usize; 2],
) {
    let padded = Padded::new(conv, [h, w], [oh, ow]);
    let [kh, kw] = conv.kernel;
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(c, dst)| {
        let taps = &weight[c * kh * kw..][..kh * kw];
        // Pruned taps are skipped: their multiply-adds are what sparsity saves.
        let mut live = scratch::take::<(usize, T)>();
        live.extend(
            (0..kh * kw).filter(|&t| taps[t] != T::zero()).map(|t| (padded.offset(conv, t / kw, t % kw), taps[t])),
        );
        let mut rows = scratch::take_len(padded.len(), T::zero());
        with_avx2(
            #[inline(always)]
            || {
                padded.fill(&input[c * h * w..][..h * w], &mut rows);
                // Two rows of sums fill 4 (f64: 8) AVX2 registers at 16 columns, 8 at 32.
                if ow <= 8 {
                    channel::<T, 8>(&live, &rows, &padded, dst, ow);
                } else if ow <= 16 || size_of::<T>() > 4 {
                    channel::<T, 16>(&live, &rows, &padded, dst, ow);
                } else {
                    channel::<T, 32>(&live, &rows, &padded, dst, ow);
                }
            },
        );
        scratch::give_back(rows);
        scratch::give_back(live);
    });
}

/// The geometry of a channel's zero-padded, phase-split copy.
struct Padded {
    /// The input plane's `[h, w]` and the padding above and to the left of it.
    hw: [usize; 2],
    top: usize,
    left: usize,
    /// Rows of the copy: every row a window reaches.
    rows: usize,
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
            top: conv.pads[0],
            left: conv.pads[1],
            rows: reach(oh, 0),
            phase_len: reach(ow, 1).div_ceil(conv.stride[1]),
            stride: conv.stride,
        }
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

    /// Copy `plane` into `rows` (every element written: padding zero).
    #[inline(always)]
    fn fill<T: Element>(&self, plane: &[T], rows: &mut [T]) {
        let [h, w] = self.hw;
        let (sw, phase_len) = (self.stride[1], self.phase_len);
        rows.fill(T::zero());
        for (py, dst) in rows.chunks_exact_mut(self.row_len()).take(self.rows).enumerate() {
            let Some(y) = py.checked_sub(self.top).filter(|&y| y < h) else { continue };
            let src = &plane[y * w..][..w];
            if sw == 1 {
                let end = (self.left + w).min(phase_len);
                dst[self.left.min(end)..end].copy_from_slice(&src[..end - self.left.min(end)]);
                continue;
            }
            for (p, phase) in dst.chunks_exact_mut(phase_len).enumerate() {
                // Padded column `p + i * sw` is input column `p + i * sw - left`.
                let offset = p as isize - self.left as isize;
                let (lo, hi) = super::conv::valid_range(phase_len, sw, offset, w);
                let first = (lo * sw) as isize + offset;
                if lo >= hi {
                    continue;
                }
                let (dst, src) = (&mut phase[lo..hi], &src[first as usize..]);
                if sw == 2 {
                    // Every other value, from pairs (`step_by` does not vectorize); an odd
                    // last one on its own.
                    let whole = dst.len().min(src.len() / 2);
                    dst[..whole].iter_mut().zip(src.chunks_exact(2)).for_each(|(d, two)| *d = two[0]);
                    if let Some(d) = dst.get_mut(whole) {
                        *d = src[2 * whole];
                    }
                } else {
                    dst.iter_mut().zip(src.iter().step_by(sw)).for_each(|(d, &v)| *d = v);
                }
            }
        }
    }
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
                    *u += tap * a;
                    *l += tap * b;
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
                *a += tap * s;
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

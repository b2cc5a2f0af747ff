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
        padded.fill(&input[c * h * w..][..h * w], &mut rows);
        with_avx2(
            #[inline(always)]
            || {
                if ow <= 8 {
                    channel::<T, 8>(&live, &rows, &padded, dst, ow);
                } else {
                    channel::<T, 16>(&live, &rows, &padded, dst, ow);
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
const SLACK: usize = 16;

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
                if lo < hi {
                    phase[lo..hi].iter_mut().zip(src[first as usize..].iter().step_by(sw)).for_each(|(d, &v)| *d = v);
                }
            }
        }
    }
}

/// One channel's output rows from its padded copy `rows`, in blocks of `L` columns.
#[inline(always)]
fn channel<T: Element, const L: usize>(live: &[(usize, T)], rows: &[T], padded: &Padded, dst: &mut [T], ow: usize) {
    let row_step = padded.stride[0] * padded.row_len();
    for (oy, row) in dst.chunks_exact_mut(ow).enumerate() {
        for x in (0..ow).step_by(L) {
            let mut acc = [T::zero(); L];
            for &(offset, tap) in live {
                let src = &rows[oy * row_step + offset + x..][..L];
                for (a, &s) in acc.iter_mut().zip(src) {
                    *a += tap * s;
                }
            }
            let n = L.min(ow - x);
            row[x..x + n].copy_from_slice(&acc[..n]);
        }
    }
}

//! The GEMM of a narrow `B` (a 7x7 map at batch 1 or 2: 49 or 98 columns) turned around:
//! `C^T = B^T A^T`, the columns of `B` (pixels) on the broadcast side of the micro-tile in
//! rows of 7 or 8 and the rows of `A` (output channels) in its vectors, 32 at a time. The
//! usual tile puts `B`'s columns in panels of 32, so 49 of them filled 64; here they fill 7
//! tiles of 7.
//!
//! Every sum is the one [`super::gemm_with`] forms: from zero in `k` order per chunk of
//! [`KC`], fused multiply-adds of the same two factors, the chunks added in order.

use super::{row_panels, KC, NR};
use crate::kernels::unfold::Columns;
use rayon::prelude::*;

/// Columns of `B` at most this many go through [`gemm_narrow`]: two images' 7x7 maps (a
/// run of two at batch 8: ResNet-18's 512-channel 3x3s in the usual GEMM padded 98 columns
/// to 128; with two threads, 63 -> 67 images/s).
pub const NARROW_MAX_COLUMNS: usize = 112;

/// Pixels (rows of the turned-around tile) per micro-tile: 8, or 7 where that pads fewer
/// (a 7x7 map's 49 pixels: 49 rather than 56).
fn tile_rows(n: usize) -> usize {
    if n.div_ceil(7) * 7 < n.div_ceil(8) * 8 {
        7
    } else {
        8
    }
}

/// `A` (`m` x `k`, row-major) packed for [`gemm_narrow`]: per panel of [`NR`] rows, per
/// k, the panel's `NR` values (zeros past the last row).
#[derive(Clone, Debug)]
pub struct PackedColumns {
    rows: usize,
    k: usize,
    panels: Vec<f32>,
}

impl PackedColumns {
    /// Pack `a`, `m` rows of `k` values.
    pub fn new(a: &[f32], m: usize, k: usize) -> PackedColumns {
        PackedColumns { rows: m, k, panels: row_panels(a, m, k, NR) }
    }
}

/// Whether the processor has a micro-tile this needs, AVX-512's or AVX2's (elsewhere
/// [`super::gemm_with`]).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::avx512::available() || avx2::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `A · B` as [`super::gemm_with`] computes it, for `B` at most [`NARROW_MAX_COLUMNS`]
/// wide and `k` at least 1: `finish(row, sums, out)` for each row of `C`. Output channels'
/// panels spread over rayon's threads with `parallel`.
pub fn gemm_narrow<T: Send>(
    a: &PackedColumns,
    b: &impl Columns<f32>,
    c: &mut [T],
    parallel: bool,
    finish: impl Fn(usize, &[f32], &mut [T]) + Sync,
) {
    let [k, n] = b.shape();
    assert!(n <= NARROW_MAX_COLUMNS && k >= 1 && k == a.k && c.len() == a.rows * n && available());
    let (m, kc) = (a.rows, KC.min(k));
    let rows = tile_rows(n);
    let groups = n.div_ceil(rows).max(1);
    // Per panel of output channels, the turned-around tile's sums: [pixel][NR channels].
    let panel_sums = groups * rows * NR;
    let channel_panels = m.div_ceil(NR);
    // Every sum is written (the first chunk's fresh) before it is read.
    let mut sums = crate::kernels::scratch::take_len(channel_panels * panel_sums, 0.0f32);
    let mut block = crate::kernels::scratch::take_len(groups * kc * rows, 0.0f32);
    let min_len = if parallel { 1 } else { usize::MAX };
    for start in (0..k).step_by(kc) {
        let len = kc.min(k - start);
        let block = &mut block[..groups * len * rows];
        pack_groups(b, start, len, rows, block);
        let block = &*block;
        sums.par_chunks_mut(panel_sums).with_min_len(min_len).enumerate().for_each(|(q, sums)| {
            let weights = &a.panels[(q * k + start) * NR..][..len * NR];
            // The weights the thread likely takes next (the next panel's chunk, else the
            // first panel's next chunk), fetched into L2 a part per tile while this panel's
            // sums are formed: at batch 1 a 3x3 conv's weights stream from memory (512
            // channels: 9.4 MB), and each panel's first tile waited on them.
            let ahead = match (q + 1 < channel_panels, start + len < k) {
                (true, _) => &a.panels[((q + 1) * k + start) * NR..][..len * NR],
                (false, true) => &a.panels[(start + len) * NR..][..kc.min(k - start - len) * NR],
                (false, false) => &[],
            };
            let ahead_parts = ahead.chunks(ahead.len().div_ceil(groups).max(1)).chain(std::iter::repeat(&[][..]));
            let tiles = block.chunks_exact(len * rows).zip(sums.chunks_exact_mut(rows * NR));
            for ((pixels, tile), ahead) in tiles.zip(ahead_parts) {
                micro_tile(pixels, weights, len, start == 0, tile, ahead);
            }
        });
    }
    // Each output channel's sums, gathered from the pixels' rows.
    c.par_chunks_mut(n.max(1)).with_min_len(if parallel { 16 } else { usize::MAX }).enumerate().for_each(
        |(row, out)| {
            let (q, lane) = (row / NR, row % NR);
            let mut channel = [0.0f32; NARROW_MAX_COLUMNS];
            for (p, v) in channel[..n].iter_mut().enumerate() {
                *v = sums[q * panel_sums + p * NR + lane];
            }
            finish(row, &channel[..n], out);
        },
    );
}

/// Rows `first..first + len` of `b` packed for [`micro_tile`]: per group of `rows` columns
/// (pixels), per row, the group's `rows` values (zeros past the last column). A
/// tile's pixels are then one contiguous run (in panels of [`NR`], a tile used a quarter of
/// each row it read, and with the weights it overflowed L1).
fn pack_groups(b: &impl Columns<f32>, first: usize, len: usize, rows: usize, out: &mut [f32]) {
    let n = b.shape()[1];
    let mut row = crate::kernels::scratch::take_len(out.len() / len.max(1), 0.0f32);
    row[n..].fill(0.0);
    let span = b.span(0, n);
    for j in 0..len {
        b.row(&span, first + j, &mut row[..n]);
        for (group, values) in out.chunks_exact_mut(len * rows).zip(row.chunks_exact(rows)) {
            group[j * rows..][..rows].copy_from_slice(values);
        }
    }
}

/// The turned-around micro-tile of `rows = tile.len() / NR` pixels (7 or 8): the tile's
/// `[r * NR + col]` = (or, unless `fresh`, +=) the sums over `j` of `pixels[j * rows + r]
/// * weights[j * NR + col]`; `ahead` fetched into L2 meanwhile.
fn micro_tile(pixels: &[f32], weights: &[f32], k: usize, fresh: bool, tile: &mut [f32], ahead: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    match (tile.len() / NR, super::avx512::available()) {
        (7, true) => super::avx512::narrow_tile::<7>(pixels, weights, k, fresh, tile, ahead),
        (_, true) => super::avx512::narrow_tile::<8>(pixels, weights, k, fresh, tile, ahead),
        (7, false) => avx2::tile::<7>(pixels, weights, k, fresh, tile, ahead),
        (_, false) => avx2::tile::<8>(pixels, weights, k, fresh, tile, ahead),
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        unreachable!("gemm_narrow runs only where available()")
    }
}

/// The turned-around micro-tile with AVX2 and FMA: four passes, each over every `k`, of 4
/// (or the last 3) pixels by 16 channels, 8 accumulators (the whole tile's 32 channels of 8
/// pixels would take 32 of AVX2's 16 registers). Both pixel passes over one half of the
/// channels before the other half: that half of the weights' chunk (16 KB at k of 256)
/// is still in L1 for the second. The same floats as the AVX-512 tile.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use super::NR;
    use std::arch::x86_64::*;

    pub(super) use crate::kernels::avx2_available as available;

    /// Pixels per pass.
    const PIXELS: usize = 4;

    /// See [`super::micro_tile`]; call only when [`available`].
    pub(super) fn tile<const ROWS: usize>(
        pixels: &[f32],
        weights: &[f32],
        k: usize,
        fresh: bool,
        tile: &mut [f32],
        ahead: &[f32],
    ) {
        assert!(available());
        assert!(pixels.len() >= k * ROWS && weights.len() >= k * NR && tile.len() >= ROWS * NR);
        for half in 0..2 {
            for first in (0..ROWS).step_by(PIXELS) {
                // The prefetches of `ahead` ride along the first pass.
                let ahead = if half == 0 && first == 0 { ahead } else { &[] };
                // SAFETY: the features `pass` enables were detected just above; the lengths
                // checked there bound every access it makes (prefetches only inside
                // `ahead`).
                unsafe {
                    if ROWS - first >= PIXELS {
                        pass::<ROWS, PIXELS>(pixels, weights, k, fresh, tile, ahead, [first, 16 * half]);
                    } else {
                        pass::<ROWS, 3>(pixels, weights, k, fresh, tile, ahead, [first, 16 * half]);
                    }
                }
            }
        }
    }

    /// Pixels `first..first + P` by channels `col..col + 16` of the tile.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pass<const ROWS: usize, const P: usize>(
        pixels: &[f32],
        weights: &[f32],
        k: usize,
        fresh: bool,
        tile: &mut [f32],
        ahead: &[f32],
        [first, col]: [usize; 2],
    ) {
        let (x, w) = (pixels.as_ptr().add(first), weights.as_ptr().add(col));
        let mut acc = [[_mm256_setzero_ps(); 2]; P];
        let lines = ahead.len().div_ceil(16);
        for j in 0..k {
            if j < lines {
                _mm_prefetch::<_MM_HINT_T1>(ahead.as_ptr().add(16 * j).cast());
            }
            let (w0, w1) = (_mm256_loadu_ps(w.add(j * NR)), _mm256_loadu_ps(w.add(j * NR + 8)));
            for (r, acc) in acc.iter_mut().enumerate() {
                // The pixel times the weight plus the sum: the product `sub_tile` fuses.
                let p = _mm256_set1_ps(*x.add(j * ROWS + r));
                acc[0] = _mm256_fmadd_ps(p, w0, acc[0]);
                acc[1] = _mm256_fmadd_ps(p, w1, acc[1]);
            }
        }
        for line in k..lines {
            _mm_prefetch::<_MM_HINT_T1>(ahead.as_ptr().add(16 * line).cast());
        }
        for (r, acc) in acc.iter().enumerate() {
            for (h, &sum) in acc.iter().enumerate() {
                let dst = tile.as_mut_ptr().add((first + r) * NR + col + 8 * h);
                let sum = if fresh { sum } else { _mm256_add_ps(_mm256_loadu_ps(dst), sum) };
                _mm256_storeu_ps(dst, sum);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::sgemm::{gemm_with, PackedWeights};
    use crate::kernels::unfold::Matrix;

    #[test]
    fn turned_around_sums_are_the_gemm_s() {
        if !available() {
            return;
        }
        let value = |i: usize| ((i as u64 * 2654435761 + 3) % 23) as f32 / 8.0 - 1.25 + (i % 7) as f32 / 1024.0;
        for (m, k, n) in [
            (1, 1, 1),
            (33, 7, 9),
            (64, 300, 49),
            (70, 600, 56),
            (512, 257, 8),
            (12, 5, 33),
            (40, 300, 98),
            (20, 257, 112),
        ] {
            let a: Vec<f32> = (0..m * k).map(value).collect();
            let b: Vec<f32> = (0..k * n).map(|i| value(i + 11)).collect();
            let finish = |row: usize, sums: &[f32], out: &mut [f32]| {
                out.iter_mut().zip(sums).for_each(|(o, &s)| *o = s + row as f32)
            };
            let mut want = vec![f32::NAN; m * n];
            gemm_with(&PackedWeights::new(&a, m, k), &Matrix { values: &b, n }, &mut want, true, finish);
            for parallel in [false, true] {
                let mut got = vec![f32::NAN; m * n];
                gemm_narrow(&PackedColumns::new(&a, m, k), &Matrix { values: &b, n }, &mut got, parallel, finish);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{m}x{k}x{n}, parallel {parallel}");
            }
        }
    }
}

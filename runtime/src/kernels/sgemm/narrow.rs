//! The GEMM of a narrow `B` (a 7x7 map at batch 1: 49 columns) turned around: `C^T = B^T
//! A^T`, the columns of `B` (pixels) on the broadcast side of the micro-tile in rows of 8
//! and the rows of `A` (output channels) in its vectors, 32 at a time. The usual tile puts
//! `B`'s columns in panels of 32, so 49 of them filled 64; here 56.
//!
//! Every sum is the one [`super::gemm_with`] forms: from zero in `k` order per chunk of
//! [`KC`], fused multiply-adds of the same two factors, the chunks added in order.

use super::{pack_b, row_panels, KC, NR};
use crate::kernels::unfold::Columns;
use rayon::prelude::*;

/// Columns of `B` at most this many go through [`gemm_narrow`].
pub const NARROW_MAX_COLUMNS: usize = 56;

/// Pixels (rows of the turned-around tile) per micro-tile.
const ROWS: usize = 8;

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

/// Whether the processor has the micro-tile this needs (elsewhere [`super::gemm_with`]).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::avx512::available()
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
    let pixel_panels = n.div_ceil(NR).max(1);
    let groups = n.div_ceil(ROWS);
    // Per panel of output channels, the turned-around tile's sums: [pixel][NR channels].
    let panel_sums = groups * ROWS * NR;
    let channel_panels = m.div_ceil(NR);
    // Every sum is written (the first chunk's fresh) before it is read.
    let mut sums = crate::kernels::scratch::take_len(channel_panels * panel_sums, 0.0f32);
    let mut block = crate::kernels::scratch::take_len(pixel_panels * kc * NR, 0.0f32);
    let min_len = if parallel { 1 } else { usize::MAX };
    for start in (0..k).step_by(kc) {
        let len = kc.min(k - start);
        let block = &mut block[..pixel_panels * len * NR];
        pack_b(b, 0, start, len, block);
        let block = &*block;
        sums.par_chunks_mut(panel_sums).with_min_len(min_len).enumerate().for_each(|(q, sums)| {
            let weights = &a.panels[(q * k + start) * NR..][..len * NR];
            for g in 0..groups {
                let (panel, row0) = (g * ROWS / NR, g * ROWS % NR);
                let pixels = &block[panel * len * NR..][..len * NR];
                // The tile's rows are `row0..row0 + ROWS` of the pixel panel's.
                micro_tile(pixels, weights, len, start == 0, row0, &mut sums[panel * NR * NR..]);
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

/// The turned-around micro-tile: `tile[(row0 + r) * NR + col]` = (or, unless `fresh`, +=)
/// the sums over `j` of `pixels[j * NR + row0 + r] * weights[j * NR + col]`, `r < 8`.
fn micro_tile(pixels: &[f32], weights: &[f32], k: usize, fresh: bool, row0: usize, tile: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        super::avx512::narrow_tile(pixels, weights, k, fresh, row0, tile);
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        unreachable!("gemm_narrow runs only where available()")
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
        for (m, k, n) in [(1, 1, 1), (33, 7, 9), (64, 300, 49), (70, 600, 56), (512, 257, 8), (12, 5, 33)] {
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

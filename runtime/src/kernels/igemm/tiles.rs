//! The micro-tiles of the integer GEMM: where a tile's sums go ([`TileSums`]), the
//! dispatch to the processor's kernel, the AVX2 kernel (through `pulp`) and the portable
//! ones the tests check every other against.

#[cfg(target_arch = "x86_64")]
use super::vnni;
use super::{MR, NR};

/// Where a micro-tile's sums go: row `r` at `values[r * ld..][..NR]`, added to what is
/// there or, when `fresh`, written over it.
pub(super) struct TileSums<'a> {
    pub(super) values: &'a mut [i64],
    pub(super) ld: usize,
    pub(super) fresh: bool,
}

impl TileSums<'_> {
    /// Row `r` of the tile.
    #[inline(always)]
    pub(super) fn row(&mut self, r: usize) -> &mut [i64; NR] {
        (&mut self.values[r * self.ld..][..NR]).try_into().expect("NR sums")
    }

    /// The same tile, its later blocks added to the first.
    #[inline(always)]
    pub(super) fn reborrow(&mut self, fresh: bool) -> TileSums<'_> {
        TileSums { values: &mut *self.values, ld: self.ld, fresh: self.fresh && fresh }
    }
}

/// One micro-tile over all k: row `r` of `out` gets `(A_panel · B_panel)[r]`, `A_panel`
/// holding `parts` words per row and k-pair; for the first `rows` rows at least (a layer's
/// last row panel may hold fewer than `MR`: the rest of the tile is left as it was or
/// summed, never read).
pub(super) fn micro_tiles(
    a: &[i32],
    (quads, parts): (bool, usize),
    b: &[i32],
    k_words: usize,
    block: usize,
    mut out: TileSums,
    rows: usize,
) {
    assert!(out.values.len() >= (MR - 1) * out.ld + NR, "a whole tile");
    #[cfg(target_arch = "x86_64")]
    if quads {
        // Packed in quads only where the instructions are there.
        return whole_weights::<true>(a, b, k_words, block, out, rows);
    }
    #[cfg(target_arch = "x86_64")]
    {
        if vnni::available() && !crate::kernels::avx2_only() {
            return match parts {
                1 => whole_weights::<false>(a, b, k_words, block, out, rows),
                // Two passes of 6 rows: 24 accumulators, as for whole weights.
                _ => {
                    vnni::tile::<{ MR / 2 }, 2, false>(a, b, k_words, block, 0, out.reborrow(true));
                    if rows > MR / 2 {
                        vnni::tile::<{ MR / 2 }, 2, false>(a, b, k_words, block, MR / 2, out);
                    }
                }
            };
        }
        if let Some(simd) = pulp::x86::V3::try_new() {
            // Sub-tiles of 16 columns and 6 rows (3 of split weights): 12 accumulators fit
            // AVX2's 16 registers.
            let sub_rows = if parts == 1 { 6 } else { 3 };
            for col0 in [0, NR / 2] {
                for row0 in (0..MR).step_by(sub_rows) {
                    let out = out.reborrow(true);
                    match parts {
                        1 => pulp::Simd::vectorize(
                            simd,
                            Avx2Tile::<6, 1> { simd, a, b, k_words, block, row0, col0, out },
                        ),
                        _ => pulp::Simd::vectorize(
                            simd,
                            Avx2Tile::<3, 2> { simd, a, b, k_words, block, row0, col0, out },
                        ),
                    }
                }
            }
            return;
        }
    }
    match (quads, parts) {
        (true, _) => tile_scalar_quads(a, b, k_words, out),
        (_, 1) => tile_scalar::<1>(a, b, k_words, block, out),
        _ => tile_scalar::<2>(a, b, k_words, block, out),
    }
}

/// [`vnni::tile`] of whole weights (in pairs, or in quads with `QUADS`) over the first
/// `rows` rows of the tile, in whole groups of 4 (a layer of 16 output channels summed 24
/// rows before).
#[cfg(target_arch = "x86_64")]
fn whole_weights<const QUADS: bool>(a: &[i32], b: &[i32], k_words: usize, block: usize, out: TileSums, rows: usize) {
    match rows {
        0..=4 => vnni::tile::<4, 1, QUADS>(a, b, k_words, block, 0, out),
        5..=8 => vnni::tile::<8, 1, QUADS>(a, b, k_words, block, 0, out),
        _ => vnni::tile::<MR, 1, QUADS>(a, b, k_words, block, 0, out),
    }
}

/// The portable quads kernel (for the tests: quads are packed only where AVX-512 VNNI
/// multiplies them): unsigned input bytes times signed weight bytes, in 64 bits.
pub(super) fn tile_scalar_quads(a: &[i32], b: &[i32], k_words: usize, mut out: TileSums) {
    let fresh = out.fresh;
    for r in 0..MR {
        let row = out.row(r);
        for (c, o) in row.iter_mut().enumerate() {
            let sum: i64 = (0..k_words)
                .map(|j| {
                    let (w, x) = (a[j * MR + r].to_le_bytes(), b[j * NR + c].to_le_bytes());
                    w.iter().zip(&x).map(|(&w, &x)| w as i8 as i64 * x as i64).sum::<i64>()
                })
                .sum();
            *o = if fresh { sum } else { *o + sum };
        }
    }
}

/// The portable kernel: the same blocks, in wrapping 32-bit sums (exact: each block's sum
/// fits 32 bits).
pub(super) fn tile_scalar<const PARTS: usize>(a: &[i32], b: &[i32], k_words: usize, block: usize, mut out: TileSums) {
    let half = |w: i32| (w as i16 as i32, (w >> 16) as i16 as i32);
    for start in (0..k_words).step_by(block.max(1)) {
        let mut acc = [[0i32; MR * NR]; PARTS];
        for j in start..(start + block).min(k_words) {
            for r in 0..MR {
                for (part, acc) in acc.iter_mut().enumerate() {
                    let (a0, a1) = half(a[(j * MR + r) * PARTS + part]);
                    for c in 0..NR {
                        let (b0, b1) = half(b[j * NR + c]);
                        let sum = a0.wrapping_mul(b0).wrapping_add(a1.wrapping_mul(b1));
                        acc[r * NR + c] = acc[r * NR + c].wrapping_add(sum);
                    }
                }
            }
        }
        let fresh = out.fresh && start == 0;
        for r in 0..MR {
            let row = out.row(r);
            for (part, acc) in acc.iter().enumerate() {
                for (o, &v) in row.iter_mut().zip(&acc[r * NR..][..NR]) {
                    let v = (v as i64) << (8 * part);
                    *o = if fresh && part == 0 { v } else { *o + v };
                }
            }
        }
    }
}

/// The AVX2 micro-kernel for `ROWS` rows from `row0` and 16 columns from `col0`: per
/// k-pair, two registers of `B` and one broadcast word of `A` per row and part,
/// `vpmaddwd` then `vpaddd` into 2 x `ROWS` x `PARTS` accumulators.
#[cfg(target_arch = "x86_64")]
pub(super) struct Avx2Tile<'a, const ROWS: usize, const PARTS: usize> {
    pub(super) simd: pulp::x86::V3,
    pub(super) a: &'a [i32],
    pub(super) b: &'a [i32],
    pub(super) k_words: usize,
    pub(super) block: usize,
    pub(super) row0: usize,
    pub(super) col0: usize,
    pub(super) out: TileSums<'a>,
}

#[cfg(target_arch = "x86_64")]
impl<const ROWS: usize, const PARTS: usize> pulp::WithSimd for Avx2Tile<'_, ROWS, PARTS> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        use std::arch::x86_64::__m256i;
        let Avx2Tile { simd, a, b, k_words, block, row0, col0, mut out } = self;
        let load = |words: &[i32]| -> __m256i {
            let lanes: [i32; 8] = words[..8].try_into().expect("8 words");
            pulp::cast(lanes)
        };
        let mut start = 0;
        while start < k_words {
            let end = (start + block.max(1)).min(k_words);
            let mut acc = [[[simd.avx._mm256_setzero_si256(); 2]; PARTS]; ROWS];
            let a_words = a[start * MR * PARTS..end * MR * PARTS].chunks_exact(MR * PARTS);
            for (bj, aj) in b[start * NR..end * NR].chunks_exact(NR).zip(a_words) {
                let (b0, b1) = (load(&bj[col0..]), load(&bj[col0 + 8..]));
                // A slice of constant length and constant loops: unrolled, every accumulator
                // in a register.
                let ws = &aj[row0 * PARTS..][..ROWS * PARTS];
                for (r, acc) in acc.iter_mut().enumerate() {
                    for (q, acc) in acc.iter_mut().enumerate() {
                        let w = simd.avx._mm256_set1_epi32(ws[r * PARTS + q]);
                        acc[0] = simd.avx2._mm256_add_epi32(acc[0], simd.avx2._mm256_madd_epi16(w, b0));
                        acc[1] = simd.avx2._mm256_add_epi32(acc[1], simd.avx2._mm256_madd_epi16(w, b1));
                    }
                }
            }
            let fresh = out.fresh && start == 0;
            for (r, acc) in acc.iter().enumerate() {
                // Arrays of constant length: the widening adds vectorize.
                let out: &mut [i64; 16] = (&mut out.row(row0 + r)[col0..][..16]).try_into().expect("16 sums");
                for (part, acc) in acc.iter().enumerate() {
                    let lanes: [i32; 16] = pulp::cast([acc[0], acc[1]]);
                    for (o, &v) in out.iter_mut().zip(&lanes) {
                        let v = (v as i64) << (8 * part);
                        *o = if fresh && part == 0 { v } else { *o + v };
                    }
                }
            }
            start = end;
        }
    }
}

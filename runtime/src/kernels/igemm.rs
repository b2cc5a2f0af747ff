//! Exact integer GEMM for the fixed-point datapath: `C = A · B` with `A` (weights) and `B`
//! (inputs) 16-bit integers and `C` 64-bit, the accumulator of ARCHITECTURE.md's
//! "Datapath" computed exactly in any order.
//!
//! The inner loop multiplies pairs of 16-bit values into 32-bit lanes (`vpmaddwd`, AVX2
//! through `pulp`; with AVX-512 VNNI, `vpdpwssd` also adds), 16 multiply-accumulates per
//! instruction. A 32-bit lane holds the sum of a block of pairs exactly when
//! `2 * max|a| * max|x|` times the block's length stays below 2^31; each block is then
//! added into the 64-bit tile. Where
//! a single product is too wide for blocks worth having (16-bit weights times 16-bit
//! inputs), the weights are split into a low byte (0..=255) and a high part, two passes
//! whose tiles add as `lo + (hi << 8)`: still exact, at half the speed.
//!
//! Layout: `A` is packed once ([`PackedA`], kept by the plan) in panels of [`MR`] rows,
//! each k-pair of a row as one 32-bit word; `B` per call in panels of [`NR`] columns, each
//! k-pair of a column as one 32-bit word, a block of panels at a time. Row panels of `C` run
//! in parallel. Without AVX2 a scalar kernel computes the same integers; the tests check
//! every kernel the machine has against it.

use rayon::prelude::*;

/// Rows of `A` per micro-tile.
pub const MR: usize = 6;
/// Columns of `B` per micro-tile (two 8-lane registers).
pub const NR: usize = 16;
/// Bytes of packed `B` a block of column panels holds (a share of a core's L2 cache).
const B_BLOCK_BYTES: usize = 256 * 1024;
/// Shortest block (in k-pairs) worth a pass without splitting the weights.
const MIN_BLOCK_PAIRS: usize = 64;

/// One pass over `A`: its values packed, the left shift of its products, and how many
/// k-pairs a 32-bit lane sums exactly.
#[derive(Clone, Debug)]
struct Pass {
    panels: Vec<i32>,
    shift: u32,
    block_pairs: usize,
}

/// `A` (`m` x `k`, row-major) packed for [`gemm`], against inputs of at most `x_bits` bits.
#[derive(Clone, Debug)]
pub struct PackedA {
    k_pairs: usize,
    passes: Vec<Pass>,
}

/// Two 16-bit values in one 32-bit word, low half first (the pair `vpmaddwd` multiplies).
#[inline]
fn pair(lo: i64, hi: i64) -> i32 {
    ((lo as i16 as u16 as u32) | ((hi as i16 as u16 as u32) << 16)) as i32
}

/// k-pairs whose products (at most `max_a * max_x` each) a 32-bit lane sums exactly.
fn block_pairs(max_a: i64, max_x: i64) -> usize {
    let pair_bound = (2 * max_a * max_x).max(1);
    (((1i64 << 31) - 1) / pair_bound) as usize
}

impl PackedA {
    /// Pack `a` (every value within 16 bits) against inputs of `x_bits` bits.
    pub fn new(a: &[i64], m: usize, k: usize, x_bits: u32) -> PackedA {
        debug_assert!(a.iter().all(|v| (-(1 << 15)..(1 << 15)).contains(v)), "16-bit weights");
        let max_x = 1i64 << (x_bits.clamp(1, 16) - 1);
        let max_a = a.iter().fold(0, |m, v| m.max(v.abs()));
        let k_pairs = k.div_ceil(2);
        let pack = |value: fn(i64) -> i64| {
            let panels = m.div_ceil(MR);
            let mut out = vec![0i32; panels * k_pairs * MR];
            for (p, panel) in out.chunks_exact_mut(k_pairs * MR).enumerate() {
                for r in 0..MR.min(m - p * MR) {
                    let row = &a[(p * MR + r) * k..][..k];
                    for (j, two) in row.chunks(2).enumerate() {
                        panel[j * MR + r] = pair(value(two[0]), two.get(1).map_or(0, |&v| value(v)));
                    }
                }
            }
            out
        };
        let passes = if block_pairs(max_a, max_x) >= MIN_BLOCK_PAIRS.min(k_pairs).max(1) {
            vec![Pass { panels: pack(|v| v), shift: 0, block_pairs: block_pairs(max_a, max_x) }]
        } else {
            let max_hi = a.iter().fold(0, |m, v| m.max((v >> 8).abs()));
            vec![
                Pass { panels: pack(|v| v & 0xff), shift: 0, block_pairs: block_pairs(0xff, max_x) },
                Pass { panels: pack(|v| v >> 8), shift: 8, block_pairs: block_pairs(max_hi, max_x) },
            ]
        };
        PackedA { k_pairs, passes }
    }
}

/// `B` (`k` x `n`, row-major) packed in column panels: per panel, per k-pair, [`NR`] words.
#[inline(always)]
fn pack_b(b: &[i16], k: usize, n: usize, panel: usize, out: &mut [i32]) {
    let c0 = panel * NR;
    let cols = NR.min(n - c0);
    for (j, dst) in out.chunks_exact_mut(NR).take(k.div_ceil(2)).enumerate() {
        let even = &b[2 * j * n + c0..][..cols];
        match (2 * j + 1 < k).then(|| &b[(2 * j + 1) * n + c0..][..cols]) {
            Some(odd) => {
                for ((d, &e), &o) in dst.iter_mut().zip(even).zip(odd) {
                    *d = pair(e as i64, o as i64);
                }
            }
            None => {
                for (d, &e) in dst.iter_mut().zip(even) {
                    *d = pair(e as i64, 0);
                }
            }
        }
        dst[cols..].fill(0);
    }
}

/// `C = A · B` into `c` (`A`'s rows x `n`, row-major), `b` being `k` x `n` row-major.
pub fn gemm(a: &PackedA, b: &[i16], n: usize, c: &mut [i64]) {
    gemm_with(a, b, n, c, |_, acc, out| out.copy_from_slice(acc));
}

/// `A · B` handed over in pieces: `finish(row, sums, out)` for each run of a row's sums,
/// `out` being the matching part of `c` (`A`'s rows x `n`, row-major): the layer's
/// epilogue runs on each piece while it is in cache, and no 64-bit matrix is stored.
pub fn gemm_with<T: Send>(
    a: &PackedA,
    b: &[i16],
    n: usize,
    c: &mut [T],
    finish: impl Fn(usize, &[i64], &mut [T]) + Sync,
) {
    let k_pairs = a.k_pairs;
    let k = b.len() / n.max(1);
    debug_assert_eq!(k.div_ceil(2), k_pairs);
    // Blocks of column panels small enough to stay in a core's L2 cache while every row
    // panel of A passes over them.
    let panels = n.div_ceil(NR);
    let per_block = (B_BLOCK_BYTES / (k_pairs * NR * 4).max(1)).clamp(1, panels.max(1));
    // `pack_b` writes every word.
    let mut packed = super::scratch::take_len(per_block * k_pairs * NR, 0i32);
    for first in (0..panels).step_by(per_block) {
        let block = &mut packed[..per_block.min(panels - first) * k_pairs * NR];
        block.par_chunks_mut(k_pairs * NR).enumerate().for_each(|(q, panel)| {
            super::with_avx2(
                #[inline(always)]
                || pack_b(b, k, n, first + q, panel),
            )
        });
        let block = &*block;
        // Row panels of C are contiguous: one task each.
        c.par_chunks_mut(MR * n).enumerate().for_each(|(p, rows)| {
            let valid_rows = rows.len() / n.max(1);
            for (q, panel) in block.chunks_exact(k_pairs * NR).enumerate() {
                let mut tile = [0i64; MR * NR];
                for pass in &a.passes {
                    let a_panel = &pass.panels[p * k_pairs * MR..][..k_pairs * MR];
                    micro_tiles(a_panel, panel, k_pairs, pass.block_pairs, pass.shift, &mut tile);
                }
                let c0 = (first + q) * NR;
                let cols = NR.min(n - c0);
                // Compiled for AVX2 where the processor has it, so that `finish` vectorizes.
                super::with_avx2(
                    #[inline(always)]
                    || {
                        for r in 0..valid_rows {
                            finish(p * MR + r, &tile[r * NR..][..cols], &mut rows[r * n + c0..][..cols]);
                        }
                    },
                );
            }
        });
    }
    super::scratch::give_back(packed);
}

/// One micro-tile over all k: `out[r * NR + c] += (A_panel · B_panel)[r][c] << shift`.
fn micro_tiles(a: &[i32], b: &[i32], k_pairs: usize, block: usize, shift: u32, out: &mut [i64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if vnni::available() {
            return vnni::tile(a, b, k_pairs, block, shift, out);
        }
        if let Some(simd) = pulp::x86::V3::try_new() {
            return pulp::Simd::vectorize(simd, Avx2Tile { simd, a, b, k_pairs, block, shift, out });
        }
    }
    tile_scalar(a, b, k_pairs, block, shift, out)
}

/// The portable kernel: the same blocks, in 32-bit sums.
fn tile_scalar(a: &[i32], b: &[i32], k_pairs: usize, block: usize, shift: u32, out: &mut [i64]) {
    let half = |w: i32| (w as i16 as i32, (w >> 16) as i16 as i32);
    for start in (0..k_pairs).step_by(block.max(1)) {
        let mut acc = [0i32; MR * NR];
        for j in start..(start + block).min(k_pairs) {
            for r in 0..MR {
                let (a0, a1) = half(a[j * MR + r]);
                for c in 0..NR {
                    let (b0, b1) = half(b[j * NR + c]);
                    acc[r * NR + c] += a0 * b0 + a1 * b1;
                }
            }
        }
        for (o, &v) in out.iter_mut().zip(&acc) {
            *o += (v as i64) << shift;
        }
    }
}

/// The AVX2 micro-kernel: per k-pair, two registers of `B` and one broadcast word of `A`
/// per row, `vpmaddwd` then `vpaddd` into 2 x [`MR`] accumulators.
#[cfg(target_arch = "x86_64")]
struct Avx2Tile<'a> {
    simd: pulp::x86::V3,
    a: &'a [i32],
    b: &'a [i32],
    k_pairs: usize,
    block: usize,
    shift: u32,
    out: &'a mut [i64],
}

#[cfg(target_arch = "x86_64")]
impl pulp::WithSimd for Avx2Tile<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        use std::arch::x86_64::__m256i;
        let Avx2Tile { simd, a, b, k_pairs, block, shift, out } = self;
        let load = |words: &[i32]| -> __m256i {
            let lanes: [i32; 8] = words[..8].try_into().expect("8 words");
            pulp::cast(lanes)
        };
        let mut start = 0;
        while start < k_pairs {
            let end = (start + block.max(1)).min(k_pairs);
            let mut acc = [[simd.avx._mm256_setzero_si256(); 2]; MR];
            for (bj, aj) in b[start * NR..end * NR].chunks_exact(NR).zip(a[start * MR..end * MR].chunks_exact(MR)) {
                let (b0, b1) = (load(&bj[..8]), load(&bj[8..]));
                for (acc, &w) in acc.iter_mut().zip(aj) {
                    let w = simd.avx._mm256_set1_epi32(w);
                    acc[0] = simd.avx2._mm256_add_epi32(acc[0], simd.avx2._mm256_madd_epi16(w, b0));
                    acc[1] = simd.avx2._mm256_add_epi32(acc[1], simd.avx2._mm256_madd_epi16(w, b1));
                }
            }
            for (acc, out) in acc.iter().zip(out.chunks_exact_mut(NR)) {
                let lanes: [[i32; 8]; 2] = [pulp::cast(acc[0]), pulp::cast(acc[1])];
                for (o, &v) in out.iter_mut().zip(lanes.iter().flatten()) {
                    *o += (v as i64) << shift;
                }
            }
            start = end;
        }
    }
}

/// The same micro-kernel with AVX-512 VNNI's `vpdpwssd` (multiply pairs and add in one
/// instruction) on 256-bit registers: half the instructions of the AVX2 kernel. `pulp` has
/// no VNNI operations, hence the one `unsafe` module of the runtime.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod vnni {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// Whether this processor has the instructions (detected once, cached by `std`).
    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512vnni") && std::arch::is_x86_feature_detected!("avx512vl")
    }

    /// See [`super::micro_tiles`]; call only when [`available`].
    pub(super) fn tile(a: &[i32], b: &[i32], k_pairs: usize, block: usize, shift: u32, out: &mut [i64]) {
        assert!(available() && a.len() >= k_pairs * MR && b.len() >= k_pairs * NR && out.len() >= MR * NR);
        // SAFETY: the features `kernel` enables were detected just above.
        unsafe { kernel(a, b, k_pairs, block, shift, out) }
    }

    #[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
    fn kernel(a: &[i32], b: &[i32], k_pairs: usize, block: usize, shift: u32, out: &mut [i64]) {
        let mut start = 0;
        while start < k_pairs {
            let end = (start + block.max(1)).min(k_pairs);
            let mut acc = [[_mm256_setzero_si256(); 2]; MR];
            for (bj, aj) in b[start * NR..end * NR].chunks_exact(NR).zip(a[start * MR..end * MR].chunks_exact(MR)) {
                // SAFETY: `bj` holds NR = 16 words, two unaligned 256-bit loads' worth.
                let (b0, b1) = unsafe {
                    let p = bj.as_ptr() as *const __m256i;
                    (_mm256_loadu_si256(p), _mm256_loadu_si256(p.add(1)))
                };
                for (acc, &w) in acc.iter_mut().zip(aj) {
                    let w = _mm256_set1_epi32(w);
                    acc[0] = _mm256_dpwssd_epi32(acc[0], w, b0);
                    acc[1] = _mm256_dpwssd_epi32(acc[1], w, b1);
                }
            }
            for (acc, out) in acc.iter().zip(out.chunks_exact_mut(NR)) {
                let mut lanes = [0i32; NR];
                // SAFETY: `lanes` holds two 256-bit stores' worth.
                unsafe {
                    _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, acc[0]);
                    _mm256_storeu_si256(lanes.as_mut_ptr().add(8) as *mut __m256i, acc[1]);
                }
                for (o, &v) in out.iter_mut().zip(&lanes) {
                    *o += (v as i64) << shift;
                }
            }
            start = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    fn naive(a: &[i64], b: &[i16], m: usize, k: usize, n: usize) -> Vec<i64> {
        let mut c = vec![0i64; m * n];
        for r in 0..m {
            for j in 0..n {
                c[r * n + j] = (0..k).map(|i| a[r * k + i] * b[i * n + j] as i64).sum();
            }
        }
        c
    }

    fn check(m: usize, k: usize, n: usize, a_bits: u32, x_bits: u32, seed: u64) {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let (amax, xmax) = (1i64 << (a_bits - 1), 1i64 << (x_bits - 1));
        // Extremes included: the worst case of every block is what must not overflow.
        let mut a: Vec<i64> = (0..m * k).map(|_| rng.random_range(-amax..amax)).collect();
        let mut b: Vec<i16> = (0..k * n).map(|_| rng.random_range(-xmax..xmax) as i16).collect();
        a.iter_mut().step_by(3).for_each(|v| *v = -amax);
        b.iter_mut().step_by(2).for_each(|v| *v = -xmax as i16);
        let packed = PackedA::new(&a, m, k, x_bits);
        let mut c = vec![0i64; m * n];
        gemm(&packed, &b, n, &mut c);
        assert_eq!(c, naive(&a, &b, m, k, n), "{m}x{k}x{n} at {a_bits}x{x_bits} bits");
        // The portable kernel computes the same integers.
        for pass in &packed.passes {
            let mut simd = vec![0i64; MR * NR];
            let mut scalar = vec![0i64; MR * NR];
            let mut bp = vec![0i32; packed.k_pairs * NR];
            pack_b(&b, k, n, 0, &mut bp);
            let panel = &pass.panels[..packed.k_pairs * MR];
            let (kp, block, shift) = (packed.k_pairs, pass.block_pairs, pass.shift);
            tile_scalar(panel, &bp, kp, block, shift, &mut scalar);
            micro_tiles(panel, &bp, kp, block, shift, &mut simd);
            assert_eq!(simd, scalar);
            #[cfg(target_arch = "x86_64")]
            if let Some(v3) = pulp::x86::V3::try_new() {
                let mut avx2 = vec![0i64; MR * NR];
                let tile = Avx2Tile { simd: v3, a: panel, b: &bp, k_pairs: kp, block, shift, out: &mut avx2 };
                pulp::Simd::vectorize(v3, tile);
                assert_eq!(avx2, scalar, "AVX2 kernel");
            }
        }
    }

    #[test]
    fn exact_at_every_width_and_odd_shape() {
        check(7, 9, 5, 16, 16, 1); // split weights, tails everywhere
        check(13, 4608, 37, 16, 16, 2); // resnet's widest fan-in, worst-case values
        check(6, 300, 16, 8, 16, 3); // one pass
        check(1, 1, 1, 2, 2, 4);
        check(20, 1000, 40, 16, 8, 5);
        check(5, 3, 33, 4, 4, 6);
    }
}

//! Exact integer GEMM for the fixed-point datapath: `C = A · B` with `A` (weights) and `B`
//! (inputs) 16-bit integers and `C` 64-bit, the accumulator of ARCHITECTURE.md's
//! "Datapath" computed exactly in any order.
//!
//! The inner loop multiplies pairs of 16-bit values into 32-bit lanes and adds them: with
//! AVX-512 VNNI, `vpdpwssd` on 512-bit registers, 32 multiply-accumulates per instruction
//! (twice an `f32` FMA's 16) in a 12 x 32 tile of 24 registers; with AVX2, `vpmaddwd` and
//! `vpaddd` through `pulp`, in sub-tiles of 16 columns. A 32-bit lane holds the sum of a
//! block of pairs exactly when `2 * max|a| * max|x|` times the block's length stays below
//! 2^31; each block is then added into the 64-bit tile. Where a single product is too wide
//! for blocks worth having (16-bit weights times 16-bit inputs), each weight is split into
//! a low byte (0..=255) and a high part, kept side by side, whose sums add as
//! `lo + (hi << 8)`: still exact, twice the multiplies (as many as an `f32` FMA kernel),
//! each input loaded once. Where weights and inputs are 8-bit integers and AVX-512 VNNI is
//! there, `A` and `B` are packed in quads instead and `vpdpbusd` multiplies unsigned input
//! bytes by signed weight bytes, four per lane, 64 multiply-accumulates per instruction:
//! inputs that are never negative (0..=255, what a ReLU writes) enter as they are, signed
//! ones as `x + 128`, and then each row's `128 * sum(w)` comes off before the epilogue.
//!
//! Layout and loops, as in GotoBLAS: `A` is packed once ([`PackedA`], kept by the plan) in
//! panels of [`MR`] rows, each pair (or quad) of a row's k as one 32-bit word per part; `B` (any
//! [`Columns`](super::unfold::Columns): a matrix, or a convolution's windows read straight from the images) is
//! packed as the GEMM goes, per block of column panels and chunk of `KC_WORDS` words of k,
//! which every row panel of `A` then passes over (in parallel). Without AVX2 a scalar
//! kernel computes the same integers; the tests check every kernel the machine has against
//! it. The micro-tiles are in `tiles.rs`, the AVX-512 VNNI kernels (the module's `unsafe`)
//! in `vnni.rs`.

use super::unfold::{pack_block, Columns, Matrix};
use rayon::prelude::*;
use std::ops::RangeInclusive;
use tiles::{micro_tiles, TileSums};

pub mod direct;
mod tiles;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod vnni;

/// Rows of `A` per micro-tile.
pub const MR: usize = 12;
/// Columns of `B` per micro-tile (two 16-lane registers).
pub const NR: usize = 32;
/// Bytes of packed `B` a block of column panels holds (a share of a core's L2 cache).
const B_BLOCK_BYTES: usize = 256 * 1024;
/// Words of k per chunk: a chunk of a row panel of split weights (12 KiB) and of a column
/// panel (16 KiB) fit a core's L1 cache together.
const KC_WORDS: usize = 128;
/// Shortest block (in k-pairs) worth a pass without splitting the weights.
const MIN_BLOCK_PAIRS: usize = 64;

/// `A` (`m` x `k`, row-major) packed for [`gemm`], against inputs within a known range.
///
/// Each 32-bit word holds two 16-bit weights of consecutive k (the pair `vpmaddwd` and
/// `vpdpwssd` multiply), or, with AVX-512 VNNI where weights and inputs are 8-bit
/// integers, four (`vpdpbusd`'s quad, twice the multiply-accumulates per instruction).
/// A pair's values enter the products whole, or (`parts == 2`, where a single product is
/// too wide for blocks worth having) split into their low byte (0..=255) and high part
/// (`v >> 8`), whose sums add as `lo + (hi << 8)`: twice the multiplies, each input loaded
/// once.
#[derive(Clone, Debug)]
pub struct PackedA {
    /// Words per row (and part): `k` in pairs, or in quads.
    k_words: usize,
    /// Whether a word holds a quad of 8-bit weights.
    quads: bool,
    /// 1 (whole values) or 2 (low byte, high part).
    parts: usize,
    /// Per row panel, per word of k, per row: `parts` words.
    panels: Vec<i32>,
    /// Words a 32-bit lane sums exactly, for every part.
    block_words: usize,
    /// With quads, what is added to every input to make it an unsigned byte (`vpdpbusd`
    /// multiplies unsigned bytes by signed ones): 0 for inputs within 0..=255, else 128.
    x_offset: i16,
    /// With quads, per row: `x_offset` times the sum of its weights, which comes off.
    offsets: Vec<i64>,
}

/// Two 16-bit values in one 32-bit word, low half first (the pair `vpmaddwd` multiplies).
#[inline(always)]
fn pair(lo: i16, hi: i16) -> i32 {
    (lo as u16 as u32 | (hi as u16 as u32) << 16) as i32
}

/// Four bytes in one 32-bit word, the first lowest (the quad `vpdpbusd` multiplies).
#[inline(always)]
fn quad(bytes: [u8; 4]) -> i32 {
    i32::from_le_bytes(bytes)
}

/// k-pairs whose products (at most `max_a * max_x` each) a 32-bit lane sums exactly.
fn block_pairs(max_a: i64, max_x: i64) -> usize {
    let pair_bound = (2 * max_a * max_x).max(1);
    (((1i64 << 31) - 1) / pair_bound) as usize
}

/// Whether this process multiplies quads of 8-bit integers (AVX-512 VNNI, not turned off
/// by `HASS_AVX2_ONLY`): where it does not, nothing is packed in quads.
fn multiplies_quads() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        vnni::available() && !crate::kernels::avx2_only()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether [`PackedA::new`] packs weights `a` against inputs within `x` in quads.
pub fn packs_quads(a: &[i64], x: &RangeInclusive<i64>) -> bool {
    quad_offset(a, x).is_some()
}

/// Whether weights `a` against inputs within `x` are packed in quads, and if so what is
/// added to every input to make it an unsigned byte: where both are 8-bit integers and the
/// processor multiplies quads.
fn quad_offset(a: &[i64], x: &RangeInclusive<i64>) -> Option<i16> {
    let x_offset = match (*x.start(), *x.end()) {
        (0.., ..=255) => Some(0),
        (-128.., ..=127) => Some(128),
        _ => None,
    };
    x_offset.filter(|_| multiplies_quads() && a.iter().all(|v| (-128..128).contains(v)))
}

impl PackedA {
    /// Pack `a` (every value within 16 bits) against inputs within `x` (within 16 bits).
    pub fn new(a: &[i64], m: usize, k: usize, x: RangeInclusive<i64>) -> PackedA {
        debug_assert!(a.iter().all(|v| (-(1 << 15)..(1 << 15)).contains(v)), "16-bit weights");
        if let Some(x_offset) = quad_offset(a, &x) {
            return PackedA::quads(a, m, k, x_offset);
        }
        let max_x = x.start().abs().max(x.end().abs()).clamp(1, 1 << 15);
        let max_a = a.iter().fold(0, |m, v| m.max(v.abs()));
        let k_words = k.div_ceil(2);
        let whole = block_pairs(max_a, max_x);
        let (parts, block_words): (usize, _) =
            if whole >= MIN_BLOCK_PAIRS.min(k_words).max(1) { (1, whole) } else { (2, block_pairs(0xff, max_x)) };
        // Part 0 is the value or its low byte, part 1 its high part (each within 16 bits).
        let part = |v: i64, p: usize| {
            (match (parts, p) {
                (1, _) => v,
                (_, 0) => v & 0xff,
                _ => v >> 8,
            }) as i16
        };
        let stride = k_words * MR * parts;
        let mut panels = vec![0i32; m.div_ceil(MR) * stride];
        // Panels side by side: a search packs every layer again each time it re-quantizes.
        panels.par_chunks_exact_mut(stride).enumerate().for_each(|(p, panel)| {
            for r in 0..MR.min(m - p * MR) {
                let row = &a[(p * MR + r) * k..][..k];
                for (j, two) in row.chunks(2).enumerate() {
                    for q in 0..parts {
                        let second = two.get(1).map_or(0, |&v| part(v, q));
                        panel[(j * MR + r) * parts + q] = pair(part(two[0], q), second);
                    }
                }
            }
        });
        PackedA { k_words, quads: false, parts, panels, block_words, x_offset: 0, offsets: Vec::new() }
    }

    /// `a`'s 8-bit weights in quads (zeros past `k`), against inputs that `x_offset` makes
    /// unsigned bytes.
    fn quads(a: &[i64], m: usize, k: usize, x_offset: i16) -> PackedA {
        let k_words = k.div_ceil(4);
        let stride = k_words * MR;
        let mut panels = vec![0i32; m.div_ceil(MR) * stride];
        panels.par_chunks_exact_mut(stride).enumerate().for_each(|(p, panel)| {
            for r in 0..MR.min(m - p * MR) {
                let row = &a[(p * MR + r) * k..][..k];
                for (j, four) in row.chunks(4).enumerate() {
                    let mut bytes = [0u8; 4];
                    bytes.iter_mut().zip(four).for_each(|(b, &v)| *b = v as i8 as u8);
                    panel[j * MR + r] = quad(bytes);
                }
            }
        });
        let offsets = a.chunks(k.max(1)).take(m).map(|row| x_offset as i64 * row.iter().sum::<i64>()).collect();
        // A quad's four products of at most 255 x 128 each: 2^31 / 130560 quads per block.
        let block_words = ((1i64 << 31) - 1) as usize / (4 * 255 * 128);
        PackedA { k_words, quads: true, parts: 1, panels, block_words, x_offset, offsets }
    }
}

/// Words `first..first + words` of the column panels from `panel0` on (as many as `out`
/// holds) of `b`, packed for `a`: per panel, per word of k, [`NR`] words, each the pair
/// ([`pair`]) or quad (four bytes `x + x_offset`, [`quad`]) of `b`'s rows for one column.
/// Past the last row or column the values are zeros (a quad's bytes `x_offset`: their
/// weights are zeros). Rows are read across all the panels at once: a convolution's windows then copy
/// whole runs of an image row.
#[inline(always)]
fn pack_b(a: &PackedA, b: &impl Columns<i16>, panel0: usize, first: usize, words: usize, out: &mut [i32]) {
    if a.quads {
        let byte = |v: i16| (v + a.x_offset) as u8;
        pack_words::<4>(b, panel0, first, words, out, |[w, x, y, z]| quad([byte(w), byte(x), byte(y), byte(z)]))
    } else {
        pack_words::<2>(b, panel0, first, words, out, |[lo, hi]| pair(lo, hi))
    }
}

/// [`pack_b`] with `PER` rows of `b` to a word, `word` making one of `PER` values.
#[inline(always)]
fn pack_words<const PER: usize>(
    b: &impl Columns<i16>,
    panel0: usize,
    first: usize,
    words: usize,
    out: &mut [i32],
    word: impl Fn([i16; PER]) -> i32,
) {
    let [k, n] = b.shape();
    let panels = out.len() / (words * NR).max(1);
    let c0 = panel0 * NR;
    let cols = (panels * NR).min(n - c0);
    let width = panels * NR;
    // Zero past `cols`; `row` writes the rest.
    let mut rows = crate::kernels::scratch::take_len(PER * width, 0i16);
    rows.chunks_exact_mut(width).for_each(|row| row[cols..].fill(0));
    let span = b.span(c0, cols);
    for j in 0..words {
        for (q, row) in rows.chunks_exact_mut(width).enumerate() {
            match PER * (first + j) + q {
                r if r < k => b.row(&span, r, &mut row[..cols]),
                _ => row.fill(0),
            }
        }
        for (p, dst) in out.chunks_exact_mut(words * NR).enumerate() {
            let dst: &mut [i32; NR] = (&mut dst[j * NR..][..NR]).try_into().expect("NR words");
            let column: [&[i16; NR]; PER] =
                std::array::from_fn(|q| rows[q * width + p * NR..][..NR].try_into().expect("NR values"));
            for (c, d) in dst.iter_mut().enumerate() {
                *d = word(std::array::from_fn(|q| column[q][c]));
            }
        }
    }
}

/// `C = A · B` into `c` (`A`'s rows x `n`, row-major), `b` being `k` x `n` row-major.
pub fn gemm(a: &PackedA, b: &[i16], n: usize, c: &mut [i64]) {
    gemm_with(a, &Matrix { values: b, n }, c, true, |_, acc, out| out.copy_from_slice(acc));
}

/// `A · B` handed over in pieces: `finish(row, sums, out)` for each run of a row's sums
/// over a block of columns, `out` being the matching part of `c` (`A`'s rows x `n`,
/// row-major): the layer's epilogue runs on each piece while it is in cache, and no 64-bit
/// matrix is stored.
///
/// Loops as in GotoBLAS: columns in blocks, k in chunks of `KC_WORDS`; each chunk of a
/// block of `B` is packed once and stays in L2 while every row panel of `A` passes over it,
/// each row panel's chunk staying in L1 across the block's column panels. `A` is read once
/// per column block, however large it is. With `parallel`, packing and row panels spread
/// over rayon's threads; without, one thread does it all (the caller runs GEMMs in
/// parallel itself: nested splitting costs more than it gains).
pub fn gemm_with<T: Send>(
    a: &PackedA,
    b: &impl Columns<i16>,
    c: &mut [T],
    parallel: bool,
    finish: impl Fn(usize, &[i64], &mut [T]) + Sync,
) {
    let (k_words, parts) = (a.k_words, a.parts);
    let [k, n] = b.shape();
    debug_assert_eq!(k.div_ceil(if a.quads { 4 } else { 2 }), k_words);
    let kc = KC_WORDS.min(k_words).max(1);
    let panels = n.div_ceil(NR);
    let row_panels = a.panels.len() / (k_words * MR * parts).max(1);
    let per_block = (B_BLOCK_BYTES / (kc * NR * 4)).clamp(1, panels.max(1));
    // Per row panel, its rows' sums over a block's columns, row by row: `finish` then takes
    // a row's run of the whole block at once (per tile, its setup cost more than the
    // epilogue itself on layers with short k).
    let block_cols = per_block * NR;
    // Rayon splits no task shorter than this.
    let min_len = if parallel { 1 } else { usize::MAX };
    // `pack_b` writes every word; the first chunk writes every sum.
    let mut packed = crate::kernels::scratch::take_len(per_block * kc * NR, 0i32);
    let mut sums = crate::kernels::scratch::take_len(row_panels * MR * block_cols, 0i64);
    for first in (0..panels).step_by(per_block) {
        let block_panels = per_block.min(panels - first);
        let (c0, cols) = (first * NR, (block_panels * NR).min(n - first * NR));
        for start in (0..k_words).step_by(kc) {
            let len = kc.min(k_words - start);
            let block = &mut packed[..block_panels * len * NR];
            pack_block(
                block,
                len * NR,
                parallel,
                #[inline(always)]
                |panel, run| pack_b(a, b, first + panel, start, len, run),
            );
            let block = &*block;
            let last = start + len == k_words;
            // Row panels of C are contiguous: one task each.
            let tasks = c.par_chunks_mut(MR * n).zip(sums.par_chunks_mut(MR * block_cols));
            tasks.with_min_len(min_len).enumerate().for_each(|(p, (rows, sums))| {
                let a_chunk = &a.panels[(p * k_words + start) * MR * parts..][..len * MR * parts];
                let panel_rows = rows.len() / n.max(1);
                for (q, panel) in block.chunks_exact(len * NR).enumerate() {
                    let tile = TileSums { values: &mut sums[q * NR..], ld: block_cols, fresh: start == 0 };
                    micro_tiles(a_chunk, (a.quads, parts), panel, len, a.block_words, tile, panel_rows);
                }
                if last {
                    // Compiled for the widest vectors the processor has, so that `finish`
                    // vectorizes.
                    crate::kernels::with_simd(
                        #[inline(always)]
                        || {
                            for r in 0..rows.len() / n.max(1) {
                                let row = &mut sums[r * block_cols..][..cols];
                                // Quads summed `x + x_offset`: the row's offset comes off.
                                if let Some(&offset) = a.offsets.get(p * MR + r) {
                                    row.iter_mut().for_each(|v| *v -= offset);
                                }
                                finish(p * MR + r, row, &mut rows[r * n + c0..][..cols]);
                            }
                        },
                    );
                }
            });
        }
    }
}
#[cfg(test)]
mod tests {
    use super::tiles::{tile_scalar, tile_scalar_quads, Avx2Tile};
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

    /// The integers of a signed `bits`-bit format.
    fn signed(bits: u32) -> RangeInclusive<i64> {
        -(1 << (bits - 1))..=(1 << (bits - 1)) - 1
    }

    fn check(m: usize, k: usize, n: usize, a_bits: u32, x: RangeInclusive<i64>, seed: u64) {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let amax = 1i64 << (a_bits - 1);
        // Extremes included: the worst case of every block is what must not overflow.
        let mut a: Vec<i64> = (0..m * k).map(|_| rng.random_range(-amax..amax)).collect();
        let mut b: Vec<i16> = (0..k * n).map(|_| rng.random_range(x.clone()) as i16).collect();
        a.iter_mut().step_by(3).for_each(|v| *v = -amax);
        let extreme = if x.start().abs() >= x.end().abs() { *x.start() } else { *x.end() };
        b.iter_mut().step_by(2).for_each(|v| *v = extreme as i16);
        let packed = PackedA::new(&a, m, k, x.clone());
        let mut c = vec![0i64; m * n];
        gemm(&packed, &b, n, &mut c);
        assert_eq!(c, naive(&a, &b, m, k, n), "{m}x{k}x{n} at {a_bits} bits x {x:?}");
        // The portable kernel computes the same integers.
        let mut bp = vec![0i32; packed.k_words * NR];
        pack_b(&packed, &Matrix { values: &b, n }, 0, 0, packed.k_words, &mut bp);
        let (kp, block, parts) = (packed.k_words, packed.block_words, packed.parts);
        let panel = &packed.panels[..kp * MR * parts];
        // Each kernel into a tile whose rows lie `ld` apart (wider than the tile), over
        // what was there: written when fresh, else added.
        let ld = NR + 3;
        let run = |kernel: &dyn Fn(TileSums)| {
            let mut fresh = vec![7i64; (MR - 1) * ld + NR];
            kernel(TileSums { values: &mut fresh, ld, fresh: true });
            let mut added = vec![7i64; (MR - 1) * ld + NR];
            kernel(TileSums { values: &mut added, ld, fresh: false });
            (fresh, added)
        };
        let scalar = run(&|out| match (packed.quads, parts) {
            (true, _) => tile_scalar_quads(panel, &bp, kp, out),
            (_, 1) => tile_scalar::<1>(panel, &bp, kp, block, out),
            _ => tile_scalar::<2>(panel, &bp, kp, block, out),
        });
        // Quads sum `x + x_offset` (`x_offset` in the padding): their rows' offsets are still in.
        let offset = |r: usize| packed.offsets.get(r).copied().unwrap_or(0);
        for (i, (&fresh, &added)) in scalar.0.iter().zip(&scalar.1).enumerate() {
            let (r, col) = (i / ld, i % ld);
            if col < NR {
                // The first tile of C; zeros past its last row, nothing past its last column.
                let want = if r < m && col < n { c[r * n + col] + offset(r) } else { offset(r) };
                assert_eq!(fresh, want, "row {r} column {col}");
                assert_eq!(added, fresh + 7);
            } else {
                assert_eq!((fresh, added), (7, 7), "outside the tile");
            }
        }
        assert_eq!(run(&|out| micro_tiles(panel, (packed.quads, parts), &bp, kp, block, out, MR)), scalar);
        // A last row panel of fewer rows: those rows the same sums.
        for rows in [1, 4, 5, 6, 7, 8, 11] {
            let part = run(&|out| micro_tiles(panel, (packed.quads, parts), &bp, kp, block, out, rows));
            let first_rows = |t: &[i64]| -> Vec<i64> { (0..rows).flat_map(|r| t[r * ld..][..NR].to_vec()).collect() };
            assert_eq!(first_rows(&part.0), first_rows(&scalar.0), "{rows} rows, fresh");
            assert_eq!(first_rows(&part.1), first_rows(&scalar.1), "{rows} rows, added");
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(v3) = pulp::x86::V3::try_new().filter(|_| !packed.quads) {
            let avx2 = run(&|mut out| {
                let rows = if parts == 1 { 6 } else { 3 };
                for row0 in (0..MR).step_by(rows) {
                    for col0 in [0, NR / 2] {
                        let (a, b, out) = (panel, &bp[..], out.reborrow(true));
                        match parts {
                            1 => pulp::Simd::vectorize(
                                v3,
                                Avx2Tile::<6, 1> { simd: v3, a, b, k_words: kp, block, row0, col0, out },
                            ),
                            _ => pulp::Simd::vectorize(
                                v3,
                                Avx2Tile::<3, 2> { simd: v3, a, b, k_words: kp, block, row0, col0, out },
                            ),
                        }
                    }
                }
            });
            assert_eq!(avx2, scalar, "AVX2 kernel");
        }
    }

    #[test]
    fn exact_at_every_width_and_odd_shape() {
        check(7, 9, 5, 16, signed(16), 1); // split weights, tails everywhere
        check(13, 4608, 37, 16, signed(16), 2); // resnet's widest fan-in, worst-case values
        check(6, 300, 16, 8, signed(16), 3); // one pass
        check(1, 1, 1, 2, signed(2), 4);
        check(20, 1000, 40, 16, signed(8), 5);
        check(5, 3, 33, 4, signed(4), 6);
        // 8-bit weights and inputs: quads where AVX-512 VNNI multiplies them, k past a
        // multiple of four, extremes of both signs.
        check(20, 1000, 40, 8, signed(8), 7);
        check(13, 147, 37, 8, signed(8), 8);
        check(12, 4608, 32, 8, signed(8), 9);
        check(3, 5, 70, 8, signed(6), 10);
        // Unsigned 8-bit inputs (a ReLU's, in a 9-bit signed format): quads without offset.
        check(20, 1000, 40, 8, 0..=255, 11);
        check(12, 4608, 32, 8, 0..=255, 12);
        check(13, 4608, 37, 16, 0..=255, 13);
        check(7, 9, 5, 8, 0..=511, 14);
    }

    #[test]
    fn quads_only_for_8_bit_weights_and_inputs_where_vnni_multiplies_them() {
        let small: Vec<i64> = (0..24).map(|i| i - 12).collect();
        assert_eq!(PackedA::new(&small, 4, 6, signed(8)).quads, multiplies_quads());
        let unsigned = PackedA::new(&small, 4, 6, 0..=255);
        assert_eq!((unsigned.quads, unsigned.x_offset), (multiplies_quads(), 0), "unsigned bytes as they are");
        assert!(unsigned.offsets.iter().all(|&o| o == 0));
        assert!(!PackedA::new(&small, 4, 6, signed(9)).quads, "9-bit inputs");
        assert!(!PackedA::new(&small, 4, 6, -1..=255).quads, "9-bit inputs");
        let wide: Vec<i64> = small.iter().map(|v| v * 11).collect();
        assert!(!PackedA::new(&wide, 4, 6, signed(8)).quads, "weights beyond 8 bits");
    }
}

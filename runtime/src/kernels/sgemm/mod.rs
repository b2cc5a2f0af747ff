//! Float GEMM for the float datapath: `C = A · B` in `f32`, `A` a layer's weights packed
//! once ([`PackedWeights`], kept beside the layer), `B` any [`Columns`] (a matrix, or a
//! convolution's windows read straight from the images), and each finished run of sums
//! handed to the layer's epilogue while it is in cache.
//!
//! Loops as in GotoBLAS, like [`super::igemm`]: columns in blocks that stay in L2, k in
//! chunks of [`KC`]; each chunk of a block of `B` is packed once into panels of [`NR`]
//! columns (a plain matrix's whole panels are read where they lie instead, see `Panel`),
//! and each column panel in turn stays in L1 while every row panel of `A` ([`MR`] rows)
//! passes over it, their chunks streaming from L2. The micro-kernel keeps an `MR` x `NR`
//! tile of sums in registers: with AVX-512, 24 registers of 16 lanes at once; with AVX2
//! and FMA, four passes of 6 x 16 (12 registers).
//!
//! Every kernel computes the same floats: each sum of a chunk starts from zero and adds its
//! products in k order with fused multiply-adds, and the chunks' sums are added in order.
//! The result does not depend on the processor, the number of threads or the blocking of
//! the columns.

use super::unfold::{pack_block, Columns};
use rayon::prelude::*;

pub mod narrow;

/// Rows of `A` per micro-tile.
pub const MR: usize = 12;
/// Columns of `B` per micro-tile (two 16-lane registers).
pub const NR: usize = 32;
/// k per chunk: a chunk of a column panel (32 KiB) stays in a core's L1 data cache while
/// the row panels' chunks (12 KiB each) pass over it.
const KC: usize = 256;
/// Column panels per block: a block of `B` (256 KiB) and its sums for a task's row panels
/// stay in a core's L2 cache. Measured on this machine's 1 MiB L2: 8 panels ran the 1x1
/// convs with short `k` 1.3x faster than blocks of 1 MiB, and the rest no slower.
const BLOCK_PANELS: usize = 8;

/// `A` (`m` x `k`, row-major) packed for [`gemm_with`]: per row panel of [`MR`] rows, per
/// k, the panel's `MR` values (zeros past the last row).
#[derive(Clone, Debug)]
pub struct PackedWeights {
    rows: usize,
    k: usize,
    panels: Vec<f32>,
}

impl PackedWeights {
    /// Pack `a`, `m` rows of `k` values.
    pub fn new(a: &[f32], m: usize, k: usize) -> PackedWeights {
        PackedWeights { rows: m, k, panels: row_panels(a, m, k, MR) }
    }

    /// Rows of `A`.
    pub fn rows(&self) -> usize {
        self.rows
    }
}

/// `a` (`m` rows of `k` values) in panels of `width` rows: per panel, per k, the panel's
/// `width` values (zeros past the last row). [`PackedWeights`] packs in panels of [`MR`],
/// the narrow GEMM's `A` in panels of [`NR`].
pub(crate) fn row_panels(a: &[f32], m: usize, k: usize, width: usize) -> Vec<f32> {
    debug_assert_eq!(a.len(), m * k);
    let stride = k * width;
    let mut panels = vec![0.0; m.div_ceil(width) * stride];
    for (p, panel) in panels.chunks_exact_mut(stride.max(1)).enumerate() {
        for r in 0..width.min(m - p * width) {
            for (j, &v) in a[(p * width + r) * k..][..k].iter().enumerate() {
                panel[j * width + r] = v;
            }
        }
    }
    panels
}

/// Rows `first..first + len` of the column panels from `panel0` on (as many as `out`
/// holds) of `b`, packed: per panel, per row, [`NR`] values (zeros past the last column).
/// A row is read across all the panels at once: a convolution's windows then copy whole
/// runs of an image row.
#[inline(always)]
fn pack_b(b: &impl Columns<f32>, panel0: usize, first: usize, len: usize, out: &mut [f32]) {
    let n = b.shape()[1];
    let panels = out.len() / (len * NR).max(1);
    let c0 = panel0 * NR;
    let cols = (panels * NR).min(n - c0);
    if let Some(values) = b.as_matrix() {
        // A plain matrix: each row's runs straight into their panels.
        let whole = cols / NR;
        for j in 0..len {
            let src = &values[(first + j) * n + c0..][..cols];
            for (p, dst) in out.chunks_exact_mut(len * NR).enumerate() {
                let dst: &mut [f32; NR] = (&mut dst[j * NR..][..NR]).try_into().expect("NR values");
                if p < whole {
                    *dst = *<&[f32; NR]>::try_from(&src[p * NR..][..NR]).expect("NR values");
                } else {
                    let tail = &src[(p * NR).min(cols)..];
                    dst[..tail.len()].copy_from_slice(tail);
                    dst[tail.len()..].fill(0.0);
                }
            }
        }
        return;
    }
    let mut row = super::scratch::take_len(panels * NR, 0.0f32);
    row[cols..].fill(0.0);
    let span = b.span(c0, cols);
    for j in 0..len {
        b.row(&span, first + j, &mut row[..cols]);
        for (dst, src) in out.chunks_exact_mut(len * NR).zip(row.chunks_exact(NR)) {
            // Arrays, not slices: a copy of constant length, inlined.
            let dst: &mut [f32; NR] = (&mut dst[j * NR..][..NR]).try_into().expect("NR values");
            *dst = *<&[f32; NR]>::try_from(src).expect("NR values");
        }
    }
}

/// `A · B` handed over in pieces: `finish(row, sums, out)` for each run of a row's sums,
/// `out` being the matching part of `c` (`A`'s rows x `n`, row-major). With `parallel`,
/// packing and row panels spread over rayon's threads; without, the caller's thread does it
/// all (the caller runs GEMMs in parallel itself).
pub fn gemm_with<T: Send>(
    a: &PackedWeights,
    b: &impl Columns<f32>,
    c: &mut [T],
    parallel: bool,
    finish: impl Fn(usize, &[f32], &mut [T]) + Sync,
) {
    let [k, n] = b.shape();
    debug_assert_eq!(k, a.k);
    debug_assert_eq!(c.len(), a.rows * n);
    if k == 0 {
        // Empty sums: every row still finished.
        let zeros = vec![0.0f32; n];
        c.chunks_mut(n.max(1)).enumerate().for_each(|(row, out)| finish(row, &zeros, out));
        return;
    }
    let kc = KC.min(k);
    let panels = n.div_ceil(NR);
    let row_panels = a.rows.div_ceil(MR);
    let per_block = BLOCK_PANELS.min(panels).max(1);
    // The block's sums, row by row: `finish` then takes a whole row of the block at once.
    let block_cols = per_block * NR;
    // Rayon splits no task shorter than this.
    let min_len = if parallel { 1 } else { usize::MAX };
    // Each task takes a run of row panels (contiguous rows of C).
    let per_task = if parallel { row_panels.div_ceil(rayon::current_num_threads()) } else { row_panels }.max(1);
    // 64-byte aligned: each register of a packed row is one cache line.
    let mut packed_buffer = super::scratch::take_len(per_block * kc * NR + 16, 0.0f32);
    let skip = packed_buffer.as_ptr().align_offset(64).min(16);
    let packed = &mut packed_buffer[skip..];
    let mut sums = super::scratch::take_len(row_panels * MR * block_cols, 0.0f32);
    // A plain matrix's whole panels are read where they lie (see `Panel`); the rest are
    // packed.
    let matrix = b.as_matrix();
    for first in (0..panels).step_by(per_block) {
        let block_panels = per_block.min(panels - first);
        let (c0, cols) = (first * NR, (block_panels * NR).min(n - first * NR));
        let in_place = if matrix.is_some() { cols / NR } else { 0 };
        for start in (0..k).step_by(kc) {
            let len = kc.min(k - start);
            let block = &mut packed[..(block_panels - in_place) * len * NR];
            pack_block(
                block,
                len * NR,
                parallel,
                #[inline(always)]
                |panel, run| pack_b(b, first + in_place + panel, start, len, run),
            );
            let block = &*block;
            let last = start + len == k;
            let tasks = c.par_chunks_mut(per_task * MR * n).zip(sums.par_chunks_mut(per_task * MR * block_cols));
            tasks.with_min_len(min_len).enumerate().for_each(|(t, (rows, sums))| {
                // One column panel at a time, every row panel of the run over it: the
                // column panel stays in L1 while the row panels' chunks stream from L2.
                for q in 0..block_panels {
                    let panel = match matrix {
                        Some(values) if q < in_place => {
                            Panel { values: &values[start * n + c0 + q * NR..], stride: n, fetch_next: true }
                        }
                        _ => Panel {
                            values: &block[(q - in_place) * len * NR..][..len * NR],
                            stride: NR,
                            fetch_next: false,
                        },
                    };
                    for (i, sums) in sums.chunks_exact_mut(MR * block_cols).enumerate() {
                        let row_panel = t * per_task + i;
                        let a_chunk = &a.panels[(row_panel * k + start) * MR..][..len * MR];
                        let rows = MR.min(a.rows.saturating_sub(row_panel * MR));
                        micro_tile(a_chunk, panel, len, start == 0, &mut sums[q * NR..], block_cols, rows);
                    }
                }
                if last {
                    // Compiled for the widest vectors the processor has, so that `finish`
                    // vectorizes.
                    super::with_simd(
                        #[inline(always)]
                        || {
                            for (i, (rows, sums)) in
                                rows.chunks_mut(MR * n).zip(sums.chunks_exact(MR * block_cols)).enumerate()
                            {
                                for r in 0..rows.len() / n.max(1) {
                                    let row = (t * per_task + i) * MR + r;
                                    finish(row, &sums[r * block_cols..][..cols], &mut rows[r * n + c0..][..cols]);
                                }
                            }
                        },
                    );
                }
            });
        }
    }
}

/// A column panel's chunk of `B` as a micro-tile reads it: packed (rows `NR` apart), or in
/// place in a plain matrix (rows `n` apart), which spares a 1x1 conv over a large map the
/// copy of its whole input (mobilenet_v2's 32 -> 16 conv on 112x112 ran 2.4x faster).
#[derive(Clone, Copy)]
struct Panel<'a> {
    /// Row `j`'s `NR` values from `j * stride` on.
    values: &'a [f32],
    stride: usize,
    /// Whether to prefetch the next panels' rows (`NR` values further along each, and
    /// further) while summing this one: in place, a row's values are a stream of their
    /// own, too many streams for the hardware's prefetcher on a long `k`.
    fetch_next: bool,
}

/// One micro-tile over a chunk of `k`: row `r` of the tile, `tile[r * ld..][..NR]`, = (or,
/// unless `fresh`, +=) the sums over `j` of `a[j * MR + r] * b[j * NR + c]`, each summed
/// from zero in `j` order; for the first `rows` rows at least (a layer's last row panel
/// may hold fewer than `MR`: the rest of the tile is left as it was or summed, never read).
fn micro_tile(a: &[f32], b: Panel, k: usize, fresh: bool, tile: &mut [f32], ld: usize, rows: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512::available() {
            // Whole groups of 4 rows: a layer of 16 output channels summed 24 before.
            return match rows {
                0..=4 => avx512::tile::<4>(a, b, k, fresh, tile, ld),
                5..=8 => avx512::tile::<8>(a, b, k, fresh, tile, ld),
                _ => avx512::tile::<MR>(a, b, k, fresh, tile, ld),
            };
        }
        if let Some(simd) = pulp::x86::V3::try_new() {
            // Four passes of 6 x 16: 12 accumulators fit AVX2's 16 registers; the second
            // half of the rows only if the panel has some there (a layer of 16 or 40 output
            // channels ends in a panel of 4).
            for (row0, col0) in [(0, 0), (0, 16), (6, 0), (6, 16)] {
                if row0 >= rows {
                    continue;
                }
                let tile = &mut *tile;
                pulp::Simd::vectorize(simd, Avx2Tile { simd, a, b, k, fresh, at: [row0, col0], tile, ld });
            }
            return;
        }
    }
    for row0 in (0..MR).step_by(4) {
        for col0 in (0..NR).step_by(8) {
            sub_tile::<4, 8, MR>(a, b, k, fresh, [row0, col0], tile, ld);
        }
    }
}

/// [`micro_tile`] for the `ROWS` x `COLS` block at `[row0, col0]`: sums kept in a local
/// array of constant size that the compiler holds in registers (compiled for the
/// caller's instruction set: inline it into a function that enables one).
#[inline(always)]
fn sub_tile<const ROWS: usize, const COLS: usize, const A_STRIDE: usize>(
    a: &[f32],
    b: Panel,
    k: usize,
    fresh: bool,
    [row0, col0]: [usize; 2],
    tile: &mut [f32],
    ld: usize,
) {
    let mut acc = [[0.0f32; COLS]; ROWS];
    for (j, aj) in a.chunks_exact(A_STRIDE).take(k).enumerate() {
        let ws: &[f32; ROWS] = aj[row0..][..ROWS].try_into().expect("ROWS weights");
        let xs: &[f32; COLS] = b.values[j * b.stride + col0..][..COLS].try_into().expect("COLS inputs");
        for (acc, &w) in acc.iter_mut().zip(ws) {
            for (s, &x) in acc.iter_mut().zip(xs) {
                *s = w.mul_add(x, *s);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let dst = &mut tile[(row0 + r) * ld + col0..][..COLS];
        if fresh {
            dst.copy_from_slice(acc);
        } else {
            dst.iter_mut().zip(acc).for_each(|(d, &s)| *d += s);
        }
    }
}

/// [`micro_tile`]'s 6 x 16 block at `at` with AVX2 and FMA: per k, two registers of `B`
/// and one broadcast weight per row, fused into 12 accumulators. Written with intrinsics:
/// from [`sub_tile`]'s arrays LLVM kept the sums on the stack, one lane at a time.
#[cfg(target_arch = "x86_64")]
struct Avx2Tile<'a> {
    simd: pulp::x86::V3,
    a: &'a [f32],
    b: Panel<'a>,
    k: usize,
    fresh: bool,
    at: [usize; 2],
    tile: &'a mut [f32],
    ld: usize,
}

#[cfg(target_arch = "x86_64")]
impl pulp::WithSimd for Avx2Tile<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        use std::arch::x86_64::__m256;
        const ROWS: usize = 6;
        let Avx2Tile { simd, a, b, k, fresh, at: [row0, col0], tile, ld } = self;
        let load = |values: &[f32]| -> __m256 {
            let lanes: [f32; 8] = values[..8].try_into().expect("8 values");
            pulp::cast(lanes)
        };
        let mut acc = [[simd.avx._mm256_setzero_ps(); 2]; ROWS];
        for (j, aj) in a.chunks_exact(MR).take(k).enumerate() {
            let bj = &b.values[j * b.stride + col0..][..16];
            let (x0, x1) = (load(bj), load(&bj[8..]));
            let ws = &aj[row0..][..ROWS];
            for r in 0..ROWS {
                let w = simd.avx._mm256_set1_ps(ws[r]);
                acc[r][0] = simd.fma._mm256_fmadd_ps(w, x0, acc[r][0]);
                acc[r][1] = simd.fma._mm256_fmadd_ps(w, x1, acc[r][1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let sums: [[f32; 8]; 2] = [pulp::cast(acc[0]), pulp::cast(acc[1])];
            let dst = &mut tile[(row0 + r) * ld + col0..][..16];
            for (d, &s) in dst.iter_mut().zip(sums.iter().flatten()) {
                *d = if fresh { s } else { *d + s };
            }
        }
    }
}

/// The AVX-512 build of [`micro_tile`] (`std::arch` rather than `pulp`, whose AVX-512
/// support is a feature of its own): detected at run time, and left unused under
/// `HASS_AVX2_ONLY`.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512 {
    use super::{sub_tile, Panel, MR, NR};

    /// Whether this processor has the instructions (detected once, cached by `std`).
    pub(super) fn available() -> bool {
        crate::kernels::avx512f_available()
    }

    /// How many panels ahead of the one being summed an in-place panel's rows are fetched
    /// into L2: the next one alone (into L1) left mobilenet_v2's 1x1 convs from 144 and 96
    /// channels to 24 on 56x56 maps waiting on rows from L3 (0.198 and 0.142 ms; 0.165 and
    /// 0.118 with these fetches, best of three interleaved profiles).
    const FETCH_FAR: usize = 3;

    /// See [`super::micro_tile`], for the first `ROWS` rows of the tile (at most [`MR`]);
    /// call only when [`available`].
    pub(super) fn tile<const ROWS: usize>(a: &[f32], b: Panel, k: usize, fresh: bool, tile: &mut [f32], ld: usize) {
        assert!(available());
        // SAFETY: the features `compiled` enables were detected just above.
        unsafe { compiled::<ROWS>(a, b, k, fresh, tile, ld) }
    }

    /// In intrinsics: [`sub_tile`] reading rows `stride` apart kept its sums on the stack
    /// (a tenth of the speed).
    #[target_feature(enable = "avx2,fma,avx512f")]
    fn compiled<const ROWS: usize>(a: &[f32], b: Panel, k: usize, fresh: bool, tile: &mut [f32], ld: usize) {
        use std::arch::x86_64::*;
        const { assert!(ROWS <= MR) };
        // No products (never from `gemm_with`, which finishes empty sums itself).
        if k == 0 {
            return sub_tile::<ROWS, NR, MR>(a, b, k, fresh, [0, 0], tile, ld);
        }
        let (ldb, fetch_next) = (b.stride, b.fetch_next);
        assert!(a.len() >= k * MR && b.values.len() >= (k - 1) * ldb + NR && tile.len() >= (ROWS - 1) * ld + NR);
        let (a, b) = (a.as_ptr(), b.values.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
        // SAFETY: the lengths asserted above bound every read and write.
        unsafe {
            for j in 0..k {
                let (x0, x1) = (_mm512_loadu_ps(b.add(j * ldb)), _mm512_loadu_ps(b.add(j * ldb + 16)));
                if fetch_next {
                    // The next panel's row into L1, the one `FETCH_FAR` panels on into L2
                    // (past the matrix's end near its last panel: a prefetch does not fault).
                    let next = b.wrapping_add(j * ldb + NR);
                    _mm_prefetch::<_MM_HINT_T0>(next.cast());
                    _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(16).cast());
                    let far = b.wrapping_add(j * ldb + FETCH_FAR * NR);
                    _mm_prefetch::<_MM_HINT_T1>(far.cast());
                    _mm_prefetch::<_MM_HINT_T1>(far.wrapping_add(16).cast());
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let w = _mm512_set1_ps(*a.add(j * MR + r));
                    acc[0] = _mm512_fmadd_ps(w, x0, acc[0]);
                    acc[1] = _mm512_fmadd_ps(w, x1, acc[1]);
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (h, &sum) in acc.iter().enumerate() {
                    let dst = tile.as_mut_ptr().add(r * ld + 16 * h);
                    let sum = if fresh { sum } else { _mm512_add_ps(_mm512_loadu_ps(dst), sum) };
                    _mm512_storeu_ps(dst, sum);
                }
            }
        }
    }

    /// See [`super::narrow`]'s micro-tile: `ROWS` pixels (packed `ROWS` per `k`) by `NR`
    /// channels, in intrinsics (the generic tile, at this stride, compiled to gathers); call
    /// only when [`available`].
    pub(super) fn narrow_tile<const ROWS: usize>(
        pixels: &[f32],
        weights: &[f32],
        k: usize,
        fresh: bool,
        tile: &mut [f32],
        ahead: &[f32],
    ) {
        assert!(available());
        assert!(pixels.len() >= k * ROWS && weights.len() >= k * NR && tile.len() >= ROWS * NR);
        // SAFETY: the features `narrow_compiled` enables were detected just above, and the
        // lengths checked there bound every access it makes (prefetches of `ahead` only
        // inside it).
        unsafe { narrow_compiled::<ROWS>(pixels, weights, k, fresh, tile, ahead) }
    }

    #[target_feature(enable = "avx2,fma,avx512f")]
    unsafe fn narrow_compiled<const ROWS: usize>(
        pixels: &[f32],
        weights: &[f32],
        k: usize,
        fresh: bool,
        tile: &mut [f32],
        ahead: &[f32],
    ) {
        use std::arch::x86_64::*;
        let (x, w) = (pixels.as_ptr(), weights.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
        // A cache line of `ahead` per k, over the first k (the rest after the loop).
        let lines = ahead.len().div_ceil(16);
        for j in 0..k {
            if j < lines {
                _mm_prefetch::<_MM_HINT_T1>(ahead.as_ptr().add(16 * j).cast());
            }
            let (w0, w1) = (_mm512_loadu_ps(w.add(j * NR)), _mm512_loadu_ps(w.add(j * NR + 16)));
            for (r, acc) in acc.iter_mut().enumerate() {
                // The pixel times the weight plus the sum: the product `sub_tile` fuses.
                let p = _mm512_set1_ps(*x.add(j * ROWS + r));
                acc[0] = _mm512_fmadd_ps(p, w0, acc[0]);
                acc[1] = _mm512_fmadd_ps(p, w1, acc[1]);
            }
        }
        for line in k..lines {
            _mm_prefetch::<_MM_HINT_T1>(ahead.as_ptr().add(16 * line).cast());
        }
        for (r, acc) in acc.iter().enumerate() {
            for (h, &sum) in acc.iter().enumerate() {
                let dst = tile.as_mut_ptr().add(r * NR + 16 * h);
                let sum = if fresh { sum } else { _mm512_add_ps(_mm512_loadu_ps(dst), sum) };
                _mm512_storeu_ps(dst, sum);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::unfold::Matrix;

    /// Each sum as the kernels compute it: fused multiply-adds in k order from zero, per
    /// chunk of `KC`, the chunks added in order.
    fn reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        for r in 0..m {
            for j in 0..n {
                let mut total = 0.0f32;
                for (chunk, start) in (0..k).step_by(KC).enumerate() {
                    let sum = (start..(start + KC).min(k)).fold(0.0f32, |s, i| a[r * k + i].mul_add(b[i * n + j], s));
                    total = if chunk == 0 { sum } else { total + sum };
                }
                c[r * n + j] = total;
            }
        }
        c
    }

    fn check(m: usize, k: usize, n: usize, seed: u64) {
        // Values with few significant bits, some zeros, both signs.
        let value = |i: usize| ((i as u64 * 2654435761 + seed) % 23) as f32 / 8.0 - 1.25;
        let a: Vec<f32> = (0..m * k).map(value).collect();
        let b: Vec<f32> = (0..k * n).map(|i| value(i + 7)).collect();
        let want = reference(&a, &b, m, k, n);
        let packed = PackedWeights::new(&a, m, k);
        for parallel in [false, true] {
            let mut c = vec![f32::NAN; m * n];
            gemm_with(&packed, &Matrix { values: &b, n }, &mut c, parallel, |_, sums, out| out.copy_from_slice(sums));
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&c), bits(&want), "{m}x{k}x{n}, parallel {parallel}");
        }
    }

    #[test]
    fn every_shape_sums_as_the_reference() {
        check(1, 1, 1, 1);
        check(7, 9, 5, 2); // one partial tile
        check(13, 200, 33, 3); // two chunks, partial row and column panels
        check(64, 576, 3136, 4); // resnet's first 3x3 block: several column blocks
        check(512, 4608, 49, 5); // its widest fan-in on a 7x7 map
        check(24, 16, 1000, 6);
    }

    #[test]
    fn rows_without_products_are_finished_from_zero() {
        let mut c = vec![f32::NAN; 3 * 4];
        let empty = PackedWeights::new(&[], 3, 0);
        gemm_with(&empty, &Matrix { values: &[], n: 4 }, &mut c, true, |row, sums, out| {
            out.iter_mut().zip(sums).for_each(|(o, &s)| *o = s + row as f32)
        });
        assert_eq!(c, [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]);
    }

    #[test]
    fn the_epilogue_sees_each_row_once_per_column() {
        let (m, k, n) = (25, 30, 70);
        let a = vec![1.0f32; m * k];
        let b = vec![1.0f32; k * n];
        let mut c = vec![0u32; m * n];
        gemm_with(&PackedWeights::new(&a, m, k), &Matrix { values: &b, n }, &mut c, true, |row, sums, out| {
            for (o, &s) in out.iter_mut().zip(sums) {
                *o += 1000 * row as u32 + s as u32;
            }
        });
        for (i, &v) in c.iter().enumerate() {
            assert_eq!(v, 1000 * (i / n) as u32 + k as u32, "element {i}");
        }
    }

    /// The AVX2 and portable kernels compute the floats the AVX-512 one does, from a packed
    /// panel and from one read in place (rows further apart than a panel is wide, the next
    /// panel prefetched), fresh and added to a tile's sums.
    #[test]
    fn every_kernel_computes_the_same_floats() {
        let k = 37;
        let a: Vec<f32> = (0..k * MR).map(|i| (i as f32 * 0.37).sin()).collect();
        let packed: Vec<f32> = (0..k * NR).map(|i| (i as f32 * 0.11).cos()).collect();
        // The same panel as columns 40.. of a matrix 77 columns wide.
        let stride = 77;
        let mut matrix = vec![f32::NAN; k * stride];
        for (row, values) in matrix.chunks_exact_mut(stride).zip(packed.chunks_exact(NR)) {
            row[40..][..NR].copy_from_slice(values);
        }
        let panels = [
            Panel { values: &packed, stride: NR, fetch_next: false },
            Panel { values: &matrix[40..], stride, fetch_next: true },
        ];
        for fresh in [true, false] {
            let start: Vec<f32> = (0..MR * NR).map(|i| i as f32 * 0.5).collect();
            let mut portable: [f32; MR * NR] = start.clone().try_into().expect("a tile");
            for row0 in (0..MR).step_by(4) {
                for col0 in (0..NR).step_by(8) {
                    sub_tile::<4, 8, MR>(&a, panels[0], k, fresh, [row0, col0], &mut portable, NR);
                }
            }
            for panel in panels {
                let mut dispatched: [f32; MR * NR] = start.clone().try_into().expect("a tile");
                micro_tile(&a, panel, k, fresh, &mut dispatched, NR, MR);
                assert_eq!(portable.map(f32::to_bits), dispatched.map(f32::to_bits), "stride {}", panel.stride);
                // A last row panel of fewer rows: those rows the same floats.
                for rows in [1, 4, 5, 8, 11] {
                    let mut part: [f32; MR * NR] = start.clone().try_into().expect("a tile");
                    micro_tile(&a, panel, k, fresh, &mut part, NR, rows);
                    let (want, got) = (&portable[..rows * NR], &part[..rows * NR]);
                    assert!(want.iter().zip(got).all(|(w, g)| w.to_bits() == g.to_bits()), "{rows} rows");
                }
                let mut general: [f32; MR * NR] = start.clone().try_into().expect("a tile");
                for row0 in (0..MR).step_by(4) {
                    for col0 in (0..NR).step_by(8) {
                        sub_tile::<4, 8, MR>(&a, panel, k, fresh, [row0, col0], &mut general, NR);
                    }
                }
                assert_eq!(portable.map(f32::to_bits), general.map(f32::to_bits), "stride {}", panel.stride);
                #[cfg(target_arch = "x86_64")]
                if let Some(simd) = pulp::x86::V3::try_new() {
                    let mut avx2: [f32; MR * NR] = start.clone().try_into().expect("a tile");
                    for at in [[0, 0], [0, 16], [6, 0], [6, 16]] {
                        let tile = Avx2Tile { simd, a: &a, b: panel, k, fresh, at, tile: &mut avx2, ld: NR };
                        pulp::Simd::vectorize(simd, tile);
                    }
                    assert_eq!(portable.map(f32::to_bits), avx2.map(f32::to_bits), "stride {}", panel.stride);
                }
            }
        }
    }
}

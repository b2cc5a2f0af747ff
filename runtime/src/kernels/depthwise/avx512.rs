//! The AVX-512 builds of the depthwise loops, in explicit vectors: a channel's output rows
//! ([`super::channel`]; a whole filter's grid, [`grid_f32`]) and, channels last, a row of
//! output pixels ([`super::pixel_channels`]). Left to the compiler, the generic loops'
//! blocks of sums were split into pieces of 8, 4, 2 and 1 lanes with shuffles between them
//! (0.9 of the time on a 14-column map).
//!
//! Each output element is summed exactly as the portable loops sum it: from zero, one
//! product of each tap in turn, each fused with its addition. Several rows, pixels or
//! blocks of 16 (`f64`: 8) lanes are summed at once so that enough additions are in flight
//! to hide their latency. A channel's rows read whole vectors, up to a vector less one past
//! a row's end (inside the padded copy, whose slack holds them), their stores masked;
//! channels last, a short block is masked, so nothing is read or written beyond it.

use std::arch::x86_64::*;

/// Whether this processor has the instructions (and `HASS_AVX2_ONLY` leaves them in use).
pub(super) use crate::kernels::avx512::available;

/// The lanes of one element type: what the kernel needs of a 512-bit vector of it.
trait Lanes: Copy {
    type V: Copy;
    /// Which lanes an access touches.
    type Mask: Copy;
    /// Elements per vector.
    const N: usize;
    /// The first `n` lanes (at most [`Self::N`]).
    fn mask(n: usize) -> Self::Mask;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(v: Self) -> Self::V;
    /// The elements at `p` in the lanes of `m`; the others zero, unread.
    unsafe fn load(p: *const Self, m: Self::Mask) -> Self::V;
    /// The [`Self::N`] elements at `p`, unmasked: on Intel's cores a masked load also takes
    /// a slot of the ports that multiply and add, where a plain one takes none (the direct
    /// conv's whole tiles, loaded unmasked, took a tenth off its 56x56 layers).
    unsafe fn load_whole(p: *const Self) -> Self::V;
    /// `acc + w * x`, rounded once (a fused multiply-add, as the portable loops').
    unsafe fn add_product(acc: Self::V, w: Self::V, x: Self::V) -> Self::V;
    /// The lanes of `m` of `v` to `p`.
    unsafe fn store_masked(p: *mut Self, v: Self::V, m: Self::Mask);
    /// The [`Self::N`] elements of `v` to `p`.
    unsafe fn store_whole(p: *mut Self, v: Self::V);
    /// `p[i * stride]` for the lanes `i` of `m`; the others zero, unread.
    unsafe fn gather(p: *const Self, stride: usize, m: Self::Mask) -> Self::V;
    /// One square of [`transpose_squares`], `n` = `[ni, nj]` (each at most [`Self::N`]):
    /// `ni` rows of `nj` values at `src`, `src_stride` apart, to `nj` columns of `ni` at
    /// `dst`, `dst_stride` apart. Each row one masked load, each column one masked store,
    /// turned in registers ([`turn16`], [`turn8`]); rows past the last load nothing (a
    /// masked-off load touches no memory).
    unsafe fn square(src: *const Self, src_stride: usize, dst: *mut Self, dst_stride: usize, n: [usize; 2]);
}

impl Lanes for f32 {
    type V = __m512;
    type Mask = __mmask16;
    const N: usize = 16;
    #[inline]
    fn mask(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn zero() -> __m512 {
        _mm512_setzero_ps()
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn splat(v: f32) -> __m512 {
        _mm512_set1_ps(v)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load(p: *const f32, m: __mmask16) -> __m512 {
        _mm512_maskz_loadu_ps(m, p)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load_whole(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn add_product(acc: __m512, w: __m512, x: __m512) -> __m512 {
        _mm512_fmadd_ps(w, x, acc)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store_masked(p: *mut f32, v: __m512, m: __mmask16) {
        _mm512_mask_storeu_ps(p, m, v)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store_whole(p: *mut f32, v: __m512) {
        _mm512_storeu_ps(p, v)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn gather(p: *const f32, stride: usize, m: __mmask16) -> __m512 {
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let at = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(stride as i32));
        _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), m, at, p)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn square(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize, [ni, nj]: [usize; 2]) {
        let (row, column) = (Self::mask(nj), Self::mask(ni));
        let rows = std::array::from_fn(|i| {
            Self::load(src.wrapping_add(i * src_stride), if i < ni { row } else { Self::mask(0) })
        });
        for (j, v) in turn16(rows).into_iter().enumerate().take(nj) {
            Self::store_masked(dst.add(j * dst_stride), v, column);
        }
    }
}

impl Lanes for f64 {
    type V = __m512d;
    type Mask = __mmask8;
    const N: usize = 8;
    #[inline]
    fn mask(n: usize) -> __mmask8 {
        ((1u32 << n) - 1) as __mmask8
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn zero() -> __m512d {
        _mm512_setzero_pd()
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn splat(v: f64) -> __m512d {
        _mm512_set1_pd(v)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load(p: *const f64, m: __mmask8) -> __m512d {
        _mm512_maskz_loadu_pd(m, p)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load_whole(p: *const f64) -> __m512d {
        _mm512_loadu_pd(p)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn add_product(acc: __m512d, w: __m512d, x: __m512d) -> __m512d {
        _mm512_fmadd_pd(w, x, acc)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store_masked(p: *mut f64, v: __m512d, m: __mmask8) {
        _mm512_mask_storeu_pd(p, m, v)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store_whole(p: *mut f64, v: __m512d) {
        _mm512_storeu_pd(p, v)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn gather(p: *const f64, stride: usize, m: __mmask8) -> __m512d {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let at = _mm256_mullo_epi32(lanes, _mm256_set1_epi32(stride as i32));
        _mm512_mask_i32gather_pd::<8>(_mm512_setzero_pd(), m, at, p)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn square(src: *const f64, src_stride: usize, dst: *mut f64, dst_stride: usize, [ni, nj]: [usize; 2]) {
        let (row, column) = (Self::mask(nj), Self::mask(ni));
        let rows = std::array::from_fn(|i| {
            Self::load(src.wrapping_add(i * src_stride), if i < ni { row } else { Self::mask(0) })
        });
        for (j, v) in turn8(rows).into_iter().enumerate().take(nj) {
            Self::store_masked(dst.add(j * dst_stride), v, column);
        }
    }
}

/// [`super::Padded::fill`] of an `f32` plane, stride 1 or 2, in masked vectors of 16
/// lanes (stride 2: two loads and two permutes per 16 pairs). The same values land in the
/// same places. Call only when [`available`].
pub(super) fn fill_f32(padded: &super::Padded, plane: &[f32], rows: &mut [f32]) {
    assert!(available() && padded.stride[1] <= 2);
    let [h, w] = padded.hw;
    assert!(plane.len() >= h * w && rows.len() >= padded.rows * padded.row_len(), "whole plane and copy");
    // SAFETY: the features `fill_in` enables were just detected; it reads input rows
    // inside `plane` and writes, per padded row, inside that row's `row_len` values (each
    // run clipped to its phase), which the assertion puts inside `rows`.
    unsafe { fill_in(padded, plane, rows) }
}

#[target_feature(enable = "avx512f")]
unsafe fn fill_in(padded: &super::Padded, plane: &[f32], rows: &mut [f32]) {
    let w = padded.hw[1];
    let (left, len) = (padded.left, padded.phase_len);
    for py in 0..padded.rows {
        let Some((dst, src)) = padded.row_source(plane, rows, py) else { continue };
        let (dst, src, readable) = (dst.as_mut_ptr(), src.as_ptr(), src.len());
        if padded.stride[1] == 1 {
            let std::ops::Range { start, end } = padded.unit_stride_run();
            for i in (0..end - start).step_by(16) {
                let m = f32::mask((end - start - i).min(16));
                _mm512_mask_storeu_ps(dst.add(start + i), m, _mm512_maskz_loadu_ps(m, src.add(i)));
            }
            continue;
        }
        // The two phases: even padded columns first, then odd; input column `x` lands in
        // phase `(x + left) % 2`.
        let (even, odd) = (dst, dst.add(len));
        let (first, second) = if left.is_multiple_of(2) { (even, odd) } else { (odd, even) };
        let (at_first, at_second, pairs) = super::pair_geometry(w, left, len);
        // Values of `plane` from this row's start on: pairs whose loads stay inside it are
        // read in whole vectors, their lanes past the row dropped by the stores (the masked
        // loads stalled on their masks; one thread, mobilenet_v2's 3x3/2 over 96 channels
        // of 112x112 0.35-0.37 -> 0.33-0.35 ms, over 144 of 56x56 0.129-0.131 ->
        // 0.122-0.127). At stride 1 whole loads were no faster.
        let lanes_even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let lanes_odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        for i in (0..pairs).step_by(16) {
            let n = (pairs - i).min(16);
            let (a, b) = if 2 * i + 32 <= readable {
                (_mm512_loadu_ps(src.add(2 * i)), _mm512_loadu_ps(src.add(2 * i + 16)))
            } else {
                (
                    _mm512_maskz_loadu_ps(f32::mask((2 * n).min(16)), src.add(2 * i)),
                    _mm512_maskz_loadu_ps(f32::mask((2 * n).saturating_sub(16)), src.add(2 * i + 16)),
                )
            };
            let (even_lanes, odd_lanes) =
                (_mm512_permutex2var_ps(a, lanes_even, b), _mm512_permutex2var_ps(a, lanes_odd, b));
            if n == 16 {
                _mm512_storeu_ps(first.add(at_first + i), even_lanes);
                _mm512_storeu_ps(second.add(at_second + i), odd_lanes);
            } else {
                _mm512_mask_storeu_ps(first.add(at_first + i), f32::mask(n), even_lanes);
                _mm512_mask_storeu_ps(second.add(at_second + i), f32::mask(n), odd_lanes);
            }
        }
        // An odd last value (or the first past a copy too short for its pair).
        if 2 * pairs < w && at_first + pairs < len {
            *first.add(at_first + pairs) = *src.add(2 * pairs);
        }
    }
}

/// `dst` (whole output rows, `ow` columns each) from the padded copy `rows`: output row `y`,
/// column `x` sums `tap * rows[y * row_step + offset + x]` over `live`. Call only when
/// [`available`].
pub(super) fn channel_f32(live: &[(usize, f32)], rows: &[f32], row_step: usize, dst: &mut [f32], ow: usize) {
    check(live, rows.len(), row_step, dst.len(), ow);
    // SAFETY: the features `channel_in` enables were detected (the caller's promise, checked
    // here), and `check` bounds every index it reads and writes.
    assert!(available());
    unsafe { channel_in(live, rows, row_step, dst, ow) }
}

/// [`channel_f32`] in `f64`.
pub(super) fn channel_f64(live: &[(usize, f64)], rows: &[f64], row_step: usize, dst: &mut [f64], ow: usize) {
    check(live, rows.len(), row_step, dst.len(), ow);
    assert!(available());
    // SAFETY: as in `channel_f32`.
    unsafe { channel_in(live, rows, row_step, dst, ow) }
}

/// Every read stays in `rows` (the last row's furthest tap's run of `ow` columns, rounded
/// up to whole vectors of `T`, ends in it) and `dst` is whole rows: the kernel reads and
/// writes nothing else.
fn check<T: Lanes>(live: &[(usize, T)], rows: usize, row_step: usize, dst: usize, ow: usize) {
    assert!(ow > 0 && dst.is_multiple_of(ow), "whole output rows");
    let oh = dst / ow;
    let furthest = live.iter().map(|&(offset, _)| offset).max().unwrap_or(0);
    let read = ow.next_multiple_of(T::N);
    assert!(oh == 0 || (oh - 1) * row_step + furthest + read <= rows, "taps read inside the padded copy");
}

#[target_feature(enable = "avx512f")]
unsafe fn channel_in<T: Lanes>(live: &[(usize, T)], rows: &[T], row_step: usize, dst: &mut [T], ow: usize) {
    let oh = dst.len() / ow;
    // Rows and blocks of columns at once: 8 sums in flight, as many as the additions'
    // latency needs (a map one block wide, 14x14, ran 4 rows at once and its last rows one
    // by one: its channels waited on their chains of additions); a row's last tile runs
    // only the blocks that reach into it.
    let (rows_at_once, blocks) = match ow.div_ceil(T::N) {
        1 => (8, 1),
        2 => (4, 2),
        _ => (2, 4),
    };
    let width = blocks * T::N;
    let mut y = 0;
    while y + rows_at_once <= oh {
        for x in (0..ow).step_by(width) {
            // A row's last tile may have fewer blocks (those wholly past its end run not at all).
            match (blocks, (ow - x).div_ceil(T::N)) {
                (1, _) => tile::<T, 8, 1>(live, rows, row_step, dst, ow, y, x),
                (2, _) => tile::<T, 4, 2>(live, rows, row_step, dst, ow, y, x),
                (_, 1) => tile::<T, 2, 1>(live, rows, row_step, dst, ow, y, x),
                (_, 2) => tile::<T, 2, 2>(live, rows, row_step, dst, ow, y, x),
                (_, 3) => tile::<T, 2, 3>(live, rows, row_step, dst, ow, y, x),
                _ => tile::<T, 2, 4>(live, rows, row_step, dst, ow, y, x),
            }
        }
        y += rows_at_once;
    }
    // The rows left over: one block wide, all at once; wider, one by one.
    if blocks == 1 {
        match oh - y {
            7 => tile::<T, 7, 1>(live, rows, row_step, dst, ow, y, 0),
            6 => tile::<T, 6, 1>(live, rows, row_step, dst, ow, y, 0),
            5 => tile::<T, 5, 1>(live, rows, row_step, dst, ow, y, 0),
            4 => tile::<T, 4, 1>(live, rows, row_step, dst, ow, y, 0),
            3 => tile::<T, 3, 1>(live, rows, row_step, dst, ow, y, 0),
            2 => tile::<T, 2, 1>(live, rows, row_step, dst, ow, y, 0),
            1 => tile::<T, 1, 1>(live, rows, row_step, dst, ow, y, 0),
            _ => {}
        }
        return;
    }
    for y in y..oh {
        for x in (0..ow).step_by(width) {
            match (ow - x).div_ceil(T::N) {
                1 => tile::<T, 1, 1>(live, rows, row_step, dst, ow, y, x),
                2 => tile::<T, 1, 2>(live, rows, row_step, dst, ow, y, x),
                3 => tile::<T, 1, 3>(live, rows, row_step, dst, ow, y, x),
                _ => tile::<T, 1, 4>(live, rows, row_step, dst, ow, y, x),
            }
        }
    }
}

/// `R` output rows from `y` on, `B` blocks of columns from `x` on, the last of them maybe
/// short. Every block loads whole vectors (see `Lanes::load_whole`), reading up to a vector
/// less one past the row's end; the stores are masked, so the sums of those lanes are
/// dropped.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn tile<T: Lanes, const R: usize, const B: usize>(
    live: &[(usize, T)],
    rows: &[T],
    row_step: usize,
    dst: &mut [T],
    ow: usize,
    y: usize,
    x: usize,
) {
    let mut acc = [[T::zero(); B]; R];
    let src = rows.as_ptr();
    for &(offset, tap) in live {
        let w = T::splat(tap);
        for (r, sums) in acc.iter_mut().enumerate() {
            let at = src.add((y + r) * row_step + offset + x);
            for (b, sum) in sums.iter_mut().enumerate() {
                *sum = T::add_product(*sum, w, T::load_whole(at.add(b * T::N)));
            }
        }
    }
    store_tile(&acc, dst, ow, (y, x));
}

/// A tile's sums, `R` output rows of `B` blocks from `(y, x)` on, into `dst` (rows of
/// `ow`), each block's lanes past `ow` left out.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_tile<T: Lanes, const R: usize, const B: usize>(
    acc: &[[T::V; B]; R],
    dst: &mut [T],
    ow: usize,
    (y, x): (usize, usize),
) {
    let out = dst.as_mut_ptr();
    for (r, sums) in acc.iter().enumerate() {
        for (b, &sum) in sums.iter().enumerate() {
            let mask = T::mask(ow.saturating_sub(x + b * T::N).min(T::N));
            T::store_masked(out.add((y + r) * ow + x + b * T::N), sum, mask);
        }
    }
}

/// [`super::channel`] for a filter whose taps are all live, 3x3 or 5x5 without dilation,
/// output rows `stride` padded rows apart: output row `y`, column `x` sums `taps[ky * k +
/// kx] * rows[(y * stride + ky) * row_len + cols[kx] + x]` over the taps in row-major
/// order. Returns `false` (nothing written) for any other filter. Call only when
/// [`available`].
pub(super) fn grid_f32(grid: super::Grid<f32>, rows: &[f32], dst: &mut [f32], ow: usize) -> bool {
    grid_checked(grid, rows, dst, ow)
}

/// [`grid_f32`] in `f64`.
pub(super) fn grid_f64(grid: super::Grid<f64>, rows: &[f64], dst: &mut [f64], ow: usize) -> bool {
    grid_checked(grid, rows, dst, ow)
}

grid_kernels!("avx512f", Lanes, 1 | 2, 2);

pixels_kernels!("avx512f", Lanes);

/// `dst[j * dst_stride + i] = src[i * src_stride + j]` for `i < rows`, `j < cols`: a
/// strided transpose, in squares of 16 x 16 (fewer columns masked off) where there are 16
/// rows or more, else `rows` values at a time gathered down a column. Squares of a few
/// columns too: a channel block's rows of a 7x7 or 14x14 map (32 channels of 7 or 14
/// pixels) were gathered, and on AMD's Zen 4 the gathers took 40 % of a small map's
/// depthwise layer (3x3 over 960 channels of 7x7: 58 -> 50 us, over 384 of 14x14: 68 ->
/// 50-61). Call only when [`available`].
pub(super) fn transpose_f32(
    src: &[f32],
    (rows, cols, src_stride): (usize, usize, usize),
    dst: &mut [f32],
    dst_stride: usize,
) {
    transpose(src, (rows, cols, src_stride), dst, dst_stride)
}

/// [`transpose_f32`] in `f64`: squares of 8 x 8 ([`turn8`]) where there are 8 rows or more
/// (the 16-bit datapath's depthwise layers on small maps widen into `f64` and transpose
/// those).
pub(super) fn transpose_f64(
    src: &[f64],
    (rows, cols, src_stride): (usize, usize, usize),
    dst: &mut [f64],
    dst_stride: usize,
) {
    transpose(src, (rows, cols, src_stride), dst, dst_stride)
}

/// [`transpose_f32`] for either element type: squares where there are [`Lanes::N`] rows
/// or more, else gathers.
fn transpose<T: Lanes>(src: &[T], (rows, cols, src_stride): (usize, usize, usize), dst: &mut [T], dst_stride: usize) {
    check_transpose(src.len(), (rows, cols, src_stride), dst.len(), dst_stride);
    assert!(available());
    // SAFETY: the features `transpose_in` and `transpose_squares` enable were just
    // detected, and `check_transpose` bounds every index they read and write.
    unsafe {
        if rows >= T::N {
            transpose_squares(src, (rows, cols, src_stride), dst, dst_stride)
        } else {
            transpose_in(src, (rows, cols, src_stride), dst, dst_stride)
        }
    }
}

/// [`super::check_transpose`], and the gathers' 32-bit offsets hold a block's reach.
fn check_transpose(src: usize, (rows, cols, src_stride): (usize, usize, usize), dst: usize, dst_stride: usize) {
    super::check_transpose(src, (rows, cols, src_stride), dst, dst_stride);
    assert!(src_stride.saturating_mul(16) < i32::MAX as usize, "gather offsets within 32 bits");
}

/// [`transpose`] in squares of [`Lanes::N`] x [`Lanes::N`] ([`Lanes::square`]): on Intel's
/// cores a gather of 16 values took about 9 cycles, a 16 x 16 square's 64 shuffles about
/// as long as 7 of them.
#[target_feature(enable = "avx512f")]
unsafe fn transpose_squares<T: Lanes>(
    src: &[T],
    (rows, cols, src_stride): (usize, usize, usize),
    dst: &mut [T],
    dst_stride: usize,
) {
    for i0 in (0..rows).step_by(T::N) {
        let ni = (rows - i0).min(T::N);
        for j0 in (0..cols).step_by(T::N) {
            let nj = (cols - j0).min(T::N);
            let from = src.as_ptr().wrapping_add(i0 * src_stride + j0);
            T::square(from, src_stride, dst.as_mut_ptr().add(j0 * dst_stride + i0), dst_stride, [ni, nj]);
        }
    }
}

/// The 16 x 16 square of `rows` transposed: lane `i` of vector `j` is lane `j` of row `i`.
/// Pairs of rows interleaved by values, then by pairs, then their 128-bit lanes gathered.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn turn16(rows: [__m512; 16]) -> [__m512; 16] {
    let pd = _mm512_castps_pd;
    let ps = _mm512_castpd_ps;
    // t[2i], t[2i + 1]: rows 2i and 2i + 1 interleaved (columns 4L, 4L + 1; 4L + 2, 4L + 3
    // in 128-bit lane L).
    let t: [__m512; 16] = std::array::from_fn(|k| {
        let (a, b) = (rows[k & !1], rows[k | 1]);
        if k % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    // u[4g + k]: in lane L, column 4L + k of rows 4g..4g + 4.
    let u: [__m512; 16] = std::array::from_fn(|n| {
        let (g, k) = (n / 4, n % 4);
        let (a, c) = (pd(t[4 * g + k / 2]), pd(t[4 * g + 2 + k / 2]));
        ps(if k % 2 == 0 { _mm512_unpacklo_pd(a, c) } else { _mm512_unpackhi_pd(a, c) })
    });
    // v[8h + k], k < 4: columns k and 8 + k of rows 8h..8h + 8; v[8h + 4 + k]: columns 4 + k
    // and 12 + k.
    let v: [__m512; 16] = std::array::from_fn(|n| {
        let (h, k) = (n / 8, n % 4);
        let (a, b) = (u[8 * h + k], u[8 * h + 4 + k]);
        if n % 8 < 4 {
            _mm512_shuffle_f32x4::<0x88>(a, b)
        } else {
            _mm512_shuffle_f32x4::<0xdd>(a, b)
        }
    });
    std::array::from_fn(|j| {
        let (a, b) = (v[j % 8], v[8 + j % 8]);
        if j < 8 {
            _mm512_shuffle_f32x4::<0x88>(a, b)
        } else {
            _mm512_shuffle_f32x4::<0xdd>(a, b)
        }
    })
}

/// The 8 x 8 square of `rows` transposed: lane `i` of vector `j` is lane `j` of row `i`.
/// Pairs of rows interleaved, then their 128-bit lanes gathered twice.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn turn8(rows: [__m512d; 8]) -> [__m512d; 8] {
    // t[2p]: columns 2L of rows 2p, 2p + 1 in 128-bit lane L; t[2p + 1]: columns 2L + 1.
    let t: [__m512d; 8] = std::array::from_fn(|k| {
        let (a, b) = (rows[k & !1], rows[k | 1]);
        if k % 2 == 0 {
            _mm512_unpacklo_pd(a, b)
        } else {
            _mm512_unpackhi_pd(a, b)
        }
    });
    // u[4h + m]: rows 4h..4h + 4 of column c(m) and of c(m) + 4, c = [0, 2, 1, 3].
    let u: [__m512d; 8] = std::array::from_fn(|n| {
        let (h, m) = (n / 4, n % 4);
        let (a, b) = (t[4 * h + m / 2], t[4 * h + 2 + m / 2]);
        if m % 2 == 0 {
            _mm512_shuffle_f64x2::<0x88>(a, b)
        } else {
            _mm512_shuffle_f64x2::<0xdd>(a, b)
        }
    });
    // Column j: rows 0..4 from u[m], rows 4..8 from u[4 + m], the low or high half.
    std::array::from_fn(|j| {
        let m = [0, 2, 1, 3][j % 4];
        if j < 4 {
            _mm512_shuffle_f64x2::<0x88>(u[m], u[4 + m])
        } else {
            _mm512_shuffle_f64x2::<0xdd>(u[m], u[4 + m])
        }
    })
}

#[target_feature(enable = "avx512f")]
unsafe fn transpose_in<T: Lanes>(
    src: &[T],
    (rows, cols, src_stride): (usize, usize, usize),
    dst: &mut [T],
    dst_stride: usize,
) {
    for i0 in (0..rows).step_by(T::N) {
        let n = T::mask((rows - i0).min(T::N));
        let from = src.as_ptr().add(i0 * src_stride);
        for j in 0..cols {
            T::store_masked(dst.as_mut_ptr().add(j * dst_stride + i0), T::gather(from.add(j), src_stride, n), n);
        }
    }
}

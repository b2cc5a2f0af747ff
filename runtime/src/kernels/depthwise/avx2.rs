//! The AVX2 and FMA builds of the depthwise loops, for processors without AVX-512: the
//! channels-last layout's rows of output pixels ([`pixels_f32`]) and its transposes, the
//! channel-by-channel layout's padded copies ([`fill_f32`]), and the whole-grid kernel
//! ([`super::GridKernel`], written in `grid.rs`) at stride 1 only: at stride 2 it ran at
//! 0.8x the row-at-a-time loop (3x3/2 over 144 channels of 56x56, one thread: 0.37 against
//! 0.28 ms; with one vector of columns per tile, no faster than it); at stride 1, 3x3 over
//! 384 channels of 14x14 0.156 -> 0.123 ms and 5x5 over 240 of 14x14 0.155 -> 0.132.
//!
//! Its tiles are one vector of columns wide: two (8 sums, the 9 taps of a 3x3 and the
//! loaded values) overflowed AVX2's 16 registers, and the compiler kept the taps and sums on
//! the stack. One thread, AMD's Zen 3, 3x3 over 16 channels of 56x56 (in L2), the copies,
//! the tiles and the short stores ([`Lanes::store_first`]) together: 2.81 -> 1.9 us per
//! channel, 28x28 0.93 -> 0.58, 112x112 9.7 -> 7.2; at stride 2 (the copies and short
//! stores) 56x56 1.91 -> 1.31, 112x112 5.1 -> 4.5.

use std::arch::x86_64::*;

pub(super) use crate::kernels::avx2_available as available;

/// What the kernel needs of a 256-bit vector of one element type.
trait Lanes: Copy {
    type V: Copy;
    /// Elements per vector.
    const N: usize;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(v: Self) -> Self::V;
    /// The first `n` lanes (at most [`Self::N`]), as `maskload` and `maskstore` take them.
    unsafe fn mask(n: usize) -> __m256i;
    /// The elements at `p` in the lanes of `m`; the others zero, unread.
    unsafe fn load(p: *const Self, m: __m256i) -> Self::V;
    /// The lanes of `m` of `v` to `p`.
    unsafe fn store_masked(p: *mut Self, v: Self::V, m: __m256i);
    /// The [`Self::N`] elements at `p`.
    unsafe fn load_whole(p: *const Self) -> Self::V;
    /// `acc + w * x`, rounded once.
    unsafe fn add_product(acc: Self::V, w: Self::V, x: Self::V) -> Self::V;
    /// The [`Self::N`] elements of `v` to `p`.
    unsafe fn store_whole(p: *mut Self, v: Self::V);
    /// The first `n` elements of `v` (fewer than [`Self::N`]) to `p`, in stores of halves,
    /// quarters and eighths of the vector: a masked store is slow on AMD's cores, and a copy
    /// through a buffer of a length known only at run time was a call to `memmove` (a fifth
    /// of a 3x3/2 layer's time on 56x56 maps).
    unsafe fn store_first(p: *mut Self, v: Self::V, n: usize);
    /// One square of [`transpose_squares`]: [`Self::N`] rows of `nj` values (at most
    /// [`Self::N`]) at `src`, `src_stride` apart, to `nj` columns of [`Self::N`] at `dst`,
    /// `dst_stride` apart. A short row is one masked load (AVX2's masked loads are cheap
    /// on AMD's cores, its masked stores are not: a square's columns are always whole).
    unsafe fn square(src: *const Self, src_stride: usize, dst: *mut Self, dst_stride: usize, nj: usize);
}

impl Lanes for f32 {
    type V = __m256;
    const N: usize = 8;
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn zero() -> __m256 {
        _mm256_setzero_ps()
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn splat(v: f32) -> __m256 {
        _mm256_set1_ps(v)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mask(n: usize) -> __m256i {
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load(p: *const f32, m: __m256i) -> __m256 {
        _mm256_maskload_ps(p, m)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_masked(p: *mut f32, v: __m256, m: __m256i) {
        _mm256_maskstore_ps(p, m, v)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load_whole(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn add_product(acc: __m256, w: __m256, x: __m256) -> __m256 {
        _mm256_fmadd_ps(w, x, acc)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_whole(p: *mut f32, v: __m256) {
        _mm256_storeu_ps(p, v)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_first(mut p: *mut f32, v: __m256, mut n: usize) {
        let mut part = _mm256_castps256_ps128(v);
        if n >= 4 {
            _mm_storeu_ps(p, part);
            (p, n, part) = (p.add(4), n - 4, _mm256_extractf128_ps::<1>(v));
        }
        if n >= 2 {
            _mm_store_sd(p.cast(), _mm_castps_pd(part));
            (p, n, part) = (p.add(2), n - 2, _mm_movehl_ps(part, part));
        }
        if n == 1 {
            _mm_store_ss(p, part);
        }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn square(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize, nj: usize) {
        let m = Self::mask(nj);
        let r: [__m256; 8] = std::array::from_fn(|i| {
            let p = src.add(i * src_stride);
            if nj == 8 {
                _mm256_loadu_ps(p)
            } else {
                _mm256_maskload_ps(p, m)
            }
        });
        // Rows 2i and 2i + 1 interleaved: t[2i] holds columns 0, 1 (and 4, 5 in the high
        // half), t[2i + 1] columns 2, 3 (6, 7).
        let t: [__m256; 8] = std::array::from_fn(|k| {
            if k % 2 == 0 {
                _mm256_unpacklo_ps(r[k], r[k + 1])
            } else {
                _mm256_unpackhi_ps(r[k - 1], r[k])
            }
        });
        // u[4g + q]: column q (and q + 4 in the high half) of rows 4g..4g + 4.
        let u: [__m256; 8] = std::array::from_fn(|n| {
            let (g, q) = (n / 4, n % 4);
            let (a, b) = (t[4 * g + q / 2], t[4 * g + 2 + q / 2]);
            if q % 2 == 0 {
                _mm256_shuffle_ps::<0x44>(a, b)
            } else {
                _mm256_shuffle_ps::<0xEE>(a, b)
            }
        });
        for j in 0..nj {
            let column = if j < 4 {
                _mm256_permute2f128_ps::<0x20>(u[j], u[4 + j])
            } else {
                _mm256_permute2f128_ps::<0x31>(u[j - 4], u[j])
            };
            _mm256_storeu_ps(dst.add(j * dst_stride), column);
        }
    }
}

impl Lanes for f64 {
    type V = __m256d;
    const N: usize = 4;
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn zero() -> __m256d {
        _mm256_setzero_pd()
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn splat(v: f64) -> __m256d {
        _mm256_set1_pd(v)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mask(n: usize) -> __m256i {
        _mm256_cmpgt_epi64(_mm256_set1_epi64x(n as i64), _mm256_setr_epi64x(0, 1, 2, 3))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load(p: *const f64, m: __m256i) -> __m256d {
        _mm256_maskload_pd(p, m)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_masked(p: *mut f64, v: __m256d, m: __m256i) {
        _mm256_maskstore_pd(p, m, v)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load_whole(p: *const f64) -> __m256d {
        _mm256_loadu_pd(p)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn add_product(acc: __m256d, w: __m256d, x: __m256d) -> __m256d {
        _mm256_fmadd_pd(w, x, acc)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_whole(p: *mut f64, v: __m256d) {
        _mm256_storeu_pd(p, v)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_first(mut p: *mut f64, v: __m256d, mut n: usize) {
        let mut part = _mm256_castpd256_pd128(v);
        if n >= 2 {
            _mm_storeu_pd(p, part);
            (p, n, part) = (p.add(2), n - 2, _mm256_extractf128_pd::<1>(v));
        }
        if n == 1 {
            _mm_store_sd(p, part);
        }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn square(src: *const f64, src_stride: usize, dst: *mut f64, dst_stride: usize, nj: usize) {
        let m = Self::mask(nj);
        let r: [__m256d; 4] = std::array::from_fn(|i| {
            let p = src.add(i * src_stride);
            if nj == 4 {
                _mm256_loadu_pd(p)
            } else {
                _mm256_maskload_pd(p, m)
            }
        });
        // t[0]: column 0 of rows 0, 1 (column 2 in the high half); t[1] columns 1 (3); t[2],
        // t[3] the same of rows 2, 3.
        let t = [
            _mm256_unpacklo_pd(r[0], r[1]),
            _mm256_unpackhi_pd(r[0], r[1]),
            _mm256_unpacklo_pd(r[2], r[3]),
            _mm256_unpackhi_pd(r[2], r[3]),
        ];
        for j in 0..nj {
            let column = if j < 2 {
                _mm256_permute2f128_pd::<0x20>(t[j], t[2 + j])
            } else {
                _mm256_permute2f128_pd::<0x31>(t[j - 2], t[j])
            };
            _mm256_storeu_pd(dst.add(j * dst_stride), column);
        }
    }
}

/// A tile's sums, `R` output rows of `B` vectors from `(y, x)` on, into `dst` (rows of
/// `ow`): whole vectors stored as they are, a row's last, short one in parts
/// ([`Lanes::store_first`]).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store_tile<T: Lanes, const R: usize, const B: usize>(
    acc: &[[T::V; B]; R],
    dst: &mut [T],
    ow: usize,
    (y, x): (usize, usize),
) {
    let out = dst.as_mut_ptr();
    for (r, sums) in acc.iter().enumerate() {
        for (b, &sum) in sums.iter().enumerate() {
            let (at, n) = (x + b * T::N, ow.saturating_sub(x + b * T::N).min(T::N));
            if n == T::N {
                T::store_whole(out.add((y + r) * ow + at), sum);
            } else if n > 0 {
                T::store_first(out.add((y + r) * ow + at), sum, n);
            }
        }
    }
}

/// See `avx512::grid_f32`; stride 1 only. Call only when [`available`].
pub(super) fn grid_f32(grid: super::Grid<f32>, rows: &[f32], dst: &mut [f32], ow: usize) -> bool {
    grid_checked(grid, rows, dst, ow)
}

/// [`grid_f32`] in `f64`.
pub(super) fn grid_f64(grid: super::Grid<f64>, rows: &[f64], dst: &mut [f64], ow: usize) -> bool {
    grid_checked(grid, rows, dst, ow)
}

grid_kernels!("avx2,fma", Lanes, 1, 1);

pixels_kernels!("avx2,fma", Lanes);

/// See `avx512::fill_f32`: each input row into its padded row (stride 1) or split into the
/// two phases (stride 2) eight values at a time, where the compiled loop moved 4 or 1 at a
/// time (a 56-value row: one run of 32, six of 4) and took a third of a 3x3 layer's time.
/// Call only when [`available`].
pub(super) fn fill_f32(padded: &super::Padded, plane: &[f32], rows: &mut [f32]) {
    assert!(available() && padded.stride[1] <= 2);
    let [h, w] = padded.hw;
    assert!(plane.len() >= h * w && rows.len() >= padded.rows * padded.row_len() + 8, "whole plane and copy");
    // SAFETY: the features `fill_in` enables were just detected; it reads input rows inside
    // `plane` (whole vectors only where they stay inside it) and writes, per padded row,
    // inside that row's `row_len` values and at most 8 past them (zeros, see there), which
    // the assertion puts inside `rows`.
    unsafe { fill_in(padded, plane, rows) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn fill_in(padded: &super::Padded, plane: &[f32], rows: &mut [f32]) {
    let w = padded.hw[1];
    let (left, len) = (padded.left, padded.phase_len);
    for py in 0..padded.rows {
        let Some((dst, src)) = padded.row_source(plane, rows, py) else { continue };
        let (dst, src, readable) = (dst.as_mut_ptr(), src.as_ptr(), src.len());
        if padded.stride[1] == 1 {
            // Whole stores throughout: the last one's lanes past the row's values are zeros
            // (a masked load), stored over the row's right padding (zeros) and at most into
            // the next row's first values, which are written after it.
            let std::ops::Range { start, end } = padded.unit_stride_run();
            for i in (0..end - start).step_by(8) {
                let n = end - start - i;
                let v = if n >= 8 { _mm256_loadu_ps(src.add(i)) } else { f32::load(src.add(i), f32::mask(n)) };
                _mm256_storeu_ps(dst.add(start + i), v);
            }
            continue;
        }
        // Input column `x` lands in phase `(x + left) % 2`: even padded columns first.
        let (even, odd) = (dst, dst.add(len));
        let (first, second) = if left.is_multiple_of(2) { (even, odd) } else { (odd, even) };
        let (at_first, at_second, pairs) = super::pair_geometry(w, left, len);
        for i in (0..pairs).step_by(8) {
            let n = (pairs - i).min(8);
            let (a, b) = if 2 * i + 16 <= readable {
                (_mm256_loadu_ps(src.add(2 * i)), _mm256_loadu_ps(src.add(2 * i + 8)))
            } else {
                (
                    f32::load(src.add(2 * i), f32::mask((2 * n).min(8))),
                    f32::load(src.add(2 * i + 8), f32::mask((2 * n).saturating_sub(8))),
                )
            };
            // Per 128-bit lane, the even (odd) values of `a` then of `b`; then the lanes'
            // halves put in order.
            let order = |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
            let even_lanes = order(_mm256_shuffle_ps::<0b10_00_10_00>(a, b));
            let odd_lanes = order(_mm256_shuffle_ps::<0b11_01_11_01>(a, b));
            if n == 8 {
                _mm256_storeu_ps(first.add(at_first + i), even_lanes);
                _mm256_storeu_ps(second.add(at_second + i), odd_lanes);
            } else {
                f32::store_first(first.add(at_first + i), even_lanes, n);
                f32::store_first(second.add(at_second + i), odd_lanes, n);
            }
        }
        // An odd last value (or the first past a copy too short for its pair).
        if 2 * pairs < w && at_first + pairs < len {
            *first.add(at_first + pairs) = *src.add(2 * pairs);
        }
    }
}

/// `dst[j * dst_stride + i] = src[i * src_stride + j]` for `i < rows`, `j < cols`
/// ([`super::TransposeKernel`]): squares of 8 x 8 ([`Lanes::square`]), the last rows short
/// of a square by the plain loop. The plain loop throughout, compiled for AVX2, took 7 % of
/// mobilenet_v2 at one thread on AMD's Zen 3, more than the depthwise sums it served. Call
/// only when [`available`].
pub(super) fn transpose_f32(src: &[f32], shape: (usize, usize, usize), dst: &mut [f32], dst_stride: usize) {
    transpose(src, shape, dst, dst_stride)
}

/// [`transpose_f32`] in `f64`, in squares of 4 x 4.
pub(super) fn transpose_f64(src: &[f64], shape: (usize, usize, usize), dst: &mut [f64], dst_stride: usize) {
    transpose(src, shape, dst, dst_stride)
}

fn transpose<T: Lanes>(src: &[T], (rows, cols, src_stride): (usize, usize, usize), dst: &mut [T], dst_stride: usize) {
    super::check_transpose(src.len(), (rows, cols, src_stride), dst.len(), dst_stride);
    assert!(available());
    // SAFETY: the features were just detected, and `check_transpose` bounds every index the
    // squares read and write (whole squares only, below `rows`).
    unsafe { transpose_squares(src, (rows, cols, src_stride), dst, dst_stride) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn transpose_squares<T: Lanes>(
    src: &[T],
    (rows, cols, src_stride): (usize, usize, usize),
    dst: &mut [T],
    dst_stride: usize,
) {
    let whole = rows / T::N * T::N;
    for i0 in (0..whole).step_by(T::N) {
        for j0 in (0..cols).step_by(T::N) {
            let from = src.as_ptr().add(i0 * src_stride + j0);
            T::square(from, src_stride, dst.as_mut_ptr().add(j0 * dst_stride + i0), dst_stride, (cols - j0).min(T::N));
        }
    }
    if whole < rows {
        super::transpose_portable(
            &src[whole * src_stride..],
            (rows - whole, cols, src_stride),
            &mut dst[whole..],
            dst_stride,
        );
    }
}

//! The AVX-512 build of a channel's output rows ([`super::channel`]), in explicit vectors:
//! left to the compiler, the generic loop's blocks of sums were split into pieces of 8, 4,
//! 2 and 1 lanes with shuffles between them (0.9 of the time on a 14-column map).
//!
//! Each output element is summed exactly as the portable loop sums it: from zero, one
//! product of each live tap in turn, every product rounded before it is added (no fused
//! multiply-add). Several rows and blocks of 16 (`f64`: 8) columns are summed at once so
//! that enough additions are in flight to hide their latency; the last block of a row is
//! masked, so nothing is read or written beyond the row.

use std::arch::x86_64::*;

/// Whether this processor has the instructions (detected once, cached by `std`).
pub(super) fn available() -> bool {
    !crate::kernels::avx2_only() && std::arch::is_x86_feature_detected!("avx512f")
}

/// The lanes of one element type: what the kernel needs of a 512-bit vector of it.
trait Lanes: Copy {
    type V: Copy;
    /// Elements per vector.
    const N: usize;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(v: Self) -> Self::V;
    /// The first `n` (at most [`Self::N`]) elements at `p`; the others zero, unread.
    unsafe fn load(p: *const Self, n: usize) -> Self::V;
    /// `acc + w * x`, the product rounded first.
    unsafe fn add_product(acc: Self::V, w: Self::V, x: Self::V) -> Self::V;
    /// The first `n` elements of `v` to `p`.
    unsafe fn store(p: *mut Self, v: Self::V, n: usize);
}

impl Lanes for f32 {
    type V = __m512;
    const N: usize = 16;
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
    unsafe fn load(p: *const f32, n: usize) -> __m512 {
        if n == 16 { _mm512_loadu_ps(p) } else { _mm512_maskz_loadu_ps(mask16(n), p) }
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn add_product(acc: __m512, w: __m512, x: __m512) -> __m512 {
        _mm512_add_ps(acc, _mm512_mul_ps(w, x))
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store(p: *mut f32, v: __m512, n: usize) {
        if n == 16 { _mm512_storeu_ps(p, v) } else { _mm512_mask_storeu_ps(p, mask16(n), v) }
    }
}

impl Lanes for f64 {
    type V = __m512d;
    const N: usize = 8;
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
    unsafe fn load(p: *const f64, n: usize) -> __m512d {
        if n == 8 { _mm512_loadu_pd(p) } else { _mm512_maskz_loadu_pd(mask16(n) as __mmask8, p) }
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn add_product(acc: __m512d, w: __m512d, x: __m512d) -> __m512d {
        _mm512_add_pd(acc, _mm512_mul_pd(w, x))
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store(p: *mut f64, v: __m512d, n: usize) {
        if n == 8 { _mm512_storeu_pd(p, v) } else { _mm512_mask_storeu_pd(p, mask16(n) as __mmask8, v) }
    }
}

/// The first `n` lanes.
#[inline(always)]
fn mask16(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
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

/// Every read stays in `rows` (the last row's furthest tap's run of `ow` columns ends in
/// it) and `dst` is whole rows: the kernel reads and writes nothing else.
fn check<T>(live: &[(usize, T)], rows: usize, row_step: usize, dst: usize, ow: usize) {
    assert!(ow > 0 && dst.is_multiple_of(ow), "whole output rows");
    let oh = dst / ow;
    let furthest = live.iter().map(|&(offset, _)| offset).max().unwrap_or(0);
    assert!(oh == 0 || (oh - 1) * row_step + furthest + ow <= rows, "taps read inside the padded copy");
}

#[target_feature(enable = "avx512f")]
unsafe fn channel_in<T: Lanes>(live: &[(usize, T)], rows: &[T], row_step: usize, dst: &mut [T], ow: usize) {
    let oh = dst.len() / ow;
    // Rows and blocks of columns at once: 8 sums in flight, as many as the additions'
    // latency needs; a tile's blocks past the row's end are masked off whole.
    let (rows_at_once, blocks) = match ow.div_ceil(T::N) {
        1 => (4, 1),
        2 => (4, 2),
        _ => (2, 4),
    };
    let width = blocks * T::N;
    let mut y = 0;
    while y + rows_at_once <= oh {
        for x in (0..ow).step_by(width) {
            match blocks {
                1 => tile::<T, 4, 1>(live, rows, row_step, dst, ow, y, x),
                2 => tile::<T, 4, 2>(live, rows, row_step, dst, ow, y, x),
                _ => tile::<T, 2, 4>(live, rows, row_step, dst, ow, y, x),
            }
        }
        y += rows_at_once;
    }
    for y in y..oh {
        for x in (0..ow).step_by(width) {
            match blocks {
                1 => tile::<T, 1, 1>(live, rows, row_step, dst, ow, y, x),
                2 => tile::<T, 1, 2>(live, rows, row_step, dst, ow, y, x),
                _ => tile::<T, 1, 4>(live, rows, row_step, dst, ow, y, x),
            }
        }
    }
}

/// `R` output rows from `y` on, `B` blocks of columns from `x` on (those past the row's end
/// short, or empty).
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
    let width = |b: usize| (ow.saturating_sub(x + b * T::N)).min(T::N);
    let mut acc = [[T::zero(); B]; R];
    let src = rows.as_ptr();
    for &(offset, tap) in live {
        let w = T::splat(tap);
        for (r, sums) in acc.iter_mut().enumerate() {
            let at = src.add((y + r) * row_step + offset + x);
            for (b, sum) in sums.iter_mut().enumerate() {
                *sum = T::add_product(*sum, w, T::load(at.add(b * T::N), width(b)));
            }
        }
    }
    let out = dst.as_mut_ptr();
    for (r, sums) in acc.iter().enumerate() {
        for (b, &sum) in sums.iter().enumerate() {
            T::store(out.add((y + r) * ow + x + b * T::N), sum, width(b));
        }
    }
}

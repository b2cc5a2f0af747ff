//! The micro-kernel with AVX-512 VNNI's `vpdpwssd` (multiply pairs and add in one
//! instruction, 32 multiply-accumulates per 512-bit register), for `ROWS` rows from
//! `row0` and all [`NR`] columns: 2 x `ROWS` x `PARTS` accumulators of AVX-512's 32
//! registers. `pulp` has no VNNI operations, hence `std::arch` and `unsafe` here.

use super::direct::Reads;
use super::tiles::TileSums;
use super::{MR, NR};
use std::arch::x86_64::*;

/// Whether this processor has the instructions (detected once, cached by `std`).
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512vnni") && std::arch::is_x86_feature_detected!("avx512f")
}

/// See [`super::tiles::micro_tiles`]; call only when [`available`]. With `QUADS`, the
/// words are quads (`PARTS` 1): `vpdpbusd` multiplies unsigned input bytes by signed
/// weight bytes, four per 32-bit lane, 64 multiply-accumulates per instruction.
pub(super) fn tile<const ROWS: usize, const PARTS: usize, const QUADS: bool>(
    a: &[i32],
    b: &[i32],
    k_words: usize,
    block: usize,
    row0: usize,
    mut out: TileSums,
) {
    assert!(available() && a.len() >= k_words * MR * PARTS && b.len() >= k_words * NR);
    assert!(row0 + ROWS <= MR && out.values.len() >= (MR - 1) * out.ld + NR);
    for start in (0..k_words).step_by(block.max(1)) {
        let end = (start + block.max(1)).min(k_words);
        let (a, b) = (&a[start * MR * PARTS..end * MR * PARTS], &b[start * NR..end * NR]);
        // SAFETY: the features `kernel` enables were detected just above.
        unsafe { kernel::<ROWS, PARTS, QUADS>(a, b, row0, out.reborrow(start == 0)) }
    }
}

/// One block of words (whose sums fit 32 bits) into `out`. A function of its own: with
/// the loop over blocks around it, LLVM kept a third of the accumulators on the stack.
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512bw,avx512vnni")]
fn kernel<const ROWS: usize, const PARTS: usize, const QUADS: bool>(a: &[i32], b: &[i32], row0: usize, out: TileSums) {
    let mut acc = [[[_mm512_setzero_si512(); 2]; PARTS]; ROWS];
    for (bj, aj) in b.chunks_exact(NR).zip(a.chunks_exact(MR * PARTS)) {
        // SAFETY: `bj` holds NR = 32 words, two unaligned 512-bit loads' worth.
        let (b0, b1) = unsafe {
            let p = bj.as_ptr() as *const __m512i;
            (_mm512_loadu_si512(p), _mm512_loadu_si512(p.add(1)))
        };
        multiply_word::<ROWS, PARTS, QUADS>(&mut acc, &aj[row0 * PARTS..][..ROWS * PARTS], [b0, b1]);
    }
    widen_into(&acc, row0, out);
}

/// [`tile`] with the words of `B` read straight from an image: word `j` of the tile's
/// column `c` at `x[offsets[j] + p0 + c]` (see `super::direct`), not from a packed panel.
pub(super) fn direct_tile<const ROWS: usize, const PARTS: usize, const QUADS: bool>(
    a: &[i32],
    (reads, p0): (&Reads, usize),
    block: usize,
    row0: usize,
    mut out: TileSums,
) {
    let k_words = reads.offsets.len();
    assert!(available() && a.len() >= k_words * MR * PARTS && row0 + ROWS <= MR);
    assert!(reads.last_p0.is_some_and(|last| p0 <= last), "every read inside the image");
    assert!(out.values.len() >= (row0 + ROWS - 1) * out.ld + NR);
    for start in (0..k_words).step_by(block.max(1)) {
        let end = (start + block.max(1)).min(k_words);
        // SAFETY: the features `direct_kernel` enables were detected just above; every
        // read lies inside `x`, as checked.
        unsafe {
            direct_kernel::<ROWS, PARTS, QUADS>(
                &a[start * MR * PARTS..end * MR * PARTS],
                reads.x.as_ptr().add(p0),
                &reads.offsets[start..end],
                row0,
                out.reborrow(start == 0),
            )
        }
    }
}

/// [`kernel`] over one block of words read at `x + offsets[j]` (32 words each).
///
/// # Safety
/// Each `offsets[j] + 32` words from `x` must be readable.
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512bw,avx512vnni")]
unsafe fn direct_kernel<const ROWS: usize, const PARTS: usize, const QUADS: bool>(
    a: &[i32],
    x: *const i32,
    offsets: &[usize],
    row0: usize,
    out: TileSums,
) {
    let mut acc = [[[_mm512_setzero_si512(); 2]; PARTS]; ROWS];
    for (&offset, aj) in offsets.iter().zip(a.chunks_exact(MR * PARTS)) {
        // SAFETY: the caller's promise.
        let (b0, b1) = unsafe {
            let p = x.add(offset) as *const __m512i;
            (_mm512_loadu_si512(p), _mm512_loadu_si512(p.add(1)))
        };
        multiply_word::<ROWS, PARTS, QUADS>(&mut acc, &aj[row0 * PARTS..][..ROWS * PARTS], [b0, b1]);
    }
    widen_into(&acc, row0, out);
}

/// One word of `k`: each row's weight words `ws` (`PARTS` per row) times the tile's 32
/// input words `b`, added into `acc`. Constant bounds: fully unrolled, every accumulator
/// in a register.
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512bw,avx512vnni")]
#[inline]
fn multiply_word<const ROWS: usize, const PARTS: usize, const QUADS: bool>(
    acc: &mut [[[__m512i; 2]; PARTS]; ROWS],
    ws: &[i32],
    [b0, b1]: [__m512i; 2],
) {
    for r in 0..ROWS {
        for q in 0..PARTS {
            let w = _mm512_set1_epi32(ws[r * PARTS + q]);
            let acc = &mut acc[r][q];
            if QUADS {
                acc[0] = _mm512_dpbusd_epi32(acc[0], b0, w);
                acc[1] = _mm512_dpbusd_epi32(acc[1], b1, w);
            } else {
                acc[0] = _mm512_dpwssd_epi32(acc[0], w, b0);
                acc[1] = _mm512_dpwssd_epi32(acc[1], w, b1);
            }
        }
    }
}

/// A block's 32-bit sums `acc` (rows from `row0`, `PARTS` parts of which part `q` weighs
/// `2^(8q)`) widened and added into (or, fresh, written over) the 64-bit tile.
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512bw,avx512vnni")]
#[inline]
fn widen_into<const ROWS: usize, const PARTS: usize>(
    acc: &[[[__m512i; 2]; PARTS]; ROWS],
    row0: usize,
    mut out: TileSums,
) {
    let fresh = out.fresh;
    for (r, acc) in acc.iter().enumerate() {
        let out = out.row(row0 + r);
        for (q, acc) in acc.iter().enumerate() {
            let shift = _mm_cvtsi32_si128(8 * q as i32);
            for (half, &sums) in acc.iter().enumerate() {
                let lanes = [_mm512_castsi512_si256(sums), _mm512_extracti64x4_epi64::<1>(sums)];
                for (quarter, lanes) in lanes.into_iter().enumerate() {
                    let wide = _mm512_sll_epi64(_mm512_cvtepi32_epi64(lanes), shift);
                    // SAFETY: `out` holds NR = 32 values; this is the 8 at
                    // `16 * half + 8 * quarter`.
                    unsafe {
                        let p = out.as_mut_ptr().add(16 * half + 8 * quarter) as *mut __m512i;
                        let sum = if fresh && q == 0 { wide } else { _mm512_add_epi64(_mm512_loadu_si512(p), wide) };
                        _mm512_storeu_si512(p, sum);
                    }
                }
            }
        }
    }
}

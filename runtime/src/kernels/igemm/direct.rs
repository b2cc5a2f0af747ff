//! Integer convolutions read straight from the image where AVX-512 VNNI is there (pairs of
//! 16-bit values, whole or split as [`PackedA`] splits them, or quads of bytes): no
//! windows packed. Packing the windows for [`super::gemm_with`] writes every input value
//! once per tap, and on ResNet-18's 8-bit layers took as long as the multiplies.
//!
//! As in the float kernel ([`crate::kernels::direct`]), the image is copied once,
//! zero-padded and split into its stride's phases, and outputs are computed at flat
//! positions `p = oy * Wq + ox` of a phase plane `Wq` wide, so that a tap's reads for a run
//! of outputs are one contiguous run; the `Wq - OW` positions past each row's last output
//! are computed and dropped. What differs: a 32-bit word holds a pair or quad of input
//! *channels* at one position, and `k` is taken in the order (group of channels, tap,
//! channel within the group), the weights permuted to match. The sums are integers, exact
//! in any order: the same as the GEMM's.

use super::tiles::TileSums;
#[cfg(target_arch = "x86_64")]
use super::vnni;
use super::{pair, quad, PackedA, MR, NR};
use crate::kernels::direct::PhaseGrid;
use crate::plan::Conv;
use rayon::prelude::*;
use std::ops::RangeInclusive;

/// Positions a panel's sums are kept for before their epilogue: a strip of output rows
/// (12 rows of 64-bit sums, 24 KiB).
const STRIP_POSITIONS: usize = 256;

/// One group's weights (`[m, channels * taps]`, row-major, `k` in the order (channel,
/// tap)) packed for [`conv`]: `k` reordered (group of `per` channels, tap, channel within
/// it), zeros for the channels past the last.
#[derive(Clone, Debug)]
pub struct DirectA {
    packed: PackedA,
    /// Channels per word: 4 (quads) or 2 (pairs).
    per: usize,
    rows: usize,
    channels: usize,
    taps: usize,
}

impl DirectA {
    /// `a` packed for [`conv`] against inputs within `x`, if this processor has the
    /// kernel (AVX-512 VNNI, not turned off by `HASS_AVX2_ONLY`).
    pub fn new(a: &[i64], m: usize, (channels, taps): (usize, usize), x: RangeInclusive<i64>) -> Option<DirectA> {
        if !available() || a.len() != m * channels * taps || m * channels * taps == 0 {
            return None;
        }
        let per = if super::quad_offset(a, &x).is_some() { 4 } else { 2 };
        let k = channels * taps;
        let kp = channels.div_ceil(per) * taps * per;
        let mut permuted = vec![0i64; m * kp];
        permuted.par_chunks_exact_mut(kp).zip(a.par_chunks_exact(k)).for_each(|(dst, row)| {
            for (c, taps_of_c) in row.chunks_exact(taps).enumerate() {
                for (t, &v) in taps_of_c.iter().enumerate() {
                    dst[((c / per) * taps + t) * per + c % per] = v;
                }
            }
        });
        let packed = PackedA::new(&permuted, m, kp, x);
        debug_assert_eq!(packed.quads, per == 4);
        Some(DirectA { packed, per, rows: m, channels, taps })
    }

    /// Whether [`conv`] beats the GEMM over packed windows for this layer: not for a window
    /// of one tap (its packed windows are the interleaved image, as many words), nor for
    /// channels far from a multiple of the word, whose padded ones' multiplies are wasted
    /// (a stem's 3 channels in quads: 49 words, where the GEMM's are 37). ResNet-18, 8-bit,
    /// one thread, batch 8: its 7x7/2 stem 1.70 ms by the GEMM, 1.79 here; its 1x1/2
    /// convs 0.18 and 0.21 ms.
    pub fn pays(&self) -> bool {
        self.taps > 1 && (self.channels.div_ceil(self.per) * self.per - self.channels) * 8 <= self.channels
    }

    /// Whether a word holds a quad of bytes (8-bit weights and inputs).
    pub fn quads(&self) -> bool {
        self.per == 4
    }
}

/// Whether this process has [`conv`]'s kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        vnni::available() && !crate::kernels::avx2_only()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One group of `conv` (any window, stride, dilation and padding) of one image: `input`
/// the group's `[channels, h, w]` integers, `a`'s rows its output channels, their sums
/// handed over as [`super::gemm_with`] does: `finish(row, sums, out)` for each run of a
/// row's sums (output positions in order) and the matching part of `out` (`[rows, oh *
/// ow]`). With `parallel`, the row panels spread over rayon's threads.
#[allow(clippy::too_many_arguments)]
pub fn conv<T: Send>(
    a: &DirectA,
    conv: &Conv,
    input: &[i16],
    [h, w]: [usize; 2],
    out: &mut [T],
    [oh, ow]: [usize; 2],
    parallel: bool,
    finish: impl Fn(usize, &[i64], &mut [T]) + Sync,
) {
    let taps = conv.kernel[0] * conv.kernel[1];
    assert!(available() && a.taps == taps && input.len() == a.channels * h * w && oh * ow > 0);
    let rows = a.rows;
    assert_eq!(out.len(), rows * oh * ow, "one output plane per row of the weights");
    let grid = PhaseGrid::new(conv, [oh, ow]);
    let (wq, groups) = (grid.wq, a.channels.div_ceil(a.per));
    // Past the last block, a tile's worth of words: the last tile's reads beyond the last
    // position land there.
    let mut words = crate::kernels::scratch::take_len(groups * grid.block() + NR, 0i32);
    words[groups * grid.block()..].fill(0);
    interleave(a, input, [h, w], &grid, [conv.pads[0], conv.pads[1]], parallel, &mut words);
    let offsets = grid.offsets(groups);
    let reads = Reads::new(&words, &offsets);
    let strip_rows = (STRIP_POSITIONS / wq).clamp(1, oh);
    let ld = ((strip_rows - 1) * wq + ow).div_ceil(NR) * NR;
    let (k_words, pixels, parts) = (offsets.len(), oh * ow, a.packed.parts);
    let panels = rows.div_ceil(MR);
    let per_task = if parallel { panels.div_ceil(rayon::current_num_threads()) } else { panels }.max(1);
    let min_len = if parallel { 1 } else { usize::MAX };
    out.par_chunks_mut(per_task * MR * pixels).with_min_len(min_len).enumerate().for_each(|(task, out)| {
        let mut sums = crate::kernels::scratch::take_len(MR * ld, 0i64);
        let mut kept = crate::kernels::scratch::take_len(strip_rows * ow, 0i64);
        crate::kernels::with_simd(
            #[inline(always)]
            || {
                for (i, out) in out.chunks_mut(MR * pixels).enumerate() {
                    let panel = task * per_task + i;
                    let panel_rows = out.len() / pixels;
                    let weights = &a.packed.panels[panel * k_words * MR * parts..][..k_words * MR * parts];
                    for oy0 in (0..oh).step_by(strip_rows) {
                        let strip = strip_rows.min(oh - oy0);
                        let (p0, positions) = (oy0 * wq, (strip - 1) * wq + ow);
                        for t in (0..positions).step_by(NR) {
                            let tile = TileSums { values: &mut sums[t..], ld, fresh: true };
                            micro_tile(a, weights, (&reads, p0 + t), tile, panel_rows);
                        }
                        for (r, out) in out.chunks_exact_mut(pixels).enumerate() {
                            let row = panel * MR + r;
                            let sums = &sums[r * ld..][..positions];
                            // The outputs' sums, each output row's past its padding columns.
                            let kept = &mut kept[..strip * ow];
                            for (dst, src) in kept.chunks_exact_mut(ow).zip(sums.chunks(wq)) {
                                dst.copy_from_slice(&src[..ow]);
                            }
                            // Quads summed `x + x_offset`: the row's offset comes off.
                            if let Some(&offset) = a.packed.offsets.get(row) {
                                kept.iter_mut().for_each(|v| *v -= offset);
                            }
                            finish(row, kept, &mut out[oy0 * ow..][..strip * ow]);
                        }
                    }
                }
            },
        );
    });
}

/// What a tile reads: the image's words `x`, where word `j` of position 0 lies
/// (`offsets[j]`), and up to which first position a tile's reads all lie inside `x`.
pub(super) struct Reads<'a> {
    pub(super) x: &'a [i32],
    pub(super) offsets: &'a [usize],
    pub(super) last_p0: Option<usize>,
}

impl<'a> Reads<'a> {
    fn new(x: &'a [i32], offsets: &'a [usize]) -> Reads<'a> {
        let furthest = offsets.iter().copied().max().unwrap_or(0) + NR;
        Reads { x, offsets, last_p0: x.len().checked_sub(furthest) }
    }
}

/// A tile's sums for the first `rows` rows, in whole groups of 4 (as
/// `super::tiles::micro_tiles` does); split weights in two passes of 6 rows (24
/// accumulators).
#[inline(always)]
fn micro_tile(a: &DirectA, weights: &[i32], reads: (&Reads, usize), mut out: TileSums, rows: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let block = a.packed.block_words;
        match (a.per, a.packed.parts, rows) {
            (4, _, 0..=4) => vnni::direct_tile::<4, 1, true>(weights, reads, block, 0, out),
            (4, _, 5..=8) => vnni::direct_tile::<8, 1, true>(weights, reads, block, 0, out),
            (4, _, _) => vnni::direct_tile::<MR, 1, true>(weights, reads, block, 0, out),
            (_, 1, 0..=4) => vnni::direct_tile::<4, 1, false>(weights, reads, block, 0, out),
            (_, 1, 5..=8) => vnni::direct_tile::<8, 1, false>(weights, reads, block, 0, out),
            (_, 1, _) => vnni::direct_tile::<MR, 1, false>(weights, reads, block, 0, out),
            _ => {
                vnni::direct_tile::<{ MR / 2 }, 2, false>(weights, reads, block, 0, out.reborrow(true));
                if rows > MR / 2 {
                    vnni::direct_tile::<{ MR / 2 }, 2, false>(weights, reads, block, MR / 2, out);
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("made only where `available`: {:?}", (a.per, weights.len(), reads.1, out.ld, rows));
}

/// `input`'s channels, `a.per` to a word, into `words`: per group of channels, a block of
/// `grid`'s phase planes, zero-padded by `top` rows and `left` columns; padded `(py, px)`
/// lands in phase `(py % sy, px % sx)` at `(py / sy, px / sx)`. A quad's bytes are its
/// values plus the weights' `x_offset` (the GEMM's convention); channels past the last and
/// padding hold zeros. Only the phases some tap reads are written (a 1x1 conv of stride 2
/// reads one of four).
fn interleave(
    a: &DirectA,
    input: &[i16],
    [h, w]: [usize; 2],
    grid: &PhaseGrid,
    [top, left]: [usize; 2],
    parallel: bool,
    words: &mut [i32],
) {
    let (per, channels, x_offset) = (a.per, a.channels, a.packed.x_offset);
    let ([sy, sx], [hq, wq], block) = (grid.stride, [grid.hq, grid.wq], grid.block());
    let groups = channels.div_ceil(per);
    let min_len = if parallel { 1 } else { usize::MAX };
    let read = grid.phases_read();
    let columns: Vec<Option<[usize; 3]>> = (0..sx).map(|fx| grid.phase_columns(fx, w, left)).collect();
    words[..groups * block].par_chunks_exact_mut(block).enumerate().with_min_len(min_len).for_each(|(g, dst)| {
        let zeros = vec![0i16; w];
        crate::kernels::with_simd(
            #[inline(always)]
            || {
                for py in 0..sy * hq {
                    let y = py.checked_sub(top).filter(|&y| y < h);
                    // The group's rows (a last group's missing channels read as zeros).
                    let rows: [&[i16]; 4] = std::array::from_fn(|i| match y {
                        Some(y) if i < per && g * per + i < channels => &input[((g * per + i) * h + y) * w..][..w],
                        _ => &zeros[..],
                    });
                    for (fx, &columns) in columns.iter().enumerate() {
                        let phase = (py % sy) * sx + fx;
                        if !read[phase] {
                            continue;
                        }
                        let row = &mut dst[phase * hq * wq + (py / sy) * wq..][..wq];
                        let [x0, start, len] = columns.filter(|_| y.is_some()).unwrap_or([0; 3]);
                        let (before, rest) = row.split_at_mut(start);
                        let (run, after) = rest.split_at_mut(len);
                        if per == 4 {
                            let pad = quad([x_offset as u8; 4]);
                            before.fill(pad);
                            after.fill(pad);
                            let byte = |v: i16| (v + x_offset) as u8;
                            for (i, d) in run.iter_mut().enumerate() {
                                let x = x0 + i * sx;
                                *d = quad([byte(rows[0][x]), byte(rows[1][x]), byte(rows[2][x]), byte(rows[3][x])]);
                            }
                        } else {
                            before.fill(0);
                            after.fill(0);
                            for (i, d) in run.iter_mut().enumerate() {
                                let x = x0 + i * sx;
                                *d = pair(rows[0][x], rows[1][x]);
                            }
                        }
                    }
                }
            },
        )
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::unfold::Windows;
    use rand::{RngExt, SeedableRng};

    /// The direct sums are the GEMM's over the windows, for every geometry: windows,
    /// strides, dilations, padding, channels past a multiple of the word, rows past a
    /// multiple of the panel, quads (8-bit inputs, signed and unsigned), whole pairs
    /// (8-bit weights, 16-bit inputs) and split ones (16-bit both), one thread or several.
    #[test]
    fn the_same_integers_as_the_gemm_over_the_windows() {
        if !available() {
            return;
        }
        let cases = [
            // kernel, stride, dilation, pads [top, left, bottom, right], c_in, c_out, h, w
            ([3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 16, 24, 9, 11),
            ([3, 3], [2, 2], [1, 1], [1, 1, 1, 1], 5, 13, 12, 10),
            ([7, 7], [2, 2], [1, 1], [3, 3, 3, 3], 3, 16, 23, 21),
            ([1, 1], [2, 2], [1, 1], [0, 0, 0, 0], 9, 4, 8, 8),
            ([3, 2], [1, 2], [2, 1], [2, 0, 1, 1], 6, 7, 10, 9),
            ([5, 5], [1, 1], [1, 1], [2, 2, 2, 2], 2, 30, 6, 40),
            ([1, 1], [1, 1], [1, 1], [0, 0, 0, 0], 8, 12, 3, 5),
        ];
        // Inputs, and weights: quads, whole pairs, split pairs (16-bit weights and inputs).
        let ranges: [(RangeInclusive<i64>, i64); 4] =
            [(0..=255, 128), (-128..=127, 128), (-20000..=20000, 128), (-32768..=32767, 32768)];
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for (kernel, stride, dilation, pads, c_in, c_out, h, w) in cases {
            let conv = Conv { stride, dilation, pads, ..Conv::new(Vec::new(), c_in, c_out, kernel) };
            let out_hw = [0, 1].map(|d| {
                let (n, k, s, dl) = ([h, w][d], kernel[d], stride[d], dilation[d]);
                hass_proto::geometry::window_output_len(n, k, s, dl, pads[d], pads[d + 2], false).unwrap()
            });
            let taps = kernel[0] * kernel[1];
            for (x, a_max) in ranges.clone() {
                let mut a: Vec<i64> = (0..c_out * c_in * taps).map(|_| rng.random_range(-a_max..a_max)).collect();
                // The extremes: what must not overflow a block.
                a.iter_mut().step_by(5).for_each(|v| *v = -a_max);
                let input: Vec<i16> = (0..c_in * h * w).map(|_| rng.random_range(x.clone()) as i16).collect();
                let direct = DirectA::new(&a, c_out, (c_in, taps), x.clone()).expect("VNNI is there");
                assert_eq!(direct.packed.parts, if a_max > 128 { 2 } else { 1 });
                let packed = PackedA::new(&a, c_out, c_in * taps, x.clone());
                let windows = Windows::new(&conv, (&input, input.len()), (0, c_in), [h, w], out_hw);
                let pixels = out_hw[0] * out_hw[1];
                let mut want = vec![0i64; c_out * pixels];
                super::super::gemm_with(&packed, &windows, &mut want, false, |_, s, o| o.copy_from_slice(s));
                for parallel in [false, true] {
                    let mut got = vec![i64::MIN; c_out * pixels];
                    super::conv(&direct, &conv, &input, [h, w], &mut got, out_hw, parallel, |_, s, o| {
                        o.copy_from_slice(s)
                    });
                    assert_eq!(got, want, "{kernel:?} stride {stride:?} dilation {dilation:?} pads {pads:?} {x:?}");
                }
            }
        }
    }

    #[test]
    fn it_pays_for_windows_over_whole_words_of_channels() {
        if !available() {
            return;
        }
        let pays = |channels: usize, taps: usize, x: RangeInclusive<i64>| {
            let a = vec![1i64; 2 * channels * taps];
            DirectA::new(&a, 2, (channels, taps), x).expect("VNNI is there").pays()
        };
        assert!(pays(64, 9, 0..=255) && pays(8, 25, -128..=127) && pays(30, 9, -1000..=1000));
        assert!(!pays(64, 1, 0..=255), "one tap");
        assert!(!pays(3, 49, 0..=255) && !pays(13, 9, 0..=255), "a third, a fifth of the channels padding");
        assert!(pays(4, 9, 0..=1000) && !pays(3, 9, 0..=1000), "pairs: 3 of 4 channels");
    }
}

//! Convolutions of one group (any window, stride, dilation and padding) straight from the
//! image: no windows packed. The packed GEMM ([`super::sgemm`]) copies each input value
//! into its panels once per tap, which took an eighth of ResNet-18's time.
//!
//! The image is copied once, zero-padded and split into its stride's phases: padded `(py,
//! px)` goes to phase plane `(py % sy, px % sx)` of its channel, at `(py / sy, px / sx)`
//! (at stride 1, one plane per channel: the padded image; a pointwise conv without padding
//! reads the image itself). Outputs are computed at flat positions `p = oy * Wq + ox` of a
//! phase plane `Wq` wide: tap `(c, ky, kx)` of output `p` reads its phase plane at `p` plus
//! a fixed offset, so a run of outputs reads one contiguous run per tap, which the
//! micro-tile loads as it lies. The `Wq - OW` positions past each row's last output are
//! computed and dropped: 3 % of a 56x56 map padded by one column each side, 12.5 % of a
//! 14x14 one.
//!
//! The micro-tile is [`MR`] output channels by [`NR`] positions, 24 AVX-512 accumulators:
//! per `k`, three vectors of positions loaded and one weight per channel broadcast. Every
//! sum starts from zero and adds its products in `k` order (`c`, `ky`, `kx`) with fused
//! multiply-adds: the same floats on any number of threads and with either instruction set
//! (with AVX2 and FMA, six passes of 4 channels by 16 positions). (They are not the packed
//! GEMM's floats, which adds chunks of `k`.) Elsewhere the packed GEMM runs instead.

use crate::plan::Conv;
use rayon::prelude::*;

/// Output channels per micro-tile (a conv's 64, 128, ... channels fill whole tiles, where
/// the packed GEMM's 12 rows left 64 channels an eighth of a tile short).
pub const MR: usize = 8;
/// Positions per micro-tile: three 16-lane vectors.
pub const NR: usize = 48;

/// A conv's weights (`[C_out, K]`, `K = C_in * K_h * K_w`) in panels of [`MR`] output
/// channels: per panel, per `k`, the panel's `MR` weights (zeros past the last channel).
#[derive(Clone, Debug)]
pub struct DirectWeights {
    rows: usize,
    k: usize,
    panels: Vec<f32>,
}

impl DirectWeights {
    /// Pack `conv`'s weights (one group).
    pub fn new(conv: &Conv) -> DirectWeights {
        let k = conv.weight.len() / conv.c_out.max(1);
        DirectWeights { rows: conv.c_out, k, panels: super::sgemm::row_panels(&conv.weight, conv.c_out, k, MR) }
    }
}

/// Whether [`conv_direct`] computes `conv`: one group, dense weights, and a processor with
/// AVX-512 or AVX2 and FMA.
pub fn applies(conv: &Conv) -> bool {
    conv.groups == 1 && conv.sparse_weight.is_none() && available()
}

/// Whether the processor has the micro-tile's instructions (AVX-512, or AVX2 and FMA).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx512::available() || avx2::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `conv` (where [`applies`]) of one image `input` (`[C_in, H, W]`) into `out` (`[C_out,
/// OH, OW]`): `finish(channel, sums, out)` for each run of an output row's sums and its
/// place in `out`. With `parallel`, the output channels' panels spread over rayon's threads.
#[allow(clippy::too_many_arguments)]
pub fn conv_direct(
    conv: &Conv,
    weights: &DirectWeights,
    input: &[f32],
    [h, w]: [usize; 2],
    out: &mut [f32],
    [oh, ow]: [usize; 2],
    parallel: bool,
    finish: impl Fn(usize, &[f32], &mut [f32]) + Sync,
) {
    assert!(applies(conv) && weights.rows == conv.c_out && input.len() == conv.c_in * h * w && oh * ow > 0);
    let (c, [sy, sx]) = (conv.c_in, conv.stride);
    let grid = PhaseGrid::new(conv, [oh, ow]);
    let (hq, wq) = (grid.hq, grid.wq);
    let [top, left, ..] = conv.pads;
    let in_place = [sy, sx, top, left] == [1, 1, 0, 0] && [hq, wq] == [h, w];
    let mut copy = super::scratch::take_len(if in_place { 0 } else { c * grid.block() }, 0.0f32);
    let padded = if in_place {
        input
    } else {
        pad(input, c, [h, w], &grid, [top, left], parallel, &mut copy);
        &copy[..]
    };
    let offsets = grid.offsets(c);
    debug_assert_eq!(offsets.len(), weights.k);
    let reads = Reads::new(padded, &offsets);
    let positions = (oh - 1) * wq + ow;
    let tiles = positions.div_ceil(NR);
    let panels = conv.c_out.div_ceil(MR);
    let per_task = if parallel { panels.div_ceil(rayon::current_num_threads()) } else { panels }.max(1);
    let min_len = if parallel { 1 } else { usize::MAX };
    let out_plane = oh * ow;
    out.par_chunks_mut(per_task * MR * out_plane).with_min_len(min_len).enumerate().for_each(|(task, out)| {
        let mut sums = [[0.0f32; NR]; MR];
        let mut runs = Vec::with_capacity(NR);
        super::with_simd(
            #[inline(always)]
            || {
                // Panel by panel, each over every tile: a panel's weights are read once,
                // and its channels' outputs written one after another. (Tile by tile, each
                // over every panel, a 14x14 layer's 2.4 MB of weights came from beyond the
                // L2 once per tile, and a tile wrote to every channel's plane at once:
                // ResNet-18, one thread, batch 1, its 256-channel 14x14 layers 7.2-7.5 ->
                // 5.9-6.2 ms, its 7x7/2 stem 2.1 -> 1.6.)
                for (i, out) in out.chunks_mut(MR * out_plane).enumerate() {
                    let panel = task * per_task + i;
                    let a = &weights.panels[panel * weights.k * MR..][..weights.k * MR];
                    for tile in 0..tiles {
                        let p0 = tile * NR;
                        let cols = NR.min(positions - p0);
                        // Where the tile's rows go: the same for every channel (each run's
                        // place took two integer divisions, per channel and run).
                        tile_runs(p0, cols, [wq, ow], &mut runs);
                        // The first panel's pass brings each next tile's inputs in (every
                        // panel's did not pay).
                        let ahead = i == 0 && tile + 1 < tiles;
                        micro_tile(a, &reads, p0, cols, ahead, &mut sums);
                        for (r, out) in out.chunks_exact_mut(out_plane).enumerate() {
                            for &(from, to, at) in &runs {
                                finish(panel * MR + r, &sums[r][from..to], &mut out[at..][..to - from]);
                            }
                        }
                    }
                }
            },
        );
    });
}

/// The runs of a tile's positions `p0..p0 + cols` on the padded grid (rows `wp` apart, the
/// first `ow` of each an output): per output row it touches, the run's sums `from..to` (in
/// the tile) and where they go in a channel's plane; the positions past each row's end are
/// dropped.
fn tile_runs(p0: usize, cols: usize, [wp, ow]: [usize; 2], runs: &mut Vec<(usize, usize, usize)>) {
    runs.clear();
    let end = p0 + cols;
    let mut p = p0;
    while p < end {
        let (oy, ox) = (p / wp, p % wp);
        if ox >= ow {
            p = (oy + 1) * wp;
            continue;
        }
        let run_end = end.min(oy * wp + ow);
        runs.push((p - p0, run_end - p0, oy * ow + ox));
        p = run_end;
    }
}

/// Where a conv's windows lie in an image zero-padded and split into its stride's phases
/// (see the module's docs): the phase planes' shape `[hq, wq]`, and per tap where its read
/// for position 0 lies in a block of `sy * sx` planes (one channel's here; a pair's or a
/// quad's in `igemm::direct`).
pub(crate) struct PhaseGrid {
    /// Rows and columns of a phase plane: the padded rows and columns the windows reach,
    /// each phase's share of them.
    pub(crate) hq: usize,
    pub(crate) wq: usize,
    /// The conv's stride: `sy * sx` phases.
    pub(crate) stride: [usize; 2],
    /// Per tap (`ky * K_w + kx`): its phase plane's offset in the block, plus its rows and
    /// columns down in that plane.
    taps: Vec<usize>,
}

impl PhaseGrid {
    /// `conv`'s grid for output maps of `[oh, ow]` (at least one output).
    pub(crate) fn new(conv: &Conv, [oh, ow]: [usize; 2]) -> PhaseGrid {
        let ([kh, kw], [dh, dw], [sy, sx]) = (conv.kernel, conv.dilation, conv.stride);
        let (reach_y, reach_x) = ((oh - 1) * sy + (kh - 1) * dh + 1, (ow - 1) * sx + (kw - 1) * dw + 1);
        let (hq, wq) = (reach_y.div_ceil(sy), reach_x.div_ceil(sx));
        let taps = (0..kh * kw)
            .map(|t| {
                let (py, px) = ((t / kw) * dh, (t % kw) * dw);
                ((py % sy) * sx + px % sx) * hq * wq + (py / sy) * wq + px / sx
            })
            .collect();
        PhaseGrid { hq, wq, stride: [sy, sx], taps }
    }

    /// Values in a block: `sy * sx` phase planes.
    pub(crate) fn block(&self) -> usize {
        self.stride[0] * self.stride[1] * self.hq * self.wq
    }

    /// Where each `k` (block, then tap) reads for position 0, over `blocks` blocks.
    pub(crate) fn offsets(&self, blocks: usize) -> Vec<usize> {
        let block = self.block();
        (0..blocks).flat_map(|b| self.taps.iter().map(move |&t| b * block + t)).collect()
    }

    /// Per phase plane (`fy * sx + fx`), whether some tap reads it.
    pub(crate) fn phases_read(&self) -> Vec<bool> {
        let mut read = vec![false; self.stride[0] * self.stride[1]];
        self.taps.iter().for_each(|&t| read[t / (self.hq * self.wq)] = true);
        read
    }

    /// In a padded row of an image `w` wide padded by `left` columns, the input columns that
    /// land in column phase `fx`: the first, its place in the phase row, and how many
    /// (`None`: none do). Columns past `sx * wq` are read by no window and left out.
    pub(crate) fn phase_columns(&self, fx: usize, w: usize, left: usize) -> Option<[usize; 3]> {
        let sx = self.stride[1];
        let inside = w.min((sx * self.wq).saturating_sub(left));
        let x0 = (fx + sx - left % sx) % sx;
        (x0 < inside).then(|| [x0, (x0 + left) / sx, (inside - x0).div_ceil(sx)])
    }
}

/// `input`'s `c` planes of `[h, w]` into `copy` (`c` blocks of `grid`, each value written:
/// stale values from an earlier use are fine), zero-padded by `top` rows and `left`
/// columns and split into the grid's phase planes: padded `(py, px)` lands in phase `(py %
/// sy, px % sx)` at `(py / sy, px / sx)`; what lies past `sy * hq` rows or `sx * wq`
/// columns is read by no window and left out. Each phase row is written once, its padding
/// zeroed as it is filled (zeroing the whole copy first wrote it twice, the first time out
/// to L2: ResNet-18's samples in `memset` 1.65 -> 0.84 %).
fn pad(
    input: &[f32],
    c: usize,
    [h, w]: [usize; 2],
    grid: &PhaseGrid,
    [top, left]: [usize; 2],
    parallel: bool,
    copy: &mut [f32],
) {
    let ([sy, sx], hq, wq, block) = (grid.stride, grid.hq, grid.wq, grid.block());
    let min_len = if parallel { 1 } else { usize::MAX };
    let columns: Vec<Option<[usize; 3]>> = (0..sx).map(|fx| grid.phase_columns(fx, w, left)).collect();
    copy[..c * block].par_chunks_exact_mut(block).zip(input.par_chunks_exact(h * w)).with_min_len(min_len).for_each(
        |(dst, src)| {
            // Compiled for the widest vectors: the phases' strided copies then vectorize (in
            // the baseline build they went value by value, a quarter of a stride-2 stem's
            // time).
            super::with_simd(
                #[inline(always)]
                || {
                    for py in 0..sy * hq {
                        let row = ((py % sy) * sx * hq + py / sy) * wq;
                        let values = py.checked_sub(top).filter(|&y| y < h).map(|y| &src[y * w..][..w]);
                        for (fx, &columns) in columns.iter().enumerate() {
                            let phase_row = &mut dst[row + fx * hq * wq..][..wq];
                            let (Some(values), Some([x0, start, len])) = (values, columns) else {
                                phase_row.fill(0.0);
                                continue;
                            };
                            let (before, rest) = phase_row.split_at_mut(start);
                            let (run, after) = rest.split_at_mut(len);
                            before.fill(0.0);
                            after.fill(0.0);
                            super::each_strided(run, &values[x0..], sx, |d, v| *d = v);
                        }
                    }
                },
            )
        },
    );
}

/// What the micro-tiles read: the (padded) image `x` and where each `k` reads in it for
/// position 0, checked once to lie inside it for every position up to `positions`.
pub(crate) struct Reads<'a> {
    x: &'a [f32],
    offsets: &'a [usize],
    /// Positions whose reads all lie inside `x`.
    positions: usize,
}

impl<'a> Reads<'a> {
    pub(crate) fn new(x: &'a [f32], offsets: &'a [usize]) -> Reads<'a> {
        let furthest = offsets.iter().copied().max().unwrap_or(0);
        Reads { x, offsets, positions: x.len().saturating_sub(furthest) }
    }
}

/// One micro-tile: `sums[r][j]` = the sum over `k` of `a[k * MR + r] * x[offsets[k] + p0 +
/// j]` for `j < cols` (the rest unspecified). With `ahead`, it also asks for the next
/// tile's inputs to be brought into cache: a run from each of `C` planes per tile is more
/// runs than the processor's prefetchers follow.
#[inline(always)]
pub(crate) fn micro_tile(a: &[f32], reads: &Reads, p0: usize, cols: usize, ahead: bool, sums: &mut [[f32; NR]; MR]) {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        avx512::tile(a, reads, p0, cols, ahead, sums);
    } else {
        avx2::tile(a, reads, p0, cols, sums);
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("conv_direct runs only where `available`");
}

/// The micro-tile with AVX2 and FMA: six passes of 4 channels by 16 positions (8
/// accumulators of 8 lanes, room to spare in AVX2's 16 registers: at 4 by 24 the
/// accumulators spilled), each over every `k`. The same floats as the AVX-512 tile.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use super::{Reads, MR, NR};
    use std::arch::x86_64::*;

    pub(super) use crate::kernels::avx2_available as available;

    /// See [`super::micro_tile`].
    #[inline(always)]
    pub(super) fn tile(a: &[f32], reads: &Reads, p0: usize, cols: usize, sums: &mut [[f32; NR]; MR]) {
        assert!(available() && cols <= NR && a.len() >= reads.offsets.len() * MR);
        assert!(cols == 0 || p0 + cols <= reads.positions, "every read inside the image");
        let x = reads.x[p0..].as_ptr();
        for row0 in [0, 4] {
            for col0 in (0..cols).step_by(16) {
                let n = (cols - col0).min(16);
                // SAFETY: the features `pass` enables were detected; it reads
                // `a[..offsets.len() * MR]` and, per `k`, the `n` values at `offsets[k] + p0 +
                // col0` of `x` (masked loads past them), inside `x` as checked above.
                unsafe {
                    if n == 16 {
                        pass::<false>(a.as_ptr(), x.add(col0), reads.offsets, (row0, col0, n), sums)
                    } else {
                        pass::<true>(a.as_ptr(), x.add(col0), reads.offsets, (row0, col0, n), sums)
                    }
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn pass<const MASKED: bool>(
        a: *const f32,
        x: *const f32,
        offsets: &[usize],
        (row0, col0, n): (usize, usize, usize),
        sums: &mut [[f32; NR]; MR],
    ) {
        // (No closures here: a closure is compiled without the function's features, and
        // its intrinsics became calls.)
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lanes);
        let m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32 - 8), lanes);
        let mut acc = [[_mm256_setzero_ps(); 2]; 4];
        for (k, &offset) in offsets.iter().enumerate() {
            let at = x.add(offset);
            let b = if MASKED {
                [_mm256_maskload_ps(at, m0), _mm256_maskload_ps(at.add(8), m1)]
            } else {
                [_mm256_loadu_ps(at), _mm256_loadu_ps(at.add(8))]
            };
            let weights = a.add(k * MR + row0);
            for (r, acc) in acc.iter_mut().enumerate() {
                let w = _mm256_set1_ps(*weights.add(r));
                acc[0] = _mm256_fmadd_ps(w, b[0], acc[0]);
                acc[1] = _mm256_fmadd_ps(w, b[1], acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (v, &sum) in acc.iter().enumerate() {
                _mm256_storeu_ps(sums[row0 + r].as_mut_ptr().add(col0 + 8 * v), sum);
            }
        }
    }
}

/// The micro-tile in AVX-512 intrinsics.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512 {
    use super::{Reads, MR, NR};
    use std::arch::x86_64::*;

    pub(super) use crate::kernels::avx512::available;

    /// See [`super::micro_tile`].
    #[inline(always)]
    pub(super) fn tile(a: &[f32], reads: &Reads, p0: usize, cols: usize, ahead: bool, sums: &mut [[f32; NR]; MR]) {
        assert!(available() && cols <= NR && a.len() >= reads.offsets.len() * MR);
        assert!(cols == 0 || p0 + cols <= reads.positions, "every read inside the image");
        let x = reads.x[p0..].as_ptr();
        // SAFETY: the features `tile_in` enables were detected; it reads `a[..offsets.len()
        // * MR]` and, per `k`, the first `cols` of the `NR` values at `offsets[k] + p0` of
        // `x` (masked loads do not touch the lanes they leave out), all checked just above;
        // a prefetch reads nothing.
        unsafe { tile_in(a.as_ptr(), x, reads.offsets, cols, ahead, sums) }
    }

    /// The sums of [`tile_in`] over every `k`, in the first `V` vectors of each row (the
    /// rest of the tile's columns past the positions): `WHOLE` when those are all inside
    /// (no masks), `AHEAD` to prefetch the next tile's runs. Safety: `tile_in`'s.
    #[inline(always)]
    unsafe fn sweep<const V: usize, const WHOLE: bool, const AHEAD: bool>(
        a: *const f32,
        x: *const f32,
        offsets: &[usize],
        masks: [__mmask16; 3],
    ) -> [[__m512; V]; MR] {
        let mut acc = [[_mm512_setzero_ps(); V]; MR];
        // A macro, not a closure: a closure of intrinsics is not always inlined.
        macro_rules! step {
            ($k:expr, $offset:expr) => {{
                let (k, offset): (usize, usize) = ($k, $offset);
                let at = x.add(offset);
                if AHEAD {
                    // The next tile's run for this `k`: three cache lines on.
                    let next = at.wrapping_add(NR).cast::<i8>();
                    _mm_prefetch::<_MM_HINT_T0>(next);
                    _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(64));
                    _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(128));
                }
                let mut b = [_mm512_setzero_ps(); V];
                for (v, b) in b.iter_mut().enumerate() {
                    *b = if WHOLE {
                        _mm512_loadu_ps(at.add(16 * v))
                    } else {
                        _mm512_maskz_loadu_ps(masks[v], at.add(16 * v))
                    };
                }
                let weights = a.add(k * MR);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let w = _mm512_set1_ps(*weights.add(r));
                    for (acc, &b) in acc.iter_mut().zip(&b) {
                        *acc = _mm512_fmadd_ps(w, b, *acc);
                    }
                }
            }};
        }
        // Two `k` per turn: the loop's own instructions share ports with the multiply-adds.
        let pairs = offsets.chunks_exact(2);
        let last = pairs.remainder().first().map(|&o| (offsets.len() - 1, o));
        for (i, pair) in pairs.enumerate() {
            step!(2 * i, pair[0]);
            step!(2 * i + 1, pair[1]);
        }
        if let Some((k, offset)) = last {
            step!(k, offset);
        }
        acc
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn tile_in(
        a: *const f32,
        x: *const f32,
        offsets: &[usize],
        cols: usize,
        ahead: bool,
        sums: &mut [[f32; NR]; MR],
    ) {
        let mask = |v: usize| (((1u32 << cols.saturating_sub(16 * v).min(16)) - 1) & 0xffff) as __mmask16;
        let masks = [mask(0), mask(1), mask(2)];
        // Whole tiles (all but a conv's last) load unmasked: on Intel's cores a masked load
        // takes a slot of the multiply-add ports (a Xeon's 56x56 layers: 10 % of their time).
        // A last tile sums only the vectors it needs: a 14x14 map's 222 positions are four
        // whole tiles and two vectors, not three.
        match (cols.div_ceil(16), cols == NR, ahead) {
            (3, true, true) => store(sweep::<3, true, true>(a, x, offsets, masks), sums),
            (3, true, false) => store(sweep::<3, true, false>(a, x, offsets, masks), sums),
            (3, false, _) => store(sweep::<3, false, false>(a, x, offsets, masks), sums),
            (2, ..) => store(sweep::<2, false, false>(a, x, offsets, masks), sums),
            _ => store(sweep::<1, false, false>(a, x, offsets, masks), sums),
        }
    }

    /// A tile's sums, `V` vectors per row, into the first `16 * V` of each row of `sums`.
    #[inline(always)]
    unsafe fn store<const V: usize>(acc: [[__m512; V]; MR], sums: &mut [[f32; NR]; MR]) {
        for (sums, acc) in sums.iter_mut().zip(&acc) {
            for (v, &sum) in acc.iter().enumerate() {
                _mm512_storeu_ps(sums.as_mut_ptr().add(16 * v), sum);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each output as the kernel sums it: from zero over `(c, ky, kx)` in order, fused
    /// multiply-adds, padding read as zero.
    fn reference(conv: &Conv, input: &[f32], [h, w]: [usize; 2], [oh, ow]: [usize; 2]) -> Vec<f32> {
        let ([kh, kw], [sy, sx], [dh, dw]) = (conv.kernel, conv.stride, conv.dilation);
        let (top, left) = (conv.pads[0] as isize, conv.pads[1] as isize);
        let mut out = vec![0.0f32; conv.c_out * oh * ow];
        for (o, plane) in out.chunks_exact_mut(oh * ow).enumerate() {
            for (p, v) in plane.iter_mut().enumerate() {
                let (oy, ox) = (p / ow, p % ow);
                let mut sum = 0.0f32;
                for c in 0..conv.c_in {
                    for t in 0..kh * kw {
                        let y = (oy * sy + (t / kw) * dh) as isize - top;
                        let x = (ox * sx + (t % kw) * dw) as isize - left;
                        let inside = (0..h as isize).contains(&y) && (0..w as isize).contains(&x);
                        let value = if inside { input[(c * h + y as usize) * w + x as usize] } else { 0.0 };
                        sum = conv.weight[(o * conv.c_in + c) * kh * kw + t].mul_add(value, sum);
                    }
                }
                *v = sum;
            }
        }
        out
    }

    /// Every geometry sums as the reference, bit for bit, on one thread and on several:
    /// strides 1 and 2 (and 3), dilation, asymmetric padding, output channels that leave a
    /// panel short, maps whose positions end inside a tile, a last row's windows that stop
    /// short of the padded image.
    #[test]
    fn every_geometry_sums_as_the_reference() {
        if !available() {
            return;
        }
        for (c_in, c_out, kernel, stride, dilation, pads, [h, w]) in [
            (3, 16, 3, 1, 1, [1, 1, 1, 1], [20, 20]),
            (5, 13, 3, 2, 1, [1, 1, 1, 1], [29, 31]),
            (3, 8, 7, 2, 1, [3, 3, 3, 3], [40, 36]),
            (4, 9, 3, 1, 2, [2, 1, 0, 3], [17, 15]),
            (2, 24, 5, 3, 1, [0, 2, 1, 0], [50, 47]),
            (6, 7, 3, 2, 1, [0, 0, 0, 0], [16, 16]),
            (64, 64, 3, 1, 1, [1, 1, 1, 1], [14, 14]),
            (3, 8, 2, 1, 1, [0; 4], [15, 15]),
        ] {
            let weight: Vec<f32> =
                (0..c_out * c_in * kernel * kernel).map(|i| ((i * 37 % 23) as f32 - 11.0) / 8.0).collect();
            let conv = Conv {
                stride: [stride; 2],
                dilation: [dilation; 2],
                pads,
                ..Conv::new(weight, c_in, c_out, [kernel; 2])
            };
            let out_hw = [0, 1].map(|a| {
                hass_proto::geometry::window_output_len(
                    [h, w][a],
                    kernel,
                    stride,
                    dilation,
                    pads[a],
                    pads[a + 2],
                    false,
                )
                .unwrap()
            });
            let input: Vec<f32> = (0..c_in * h * w).map(|i| ((i * 13 % 19) as f32 - 9.0) / 4.0).collect();
            let want = reference(&conv, &input, [h, w], out_hw);
            let weights = DirectWeights::new(&conv);
            for parallel in [false, true] {
                let mut got = vec![f32::NAN; want.len()];
                conv_direct(&conv, &weights, &input, [h, w], &mut got, out_hw, parallel, |_, sums, out| {
                    out.copy_from_slice(sums)
                });
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{c_in} -> {c_out}, kernel {kernel}, stride {stride}, {h} x {w}");
            }
        }
    }

    /// The padded, phase-split copy holds each input value where the windows read it and
    /// zero everywhere else, whatever the buffer held before: strides 1 to 3, even and odd
    /// padding, copies that end before the image does.
    #[test]
    fn the_padded_copy_overwrites_every_value() {
        let (c, [h, w]) = (2, [5, 7]);
        let input: Vec<f32> = (0..c * h * w).map(|i| i as f32 + 1.0).collect();
        for ([top, left], [sy, sx], [hq, wq]) in
            [([1, 1], [1, 1], [7, 9]), ([0, 3], [2, 2], [3, 5]), ([2, 1], [2, 3], [4, 3]), ([1, 0], [1, 2], [4, 2])]
        {
            let block = sy * sx * hq * wq;
            let mut copy = vec![f32::NAN; c * block + 3];
            let grid = PhaseGrid { hq, wq, stride: [sy, sx], taps: Vec::new() };
            pad(&input, c, [h, w], &grid, [top, left], false, &mut copy);
            for ch in 0..c {
                for (py, px) in (0..sy * hq).flat_map(|py| (0..sx * wq).map(move |px| (py, px))) {
                    let at = ch * block + ((py % sy) * sx + px % sx) * hq * wq + (py / sy) * wq + px / sx;
                    let (y, x) = (py.checked_sub(top).filter(|&y| y < h), px.checked_sub(left).filter(|&x| x < w));
                    let want = y.zip(x).map_or(0.0, |(y, x)| input[(ch * h + y) * w + x]);
                    assert_eq!(copy[at], want, "pads {top} {left}, stride {sy} {sx}: ({py}, {px})");
                }
            }
            assert!(copy[c * block..].iter().all(|v| v.is_nan()), "nothing past the copy");
        }
    }

    /// The AVX2 tile sums what the AVX-512 one does, bit for bit, whole and cut short.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn both_tiles_compute_the_same_floats() {
        if !(avx512::available() && avx2::available()) {
            return;
        }
        let k = 37;
        let a: Vec<f32> = (0..k * MR).map(|i| (i as f32 * 0.37).sin()).collect();
        let x: Vec<f32> = (0..4000).map(|i| (i as f32 * 0.11).cos()).collect();
        let offsets: Vec<usize> = (0..k).map(|j| j * 97 % 3000).collect();
        let reads = Reads::new(&x, &offsets);
        for (p0, cols) in [(0, NR), (5, NR), (100, 30), (7, 17), (0, 1), (3, 24)] {
            let (mut wide, mut narrow) = ([[f32::NAN; NR]; MR], [[f32::NAN; NR]; MR]);
            avx512::tile(&a, &reads, p0, cols, false, &mut wide);
            avx2::tile(&a, &reads, p0, cols, &mut narrow);
            for (w, n) in wide.iter().zip(&narrow) {
                let bits = |v: &[f32]| v[..cols].iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(w), bits(n), "p0 {p0}, {cols} columns");
            }
        }
    }

    /// `finish` gets each output row's sums once, with the channel they belong to.
    #[test]
    fn each_output_is_finished_once_with_its_channel() {
        if !available() {
            return;
        }
        let conv = Conv { pads: [1; 4], ..Conv::new(vec![0.0; 11 * 2 * 9], 2, 11, [3, 3]) };
        let mut out = vec![0.0f32; 11 * 18 * 18];
        let weights = DirectWeights::new(&conv);
        conv_direct(&conv, &weights, &vec![1.0; 2 * 18 * 18], [18, 18], &mut out, [18, 18], true, |c, sums, out| {
            out.iter_mut().zip(sums).for_each(|(o, &s)| *o += s + 1.0 + c as f32)
        });
        for (i, &v) in out.iter().enumerate() {
            assert_eq!(v, 1.0 + (i / (18 * 18)) as f32, "output {i}");
        }
    }
}

//! Direct sparse convolution (one group, any stride): each non-zero weight adds a shifted
//! copy of its input channel, scaled, to its output channel, with no unfolded windows.
//!
//! The input is copied into zero-padded planes, one per channel and stride phase (rows
//! `y % S_h`, columns `x % S_w` of the padded input), whose rows are as long as an output
//! row plus `(K_w - 1) / S_w`. Computed on that grid (a few junk columns per row, dropped
//! at the end), output `i` of a channel reads tap `(c, ky, kx)` at
//! `i + (ky / S_h) * pitch + kx / S_w` of plane `(c, ky % S_h, kx % S_w)`: a constant
//! offset per weight. Where an output row rounds up to whole vectors cheaply, the planes
//! are copied once per column shift instead, so that every such offset falls on a cache
//! line, or, on rows of half a vector (7x7 maps), every other kernel row's
//! (`Grid::shifts`). A block of outputs then sums, over its row's non-zeros, runs of
//! consecutive inputs, in registers, reading the padded input in place: no im2col (which
//! writes nine times the input for a 3x3 kernel) and no packing. Each output sums its
//! row's non-zeros in column order from zero, whatever the threads.

use super::scratch;
use super::sparse::{add_runs, add_runs_rows_apart, add_two_rows, isa, Isa, SparseRows, PAIRED_WIDTH, ROWS_APART};
use crate::plan::Conv;
use rayon::prelude::*;

/// Output rows per parallel task, at least.
const MIN_ROWS_PER_TASK: usize = 8;
/// Bytes of input a block reads per pass over the rows: three quarters of a core's L1 data
/// cache. The rows pass over the input channels in groups this large, so that most of a
/// non-zero's loads hit L1 (reading all channels at once, a non-zero waited on L2 for its
/// lines); each pass reloads every row's sums, so fewer passes pay for the odd miss.
/// ResNet-18 at 70 % sparsity, one thread, best of four interleaved rounds: 24 KB 45.7 /
/// 47.7 images/s at batch 1 / 8, 36 KB 46.5 / 48.9, 48 KB 45.6 / 46.8.
const L1_INPUT_BYTES: usize = 36 * 1024;

/// The geometry of the padded grid for one image.
struct Grid {
    /// Length of a plane's row (an output row plus `(K_w - 1) / S_w`; with `shifts > 1` an
    /// output row rounded up to whole or half vectors), and its rows.
    pitch: usize,
    rows: usize,
    /// Grid positions per channel that blocks cover (`oh * pitch`, rounded up to whole
    /// blocks), how far apart blocks start, and the outputs a block computes: its first
    /// `block / block_rows` outputs from its start and from each of its next rows' starts,
    /// `pitch` apart (`block_rows > 1`: rows' junk columns left out).
    outputs: usize,
    stride: usize,
    block: usize,
    block_rows: usize,
    /// Length of one plane (every input a block reads, zeros beyond).
    plane: usize,
    /// Input channels whose planes' inputs for one block fit [`L1_INPUT_BYTES`].
    channels_per_pass: usize,
    /// Copies of the planes, copy `s` shifted left by `s` columns (`s <= (K_w - 1) / S_w`):
    /// with whole-vector rows and planes, a non-zero in column `kx` of its phase reads copy
    /// `kx / S_w` at a multiple of 16, so that no load of its run crosses a cache line (on
    /// Intel's cores a load across two lines takes both their slots: the kernel ran at
    /// 0.7x). With rows of half a vector, the runs of even kernel rows start on a line, odd
    /// ones halfway (copies shifted by a row as well, so that all would, ran slower: twice
    /// the input per pass). One copy, unaligned, where even half-vector rows would add more
    /// than [`MAX_ROW_PADDING`] of junk outputs.
    shifts: usize,
}

/// Largest share of extra outputs (row ends) that rounding rows up to whole vectors may add.
const MAX_ROW_PADDING: f64 = 0.125;

impl Grid {
    /// What a [`Layout`] depends on.
    fn key(&self) -> [usize; 4] {
        [self.pitch, self.plane, self.channels_per_pass, self.shifts]
    }

    fn new(conv: &Conv, [oh, ow]: [usize; 2], widest: usize) -> Grid {
        let ([kh, kw], [sh, sw]) = (conv.kernel, conv.stride);
        let (reach_y, reach_x) = ((kh - 1) / sh, (kw - 1) / sw);
        let cheap = |pitch: usize| pitch as f64 <= (1.0 + MAX_ROW_PADDING) * (ow + reach_x) as f64;
        // Shifted copies hold a row's reach themselves: their rows need only the outputs.
        // Rows of half a vector start every other row on a cache line (7x7 maps: rows of 8
        // for 7 + 2; half the loads split, against all of them on rows of 9).
        let (pitch, shifts) = match [16, 8].map(|v| ow.next_multiple_of(v)) {
            [whole, _] if cheap(whole) => (whole, reach_x + 1),
            [_, half] if cheap(half) => (half, reach_x + 1),
            _ => (ow + reach_x, 1),
        };
        // Blocks of at most `PAIRED_WIDTH` outputs may end in a vector of 8; wider ones are
        // whole vectors of 16.
        let vectors = |outputs: usize| outputs.next_multiple_of(if outputs > PAIRED_WIDTH { 16 } else { 8 });
        let (stride, block, block_rows) = match vectors(ow) {
            // Rows with junk columns a vector of 8 or more wide (56 of 64): blocks of whole
            // rows, their outputs only. Two rows each where that fits the vectors: with
            // AVX-512, blocks of one row (paired output channels) ran 3 % slower than blocks
            // of 128 with the junk, two rows of 56 3 % faster (64 channels of 56x56, 30 %
            // non-zeros, one thread).
            // (Wider than `PAIRED_WIDTH`: the paired kernel reads one run per block.)
            row if row + 8 <= pitch
                && (PAIRED_WIDTH + 1..=widest).contains(&(2 * row))
                && ROWS_APART.contains(&row) =>
            {
                (2 * pitch, 2 * row, 2)
            }
            row if row + 8 <= pitch && row <= PAIRED_WIDTH.min(widest) => (pitch, row, 1),
            // Else as few blocks as the vectors allow, each as wide as its share of the map
            // needs: 14x14's 224 outputs are two blocks of 112, 7x7's 56 one of 56.
            _ => {
                let block = vectors((oh * pitch).div_ceil((oh * pitch).div_ceil(widest)));
                (block, block, 1)
            }
        };
        let outputs = (oh * pitch).next_multiple_of(stride);
        let per_channel = 4 * sh * sw * shifts * (block + reach_y * pitch + reach_x + 1);
        Grid {
            pitch,
            rows: oh + reach_y,
            outputs,
            stride,
            block,
            block_rows,
            plane: (outputs + reach_y * pitch + reach_x + 1).next_multiple_of(16),
            channels_per_pass: (L1_INPUT_BYTES / per_channel).max(1),
            shifts,
        }
    }
}

/// `out` ([C_out, OH, OW]) = `input` ([C_in, H, W]) convolved with `sparse` (`conv`'s
/// weights, pruned), without bias, each output channel then passed to `finish` (its index
/// and plane) while in cache, if the layer's geometry allows it (no dilation, one group);
/// else `false`, and `out` untouched.
pub fn conv_direct(
    conv: &Conv,
    sparse: &SparseRows,
    input: &[f32],
    in_hw: [usize; 2],
    out: &mut [f32],
    out_hw: [usize; 2],
    finish: &Finish<'_>,
) -> bool {
    if conv.groups != 1 || conv.dilation != [1, 1] || conv.stride.contains(&0) || out_hw.contains(&0) {
        return false;
    }
    let widest = if isa() == Isa::Avx512 { 128 } else { 64 };
    // Offsets into the padded planes are 32-bit (half the bytes a row streams per non-zero
    // index); planes beyond that reach take the other kernels.
    let grid = Grid::new(conv, out_hw, widest);
    let planes = conv.c_in * conv.stride[0] * conv.stride[1] * grid.shifts;
    if planes.saturating_mul(grid.plane) > u32::MAX as usize {
        return false;
    }
    conv_on(conv, sparse, Image { input, in_hw, out, out_hw, finish }, &grid);
    true
}

/// What is done to each output channel's plane once summed (bias and activation), by
/// channel index.
pub type Finish<'a> = dyn Fn(usize, &mut [f32]) + Sync + 'a;

/// One image's input and output, with their maps' `[h, w]`, and what finishes its output.
struct Image<'a> {
    input: &'a [f32],
    in_hw: [usize; 2],
    out: &'a mut [f32],
    out_hw: [usize; 2],
    finish: &'a Finish<'a>,
}

/// [`conv_direct`] on `grid`, with the layout kept for the layer.
fn conv_on(conv: &Conv, sparse: &SparseRows, image: Image, grid: &Grid) {
    let layout: &Layout = sparse.derived(|| Layout::new(conv, sparse, grid));
    if layout.key != grid.key() {
        // Another geometry than the first image's (a plan's layers have one): work it out
        // for this call alone.
        return conv_with(conv, &Layout::new(conv, sparse, grid), grid, image);
    }
    conv_with(conv, layout, grid, image)
}

/// The layer's non-zeros as the direct kernel reads them: per non-zero, the offset of its
/// first input in the padded planes beside its value; pass after pass over the input
/// channels, each pass's rows one after another, so that a task's pass reads one stream
/// however many rows it has. (Kept row by row, a pass began two streams per row, offsets
/// and values, and ResNet-18's 7x7 layers ran fastest in tasks of 16 rows; now a task
/// takes all the rows its share of the threads allows: at 70 % sparsity, one thread,
/// 42.2 -> 44.5 images/s at batch 1, 44.3 -> 47.1 at batch 8.)
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    /// The grid's pitch, plane length, channels per pass and shifts it was worked out for.
    key: [usize; 4],
    runs: Vec<(u32, f32)>,
    /// Per pass, `rows + 1` indices into `runs`: row `r`'s non-zeros of pass `p` are
    /// `starts[p * (rows + 1) + r]..starts[p * (rows + 1) + r + 1]`.
    starts: Vec<usize>,
    rows: usize,
    passes: usize,
}

impl Layout {
    fn new(conv: &Conv, sparse: &SparseRows, grid: &Grid) -> Layout {
        let ([kh, kw], [sh, sw]) = (conv.kernel, conv.stride);
        let planes = conv.c_in * sh * sw;
        let offset = |j: u32| {
            let j = j as usize;
            let (c, ky, kx) = (j / (kh * kw), j / kw % kh, j % kw);
            let plane = (c * sh + ky % sh) * sw + kx % sw;
            // Shifted copies: the column within the phase picks the copy.
            let (copy, column) = if grid.shifts > 1 { (kx / sw, 0) } else { (0, kx / sw) };
            ((copy * planes + plane) * grid.plane + ky / sh * grid.pitch + column) as u32
        };
        let per_pass = grid.channels_per_pass * kh * kw;
        let passes = conv.c_in.div_ceil(grid.channels_per_pass);
        let rows = conv.c_out;
        // Where each row's non-zeros of each pass lie among the layer's (by column, then by
        // row), then those runs pass by pass.
        let mut bounds = Vec::with_capacity(rows * (passes + 1));
        for r in 0..rows {
            let (first, cols) = (sparse.starts[r], &sparse.cols[sparse.starts[r]..sparse.starts[r + 1]]);
            bounds.extend((0..=passes).map(|p| first + cols.partition_point(|&j| (j as usize) < p * per_pass)));
        }
        let (mut runs, mut starts) = (Vec::with_capacity(sparse.cols.len()), Vec::with_capacity(passes * (rows + 1)));
        for p in 0..passes {
            for r in 0..rows {
                starts.push(runs.len());
                let span = bounds[r * (passes + 1) + p]..bounds[r * (passes + 1) + p + 1];
                runs.extend(sparse.cols[span.clone()].iter().zip(&sparse.values[span]).map(|(&j, &a)| (offset(j), a)));
            }
            starts.push(runs.len());
        }
        Layout { key: grid.key(), runs, starts, rows, passes }
    }
}

/// The input's planes, one per channel and stride phase, zero-padded as `grid` lays them
/// out, and each of the grid's shifted copies of them (phases and copies no tap reads are
/// left as they were).
fn pad_input(conv: &Conv, grid: &Grid, input: &[f32], [h, w]: [usize; 2], padded: &mut [f32]) {
    let ([sh, sw], phases) = (conv.stride, conv.stride[0] * conv.stride[1]);
    let (top, left) = (conv.pads[0], conv.pads[1]);
    let planes = conv.c_in * phases;
    padded.par_chunks_mut(grid.plane).enumerate().for_each(|(i, plane)| {
        // Copy `shift`'s column `x` is the unshifted plane's `x + shift`.
        let (shift, i) = (i / planes, i % planes);
        let (c, py, px) = (i / phases, i % phases / sw, i % sw);
        if py >= conv.kernel[0] || shift * sw + px >= conv.kernel[1] {
            // No tap reads this phase (a 1x1 kernel with stride 2 reads one in four), or
            // this copy of it (a 3x3/2 reads the second copy of even columns only).
            return;
        }
        let channel = &input[c * h * w..][..h * w];
        // Plane column x reads input column x * sw + px - left, where that is inside.
        let x0 = left.saturating_sub(px).div_ceil(sw);
        let x1 = (w + left).saturating_sub(px).div_ceil(sw).clamp(x0, (grid.pitch + shift).max(x0));
        // Unshifted columns `from..to`, at `x - shift`; every other value zero, each written
        // once (zeroing the plane first wrote it twice: a fifth of a 56x56 layer's time).
        let (from, to) = (x0.max(shift), x1.max(shift));
        let (rows, tail) = plane.split_at_mut(grid.rows * grid.pitch);
        tail.fill(0.0);
        for (y, dst) in rows.chunks_exact_mut(grid.pitch).enumerate() {
            let Some(iy) = (y * sh + py).checked_sub(top).filter(|&iy| iy < h) else {
                dst.fill(0.0);
                continue;
            };
            let src = &channel[iy * w..][..w];
            let (before, rest) = dst.split_at_mut(from - shift);
            let (inside, after) = rest.split_at_mut(to - from);
            before.fill(0.0);
            after.fill(0.0);
            let src = &src[from * sw + px - left..];
            match sw {
                1 => inside.copy_from_slice(&src[..inside.len()]),
                // Every other input: pairs, so that the copy runs in vectors.
                2 => inside.iter_mut().zip(src.chunks(2)).for_each(|(d, pair)| *d = pair[0]),
                _ => inside.iter_mut().zip(src.iter().step_by(sw)).for_each(|(d, s)| *d = *s),
            }
        }
    });
}

/// [`conv_direct`] with its layout: pad the input, sum every block of every output row
/// (in parallel over blocks and groups of rows), then copy the outputs off the grid.
fn conv_with(conv: &Conv, layout: &Layout, grid: &Grid, image: Image) {
    let Image { input, in_hw, out, out_hw: [oh, ow], finish } = image;
    let planes = conv.c_in * conv.stride[0] * conv.stride[1] * grid.shifts;
    // Planes from a 64-byte boundary on, so that offsets that are multiples of 16 are too.
    let mut buffer = scratch::take_len(planes * grid.plane + 15, 0.0f32);
    let lead = buffer.as_ptr().align_offset(64).min(15);
    let padded = &mut buffer[lead..][..planes * grid.plane];
    pad_input(conv, grid, input, in_hw, padded);
    let blocks = grid.outputs / grid.stride;
    let threads = rayon::current_num_threads();
    let rows_per_task = conv.c_out.div_ceil((2 * threads).div_ceil(blocks)).max(MIN_ROWS_PER_TASK);
    // Per block, every output channel's sums over it.
    let mut tiles = scratch::take_len(blocks * conv.c_out * grid.block, 0.0f32);
    let padded_ref = &*padded;
    let apart = (grid.block_rows > 1).then_some(grid.pitch);
    tiles[..blocks * conv.c_out * grid.block]
        .par_chunks_mut(conv.c_out * grid.block)
        .enumerate()
        .flat_map(|(b, tile)| {
            tile.par_chunks_mut(rows_per_task * grid.block).enumerate().map(move |(t, rows)| (b, t, rows))
        })
        .for_each(|(b, t, rows)| {
            let task = Task { layout, first: t * rows_per_task, padded: padded_ref, start: b * grid.stride, apart };
            run(task, grid.block, rows);
        });
    let width = grid.block / grid.block_rows;
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(r, channel)| {
        // Output row `oy` is grid run `oy * pitch..` (its first `ow`), which may cross blocks
        // (and is never in a block's gap: blocks with one are a row each).
        for (oy, row) in channel.chunks_exact_mut(ow).enumerate() {
            let mut i = oy * grid.pitch;
            let mut done = 0;
            while done < ow {
                let (b, within) = (i / grid.stride, i % grid.stride);
                // A block of rows apart holds each row's outputs `width` apart, a whole
                // output row in one; a block of one run holds the grid's run as it is.
                let (at, run) = match grid.block_rows {
                    1 => (within, (ow - done).min(grid.block - within)),
                    _ => (within / grid.pitch * width + within % grid.pitch, ow - done),
                };
                let tile = &tiles[(b * conv.c_out + r) * grid.block..][..grid.block];
                row[done..done + run].copy_from_slice(&tile[at..at + run]);
                (done, i) = (done + run, i + run);
            }
        }
        finish(r, channel);
    });
}

/// One task: output rows from `first` on, over the block of outputs from `start` on,
/// reading the padded input `padded` where `layout` says.
pub(super) struct Task<'a> {
    layout: &'a Layout,
    first: usize,
    padded: &'a [f32],
    start: usize,
    /// With blocks of two rows: how far apart they start.
    apart: Option<usize>,
}

/// Compute `task` into `rows` (one `block`-long row per output row) with the widest vectors
/// the processor has.
fn run(task: Task, block: usize, rows: &mut [f32]) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => super::sparse::avx512::conv_rows(task, block, rows),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => pulp::Simd::vectorize(
            pulp::x86::V3::try_new().expect("detected"),
            #[inline(always)]
            || rows_in::<true>(task, block, rows),
        ),
        _ => rows_in::<false>(task, block, rows),
    }
}

/// The loops of [`run`], for the caller's vector extensions (`FUSED`: see
/// [`super::sparse`]): pass by pass over the input channels, every row adds its non-zeros
/// in the pass's channels to its sums.
#[inline(always)]
pub(super) fn rows_in<const FUSED: bool>(task: Task, block: usize, rows: &mut [f32]) {
    if block <= PAIRED_WIDTH {
        return rows_in_pairs::<FUSED>(task, block, rows);
    }
    for pass in 0..task.layout.passes {
        for (r, dst) in (task.first..).zip(rows.chunks_exact_mut(block)) {
            task.add_row::<FUSED>(task.span(r, pass), block, dst, pass);
        }
    }
}

/// [`rows_in`] for blocks of at most [`PAIRED_WIDTH`] outputs: two rows at a time
/// ([`add_two_rows`]), a last odd one alone.
#[inline(always)]
fn rows_in_pairs<const FUSED: bool>(task: Task, block: usize, rows: &mut [f32]) {
    let Layout { runs, passes, .. } = task.layout;
    for pass in 0..*passes {
        for (first, group) in (task.first..).step_by(2).zip(rows.chunks_mut(2 * block)) {
            if group.len() < 2 * block {
                task.add_row::<FUSED>(task.span(first, pass), block, group, pass);
                continue;
            }
            let (s0, s1) = (task.span(first, pass), task.span(first + 1, pass));
            if s0.is_empty() && s1.is_empty() && pass > 0 {
                continue;
            }
            let (d0, d1) = group.split_at_mut(block);
            let rows = [&runs[s0], &runs[s1]];
            add_two_rows::<FUSED>(block, task.padded, task.start, rows, [d0, d1], pass == 0);
        }
    }
}

impl Task<'_> {
    /// Where row `r`'s non-zeros in `pass` lie among the layer's.
    #[inline(always)]
    fn span(&self, r: usize, pass: usize) -> std::ops::Range<usize> {
        let starts = &self.layout.starts[pass * (self.layout.rows + 1) + r..];
        starts[0]..starts[1]
    }

    /// Add one row's non-zeros `span` (of pass `pass`) over the block into `dst`, which the
    /// first pass sets; later passes without non-zeros leave it as it is.
    #[inline(always)]
    fn add_row<const FUSED: bool>(&self, span: std::ops::Range<usize>, block: usize, dst: &mut [f32], pass: usize) {
        if span.is_empty() && pass > 0 {
            return;
        }
        let runs = self.layout.runs[span].iter().map(|&(o, a)| (o as usize + self.start, a));
        match self.apart {
            Some(pitch) => add_runs_rows_apart::<FUSED>(block / 2, pitch, self.padded, runs, dst, pass == 0),
            None => add_runs::<FUSED>(block, self.padded, runs, dst, pass == 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::accumulate;
    use rand::{RngExt, SeedableRng};

    /// A conv of `c_in -> c_out` channels on an `h x w` map, its weights pruned to
    /// `density` (one filter left all zeros), and a random input.
    fn case(
        c: [usize; 2],
        hw: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        pads: [usize; 4],
        density: f64,
    ) -> (Conv, Vec<f32>) {
        let mut rng = rand::rngs::SmallRng::seed_from_u64((c[0] * 31 + hw[0] * 7 + kernel[0] + stride[1] * 3) as u64);
        let len = c[1] * c[0] * kernel[0] * kernel[1];
        let mut weight: Vec<f32> =
            (0..len).map(|_| if rng.random::<f64>() < density { rng.random_range(-1.0..1.0) } else { 0.0 }).collect();
        weight[..len / c[1]].fill(0.0);
        let input = (0..c[0] * hw[0] * hw[1]).map(|_| rng.random_range(-1.0..1.0)).collect();
        let sparse_weight = Some(SparseRows::of_dense(&weight, c[1]));
        (Conv { stride, pads, sparse_weight, ..Conv::new(weight, c[0], c[1], kernel) }, input)
    }

    fn out_hw(conv: &Conv, [h, w]: [usize; 2]) -> [usize; 2] {
        let (p, [kh, kw], [sh, sw]) = (conv.pads, conv.kernel, conv.stride);
        [(h + p[0] + p[2] - kh) / sh + 1, (w + p[1] + p[3] - kw) / sw + 1]
    }

    #[test]
    fn direct_sums_match_the_unfolded_product_for_every_geometry_and_block() {
        let cases = [
            // (channels, map, kernel, stride, pads): ResNet's stride-1 and stride-2 3x3s,
            // its 7x7/2 stem and 1x1/2 shortcut, maps smaller than a vector, uneven pads,
            // a non-square kernel and stride, and enough channels for several passes.
            ([8, 16], [9, 11], [3, 3], [1, 1], [1, 1, 1, 1]),
            ([6, 9], [12, 13], [3, 3], [2, 2], [1, 1, 1, 1]),
            ([3, 8], [21, 20], [7, 7], [2, 2], [3, 3, 3, 3]),
            ([8, 12], [10, 9], [1, 1], [2, 2], [0; 4]),
            ([5, 7], [3, 2], [3, 3], [1, 1], [1, 1, 1, 1]),
            ([4, 6], [8, 7], [3, 2], [2, 1], [0, 1, 2, 0]),
            ([160, 10], [14, 14], [3, 3], [1, 1], [1, 1, 1, 1]),
            // Rows that round up to whole vectors: copies shifted by a column (3x3, stride
            // 1 and 2; 7x7/2), and a 1x1/2 with one copy.
            ([4, 6], [9, 14], [3, 3], [1, 1], [1, 1, 1, 1]),
            ([6, 9], [20, 30], [3, 3], [2, 2], [1, 1, 1, 1]),
            ([3, 8], [25, 26], [7, 7], [2, 2], [3, 3, 3, 3]),
            ([8, 12], [10, 32], [1, 1], [2, 2], [0; 4]),
            // Rows exactly as long as the outputs (16): the shifted copies hold the reach.
            ([4, 6], [16, 16], [3, 3], [1, 1], [1, 1, 1, 1]),
            // Rows of half a vector (7x7 maps, rows of 8): 3x3 and 3x3/2 onto them.
            ([16, 8], [7, 7], [3, 3], [1, 1], [1, 1, 1, 1]),
            ([6, 8], [14, 14], [3, 3], [2, 2], [1, 1, 1, 1]),
            // Blocks of one row without its junk columns: 56 of 64 (3x3, 3x3/2).
            ([4, 6], [5, 56], [3, 3], [1, 1], [1, 1, 1, 1]),
            ([5, 6], [6, 112], [3, 3], [2, 2], [1, 1, 1, 1]),
        ];
        for (c, hw, kernel, stride, pads) in cases {
            for density in [0.05, 0.3, 1.0] {
                let (conv, input) = case(c, hw, kernel, stride, pads, density);
                let ohw = out_hw(&conv, hw);
                let mut want = vec![0.0f32; c[1] * ohw[0] * ohw[1]];
                let dense = Conv { sparse_weight: None, ..conv.clone() };
                accumulate(&dense, &dense.weight, &input, hw, &mut want, ohw);
                for widest in [64, 128] {
                    let sparse = SparseRows::of_dense(&conv.weight, c[1]);
                    let mut got = vec![f32::NAN; want.len()];
                    let grid = Grid::new(&conv, ohw, widest);
                    conv_on(
                        &conv,
                        &sparse,
                        Image { input: &input, in_hw: hw, out: &mut got, out_hw: ohw, finish: &|_, _| () },
                        &grid,
                    );
                    // Twice: the second run reads the cached layout.
                    let mut again = vec![f32::NAN; want.len()];
                    conv_on(
                        &conv,
                        &sparse,
                        Image { input: &input, in_hw: hw, out: &mut again, out_hw: ohw, finish: &|_, _| () },
                        &grid,
                    );
                    assert_eq!(got, again, "{c:?} {hw:?} {kernel:?}/{stride:?}");
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "{c:?} {hw:?} {kernel:?}/{stride:?} {pads:?} at {i}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn rows_round_up_to_whole_or_half_vectors_where_that_is_cheap() {
        // (output map, kernel, stride) -> (pitch, shifts): 56x56, 16x16 and 14x14 rows of
        // whole vectors (16x16's no longer than its outputs), 7x7 of half ones (onto 7x7
        // from a 3x3 or a 3x3/2), 11 columns unshifted.
        for (out, kernel, stride, want) in [
            (56, 3, 1, (64, 3)),
            (16, 3, 1, (16, 3)),
            (14, 3, 1, (16, 3)),
            (7, 3, 1, (8, 3)),
            (7, 3, 2, (8, 2)),
            (11, 3, 1, (13, 1)),
        ] {
            let (conv, _) = case([4, 4], [out, out], [kernel; 2], [stride; 2], [1; 4], 0.5);
            let grid = Grid::new(&conv, [out, out], 128);
            assert_eq!((grid.pitch, grid.shifts), want, "{out}x{out}, {kernel}x{kernel}/{stride}");
        }
    }

    #[test]
    fn blocks_compute_no_junk_a_vector_wide() {
        // (map side, kernel, stride, widest vector run) -> (stride, block): whole rows, their
        // outputs only, where their junk columns fill a vector of 8 (56x56 onto rows of 64:
        // two rows of 56 with AVX-512, one with AVX2), else blocks as wide
        // as their share (14x14: two of 112; 7x7: one of 56; 28x28: rows of 32, seven
        // blocks of 128; the 7x7/2 stem's rows of 112 have no junk: its shifted copies hold
        // the reach).
        for (side, kernel, stride, widest, want) in [
            (56, 3, 1, 128, (128, 112)),
            (56, 3, 1, 64, (64, 56)),
            (112, 3, 2, 128, (128, 112)),
            (224, 7, 2, 128, (128, 128)),
            (224, 7, 2, 64, (64, 64)),
            (14, 3, 1, 128, (112, 112)),
            (7, 3, 1, 128, (56, 56)),
            (28, 3, 1, 128, (128, 128)),
        ] {
            let (mut conv, _) = case([3, 4], [side, side], [kernel; 2], [stride; 2], [kernel / 2; 4], 0.5);
            conv.pads = [kernel / 2; 4];
            let grid = Grid::new(&conv, out_hw(&conv, [side, side]), widest);
            assert_eq!((grid.stride, grid.block), want, "{side}x{side}, {kernel}x{kernel}/{stride}, {widest}");
            assert_eq!(grid.outputs % grid.stride, 0);
        }
    }

    #[test]
    fn the_portable_loop_sums_what_every_vector_build_does() {
        let (conv, input) = case([8, 16], [9, 11], [3, 3], [1, 1], [1; 4], 0.3);
        let sparse = conv.sparse_weight.as_ref().expect("pruned");
        let grid = Grid::new(&conv, [9, 11], 64);
        let layout = Layout::new(&conv, sparse, &grid);
        let mut padded = vec![0.0f32; 8 * grid.plane];
        padded.iter_mut().enumerate().for_each(|(i, v)| *v = input[i % input.len()]);
        let task = || Task { layout: &layout, first: 0, padded: &padded, start: 0, apart: None };
        let mut plain = vec![0.0; 16 * grid.block];
        rows_in::<false>(task(), grid.block, &mut plain);
        let mut builds = vec![vec![0.0; 16 * grid.block]];
        run(task(), grid.block, &mut builds[0]);
        #[cfg(target_arch = "x86_64")]
        if let Some(simd) = pulp::x86::V3::try_new() {
            let mut avx2 = vec![0.0; 16 * grid.block];
            pulp::Simd::vectorize(simd, || rows_in::<true>(task(), grid.block, &mut avx2));
            builds.push(avx2);
        }
        for vector in &builds {
            for (p, v) in plain.iter().zip(vector) {
                assert!((p - v).abs() <= 1e-4 * (1.0 + p.abs()), "{p} vs {v}");
            }
        }
    }

    #[test]
    fn dilated_or_grouped_convs_are_left_to_the_other_kernels() {
        let (conv, input) = case([4, 4], [6, 6], [3, 3], [1, 1], [1; 4], 0.3);
        let sparse = conv.sparse_weight.clone().expect("pruned");
        let mut out = vec![7.0f32; 4 * 36];
        let dilated = Conv { dilation: [2, 2], pads: [2; 4], ..conv.clone() };
        assert!(!conv_direct(&dilated, &sparse, &input, [6, 6], &mut out, [6, 6], &|_, _| ()));
        let grouped = Conv { groups: 2, ..conv };
        assert!(!conv_direct(&grouped, &sparse, &input, [6, 6], &mut out, [6, 6], &|_, _| ()));
        assert!(out.iter().all(|&v| v == 7.0), "untouched");
    }
}

//! Zero-skipping kernels for pruned weights: a sparse x dense product over a layer's
//! [`SparseRows`] that touches only the non-zero weights.
//!
//! The right-hand side is copied, a block of rows at a time, into panels of 128 columns
//! (64 without AVX-512; a last one as wide as it needs, in steps of 16 columns), a block
//! of each panel filling half a core's L1 cache. An output row then walks its non-zeros
//! in the block with its panel's sums in eight registers: per non-zero, one broadcast and
//! per register one load from L1 and one fused multiply-add. Read in place instead, the
//! rows a sparse row picks lie a whole image row apart, every non-zero touches fresh cache
//! lines the prefetcher cannot foresee, and the kernel lost to dense SGEMM even at 85 %
//! zeros. It pays below [`PRODUCT_DENSITY`]; convs take the direct kernel of
//! [`super::sparse_conv`] instead, which needs no unfolded windows and pays up to twice
//! as dense.
//!
//! Each output sums its row's non-zeros in column order from zero, whatever the threads.

use super::scratch;
pub use crate::sparse_rows::{SparseRows, PRODUCT_DENSITY, SPARSE_DENSITY, SPARSE_MIN_FAN_IN};
use rayon::prelude::*;

/// Columns per panel with AVX-512: an output row's sums over a panel fill eight registers,
/// enough independent multiply-add chains to hide their latency.
const WIDE_PANEL: usize = 128;
/// Columns per panel otherwise (eight AVX2 registers).
const PANEL: usize = 64;
/// Steps in which a last, narrower panel is as wide as it needs (one AVX-512 register).
const NARROW: usize = 16;
/// Panels a task packs and passes over together at most: the right-hand side is read in
/// runs this many panels long (a panel's run alone, one image row apart from the next,
/// left the prefetcher nothing to go on).
const PANELS_PER_TASK: usize = 8;
/// Bytes of a panel packed and passed over at a time: half of a core's L1 data cache,
/// where every non-zero's loads then hit (from L2, each non-zero waited on its lines).
const L1_PANEL_BYTES: usize = 24 * 1024;
/// Output rows per parallel task, at least.
const MIN_ROWS_PER_TASK: usize = 8;

/// One panel of a task: columns `c0..c0 + w` of the task's, packed `width` wide (`w`
/// rounded up to [`NARROW`]), after `before` columns of the task's other panels (packed
/// blocks and tiles are laid out panel after panel).
#[derive(Clone, Copy)]
struct Panel {
    c0: usize,
    w: usize,
    width: usize,
    before: usize,
}

/// The panels `columns` columns split into: full ones of `panel` columns, then the rest as
/// one panel as wide as it needs.
fn panels(columns: usize, panel: usize) -> Vec<Panel> {
    let mut before = 0;
    (0..columns)
        .step_by(panel)
        .map(|c0| {
            let w = panel.min(columns - c0);
            let p = Panel { c0, w, width: w.next_multiple_of(NARROW), before };
            before += p.width;
            p
        })
        .collect()
}

/// One task of [`SparseRows::matmul_rows`]: output rows `rows` (counted in `out`) over
/// `columns`, in `panels`, summed into a tile of `rows.len() x padded` at `tile`.
struct Task {
    rows: std::ops::Range<usize>,
    columns: std::ops::Range<usize>,
    panels: Vec<Panel>,
    padded: usize,
    tile: usize,
}

impl Task {
    /// Where row `r` (of `out`) of panel `p` sits in the tiles.
    fn at(&self, p: &Panel, r: usize) -> usize {
        self.tile + p.before * self.rows.len() + (r - self.rows.start) * p.width
    }
}

impl SparseRows {
    /// `out[rows_range x n] = self[rows_range] * b[k x n]` (row-major `b`, `n` columns),
    /// for the rows `first..first + out.len() / n`.
    ///
    /// Tasks are runs of columns (up to eight panels), split into row ranges
    /// when there are too few for the threads; each task sums into its own tile, panel by
    /// panel (each row as wide as the panel is packed, so that its sums load and store as
    /// whole registers), and the tiles are then copied into `out`.
    pub fn matmul_rows(&self, first: usize, b: &[f32], n: usize, out: &mut [f32]) {
        if n == 0 || out.is_empty() {
            return;
        }
        let rows = out.len() / n;
        let threads = rayon::current_num_threads();
        let panel = if isa() == Isa::Avx512 { WIDE_PANEL } else { PANEL };
        let per_task = (n.div_ceil(panel) / (2 * threads)).clamp(1, PANELS_PER_TASK) * panel;
        let runs = n.div_ceil(per_task);
        let rows_per_task = rows.div_ceil((2 * threads).div_ceil(runs)).max(MIN_ROWS_PER_TASK);
        let mut tasks = Vec::new();
        let mut tile = 0;
        for c0 in (0..n).step_by(per_task) {
            let columns = c0..n.min(c0 + per_task);
            let panels = panels(columns.len(), panel);
            let padded = panels.iter().map(|p| p.width).sum::<usize>();
            for r0 in (0..rows).step_by(rows_per_task) {
                let rows = r0..rows.min(r0 + rows_per_task);
                tasks.push(Task { tile, rows: rows.clone(), columns: columns.clone(), panels: panels.clone(), padded });
                tile += rows.len() * padded;
            }
        }
        let mut tiles = scratch::take_len(tile, 0.0f32);
        let mut pieces = Vec::with_capacity(tasks.len());
        let mut rest = &mut tiles[..tile];
        for task in &tasks {
            let (piece, tail) = rest.split_at_mut(task.rows.len() * task.padded);
            pieces.push((task, piece));
            rest = tail;
        }
        pieces.into_par_iter().for_each(|(task, tile)| multiply(Product { matrix: self, first, task, b, n }, tile));
        out.par_chunks_mut(n).enumerate().for_each(|(r, row)| {
            for task in tasks.iter().filter(|t| t.rows.contains(&r)) {
                for p in &task.panels {
                    let c = task.columns.start + p.c0;
                    row[c..c + p.w].copy_from_slice(&tiles[task.at(p, r)..][..p.w]);
                }
            }
        });
    }
}

/// The vector extensions the kernel is compiled for.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Isa {
    Avx512,
    Avx2,
    Plain,
}

/// The widest vector extensions this processor has (AVX-512 not under `HASS_AVX2_ONLY`).
pub(super) fn isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512::available() {
            return Isa::Avx512;
        }
        if pulp::x86::V3::try_new().is_some() {
            return Isa::Avx2;
        }
    }
    Isa::Plain
}

/// What one task multiplies: `task`'s rows (of `matrix`, from `first` on) times its columns
/// of `b` (`n` columns, row-major).
struct Product<'a> {
    matrix: &'a SparseRows,
    first: usize,
    task: &'a Task,
    b: &'a [f32],
    n: usize,
}

/// Compute `product` into `tile` (the task's) with the widest vectors the processor has.
fn multiply(product: Product, tile: &mut [f32]) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => avx512::multiply(product, tile),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => pulp::Simd::vectorize(
            pulp::x86::V3::try_new().expect("detected"),
            #[inline(always)]
            || multiply_in::<true>(product, tile),
        ),
        _ => multiply_in::<false>(product, tile),
    }
}

/// The loops of [`multiply`], for the caller's vector extensions. `FUSED`: multiply-adds
/// as single instructions (only where the processor has them: else each is a library call).
/// The task's panels are packed and passed over a block of rows of `b` at a time (the
/// right-hand side read once, in runs as long as the task is wide); each row's non-zeros
/// in the block are found once for all the panels.
#[inline(always)]
fn multiply_in<const FUSED: bool>(product: Product, tile: &mut [f32]) {
    let Product { matrix, first, task, b, n } = product;
    let k = b.len() / n;
    let chunk = (L1_PANEL_BYTES / (4 * task.panels[0].width)).max(1);
    let mut packed = scratch::take_len(chunk * task.padded, 0.0f32);
    // Per row, the range of its non-zeros in the current block (the next block's start
    // after it).
    let mut next: Vec<(usize, usize)> = scratch::take();
    next.extend(task.rows.clone().map(|r| (matrix.starts[first + r], matrix.starts[first + r])));
    for k0 in (0..k).step_by(chunk) {
        let k1 = (k0 + chunk).min(k);
        for (i, src) in b[k0 * n..k1 * n].chunks_exact(n).enumerate() {
            let src = &src[task.columns.clone()];
            for p in &task.panels {
                let dst = &mut packed[chunk * p.before + i * p.width..][..p.width];
                dst[..p.w].copy_from_slice(&src[p.c0..p.c0 + p.w]);
                dst[p.w..].fill(0.0);
            }
        }
        for (r, next) in task.rows.clone().zip(next.iter_mut()) {
            let from = next.1;
            let end = matrix.starts[first + r + 1];
            let taken = matrix.cols[from..end].iter().take_while(|&&c| (c as usize) < k1).count();
            *next = (from, from + taken);
        }
        // Panel by panel, so that each block stays in L1 while every row passes over it.
        for p in &task.panels {
            let packed = &packed[chunk * p.before..][..chunk * p.width];
            let rows = &mut tile[p.before * task.rows.len()..][..task.rows.len() * p.width];
            for (&(from, to), dst) in next.iter().zip(rows.chunks_exact_mut(p.width)) {
                if from == to && k0 > 0 {
                    continue;
                }
                // Non-zero (k, a) reads the packed row k - k0 of the panel.
                let runs = matrix.cols[from..to]
                    .iter()
                    .zip(&matrix.values[from..to])
                    .map(|(&k, &a)| ((k as usize - k0) * p.width, a));
                add_runs::<FUSED>(p.width, packed, runs, dst, k0 == 0);
            }
        }
    }
    scratch::give_back(next);
}

/// Add `sum a * data[at..at + width]` over the `(at, a)` of `runs` to `dst` (`width` long),
/// or set `dst` to it when `fresh`: one output row's sums over a block of outputs, held in
/// registers, in the order of `runs`. The inner loop of both zero-skipping kernels; `width`
/// is a multiple of 16 up to 128, or of 8 up to 64 (vectors of 16 and a last one of 8).
#[inline(always)]
pub(super) fn add_runs<const FUSED: bool>(
    width: usize,
    data: &[f32],
    runs: impl Iterator<Item = (usize, f32)>,
    dst: &mut [f32],
    fresh: bool,
) {
    match width {
        128 => add_runs_of::<128, FUSED>(data, runs, dst, fresh),
        112 => add_runs_of::<112, FUSED>(data, runs, dst, fresh),
        96 => add_runs_of::<96, FUSED>(data, runs, dst, fresh),
        80 => add_runs_of::<80, FUSED>(data, runs, dst, fresh),
        64 => add_runs_of::<64, FUSED>(data, runs, dst, fresh),
        56 => add_runs_of::<56, FUSED>(data, runs, dst, fresh),
        48 => add_runs_of::<48, FUSED>(data, runs, dst, fresh),
        40 => add_runs_of::<40, FUSED>(data, runs, dst, fresh),
        32 => add_runs_of::<32, FUSED>(data, runs, dst, fresh),
        24 => add_runs_of::<24, FUSED>(data, runs, dst, fresh),
        16 => add_runs_of::<16, FUSED>(data, runs, dst, fresh),
        8 => add_runs_of::<8, FUSED>(data, runs, dst, fresh),
        _ => unreachable!("blocks are multiples of 16 up to 128, or of 8 up to 64: not {width}"),
    }
}

/// [`add_runs`] for a width known when compiling, so that the sums stay in registers.
#[inline(always)]
fn add_runs_of<const W: usize, const FUSED: bool>(
    data: &[f32],
    runs: impl Iterator<Item = (usize, f32)>,
    dst: &mut [f32],
    fresh: bool,
) {
    let dst: &mut [f32; W] = dst.try_into().expect("a row as wide as its block");
    let mut acc = if fresh { [0.0f32; W] } else { *dst };
    for (at, a) in runs {
        add_scaled::<W, FUSED>(&mut acc, a, &data[at..]);
    }
    *dst = acc;
}

/// `acc += a * data[..W]`: one non-zero's products over a block of sums, the step every
/// zero-skipping kernel repeats.
#[inline(always)]
fn add_scaled<const W: usize, const FUSED: bool>(acc: &mut [f32; W], a: f32, data: &[f32]) {
    let src: &[f32; W] = data[..W].try_into().expect("W long");
    for (acc, &x) in acc.iter_mut().zip(src) {
        *acc = if FUSED { a.mul_add(x, *acc) } else { *acc + a * x };
    }
}

/// Row widths [`add_runs_rows_apart`] takes: 56x56 maps' rows of 64 (56 outputs, 8 junk).
pub(super) const ROWS_APART: [usize; 1] = [56];

/// [`add_runs`] over two runs of `width` outputs, `pitch` apart (two rows of a map, their
/// junk columns between them left out): `dst` holds the first run's sums, then the second's.
#[inline(always)]
pub(super) fn add_runs_rows_apart<const FUSED: bool>(
    width: usize,
    pitch: usize,
    data: &[f32],
    runs: impl Iterator<Item = (usize, f32)>,
    dst: &mut [f32],
    fresh: bool,
) {
    match width {
        56 => add_runs_apart_of::<56, FUSED>(pitch, data, runs, dst, fresh),
        _ => unreachable!("rows apart are {ROWS_APART:?} wide: not {width}"),
    }
}

/// [`add_runs_rows_apart`] for a width known when compiling.
#[inline(always)]
fn add_runs_apart_of<const W: usize, const FUSED: bool>(
    pitch: usize,
    data: &[f32],
    runs: impl Iterator<Item = (usize, f32)>,
    dst: &mut [f32],
    fresh: bool,
) {
    let (d0, d1) = dst.split_at_mut(W);
    let (d0, d1): (&mut [f32; W], &mut [f32; W]) =
        (d0.try_into().expect("a block of two rows"), d1.try_into().expect("a block of two rows"));
    let (mut a0, mut a1) = if fresh { ([0.0f32; W], [0.0f32; W]) } else { (*d0, *d1) };
    for (at, a) in runs {
        add_scaled::<W, FUSED>(&mut a0, a, &data[at..]);
        add_scaled::<W, FUSED>(&mut a1, a, &data[at + pitch..]);
    }
    (*d0, *d1) = (a0, a1);
}

/// Blocks at most this wide sum two output rows at once ([`add_two_rows`]).
pub(super) const PAIRED_WIDTH: usize = 64;

/// [`add_runs`] for two output rows at once over the same `data`, `rows[i]` being row `i`'s
/// non-zeros as (offset from `start`, value) pairs: the `j`-th non-zeros of both rows in one
/// step, then the longer row's rest, so that each row still sums its own in their order.
/// A block of at most [`PAIRED_WIDTH`] outputs fills four registers or fewer, too few
/// independent multiply-add chains to hide their latency; two rows' chains together do
/// (ResNet-18's 7x7 maps run blocks of 64).
#[inline(always)]
pub(super) fn add_two_rows<const FUSED: bool>(
    width: usize,
    data: &[f32],
    start: usize,
    rows: [&[(u32, f32)]; 2],
    dst: [&mut [f32]; 2],
    fresh: bool,
) {
    match width {
        64 => add_two_rows_of::<64, FUSED>(data, start, rows, dst, fresh),
        56 => add_two_rows_of::<56, FUSED>(data, start, rows, dst, fresh),
        48 => add_two_rows_of::<48, FUSED>(data, start, rows, dst, fresh),
        40 => add_two_rows_of::<40, FUSED>(data, start, rows, dst, fresh),
        32 => add_two_rows_of::<32, FUSED>(data, start, rows, dst, fresh),
        24 => add_two_rows_of::<24, FUSED>(data, start, rows, dst, fresh),
        16 => add_two_rows_of::<16, FUSED>(data, start, rows, dst, fresh),
        8 => add_two_rows_of::<8, FUSED>(data, start, rows, dst, fresh),
        _ => unreachable!("paired blocks are multiples of 8 up to 64: not {width}"),
    }
}

/// [`add_two_rows`] for a width known when compiling.
#[inline(always)]
fn add_two_rows_of<const W: usize, const FUSED: bool>(
    data: &[f32],
    start: usize,
    rows: [&[(u32, f32)]; 2],
    dst: [&mut [f32]; 2],
    fresh: bool,
) {
    let [d0, d1] = dst;
    let (d0, d1): (&mut [f32; W], &mut [f32; W]) =
        (d0.try_into().expect("a row as wide as its block"), d1.try_into().expect("a row as wide as its block"));
    let (mut a0, mut a1) = if fresh { ([0.0f32; W], [0.0f32; W]) } else { (*d0, *d1) };
    let add = |acc: &mut [f32; W], at: u32, a: f32| add_scaled::<W, FUSED>(acc, a, &data[at as usize + start..]);
    let [r0, r1] = rows;
    let both = r0.len().min(r1.len());
    for (&(o0, v0), &(o1, v1)) in r0.iter().zip(r1) {
        add(&mut a0, o0, v0);
        add(&mut a1, o1, v1);
    }
    for &(o, v) in &r0[both..] {
        add(&mut a0, o, v);
    }
    for &(o, v) in &r1[both..] {
        add(&mut a1, o, v);
    }
    (*d0, *d1) = (a0, a1);
}

/// The AVX-512 build of [`multiply`] (`std::arch` rather than `pulp`, whose AVX-512 support
/// is a feature of its own): detected at run time, and left unused under `HASS_AVX2_ONLY`.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub(super) mod avx512 {
    use super::{multiply_in, Product};
    use crate::kernels::sparse_conv::{rows_in, Task};

    /// Whether this processor has the instructions (detected once, cached by `std`).
    pub(super) fn available() -> bool {
        crate::kernels::avx512f_available()
    }

    /// See [`super::multiply`]; call only when [`available`].
    pub(super) fn multiply(product: Product, tile: &mut [f32]) {
        assert!(available());
        // SAFETY: the features `compiled` enables were detected just above.
        unsafe { compiled(product, tile) }
    }

    #[target_feature(enable = "avx2,fma,avx512f")]
    fn compiled(product: Product, tile: &mut [f32]) {
        multiply_in::<true>(product, tile)
    }

    /// See [`crate::kernels::sparse_conv`]'s `run`; call only when [`available`].
    pub(in crate::kernels) fn conv_rows(task: Task, block: usize, rows: &mut [f32]) {
        assert!(available());
        // SAFETY: the features `conv_compiled` enables were detected just above.
        unsafe { conv_compiled(task, block, rows) }
    }

    #[target_feature(enable = "avx2,fma,avx512f")]
    fn conv_compiled(task: Task, block: usize, rows: &mut [f32]) {
        rows_in::<true>(task, block, rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_product_matches_the_dense_one() {
        // One panel, a short tail, several row blocks and panels, and a product narrower
        // than a vector.
        for (m, k, n) in [(5, 7, 300), (9, 130, 49), (17, 100, 1000), (3, 5, 3)] {
            let a: Vec<f32> = (0..m * k).map(|i| if i % 8 == 0 { (i as f32 - 10.0) / 7.0 } else { 0.0 }).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 31 % 17) as f32 - 8.0) / 3.0).collect();
            let s = SparseRows::of_dense(&a, m);
            let mut out = vec![f32::NAN; (m - 1) * n];
            s.matmul_rows(1, &b, n, &mut out);
            for r in 0..m - 1 {
                for c in 0..n {
                    let want: f32 = (0..k).map(|j| a[(r + 1) * k + j] * b[j * n + c]).sum();
                    let got = out[r * n + c];
                    assert!((got - want).abs() < 1e-4 * (1.0 + want.abs()), "{m}x{k}x{n} ({r}, {c}): {got} vs {want}");
                }
            }
        }
    }

    /// Two rows summed at once give each row's sums alone, bit for bit: rows of unequal
    /// lengths (either longer, one empty), fresh and added to, at every paired width.
    #[test]
    fn two_rows_at_once_sum_what_each_does_alone() {
        let data: Vec<f32> = (0..400).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let row = |n: usize, seed: u32| -> Vec<(u32, f32)> {
            (0..n as u32).map(|j| ((j * 53 + seed) % 300, 1.0 / (j + seed + 3) as f32 - 0.2)).collect()
        };
        for width in [16, 32, 48, 64] {
            for (n0, n1) in [(5, 9), (9, 5), (0, 4), (7, 7)] {
                for fresh in [true, false] {
                    let (r0, r1) = (row(n0, 1), row(n1, 2));
                    let start = 3;
                    let before: Vec<f32> = (0..2 * width).map(|i| i as f32 * 0.25).collect();
                    let mut alone = before.clone();
                    for (row, dst) in [&r0, &r1].into_iter().zip(alone.chunks_exact_mut(width)) {
                        let runs = row.iter().map(|&(o, a)| (o as usize + start, a));
                        add_runs::<true>(width, &data, runs, dst, fresh);
                    }
                    let mut paired = before;
                    let (d0, d1) = paired.split_at_mut(width);
                    let rows = [&r0[..], &r1[..]];
                    add_two_rows::<true>(width, &data, start, rows, [d0, d1], fresh);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&paired), bits(&alone), "width {width}, rows of {n0} and {n1}, fresh {fresh}");
                }
            }
        }
    }

    #[test]
    fn dense_enough_weights_keep_the_dense_kernel() {
        assert!(SparseRows::from_dense(&[1.0, 2.0, 0.0, 3.0], 2).is_none());
        let mut w = vec![0.0f32; 100];
        w[..60].iter_mut().for_each(|v| *v = 1.0);
        assert!(SparseRows::from_dense(&w, 10).is_none(), "60 % non-zeros stay dense");
        w[40..60].iter_mut().for_each(|v| *v = 0.0);
        assert!(SparseRows::from_dense(&w[..98], 10).is_none(), "40 of 98 non-zeros stay dense");
        let most = SparseRows::from_dense(&w, 10).expect("40 % non-zeros skip zeros in a conv");
        assert_eq!(most.density(), 0.4);
        assert!(!most.product_pays(), "but not in a product over a whole matrix");
        w[25..40].iter_mut().for_each(|v| *v = 0.0);
        assert!(SparseRows::from_dense(&w, 10).expect("25 %").product_pays());
    }

    #[test]
    fn convs_skip_zeros_only_with_a_spatial_kernel_and_a_long_fan_in() {
        // 30 % non-zeros over 4 output channels.
        let pruned = |fan_in: usize| -> Vec<f32> {
            (0..4 * fan_in).map(|i| if i % 10 < 3 { 1.0 + i as f32 } else { 0.0 }).collect()
        };
        let long = pruned(SPARSE_MIN_FAN_IN + 4);
        assert!(SparseRows::for_conv(&long, 4, [3, 3]).is_some(), "a 3x3 with a long fan-in");
        assert!(SparseRows::for_conv(&long, 4, [1, 1]).is_none(), "pointwise stays dense");
        let short = pruned(SPARSE_MIN_FAN_IN - 4);
        assert!(SparseRows::for_conv(&short, 4, [3, 3]).is_none(), "a short fan-in stays dense");
        let dense: Vec<f32> = (0..4 * 300).map(|i| i as f32 + 1.0).collect();
        assert!(SparseRows::for_conv(&dense, 4, [3, 3]).is_none(), "no zeros to skip");
    }
}

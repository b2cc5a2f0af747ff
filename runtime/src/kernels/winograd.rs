//! 3x3 convolutions at stride 1 by Winograd's minimal filtering, F(2x2, 3x3): each 2x2
//! block of outputs from a 4x4 block of inputs in 16 multiplies per channel pair where the
//! direct conv ([`super::direct`]) takes 36. ResNet-18's 3x3 layers ran near this core's
//! multiply-add rate on the direct conv, 12-20 % behind onnxruntime per layer; fewer
//! multiplies, not faster ones, were what was left.
//!
//! With `d` a 4x4 block of the zero-padded image (one channel, at `(2 ty, 2 tx)` for tile
//! `(ty, tx)`) and `g` a filter's 3x3 taps, the tile's 2x2 outputs are `A^T [(G g G^T) ⊙
//! (B^T d B)] A` summed over input channels (Lavin and Gray, 2016). Per point `ξ` of the
//! 4x4 transformed tile, the sum over channels is a GEMM: `M_ξ [C_out, tiles] = U_ξ
//! [C_out, C_in] · V_ξ [C_in, tiles]`, `U = G g G^T` worked out once from the weights and
//! `V = B^T d B` per image. Those GEMMs run on the direct conv's micro-tile (its reads are
//! a run of [`NR`] tiles per channel of `V`); a tile's 16 sums are turned back into its
//! outputs and finished (bias, activation) while in L1.
//!
//! Tiles go in groups of [`NR`] (in order, row by row), each group's `V` contiguous: per
//! point, per channel, the group's tiles. The transforms add and subtract in `f32`; the
//! results differ from the direct conv's by rounding (the transformed filters have halves
//! and quarters of sums of taps), within the golden tests' tolerance by orders of
//! magnitude. They are the same floats on any number of threads and either instruction
//! set: each output's arithmetic does not depend on how the work is split.

use super::direct::{micro_tile, Reads, MR, NR};
use crate::plan::Conv;
use rayon::prelude::*;

/// Points of a transformed tile (4 x 4).
const POINTS: usize = 16;

/// A conv's transformed filters `U = G g G^T`: per point, `[C_out, C_in]` in the direct
/// conv's panels of [`MR`] output channels (per panel, per input channel, `MR` values).
#[derive(Clone, Debug)]
pub struct WinogradWeights {
    rows: usize,
    channels: usize,
    panels: Vec<f32>,
}

impl WinogradWeights {
    /// Transform and pack `conv`'s weights (where [`applies`]).
    pub fn new(conv: &Conv) -> WinogradWeights {
        let (rows, channels) = (conv.c_out, conv.c_in);
        let mut points = vec![0.0f32; POINTS * rows * channels];
        for (i, taps) in conv.weight.chunks_exact(9).enumerate() {
            for (xi, u) in transform_filter(taps).into_iter().enumerate() {
                points[xi * rows * channels + i] = u;
            }
        }
        let panels = points
            .chunks_exact((rows * channels).max(1))
            .flat_map(|u| super::sgemm::row_panels(u, rows, channels, MR))
            .collect();
        WinogradWeights { rows, channels, panels }
    }

    /// Point `xi`'s panel `panel`: `C_in * MR` values.
    fn panel(&self, xi: usize, panel: usize) -> &[f32] {
        let per_point = self.rows.div_ceil(MR) * self.channels * MR;
        &self.panels[xi * per_point + panel * self.channels * MR..][..self.channels * MR]
    }
}

/// `G g G^T` of one filter's 3x3 taps (row-major), `G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1]`,
/// worked out in `f64` and rounded once.
fn transform_filter(taps: &[f32]) -> [f32; POINTS] {
    let g = |[a, b, c]: [f64; 3]| [a, (a + b + c) / 2.0, (a - b + c) / 2.0, c];
    let tap = |y: usize, x: usize| f64::from(taps[y * 3 + x]);
    // `G g`: 4 rows of 3, each column transformed.
    let columns = [0, 1, 2].map(|x| g([tap(0, x), tap(1, x), tap(2, x)]));
    let mut u = [0.0f32; POINTS];
    for y in 0..4 {
        let row = g([columns[0][y], columns[1][y], columns[2][y]]);
        for x in 0..4 {
            u[y * 4 + x] = row[x] as f32;
        }
    }
    u
}

/// Whether [`conv_winograd`] computes `conv`: a dense 3x3 kernel of one group at stride 1
/// without dilation, allowed Winograd's rounding ([`Conv::winograd`]), on a processor with
/// the direct conv's micro-tile.
pub fn applies(conv: &Conv) -> bool {
    conv.winograd
        && conv.kernel == [3, 3]
        && conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && conv.sparse_weight.is_none()
        && super::direct::available()
}

/// `conv` (where [`applies`]) of one image `input` (`[C_in, H, W]`) into `out` (`[C_out,
/// OH, OW]`): `finish(channel, sums, out)` for each run of an output row's sums and its
/// place in `out`. With `parallel`, the transforms spread over rayon's threads by groups
/// of tiles, the products and outputs by panels of output channels.
#[allow(clippy::too_many_arguments)]
pub fn conv_winograd(
    conv: &Conv,
    weights: &WinogradWeights,
    input: &[f32],
    [h, w]: [usize; 2],
    out: &mut [f32],
    [oh, ow]: [usize; 2],
    parallel: bool,
    finish: impl Fn(usize, &[f32], &mut [f32]) + Sync,
) {
    let channels = conv.c_in;
    assert!(applies(conv) && weights.rows == conv.c_out && weights.channels == channels);
    assert!(input.len() == channels * h * w && out.len() == conv.c_out * oh * ow && oh * ow > 0);
    let grid = TileGrid { tiles_wide: ow.div_ceil(2), tiles: oh.div_ceil(2) * ow.div_ceil(2) };
    let groups = grid.tiles.div_ceil(NR);
    let group_len = POINTS * channels * NR;
    let min_len = if parallel { 1 } else { usize::MAX };
    let mut transformed = super::scratch::take_len(groups * group_len, 0.0f32);
    let [top, left] = [conv.pads[0], conv.pads[1]];
    transformed[..groups * group_len].par_chunks_exact_mut(group_len).with_min_len(min_len).enumerate().for_each(
        |(group, v)| {
            super::with_simd(
                #[inline(always)]
                || transform_inputs(input, [h, w], [top, left], &grid, group, v),
            )
        },
    );
    let transformed = &transformed[..groups * group_len];
    let offsets: Vec<usize> = (0..channels).map(|c| c * NR).collect();
    let panels = conv.c_out.div_ceil(MR);
    let per_task = if parallel { panels.div_ceil(rayon::current_num_threads()) } else { panels }.max(1);
    let plane = oh * ow;
    out.par_chunks_mut(per_task * MR * plane).with_min_len(min_len).enumerate().for_each(|(task, out)| {
        let mut sums = vec![[[0.0f32; NR]; MR]; POINTS];
        super::with_simd(
            #[inline(always)]
            || {
                for group in 0..groups {
                    let v = &transformed[group * group_len..][..group_len];
                    let cols = NR.min(grid.tiles - group * NR);
                    for (i, out) in out.chunks_mut(MR * plane).enumerate() {
                        let panel = task * per_task + i;
                        for (xi, sums) in sums.iter_mut().enumerate() {
                            let reads = Reads::new(&v[xi * channels * NR..][..channels * NR], &offsets);
                            micro_tile(weights.panel(xi, panel), &reads, 0, cols, false, sums);
                        }
                        for (r, out) in out.chunks_exact_mut(plane).enumerate() {
                            let m: [&[f32; NR]; POINTS] = std::array::from_fn(|xi| &sums[xi][r]);
                            transform_outputs(&m, &grid, group, [oh, ow], |sums, at| {
                                finish(panel * MR + r, sums, &mut out[at..][..sums.len()])
                            });
                        }
                    }
                }
            },
        );
    });
}

/// How an output map is cut into 2x2 tiles: `tiles_wide` per row of tiles, `tiles` in all
/// (numbered row by row).
struct TileGrid {
    tiles_wide: usize,
    tiles: usize,
}

impl TileGrid {
    /// The runs of group `group`'s tiles along rows of tiles: per run, its row of tiles,
    /// first tile's column, length, and the first tile's place in the group.
    fn runs(&self, group: usize) -> impl Iterator<Item = [usize; 4]> + '_ {
        let (start, end) = (group * NR, self.tiles.min(group * NR + NR));
        let mut t = start;
        std::iter::from_fn(move || {
            (t < end).then(|| {
                let (ty, tx) = (t / self.tiles_wide, t % self.tiles_wide);
                let len = (self.tiles_wide - tx).min(end - t);
                let run = [ty, tx, len, t - start];
                t += len;
                run
            })
        })
    }
}

/// Group `group`'s transformed inputs `V = B^T d B` into `v` (per point, per channel,
/// [`NR`] tiles; a last group's tiles past the map's are left as they were: no output
/// reads their sums), `B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]`.
#[inline(always)]
fn transform_inputs(
    input: &[f32],
    [h, w]: [usize; 2],
    [top, left]: [usize; 2],
    grid: &TileGrid,
    group: usize,
    v: &mut [f32],
) {
    let channels = input.len() / (h * w);
    // `B^T d` down each column of a run's four input rows, read in place (a padding row
    // as `zeros`, padding columns left zero), its columns then split into even and odd.
    let zeros = vec![0.0f32; w];
    let mut down = [[0.0f32; 2 * NR + 2]; 4];
    let (mut even, mut odd) = ([[0.0f32; NR + 1]; 4], [[0.0f32; NR + 1]; 4]);
    for [ty, tx, len, at] in grid.runs(group) {
        let width = 2 * len + 2;
        // The run's padded columns `0..width` are input columns `x0..`; those inside the
        // image are `start..end`.
        let x0 = (2 * tx) as isize - left as isize;
        let start = (-x0).clamp(0, width as isize) as usize;
        let end = (w as isize - x0).clamp(start as isize, width as isize) as usize;
        for row in &mut down {
            row[..start].fill(0.0);
            row[end..width].fill(0.0);
        }
        for c in 0..channels {
            let plane = &input[c * h * w..][..h * w];
            let [d0, d1, d2, d3] = [0, 1, 2, 3].map(|i| {
                let y = (2 * ty + i) as isize - top as isize;
                let row = if (0..h as isize).contains(&y) { &plane[y as usize * w..][..w] } else { &zeros[..] };
                &row[(x0 + start as isize).max(0) as usize..][..end - start]
            });
            let [e0, e1, e2, e3] = down.each_mut().map(|row| &mut row[start..end]);
            each(e0, d0, d2, |a, b| a - b);
            each(e1, d1, d2, |a, b| a + b);
            each(e2, d2, d1, |a, b| a - b);
            each(e3, d1, d3, |a, b| a - b);
            for i in 0..4 {
                let pairs = down[i][..width].chunks_exact(2);
                even[i][..=len].iter_mut().zip(odd[i][..=len].iter_mut()).zip(pairs).for_each(|((e, o), pair)| {
                    *e = pair[0];
                    *o = pair[1];
                });
            }
            // `(B^T d) B`, across each row: tile `t` reads columns `2t..2t + 4`, the even
            // ones `t` and `t + 1`, the odd ones likewise.
            for i in 0..4 {
                let (e0, e1) = (&even[i][..len], &even[i][1..=len]);
                let (o0, o1) = (&odd[i][..len], &odd[i][1..=len]);
                let start = |j: usize| ((i * 4 + j) * channels + c) * NR + at;
                each(&mut v[start(0)..][..len], e0, e1, |a, b| a - b);
                each(&mut v[start(1)..][..len], o0, e1, |a, b| a + b);
                each(&mut v[start(2)..][..len], e1, o0, |a, b| a - b);
                each(&mut v[start(3)..][..len], o0, o1, |a, b| a - b);
            }
        }
    }
}

/// `dst[i] = f(a[i], b[i])`.
#[inline(always)]
fn each(dst: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) {
    dst.iter_mut().zip(a.iter().zip(b)).for_each(|(d, (&a, &b))| *d = f(a, b))
}

/// `dst[i] = f(a[i], b[i], c[i])`.
#[inline(always)]
fn each3(dst: &mut [f32], [a, b, c]: [&[f32]; 3], f: impl Fn(f32, f32, f32) -> f32) {
    dst.iter_mut().zip(a.iter().zip(b).zip(c)).for_each(|(d, ((&a, &b), &c))| *d = f(a, b, c))
}

/// One output channel's sums of group `group`'s tiles (`m[ξ][j]`: point `ξ` of the
/// group's tile `j`) turned into outputs, `A^T m A` with `A^T = [1 1 1 0; 0 1 -1 -1]`:
/// `finish(values, at)` per run of an output row's values and its place in the plane.
#[inline(always)]
fn transform_outputs(
    m: &[&[f32; NR]; POINTS],
    grid: &TileGrid,
    group: usize,
    [oh, ow]: [usize; 2],
    mut finish: impl FnMut(&[f32], usize),
) {
    let mut rows = [[0.0f32; 2 * NR]; 2];
    // `A^T m` down each column (`s[a][x]`), then across: the tiles' outputs `(a, b)`.
    let mut s = [[[0.0f32; NR]; 4]; 2];
    let mut across = [[0.0f32; NR]; 2];
    for [ty, tx, len, at] in grid.runs(group) {
        let point = |yx: usize| &m[yx][at..at + len];
        let [s0, s1] = &mut s;
        for (x, (s0, s1)) in s0.iter_mut().zip(s1.iter_mut()).enumerate() {
            let (m0, m1, m2, m3) = (point(x), point(4 + x), point(8 + x), point(12 + x));
            each3(&mut s0[..len], [m0, m1, m2], |a, b, c| a + b + c);
            each3(&mut s1[..len], [m1, m2, m3], |a, b, c| a - b - c);
        }
        for (row, s) in rows.iter_mut().zip(&s) {
            let [y0, y1] = &mut across;
            let (s0, s1, s2, s3) = (&s[0][..len], &s[1][..len], &s[2][..len], &s[3][..len]);
            each3(&mut y0[..len], [s0, s1, s2], |a, b, c| a + b + c);
            each3(&mut y1[..len], [s1, s2, s3], |a, b, c| a - b - c);
            row[..2 * len].chunks_exact_mut(2).zip(y0[..len].iter().zip(&y1[..len])).for_each(|(pair, (&a, &b))| {
                pair[0] = a;
                pair[1] = b;
            });
        }
        let (x0, width) = (2 * tx, (2 * len).min(ow - 2 * tx));
        for (a, row) in rows.iter().enumerate() {
            let y = 2 * ty + a;
            if y < oh {
                finish(&row[..width], y * ow + x0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The convolution in `f64`, padding read as zero, and the sum of the magnitudes of
    /// each output's products (what rounding error scales with).
    fn reference(conv: &Conv, input: &[f32], [h, w]: [usize; 2], [oh, ow]: [usize; 2]) -> (Vec<f64>, Vec<f64>) {
        let (top, left) = (conv.pads[0] as isize, conv.pads[1] as isize);
        let mut sums = vec![0.0; conv.c_out * oh * ow];
        let mut magnitudes = sums.clone();
        for o in 0..conv.c_out {
            for p in 0..oh * ow {
                let (oy, ox) = (p / ow, p % ow);
                for c in 0..conv.c_in {
                    for t in 0..9 {
                        let (y, x) = ((oy + t / 3) as isize - top, (ox + t % 3) as isize - left);
                        if (0..h as isize).contains(&y) && (0..w as isize).contains(&x) {
                            let product = f64::from(conv.weight[(o * conv.c_in + c) * 9 + t])
                                * f64::from(input[(c * h + y as usize) * w + x as usize]);
                            sums[o * oh * ow + p] += product;
                            magnitudes[o * oh * ow + p] += product.abs();
                        }
                    }
                }
            }
        }
        (sums, magnitudes)
    }

    /// Every output within a few ulps (of its products' magnitudes) of the exact sum, the
    /// same floats on one thread and several: even and odd maps, padding 0 to 2 and uneven,
    /// channels that leave a panel short, maps of one, several and a part of a group of
    /// tiles, runs of tiles that wrap to the next row inside a group.
    #[test]
    fn every_output_is_the_convolution() {
        if !super::super::direct::available() {
            return;
        }
        for (c_in, c_out, pads, [h, w]) in [
            (3, 8, [1, 1, 1, 1], [8, 8]),
            (5, 13, [1, 1, 1, 1], [14, 14]),
            (16, 16, [0, 0, 0, 0], [9, 11]),
            (7, 9, [2, 0, 1, 2], [13, 6]),
            (4, 24, [1, 1, 1, 1], [3, 3]),
            (2, 7, [1, 2, 2, 1], [1, 30]),
            (9, 17, [1, 1, 1, 1], [29, 57]),
        ] {
            let weight: Vec<f32> = (0..c_out * c_in * 9).map(|i| ((i * 37 % 23) as f32 - 11.0) / 8.0).collect();
            let conv = Conv { pads, ..Conv::new(weight, c_in, c_out, [3, 3]) };
            let out_hw = [h + pads[0] + pads[2] - 2, w + pads[1] + pads[3] - 2];
            let input: Vec<f32> = (0..c_in * h * w).map(|i| ((i * 13 % 19) as f32 - 9.0) / 4.0).collect();
            let (want, magnitudes) = reference(&conv, &input, [h, w], out_hw);
            let weights = WinogradWeights::new(&conv);
            let run = |parallel: bool| {
                let mut got = vec![f32::NAN; want.len()];
                conv_winograd(&conv, &weights, &input, [h, w], &mut got, out_hw, parallel, |c, sums, out| {
                    out.iter_mut().zip(sums).for_each(|(o, &s)| *o = s + 1000.0 * c as f32)
                });
                got
            };
            let serial = run(false);
            let plane = out_hw[0] * out_hw[1];
            for (i, &got) in serial.iter().enumerate() {
                let want = want[i] + 1000.0 * (i / plane) as f64;
                let allowed = 16.0 * f64::from(f32::EPSILON) * (magnitudes[i] + 1000.0 * (i / plane) as f64);
                assert!(
                    (f64::from(got) - want).abs() <= allowed,
                    "{c_in} -> {c_out}, pads {pads:?}, {h} x {w}: output {i} is {got}, want {want}"
                );
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&run(true)), bits(&serial), "{c_in} -> {c_out}, {h} x {w} on several threads");
        }
    }

    /// The transformed filter of a single tap is that tap's row and column of `G`.
    #[test]
    fn a_filters_transform_is_g_g_gt() {
        let g = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
        for tap in 0..9 {
            let mut taps = [0.0f32; 9];
            taps[tap] = 3.0;
            let u = transform_filter(&taps);
            for (xi, &u) in u.iter().enumerate() {
                assert_eq!(u, 3.0 * g[xi / 4][tap / 3] * g[xi % 4][tap % 3], "tap {tap}, point {xi}");
            }
        }
    }
}

//! Max and average pooling, and global average pooling, over one image.

use crate::plan::{Pool, PoolKind};
use rayon::prelude::*;

/// Pool one image `input` ([C, H, W]) into `out` ([C, OH, OW]).
pub fn pool_image(pool: &Pool, input: &[f32], hw: [usize; 2], out: &mut [f32], out_hw: [usize; 2]) {
    if pool.kind == PoolKind::Max {
        return max_pool_image(pool, input, hw, out, out_hw, f32::NEG_INFINITY);
    }
    each_window(pool, input, hw, out, out_hw, |values, padded| {
        let count = if pool.count_include_pad { padded } else { values.len() };
        values.iter().sum::<f32>() / count.max(1) as f32
    });
}

/// Max pooling of one image: each window's largest value (NaN never wins), `empty` where a
/// window holds only padding; what [`each_window`] with a fold from `empty` gives, by rows
/// then by columns (the maximum of a set does not depend on the order).
pub fn max_pool_image(
    pool: &Pool,
    input: &[f32],
    [h, w]: [usize; 2],
    out: &mut [f32],
    [oh, ow]: [usize; 2],
    empty: f32,
) {
    let [kh, kw] = pool.kernel;
    let [sh, sw] = pool.stride;
    let [dh, dw] = pool.dilation;
    let (top, left) = (pool.pads[0] as isize, pool.pads[1]);
    // Padded columns the windows reach, and the input columns among them.
    let reach = (ow.max(1) - 1) * sw + (kw - 1) * dw + 1;
    let inside = w.min(reach.saturating_sub(left));
    // Channels in parallel; per output row, the maxima down its windows' rows, column by
    // column (contiguous runs: whole vectors), in a row padded with `empty`, then across
    // each window's columns. Rows first did the strided part on every input row.
    out.par_chunks_exact_mut(oh * ow).zip(input.par_chunks_exact(h * w)).with_min_len(4).for_each(|(dst, plane)| {
        // The padding, which no row's maxima overwrite.
        let mut row = super::scratch::take_len(reach, empty);
        row.fill(empty);
        super::with_simd(
            #[inline(always)]
            || {
                for (oy, d) in dst.chunks_exact_mut(ow).enumerate() {
                    let maxima = &mut row[left.min(reach)..][..inside];
                    maxima.fill(empty);
                    for ky in 0..kh {
                        let y = (oy * sh + ky * dh) as isize - top;
                        if (0..h as isize).contains(&y) {
                            for (m, &v) in maxima.iter_mut().zip(&plane[y as usize * w..][..inside]) {
                                *m = m.max(v);
                            }
                        }
                    }
                    d.fill(empty);
                    for kx in 0..kw {
                        super::each_strided(d, &row[kx * dw..], sw, |m, v| *m = m.max(v));
                    }
                }
            },
        );
    });
}

/// `out[c, oy, ox] = reduce(values inside the window, window size counting padding but not
/// what lies past the padded extent)`, for every window of one image: the geometry that
/// both datapaths' pools share.
pub fn each_window(
    pool: &Pool,
    input: &[f32],
    [h, w]: [usize; 2],
    out: &mut [f32],
    [oh, ow]: [usize; 2],
    reduce: impl Fn(&[f32], usize) -> f32,
) {
    let [kh, kw] = pool.kernel;
    let [sh, sw] = pool.stride;
    let [dh, dw] = pool.dilation;
    let (top, left) = (pool.pads[0] as isize, pool.pads[1] as isize);
    // The padded extent ends here; windows are clipped to it for the average's divisor.
    let (bottom_edge, right_edge) = ((h + pool.pads[2]) as isize, (w + pool.pads[3]) as isize);
    let mut values = Vec::with_capacity(kh * kw);
    for (plane, dst) in input.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
        for oy in 0..oh {
            for ox in 0..ow {
                let (y0, x0) = ((oy * sh) as isize - top, (ox * sw) as isize - left);
                values.clear();
                let mut padded = 0usize;
                for ky in 0..kh {
                    let y = y0 + (ky * dh) as isize;
                    for kx in 0..kw {
                        let x = x0 + (kx * dw) as isize;
                        if y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w {
                            values.push(plane[y as usize * w + x as usize]);
                        }
                        if y < bottom_edge && x < right_edge {
                            padded += 1;
                        }
                    }
                }
                dst[oy * ow + ox] = reduce(&values, padded);
            }
        }
    }
}

/// Mean over H x W of each channel of one image.
pub fn global_average_image(input: &[f32], channels: usize, out: &mut [f32]) {
    let pixels = input.len() / channels;
    super::with_simd(
        #[inline(always)]
        || {
            for (plane, o) in input.chunks_exact(pixels).zip(out.iter_mut()) {
                *o = lane_sum(plane) / pixels as f32;
            }
        },
    )
}

/// Lanes of [`lane_sum`]'s partial sums: a vector register's worth.
const SUM_LANES: usize = 16;

/// The sum of `values` in a fixed order that vectorizes: [`SUM_LANES`] partial sums of
/// every `SUM_LANES`-th value, added up lane by lane, then the tail (a sum taken one value
/// at a time waits on each addition's latency).
#[inline(always)]
fn lane_sum(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; SUM_LANES];
    let mut chunks = values.chunks_exact(SUM_LANES);
    for chunk in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l += v;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(kind: PoolKind, pads: [usize; 4], ceil_mode: bool, count_include_pad: bool) -> Pool {
        Pool { kind, kernel: [2, 2], stride: [2, 2], dilation: [1, 1], pads, ceil_mode, count_include_pad }
    }

    #[test]
    fn max_pool_2x2() {
        let input: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let mut out = vec![0.0; 4];
        pool_image(&pool(PoolKind::Max, [0; 4], false, false), &input, [4, 4], &mut out, [2, 2]);
        assert_eq!(out, vec![5.0, 7.0, 13.0, 15.0]);
    }

    #[test]
    fn average_with_and_without_padding_in_divisor() {
        // 3x3 input of ones, pad 1 on top/left: the corner window holds 1 real value.
        let input = vec![1.0; 9];
        let mut out = vec![0.0; 4];
        pool_image(&pool(PoolKind::Average, [1, 1, 0, 0], false, false), &input, [3, 3], &mut out, [2, 2]);
        assert_eq!(out, vec![1.0; 4]);
        pool_image(&pool(PoolKind::Average, [1, 1, 0, 0], false, true), &input, [3, 3], &mut out, [2, 2]);
        assert_eq!(out, vec![0.25, 0.5, 0.5, 1.0]);
    }

    #[test]
    fn max_pool_by_rows_and_columns_is_the_window_maximum() {
        for [h, w] in [[7, 9], [20, 37]] {
            let input: Vec<f32> = (0..2 * h * w).map(|i| ((i * 37) % 23) as f32 - 11.0).collect();
            for (kernel, stride, dilation, pads) in [
                ([3, 3], [2, 2], [1, 1], [1, 1, 1, 1]),
                ([2, 3], [1, 2], [2, 1], [0, 2, 1, 0]),
                ([3, 2], [3, 1], [1, 2], [2, 0, 2, 1]),
                ([1, 4], [1, 3], [1, 1], [0, 5, 0, 5]),
            ] {
                let p = Pool {
                    kind: PoolKind::Max,
                    kernel,
                    stride,
                    dilation,
                    pads,
                    ceil_mode: false,
                    count_include_pad: false,
                };
                let [oh, ow] = [0, 1].map(|a| {
                    let (len, k, s, d) = ([h, w][a], kernel[a], stride[a], dilation[a]);
                    hass_proto::geometry::window_output_len(len, k, s, d, pads[a], pads[a + 2], false).unwrap()
                });
                let (mut fast, mut slow) = (vec![0.0; 2 * oh * ow], vec![0.0; 2 * oh * ow]);
                max_pool_image(&p, &input, [h, w], &mut fast, [oh, ow], f32::MIN);
                each_window(&p, &input, [h, w], &mut slow, [oh, ow], |v, _| v.iter().copied().fold(f32::MIN, f32::max));
                assert_eq!(fast, slow, "{h}x{w}: {kernel:?} {stride:?} {dilation:?} {pads:?}");
            }
        }
    }

    #[test]
    fn global_average() {
        let mut out = vec![0.0; 2];
        global_average_image(&[1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0], 2, &mut out);
        assert_eq!(out, vec![2.5, 10.0]);
        // Planes longer than the partial sums, with a tail: 7x7 maps of 0..49 and its negative.
        let planes: Vec<f32> =
            (0..49).chain(0..49).enumerate().map(|(i, v)| if i < 49 { v } else { -v } as f32).collect();
        global_average_image(&planes, 2, &mut out);
        assert_eq!(out, vec![24.0, -24.0]);
    }
}

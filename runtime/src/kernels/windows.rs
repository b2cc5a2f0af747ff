//! Which of a window's K*K products are zero: bit masks over the taps (bit `ky * K_w + kx`),
//! shared by the calibration counts and the cycle simulation.

use crate::plan::Conv;

/// One mask per (filter, input channel of its group) kernel, in weight order: bit t set
/// when tap t's weight is zero. Windows up to 128 taps.
pub fn weight_zero_masks(weight: &[f32], window: usize) -> Vec<u128> {
    weight
        .chunks_exact(window)
        .map(|taps| taps.iter().enumerate().fold(0u128, |m, (t, &w)| if w == 0.0 { m | 1 << t } else { m }))
        .collect()
}

/// The zero taps of output position (`oy`, `ox`)'s window over one input `plane` of
/// `h x w`: zero inputs and padding.
#[inline]
pub fn input_zero_mask(conv: &Conv, plane: &[f32], [h, w]: [usize; 2], oy: usize, ox: usize) -> u128 {
    let [kh, kw] = conv.kernel;
    let (top, left) = (conv.pads[0] as isize, conv.pads[1] as isize);
    let mut mask = 0u128;
    for ky in 0..kh {
        let y = (oy * conv.stride[0] + ky * conv.dilation[0]) as isize - top;
        for kx in 0..kw {
            let x = (ox * conv.stride[1] + kx * conv.dilation[1]) as isize - left;
            let inside = y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w;
            if !inside || plane[y as usize * w + x as usize] == 0.0 {
                mask |= 1 << (ky * kw + kx);
            }
        }
    }
    mask
}

/// The zero-tap masks of the output positions' windows over one input `plane`, as
/// (mask, windows) pairs: [`input_zero_mask`] at each position, but a row of windows at a
/// time. Each padded column gets a code holding, for the K_h input rows the row of windows
/// reads, whether that row's value there is zero (row `ky` at bit `ky * K_w`); a window's
/// mask is then its K_w columns' codes, shifted into place. A plain 1x1 conv costs one
/// count.
pub fn plane_zero_masks(
    conv: &Conv,
    plane: &[f32],
    [h, w]: [usize; 2],
    [oh, ow]: [usize; 2],
    mut emit: impl FnMut(u128, u64),
) {
    let [kh, kw] = conv.kernel;
    if conv.kernel == [1, 1] && conv.stride == [1, 1] && conv.pads == [0; 4] {
        let zeros = plane.iter().filter(|&&v| v == 0.0).count() as u64;
        emit(1, zeros);
        emit(0, plane.len() as u64 - zeros);
        return;
    }
    if conv.dilation != [1, 1] || kh * kw > 64 {
        for oy in 0..oh {
            for ox in 0..ow {
                emit(input_zero_mask(conv, plane, [h, w], oy, ox), 1);
            }
        }
        return;
    }
    let [sh, sw] = conv.stride;
    let (top, left) = (conv.pads[0], conv.pads[1]);
    let cols = (ow - 1) * sw + kw;
    // Input columns that land inside the padded extent the windows read.
    let inside = left.min(cols)..(left + w).min(cols);
    let mut code = vec![0u64; cols];
    let mut run = Run { mask: 0, windows: 0 };
    let mut ones = 0u64;
    for oy in 0..oh {
        code.fill(0);
        for ky in 0..kh {
            let padding = 1u64 << (ky * kw);
            let y = (oy * sh + ky).checked_sub(top).filter(|&y| y < h);
            let Some(y) = y else {
                code.iter_mut().for_each(|c| *c |= padding);
                continue;
            };
            code[..inside.start].iter_mut().for_each(|c| *c |= padding);
            code[inside.end..].iter_mut().for_each(|c| *c |= padding);
            let row = &plane[y * w..][..inside.len()];
            for (c, &v) in code[inside.clone()].iter_mut().zip(row) {
                *c |= u64::from(v == 0.0) << (ky * kw);
            }
        }
        if kh * kw == 1 {
            // A strided or padded 1x1 conv: its masks are one bit, counted.
            ones += (0..ow).map(|ox| code[ox * sw]).sum::<u64>();
            continue;
        }
        // The common widths as constants, so that each window's columns unroll.
        match kw {
            1 => row_of_windows(&code, 1, sw, ow, &mut run, &mut emit),
            2 => row_of_windows(&code, 2, sw, ow, &mut run, &mut emit),
            3 => row_of_windows(&code, 3, sw, ow, &mut run, &mut emit),
            5 => row_of_windows(&code, 5, sw, ow, &mut run, &mut emit),
            7 => row_of_windows(&code, 7, sw, ow, &mut run, &mut emit),
            _ => row_of_windows(&code, kw, sw, ow, &mut run, &mut emit),
        }
    }
    if run.windows > 0 {
        emit(u128::from(run.mask), run.windows);
    }
    if kh * kw == 1 {
        emit(1, ones);
        emit(0, (oh * ow) as u64 - ones);
    }
}

/// Consecutive windows with the same mask, emitted as one: neighbouring windows share most
/// of their inputs, and in a map's zero (or busy) patches their masks repeat.
struct Run {
    mask: u64,
    windows: u64,
}

/// The masks of one row of windows from its columns' `code`s (`kw` columns a window,
/// `sw` apart), into `run`.
#[inline(always)]
fn row_of_windows(code: &[u64], kw: usize, sw: usize, ow: usize, run: &mut Run, emit: &mut impl FnMut(u128, u64)) {
    for ox in 0..ow {
        let columns = &code[ox * sw..][..kw];
        let mask = columns.iter().enumerate().fold(0u64, |m, (kx, &c)| m | c << kx);
        if mask == run.mask {
            run.windows += 1;
        } else {
            if run.windows > 0 {
                emit(u128::from(run.mask), run.windows);
            }
            *run = Run { mask, windows: 1 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_codes_give_the_same_masks_as_tap_by_tap() {
        let cases = [
            (3, 1, 1, 7, 9),
            (3, 2, 1, 8, 8),
            (1, 1, 0, 5, 5),
            (5, 2, 2, 11, 70),
            (7, 2, 3, 9, 130),
            (2, 1, 0, 6, 6),
            (3, 1, 0, 5, 5),
            (3, 3, 2, 10, 10),
            (1, 2, 0, 7, 9),
            (1, 2, 1, 8, 8),
            // 81 taps: beyond a 64-bit code, tap by tap.
            (9, 1, 4, 12, 12),
        ];
        // Scattered zeros; zero patches (whole rows of windows alike, runs across rows);
        // all zero.
        let planes: [fn(usize, usize) -> f32; 3] = [
            |i, _| if (i * 7919) % 5 < 2 { 0.0 } else { 1.0 },
            |i, w| if (i / w / 3 + i % w / 4) % 2 == 0 { 0.0 } else { 1.0 },
            |_, _| 0.0,
        ];
        for ((k, s, p, h, w), plane) in cases.into_iter().flat_map(|c| planes.map(|f| (c, f))) {
            let conv = Conv { stride: [s, s], pads: [p; 4], ..Conv::new(Vec::new(), 1, 1, [k, k]) };
            let plane: Vec<f32> = (0..h * w).map(|i| plane(i, w)).collect();
            let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
            let mut fast = Vec::new();
            plane_zero_masks(&conv, &plane, [h, w], [oh, ow], |m, n| fast.extend(std::iter::repeat_n(m, n as usize)));
            let slow: Vec<u128> = (0..oh)
                .flat_map(|y| (0..ow).map(move |x| (y, x)))
                .map(|(y, x)| input_zero_mask(&conv, &plane, [h, w], y, x))
                .collect();
            if k == 1 {
                // Counted, not listed: compare as multisets.
                let count = |v: &[u128], m| v.iter().filter(|&&x| x == m).count();
                assert_eq!((count(&fast, 0), count(&fast, 1)), (count(&slow, 0), count(&slow, 1)));
            } else {
                assert_eq!(fast, slow, "kernel {k} stride {s} pad {p} {h}x{w}");
            }
        }
    }
}

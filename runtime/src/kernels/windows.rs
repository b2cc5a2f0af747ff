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

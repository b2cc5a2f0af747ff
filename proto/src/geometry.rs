//! Output sizes of windowed ops (convolution, pooling): one definition, shared by the
//! compiler's shape inference and the runtime's artifact validation.

/// Spatial padding of a 2-D window op: `[top, left, bottom, right]`.
pub type Pads = [usize; 4];

/// Output length of one spatial axis of a convolution or pooling window.
///
/// `None` when the window does not fit even once. With `ceil_mode` the last partial
/// window counts, except one that would start entirely inside the end padding
/// (PyTorch's and ONNX's rule).
pub fn window_output_len(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad_begin: usize,
    pad_end: usize,
    ceil_mode: bool,
) -> Option<usize> {
    if kernel == 0 || stride == 0 || dilation == 0 {
        return None;
    }
    // Sizes come from untrusted files: overflow means "does not fit", never a wrap.
    let span = dilation.checked_mul(kernel - 1)?.checked_add(1)?;
    let padded = input.checked_add(pad_begin)?.checked_add(pad_end)?;
    if padded < span {
        return None;
    }
    let steps = padded - span;
    let mut out = if ceil_mode { steps.div_ceil(stride) } else { steps / stride } + 1;
    if ceil_mode && (out - 1) * stride >= input + pad_begin {
        out -= 1;
    }
    Some(out)
}

/// Begin and end padding for ONNX `auto_pad = SAME_UPPER | SAME_LOWER` on one axis:
/// the output length is `ceil(input / stride)`; the odd pixel goes to the end (upper)
/// or the beginning (lower).
pub fn same_padding(input: usize, kernel: usize, stride: usize, dilation: usize, upper: bool) -> (usize, usize) {
    let out = input.div_ceil(stride.max(1));
    let span = dilation.saturating_mul(kernel.max(1) - 1).saturating_add(1);
    let total = (out.max(1) - 1).saturating_mul(stride).saturating_add(span).saturating_sub(input);
    let small = total / 2;
    if upper {
        (small, total - small)
    } else {
        (total - small, small)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_output_lengths() {
        // 224 input, 7x7 stride 2 pad 3 (ResNet stem): 112.
        assert_eq!(window_output_len(224, 7, 2, 1, 3, 3, false), Some(112));
        // 3x3 stride 1 pad 1 keeps the size; dilation 2 with pad 2 too.
        assert_eq!(window_output_len(28, 3, 1, 1, 1, 1, false), Some(28));
        assert_eq!(window_output_len(28, 3, 1, 2, 2, 2, false), Some(28));
        // Window larger than the padded input.
        assert_eq!(window_output_len(2, 5, 1, 1, 0, 0, false), None);
        // Sizes that overflow do not fit, whatever they would wrap to.
        assert_eq!(window_output_len(28, 3, 1, 1, usize::MAX, 1, false), None);
        assert_eq!(window_output_len(28, usize::MAX, 1, 2, 0, 0, false), None);
        assert!(same_padding(28, usize::MAX, 1, 2, true).0 > 1 << 62, "saturates instead of wrapping");
    }

    #[test]
    fn ceil_mode_drops_a_window_starting_in_padding() {
        // 112 input, 3x3 stride 2 pad 1: floor gives 56, ceil gives 57 unless the
        // last window starts in padding.
        assert_eq!(window_output_len(112, 3, 2, 1, 1, 1, false), Some(56));
        assert_eq!(window_output_len(6, 2, 2, 1, 0, 0, true), Some(3));
        assert_eq!(window_output_len(5, 2, 2, 1, 0, 0, true), Some(3));
        assert_eq!(window_output_len(5, 2, 2, 1, 1, 1, true), Some(3));
    }

    #[test]
    fn same_padding_puts_odd_pixel_by_mode() {
        assert_eq!(same_padding(28, 3, 1, 1, true), (1, 1));
        assert_eq!(same_padding(28, 2, 2, 1, true), (0, 0));
        assert_eq!(same_padding(27, 2, 2, 1, true), (0, 1));
        assert_eq!(same_padding(27, 2, 2, 1, false), (1, 0));
    }
}

/// Numpy-style broadcast of two per-image shapes (right-aligned); `None` if incompatible.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        if i + s.len() >= rank {
            s[i + s.len() - rank]
        } else {
            1
        }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod broadcast_tests {
    use super::broadcast_shapes;

    #[test]
    fn broadcasts_like_numpy() {
        assert_eq!(broadcast_shapes(&[16, 7, 7], &[16, 1, 1]), Some(vec![16, 7, 7]));
        assert_eq!(broadcast_shapes(&[16, 7, 7], &[7]), Some(vec![16, 7, 7]));
        assert_eq!(broadcast_shapes(&[10], &[]), Some(vec![10]));
        assert_eq!(broadcast_shapes(&[16, 7, 7], &[8, 1, 1]), None);
    }
}

//! What calibration observes in a run (REFERENCE §2.3): per conv or fully connected layer
//! and input channel, which taps of each window read a zero input (after the layer's
//! threshold, padding included), tallied by distinct mask. This is the runtime's part,
//! the mechanism; what the compiler makes of it (histograms of zero products per window,
//! which of them to keep) is in `hassc::sparsity::counts`.
//!
//! [`window_masks`] reads one layer's input once; [`measure_window_masks`] runs a plan on
//! images and gathers them for every counted layer. Images run in chunks, each chunk's images
//! in parallel, and only tallies are kept: memory does not grow with the number of images.

use crate::exec::run_observed;
use crate::kernels::thresholded;
use crate::kernels::windows::plane_zero_masks;
use crate::plan::{Conv, Layer, Op, Plan};
use crate::{RuntimeError, Tensor};
use rayon::prelude::*;

/// Images run per chunk (bounds the memory of a calibration run).
const CHUNK: usize = 32;

/// Which taps of a window read a zero input, counted over windows: per input channel of a
/// conv or fully connected layer, how many (image, output position) windows show each mask
/// (bit `t` set when tap `t` reads a zero or padding). This is all the counts need from the
/// activations: combined with any weights (`hassc::sparsity::counts`) it gives the histograms, so a
/// search that changes only a layer's weights never re-reads its input.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowMasks {
    /// K_h * K_w (1 for fully connected layers).
    pub window: usize,
    /// Per input channel, (mask, windows) sorted by mask, counts above zero.
    pub channels: Vec<Vec<(u128, u64)>>,
    /// Zero input values (after the threshold), padding excluded.
    pub zero_inputs: u64,
    /// Input values seen.
    pub inputs: u64,
}

/// Masks up to this many taps are counted in a dense table, wider ones in a map.
const DENSE_MASK_BITS: usize = 12;

/// Counts by mask of one channel, for masks wider than [`DENSE_MASK_BITS`]. A fixed-seed
/// fast hash: a 7x7 stem tallies a new key at most windows (`benches/window_masks.rs`, one
/// thread: the stem's tally 108 -> 51 ms from std's SipHash to this hasher alone).
type MaskMap = std::collections::HashMap<u128, u64, foldhash::fast::FixedState>;

/// Per-channel mask counts while they are gathered.
enum MaskTally {
    Dense(Vec<Vec<u64>>),
    Sparse(Vec<MaskMap>),
}

impl MaskTally {
    fn new(channels: usize, window: usize) -> MaskTally {
        if window <= DENSE_MASK_BITS {
            MaskTally::Dense(vec![vec![0; 1 << window]; channels])
        } else {
            MaskTally::Sparse(vec![Default::default(); channels])
        }
    }

    /// Tally the windows of channel `c`'s `plane` (see [`plane_zero_masks`]).
    fn add_plane(&mut self, c: usize, conv: &Conv, plane: &[f32], hw: [usize; 2], out_hw: [usize; 2]) {
        match self {
            MaskTally::Dense(t) => {
                let counts = &mut t[c];
                plane_zero_masks(conv, plane, hw, out_hw, |m, n| counts[m as usize] += n)
            }
            MaskTally::Sparse(t) => {
                let counts = &mut t[c];
                plane_zero_masks(conv, plane, hw, out_hw, |m, n| *counts.entry(m).or_default() += n)
            }
        }
    }

    fn merge(mut self, other: MaskTally) -> MaskTally {
        match (&mut self, other) {
            (MaskTally::Dense(a), MaskTally::Dense(b)) => {
                a.iter_mut().zip(b).for_each(|(x, y)| x.iter_mut().zip(y).for_each(|(p, q)| *p += q))
            }
            (MaskTally::Sparse(a), MaskTally::Sparse(b)) => {
                for (x, mut y) in a.iter_mut().zip(b) {
                    // The smaller into the larger.
                    if x.len() < y.len() {
                        std::mem::swap(x, &mut y);
                    }
                    y.into_iter().for_each(|(m, n)| *x.entry(m).or_default() += n);
                }
            }
            _ => unreachable!("tallies of one layer have one kind"),
        }
        self
    }

    fn into_sorted(self) -> Vec<Vec<(u128, u64)>> {
        match self {
            MaskTally::Dense(t) => t
                .into_iter()
                .map(|c| c.into_iter().enumerate().filter(|&(_, n)| n > 0).map(|(m, n)| (m as u128, n)).collect())
                .collect(),
            MaskTally::Sparse(t) => t
                .into_iter()
                .map(|c| {
                    let mut v: Vec<_> = c.into_iter().filter(|&(_, n)| n > 0).collect();
                    // Each mask once: by mask alone.
                    v.sort_unstable_by_key(|&(m, _)| m);
                    v
                })
                .collect(),
        }
    }
}

impl WindowMasks {
    /// Add the windows of `other` (same layer, more images).
    pub fn merge(&mut self, other: &WindowMasks) {
        if self.channels.is_empty() {
            *self = other.clone();
            return;
        }
        for (a, b) in self.channels.iter_mut().zip(&other.channels) {
            let mut merged = Vec::with_capacity(a.len() + b.len());
            let (mut i, mut j) = (0, 0);
            while i < a.len() || j < b.len() {
                match (a.get(i), b.get(j)) {
                    (Some(x), Some(y)) if x.0 == y.0 => {
                        merged.push((x.0, x.1 + y.1));
                        i += 1;
                        j += 1;
                    }
                    (Some(x), Some(y)) if x.0 < y.0 => {
                        merged.push(*x);
                        i += 1;
                    }
                    (Some(x), None) => {
                        merged.push(*x);
                        i += 1;
                    }
                    (_, Some(y)) => {
                        merged.push(*y);
                        j += 1;
                    }
                    (None, None) => unreachable!("loop condition"),
                }
            }
            *a = merged;
        }
        self.zero_inputs += other.zero_inputs;
        self.inputs += other.inputs;
    }
}

/// The geometry and weights a counted layer multiplies with: conv, or fully connected as a
/// 1x1 conv on a 1x1 map. `None` for other layers.
pub fn counted(layer: &Layer) -> Option<(std::borrow::Cow<'_, Conv>, &[f32])> {
    match &layer.op {
        Op::Conv(c) => Some((std::borrow::Cow::Borrowed(c), &c.weight)),
        Op::Dense(d) => Some((std::borrow::Cow::Owned(d.geometry()), &d.weight)),
        _ => None,
    }
}

/// Whether `layer` is a conv or fully connected layer (one whose windows are counted).
pub fn is_counted(layer: &Layer) -> bool {
    counted(layer).is_some()
}

/// The window masks of layer `index` of `plan` on `input`, a batch of that layer's input
/// value, after the layer's own activation threshold.
///
/// # Panics
/// If the layer is not a conv or fully connected layer, or `input` is not a whole batch.
pub fn window_masks(plan: &Plan, index: usize, input: &[f32]) -> WindowMasks {
    let layer = &plan.layers[index];
    let (conv, _) = counted(layer).expect("window masks of a conv or fully connected layer");
    let in_shape = plan.value_shape(layer.inputs[0]);
    let len: usize = in_shape.iter().product();
    let ([h, w], [oh, ow]) = match &layer.op {
        Op::Conv(_) => ([in_shape[1], in_shape[2]], [layer.output_shape[1], layer.output_shape[2]]),
        _ => ([1, 1], [1, 1]),
    };
    assert_eq!(input.len() % len, 0, "a whole batch of layer {}'s input", layer.name);
    let window = conv.kernel[0] * conv.kernel[1];
    // One run of images per thread: a tally is a table per channel (for wide windows, a map
    // of tens of thousands of masks), and each extra one costs a merge.
    let per_thread = (input.len() / len).div_ceil(rayon::current_num_threads()).max(1);
    let (tally, zero_inputs) = input
        .par_chunks(len)
        .with_min_len(per_thread)
        .fold(
            || (MaskTally::new(conv.c_in, window), 0u64),
            |(mut tally, mut zeros), image| {
                let x = thresholded(image, conv.input_threshold);
                zeros += x.iter().filter(|&&v| v == 0.0).count() as u64;
                for c in 0..conv.c_in {
                    let plane = &x[c * h * w..][..h * w];
                    tally.add_plane(c, &conv, plane, [h, w], [oh, ow]);
                }
                (tally, zeros)
            },
        )
        .reduce(|| (MaskTally::new(conv.c_in, window), 0), |(a, za), (b, zb)| (a.merge(b), za + zb));
    WindowMasks { window, channels: tally.into_sorted(), zero_inputs, inputs: input.len() as u64 }
}

/// What [`measure_window_masks`] gathers from a run.
#[derive(Clone, Debug)]
pub struct Measured {
    /// The window masks of every conv and fully connected layer, with its index in the plan.
    pub masks: Vec<(usize, WindowMasks)>,
    /// The plan's first output on every image, batch first (what its predictions are
    /// compared on, without running it again).
    pub output: Tensor,
}

/// Run `plan` on `images` and gather the window masks of every conv and fully connected
/// layer, and the first output.
pub fn measure_window_masks(plan: &Plan, images: &Tensor) -> Result<Measured, RuntimeError> {
    let mut masks: Vec<Option<WindowMasks>> =
        plan.layers.iter().map(|l| is_counted(l).then(WindowMasks::default)).collect();
    let per_image: usize = plan.input_shape.iter().product();
    let batch = images.batch();
    // The first output, image after image (a plan built by hand may have none: then empty).
    let first_output = plan.outputs.first().map(|&o| plan.value_shape(o));
    let mut output_shape = vec![batch];
    output_shape.extend_from_slice(first_output.unwrap_or(&[0]));
    let mut output = Vec::new();
    for start in (0..batch).step_by(CHUNK) {
        let n = CHUNK.min(batch - start);
        let mut shape = vec![n];
        shape.extend_from_slice(&plan.input_shape);
        let chunk = Tensor::new(shape, images.data()[start * per_image..(start + n) * per_image].to_vec())?;
        let outputs = run_observed(plan, &chunk, &mut |index, _, inputs| {
            if let Some(total) = masks[index].as_mut() {
                total.merge(&window_masks(plan, index, inputs[0]));
            }
        })?;
        if let Some(first) = outputs.into_iter().next() {
            output.extend(first.into_parts().1);
        }
    }
    Ok(Measured {
        masks: masks.into_iter().enumerate().filter_map(|(i, m)| m.map(|m| (i, m))).collect(),
        output: Tensor::new(output_shape, output)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plan of one conv of one input channel, `c_out` filters of `kernel x kernel`.
    fn one_conv(weight: Vec<f32>, c_out: usize, kernel: usize, pad: usize, hw: usize) -> Plan {
        Plan::one_conv(Conv { pads: [pad; 4], ..Conv::new(weight, 1, c_out, [kernel; 2]) }, [hw, hw]).unwrap()
    }

    #[test]
    fn masks_of_a_tiny_conv_by_hand() {
        // One input channel, 3x3 input, 2x2 kernel, no padding: 4 windows.
        let plan = one_conv(vec![0.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0], 2, 2, 0, 3);
        // Input with zeros at (0,0) and (1,1):
        //   0 1 1
        //   1 0 1
        //   1 1 1
        let x = [0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        let masks = window_masks(&plan, 0, &x);
        // Windows (top-left at): (0,0) holds inputs 0,1,1,0 -> zeros at taps 0 and 3;
        // (0,1): 1,1,0,1 -> tap 2; (1,0): 1,0,1,1 -> tap 1; (1,1): 0,1,1,1 -> tap 0.
        assert_eq!(masks.channels, vec![vec![(0b0001, 1), (0b0010, 1), (0b0100, 1), (0b1001, 1)]]);
        assert_eq!((masks.zero_inputs, masks.inputs), (2, 9));
        // Two images are the sum of their tallies, whichever way they are gathered.
        let mut twice = masks.clone();
        twice.merge(&window_masks(&plan, 0, &[1.0; 9]));
        assert_eq!(twice, window_masks(&plan, 0, &[x.as_slice(), &[1.0; 9]].concat()));
        assert_eq!(twice.channels[0][0], (0, 4));
    }

    #[test]
    fn padding_reads_as_zero_taps() {
        // A 2x2 input padded to 4x4: every 3x3 window sees 4 real values and 5 padding.
        let masks = window_masks(&one_conv(vec![1.0; 9], 1, 3, 1, 2), 0, &[1.0; 4]);
        assert_eq!(masks.channels[0].iter().map(|&(_, n)| n).sum::<u64>(), 4);
        assert!(masks.channels[0].iter().all(|&(m, _)| m.count_ones() == 5), "{:?}", masks.channels);
    }

    #[test]
    fn wide_windows_are_tallied_in_a_map() {
        // A 5x5 kernel (25 taps) over a 5x5 input with one zero: one window.
        let mut x = [1.0; 25];
        x[7] = 0.0;
        let masks = window_masks(&one_conv(vec![1.0; 25], 1, 5, 0, 5), 0, &x);
        assert_eq!(masks.channels, vec![vec![(1 << 7, 1)]]);
    }

    #[test]
    fn a_run_gathers_the_masks_of_every_counted_layer() {
        let plan = one_conv(vec![1.0; 4], 1, 2, 0, 3);
        let x = Tensor::new(vec![40, 1, 3, 3], (0..360).map(|i| (i % 3) as f32).collect()).unwrap();
        let measured = measure_window_masks(&plan, &x).unwrap();
        assert_eq!(measured.masks.len(), 1);
        assert_eq!(measured.masks[0].0, 0);
        assert_eq!(measured.masks[0].1, window_masks(&plan, 0, x.data()), "chunked runs tally as one");
        // The output of every chunk, in order: the run's on the whole batch.
        assert_eq!(measured.output, crate::run(&plan, &x).unwrap()[0]);
    }
}

//! Calibration statistics (REFERENCE §2.3): run the artifact on images and measure, per conv
//! or fully connected layer and input channel, the histogram of zero products per window:
//! the fraction of (window, output filter) pairs whose K*K products hold exactly j zeros.
//! A product is zero when its weight is zero or its (thresholded) input is, padding included.
//!
//! Images run in chunks, each chunk's images in parallel, and only counts are kept: memory
//! does not grow with the number of images.

use crate::exec::run_observed;
use crate::kernels::thresholded;
use crate::kernels::windows::{input_zero_mask, weight_zero_masks};
use crate::plan::{Layer, Op, Plan};
use crate::{RuntimeError, Tensor};
use rayon::prelude::*;

/// Images run per chunk.
const CHUNK: usize = 8;
/// Largest number of (channel, filter) pairs whose histograms are kept one by one: small
/// layers have few pairs per hardware unit, so per-pair statistics matter there.
pub const PAIR_LIMIT: usize = 1 << 16;

/// Counts gathered for one conv or fully connected layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerCounts {
    /// Index of the layer in the plan.
    pub layer: usize,
    /// Layer name.
    pub name: String,
    /// K_h * K_w (1 for fully connected layers).
    pub window: usize,
    /// Per input channel, `window + 1` bins: (window, filter) pairs with j zero products.
    pub histograms: Vec<Vec<u64>>,
    /// Per output filter, `window + 1` bins: (window, channel) pairs with j zero products.
    pub filter_histograms: Vec<Vec<u64>>,
    /// Per (input channel, filter of its group) pair, `window + 1` bins over windows, flat
    /// as `[c][f][j]`; empty for layers with more than [`PAIR_LIMIT`] pairs.
    pub pair_histograms: Vec<u64>,
    /// Zero input values (after the threshold), padding excluded.
    pub zero_inputs: u64,
    /// Input values seen.
    pub inputs: u64,
    /// Zero weights.
    pub zero_weights: u64,
    /// Weights.
    pub weights: u64,
}

impl LayerCounts {
    fn add(&mut self, other: &LayerCounts) {
        self.pair_histograms.iter_mut().zip(&other.pair_histograms).for_each(|(x, y)| *x += y);
        let pairs = self.histograms.iter_mut().zip(&other.histograms);
        for (a, b) in pairs.chain(self.filter_histograms.iter_mut().zip(&other.filter_histograms)) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
        self.zero_inputs += other.zero_inputs;
        self.inputs += other.inputs;
    }

    /// Fraction of zero products over all windows and channels.
    pub fn product_sparsity(&self) -> f64 {
        let (mut zeros, mut total) = (0.0, 0.0);
        for h in &self.histograms {
            for (j, &n) in h.iter().enumerate() {
                zeros += (j as u64 * n) as f64;
                total += (self.window as u64 * n) as f64;
            }
        }
        if total > 0.0 {
            zeros / total
        } else {
            0.0
        }
    }
}

/// Zero-weight bit masks of a layer: `[c_out][c_in / groups]`, one bit per window tap.
struct WeightMasks {
    masks: Vec<u128>,
    per_group_in: usize,
    per_group_out: usize,
}

fn weight_masks(weight: &[f32], c_out: usize, per_group_in: usize, window: usize, groups: usize) -> WeightMasks {
    WeightMasks { masks: weight_zero_masks(weight, window), per_group_in, per_group_out: c_out / groups }
}

fn empty_counts(
    layer: usize,
    l: &Layer,
    c_in: usize,
    c_out: usize,
    groups: usize,
    window: usize,
    weight: &[f32],
) -> LayerCounts {
    let pairs = c_in * (c_out / groups);
    LayerCounts {
        pair_histograms: if pairs <= PAIR_LIMIT { vec![0; pairs * (window + 1)] } else { Vec::new() },
        layer,
        name: l.name.clone(),
        window,
        histograms: vec![vec![0; window + 1]; c_in],
        filter_histograms: vec![vec![0; window + 1]; c_out],
        zero_inputs: 0,
        inputs: 0,
        zero_weights: weight.iter().filter(|&&w| w == 0.0).count() as u64,
        weights: weight.len() as u64,
    }
}

/// Counts of one image at a conv layer.
fn conv_image_counts(
    conv: &crate::plan::Conv,
    x: &[f32],
    [h, w]: [usize; 2],
    [oh, ow]: [usize; 2],
    masks: &WeightMasks,
    into: &mut LayerCounts,
) {
    let [kh, kw] = conv.kernel;
    into.inputs += x.len() as u64;
    into.zero_inputs += x.iter().filter(|&&v| v == 0.0).count() as u64;
    for c in 0..conv.c_in {
        let plane = &x[c * h * w..][..h * w];
        let (g, local) = (c / masks.per_group_in, c % masks.per_group_in);
        let filters = g * masks.per_group_out..(g + 1) * masks.per_group_out;
        for oy in 0..oh {
            for ox in 0..ow {
                let amask = input_zero_mask(conv, plane, [h, w], oy, ox);
                for co in filters.clone() {
                    let zeros = (amask | masks.masks[co * masks.per_group_in + local]).count_ones() as usize;
                    into.histograms[c][zeros] += 1;
                    into.filter_histograms[co][zeros] += 1;
                    if !into.pair_histograms.is_empty() {
                        let pair = c * masks.per_group_out + (co - filters.start);
                        into.pair_histograms[pair * (kh * kw + 1) + zeros] += 1;
                    }
                }
            }
        }
    }
}

/// Run `plan` on `images` and gather the counts of every conv and fully connected layer.
pub fn calibrate(plan: &Plan, images: &Tensor) -> Result<Vec<LayerCounts>, RuntimeError> {
    let mut totals: Vec<Option<LayerCounts>> = vec![None; plan.layers.len()];
    let masks: Vec<Option<WeightMasks>> = plan
        .layers
        .iter()
        .map(|l| match &l.op {
            Op::Conv(c) => {
                Some(weight_masks(&c.weight, c.c_out, c.c_in / c.groups, c.kernel[0] * c.kernel[1], c.groups))
            }
            Op::Dense(d) => Some(weight_masks(&d.weight, d.outputs, d.inputs, 1, 1)),
            _ => None,
        })
        .collect();
    for (i, l) in plan.layers.iter().enumerate() {
        totals[i] = match &l.op {
            Op::Conv(c) => Some(empty_counts(i, l, c.c_in, c.c_out, c.groups, c.kernel[0] * c.kernel[1], &c.weight)),
            Op::Dense(d) => Some(empty_counts(i, l, d.inputs, d.outputs, 1, 1, &d.weight)),
            _ => None,
        };
    }
    let per_image: usize = plan.input_shape.iter().product();
    let batch = images.batch();
    for start in (0..batch).step_by(CHUNK) {
        let n = CHUNK.min(batch - start);
        let mut shape = vec![n];
        shape.extend_from_slice(&plan.input_shape);
        let chunk = Tensor::new(shape, images.data()[start * per_image..(start + n) * per_image].to_vec())?;
        run_observed(plan, &chunk, &mut |index, layer, inputs| {
            let Some(total) = totals[index].as_mut() else { return };
            let masks = masks[index].as_ref().expect("masks for every counted layer");
            let in_shape = plan.value_shape(layer.inputs[0]);
            let len: usize = in_shape.iter().product();
            let counts = (0..n)
                .into_par_iter()
                .map(|k| {
                    // Empty counts of the same shape (not a clone of the running totals).
                    let mut c = LayerCounts {
                        layer: total.layer,
                        name: String::new(),
                        window: total.window,
                        histograms: vec![vec![0; total.window + 1]; total.histograms.len()],
                        filter_histograms: vec![vec![0; total.window + 1]; total.filter_histograms.len()],
                        pair_histograms: vec![0; total.pair_histograms.len()],
                        zero_inputs: 0,
                        inputs: 0,
                        zero_weights: 0,
                        weights: 0,
                    };
                    match &layer.op {
                        Op::Conv(conv) => {
                            let x = thresholded(&inputs[0][k * len..][..len], conv.input_threshold);
                            let out = &layer.output_shape;
                            conv_image_counts(conv, &x, [in_shape[1], in_shape[2]], [out[1], out[2]], masks, &mut c);
                        }
                        Op::Dense(d) => {
                            let x = thresholded(&inputs[0][k * len..][..len], d.input_threshold);
                            let fc = d.geometry();
                            conv_image_counts(&fc, &x, [1, 1], [1, 1], masks, &mut c);
                        }
                        _ => unreachable!("only conv and dense layers are counted"),
                    }
                    c
                })
                .reduce_with(|mut a, b| {
                    a.add(&b);
                    a
                });
            if let Some(c) = counts {
                total.add(&c);
            }
        })?;
    }
    Ok(totals.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Conv;

    #[test]
    fn histogram_of_a_tiny_conv_by_hand() {
        // One input channel, 3x3 input, 2x2 kernel, no padding: 4 windows; two filters.
        // Filter 0 has one zero weight (tap 0), filter 1 none.
        let conv = Conv {
            weight: vec![0.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0],
            bias: vec![0.0; 2],
            c_in: 1,
            c_out: 2,
            kernel: [2, 2],
            stride: [1, 1],
            dilation: [1, 1],
            pads: [0; 4],
            groups: 1,
            activation: None,
            input_threshold: None,
            sparse_weight: None,
        };
        // Input with zeros at (0,0) and (1,1):
        //   0 1 1
        //   1 0 1
        //   1 1 1
        let x = [0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        let masks = weight_masks(&conv.weight, 2, 1, 4, 1);
        let mut counts = LayerCounts {
            layer: 0,
            name: "c".into(),
            window: 4,
            histograms: vec![vec![0; 5]],
            filter_histograms: vec![vec![0; 5]; 2],
            pair_histograms: vec![0; 2 * 5],
            zero_inputs: 0,
            inputs: 0,
            zero_weights: 1,
            weights: 8,
        };
        conv_image_counts(&conv, &x, [3, 3], [2, 2], &masks, &mut counts);
        // Windows (top-left at): (0,0) holds inputs 0,1,1,0 -> zeros at taps 0 and 3;
        // (0,1): 1,1,0,1 -> tap 2; (1,0): 1,0,1,1 -> tap 1; (1,1): 0,1,1,1 -> tap 0.
        // Filter 0 (tap 0 zero): 2, 2, 2, 1 zeros. Filter 1: 2, 1, 1, 1 zeros.
        assert_eq!(counts.histograms[0], vec![0, 4, 4, 0, 0]);
        assert_eq!(counts.filter_histograms, vec![vec![0, 1, 3, 0, 0], vec![0, 3, 1, 0, 0]]);
        assert_eq!(counts.pair_histograms, vec![0, 1, 3, 0, 0, 0, 3, 1, 0, 0]);
        assert_eq!((counts.zero_inputs, counts.inputs), (2, 9));
        // 12 zero products over 8 windows x 4 taps.
        assert!((counts.product_sparsity() - 12.0 / 32.0).abs() < 1e-12);
    }

    #[test]
    fn padding_counts_as_zero_products() {
        let conv = Conv {
            weight: vec![1.0; 9],
            bias: vec![0.0],
            c_in: 1,
            c_out: 1,
            kernel: [3, 3],
            stride: [1, 1],
            dilation: [1, 1],
            pads: [1; 4],
            groups: 1,
            activation: None,
            input_threshold: None,
            sparse_weight: None,
        };
        let masks = weight_masks(&conv.weight, 1, 1, 9, 1);
        let mut counts = LayerCounts {
            layer: 0,
            name: "c".into(),
            window: 9,
            histograms: vec![vec![0; 10]],
            filter_histograms: vec![vec![0; 10]],
            pair_histograms: Vec::new(),
            zero_inputs: 0,
            inputs: 0,
            zero_weights: 0,
            weights: 9,
        };
        conv_image_counts(&conv, &[1.0; 4], [2, 2], [2, 2], &masks, &mut counts);
        // A 2x2 input padded to 4x4: every 3x3 window sees 4 real values and 5 padding.
        assert_eq!(counts.histograms[0], vec![0, 0, 0, 0, 0, 4, 0, 0, 0, 0]);
    }
}

//! Calibration counts (REFERENCE §2.3): per conv or fully connected layer and input channel,
//! the histogram of zero products per window: the fraction of (window, output filter) pairs
//! whose K*K products hold exactly j zeros. A product is zero when its weight is zero or its
//! (thresholded) input is, padding included.
//!
//! The runtime observes which taps of each window read a zero ([`WindowMasks`]); this module
//! combines those tallies with the layer's weights. Counting by distinct mask instead of by
//! window makes this step independent of the number of images, so re-pruning a layer costs
//! milliseconds. Which histograms are kept (per channel, per filter, and per pair for small
//! layers) is the cost model's need, so it is decided here, not in the runtime.

use hass_runtime::kernels::windows::weight_zero_masks;
use hass_runtime::stats::{counted, WindowMasks};
use hass_runtime::Plan;
use rayon::prelude::*;

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

/// The counts of layer `index` of `plan` (its current weights) over the windows in `masks`.
///
/// # Panics
/// If the layer is not a conv or fully connected layer, or `masks` has another shape.
pub fn layer_counts(plan: &Plan, index: usize, masks: &WindowMasks) -> LayerCounts {
    let layer = &plan.layers[index];
    let (conv, weight) = counted(layer).expect("counts of a conv or fully connected layer");
    let window = conv.kernel[0] * conv.kernel[1];
    assert_eq!((masks.window, masks.channels.len()), (window, conv.c_in), "masks of layer {}", layer.name);
    let (per_group_in, per_group_out) = (conv.c_in / conv.groups, conv.c_out / conv.groups);
    let weight_masks = weight_zero_masks(weight, window);
    let bins = window + 1;
    // Per input channel, the histograms of its (channel, filter) pairs, flat [f][j].
    let pairs: Vec<Vec<u64>> = masks
        .channels
        .par_iter()
        .enumerate()
        .map(|(c, seen)| {
            let (g, local) = (c / per_group_in, c % per_group_in);
            let mut h = vec![0u64; per_group_out * bins];
            // Filters whose kernels zero the same taps share a histogram: worked out once
            // per distinct mask (all of them alike in an unpruned layer).
            let mut first_with: std::collections::HashMap<u128, usize, foldhash::fast::FixedState> = Default::default();
            for f in 0..per_group_out {
                let w = weight_masks[(g * per_group_out + f) * per_group_in + local];
                if let Some(&first) = first_with.get(&w) {
                    h.copy_within(first * bins..(first + 1) * bins, f * bins);
                    continue;
                }
                let hf = &mut h[f * bins..][..bins];
                for &(m, n) in seen {
                    hf[(m | w).count_ones() as usize] += n;
                }
                first_with.insert(w, f);
            }
            h
        })
        .collect();
    // Summed per channel over its filters, and per filter over its group's channels, each
    // on its own (a 512-channel layer has 262144 pairs).
    let sum = |hs: &mut dyn Iterator<Item = &[u64]>| {
        hs.fold(vec![0; bins], |mut total, h| {
            total.iter_mut().zip(h).for_each(|(t, &n)| *t += n);
            total
        })
    };
    let histograms: Vec<Vec<u64>> = pairs.par_iter().map(|h| sum(&mut h.chunks_exact(bins))).collect();
    let filter_histograms: Vec<Vec<u64>> = (0..conv.c_out)
        .into_par_iter()
        .map(|filter| {
            let (g, f) = (filter / per_group_out, filter % per_group_out);
            let group = &pairs[g * per_group_in..][..per_group_in];
            sum(&mut group.iter().map(|h| &h[f * bins..][..bins]))
        })
        .collect();
    let keep_pairs = conv.c_in * per_group_out <= PAIR_LIMIT;
    LayerCounts {
        layer: index,
        name: layer.name.clone(),
        window,
        histograms,
        filter_histograms,
        pair_histograms: if keep_pairs { pairs.concat() } else { Vec::new() },
        zero_inputs: masks.zero_inputs,
        inputs: masks.inputs,
        zero_weights: weight.iter().filter(|&&w| w == 0.0).count() as u64,
        weights: weight.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hass_runtime::plan::Conv;
    use hass_runtime::stats::window_masks;

    /// A plan of one conv of one input channel, `c_out` filters of `kernel x kernel`.
    fn one_conv(weight: Vec<f32>, c_out: usize, kernel: usize, pad: usize, hw: usize) -> Plan {
        Plan::one_conv(Conv { pads: [pad; 4], ..Conv::new(weight, 1, c_out, [kernel; 2]) }, [hw, hw]).unwrap()
    }

    #[test]
    fn histogram_of_a_tiny_conv_by_hand() {
        // One input channel, 3x3 input, 2x2 kernel, no padding: 4 windows; two filters.
        // Filter 0 has one zero weight (tap 0), filter 1 none.
        let plan = one_conv(vec![0.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0], 2, 2, 0, 3);
        // Zeros at (0,0) and (1,1): the windows' zero taps are {0, 3}, {2}, {1}, {0}.
        let x = [0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        let counts = layer_counts(&plan, 0, &window_masks(&plan, 0, &x));
        // Filter 0 (tap 0 zero): 2, 2, 2, 1 zeros. Filter 1: 2, 1, 1, 1 zeros.
        assert_eq!(counts.histograms[0], vec![0, 4, 4, 0, 0]);
        assert_eq!(counts.filter_histograms, vec![vec![0, 1, 3, 0, 0], vec![0, 3, 1, 0, 0]]);
        assert_eq!(counts.pair_histograms, vec![0, 1, 3, 0, 0, 0, 3, 1, 0, 0]);
        assert_eq!((counts.zero_inputs, counts.inputs, counts.zero_weights), (2, 9, 1));
        // 12 zero products over 8 windows x 4 taps.
        assert!((counts.product_sparsity() - 12.0 / 32.0).abs() < 1e-12);
    }

    #[test]
    fn padding_counts_as_zero_products() {
        let plan = one_conv(vec![1.0; 9], 1, 3, 1, 2);
        let counts = layer_counts(&plan, 0, &window_masks(&plan, 0, &[1.0; 4]));
        // A 2x2 input padded to 4x4: every 3x3 window sees 4 real values and 5 padding.
        assert_eq!(counts.histograms[0], vec![0, 0, 0, 0, 0, 4, 0, 0, 0, 0]);
    }

    #[test]
    fn wide_windows_count_like_narrow_ones() {
        // A 5x5 kernel (25 taps) over a 5x5 input with one zero: one window, one zero.
        let mut x = [1.0; 25];
        x[7] = 0.0;
        let plan = one_conv(vec![1.0; 25], 1, 5, 0, 5);
        assert_eq!(layer_counts(&plan, 0, &window_masks(&plan, 0, &x)).histograms[0][1], 1);
    }
}

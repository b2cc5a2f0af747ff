//! Window histograms for the cost model: from the weights alone (no calibration images:
//! activations are taken as non-zero, so the product sparsity is a lower bound), or
//! measured by running the pruned, thresholded artifact on calibration images.

use super::counts::{layer_counts, LayerCounts};
use crate::board::Board;
use crate::error::{CompileError, Result};
use crate::hw::sparse::{LayerSparsity, PairCycles};
use crate::ir::{Graph, Op};
use crate::quantize::Quantization;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Per conv and fully connected layer, histograms of zero weights per window and filter.
pub fn from_weights(graph: &Graph) -> BTreeMap<String, LayerSparsity> {
    let mut out = BTreeMap::new();
    for id in graph.layers() {
        let node = graph.node(id);
        let (weight, groups) = match &node.op {
            Op::Conv(c) => (graph.weights.tensor(c.weight), c.groups),
            Op::Dense(d) => (graph.weights.tensor(d.weight), 1),
            _ => continue,
        };
        let (c_out, per_group_in) = (weight.shape[0], weight.shape[1]);
        let window: usize = weight.shape[2..].iter().product();
        let per_group_out = c_out / groups;
        let c_in = per_group_in * groups;
        let mut histograms = vec![vec![0.0; window + 1]; c_in];
        let mut filter_histograms = vec![vec![0.0; window + 1]; c_out];
        for (co, filter_hist) in filter_histograms.iter_mut().enumerate() {
            let g = co / per_group_out;
            for local in 0..per_group_in {
                let taps = &weight.data[(co * per_group_in + local) * window..][..window];
                let zeros = taps.iter().filter(|&&w| w == 0.0).count();
                histograms[g * per_group_in + local][zeros] += 1.0 / per_group_out as f64;
                filter_hist[zeros] += 1.0 / per_group_in as f64;
            }
        }
        let zero = weight.data.iter().filter(|&&w| w == 0.0).count() as f64 / weight.data.len() as f64;
        out.insert(
            node.name.clone(),
            LayerSparsity {
                weight: Some(zero),
                activation: None,
                product: zero,
                histograms: Arc::new(histograms),
                filter_histograms: Arc::new(filter_histograms),
                pair_cycles: Default::default(),
                memo: Default::default(),
            },
        );
    }
    out
}

/// Run `graph` (already pruned and thresholded) on `images` and measure every conv and
/// fully connected layer; with the run's first output.
pub fn measured(
    graph: &Graph,
    board: &Board,
    images: &hass_runtime::Tensor,
    quantization: Option<&Quantization>,
) -> Result<(BTreeMap<String, LayerSparsity>, hass_runtime::Tensor)> {
    let _span = tracing::info_span!("calibrate", images = images.batch()).entered();
    let plan = calibration_plan(graph, board, images, quantization)?;
    let measured = hass_runtime::stats::measure_window_masks(&plan, images)?;
    let layers = measured
        .masks
        .into_iter()
        .map(|(layer, m)| (plan.layers[layer].name.clone(), sparsity_of(&layer_counts(&plan, layer, &m))))
        .collect();
    Ok((layers, measured.output))
}

/// The runtime plan of `graph` (as the backend writes it, on the fixed-point datapath with
/// `quantization`) that calibration runs, after checking that `images` fit its input.
pub fn calibration_plan(
    graph: &Graph,
    board: &Board,
    images: &hass_runtime::Tensor,
    quantization: Option<&Quantization>,
) -> Result<hass_runtime::Plan> {
    let _span = tracing::debug_span!("calibration-plan").entered();
    let bytes = crate::backend::emit(graph, board, &Default::default(), quantization)?;
    let plan = hass_runtime::load_bytes(&bytes)
        .map_err(|e| CompileError::internal(format!("the runtime rejects the artifact the backend wrote: {e}")))?;
    if images.shape().get(1..) != Some(plan.input_shape.as_slice()) {
        return Err(CompileError::Options(format!(
            "calibration images have shape {:?}; the model takes [N, {}]",
            images.shape(),
            plan.input_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(plan.with_direct_sums())
}

/// The cost model's statistics of one layer from the runtime's counts.
pub fn sparsity_of(c: &LayerCounts) -> LayerSparsity {
    let normalise = |hs: &[Vec<u64>]| -> Vec<Vec<f64>> {
        hs.iter()
            .map(|h| {
                let total = h.iter().sum::<u64>().max(1) as f64;
                h.iter().map(|&n| n as f64 / total).collect()
            })
            .collect()
    };
    LayerSparsity {
        weight: Some(c.zero_weights as f64 / c.weights.max(1) as f64),
        activation: Some(c.zero_inputs as f64 / c.inputs.max(1) as f64),
        product: c.product_sparsity(),
        histograms: Arc::new(normalise(&c.histograms)),
        filter_histograms: Arc::new(normalise(&c.filter_histograms)),
        pair_cycles: Arc::new(PairCycles::from_counts(&c.pair_histograms, c.window)),
        memo: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use hass_runtime::plan::Op;

    /// Calibration runs sum every conv directly, whatever the runtime would pick to run the
    /// model fast: their floats steer the search.
    #[test]
    fn calibration_plans_sum_every_conv_directly() {
        let (graph, board, images) = crate::testing::fmnist_cnn(2);
        let plan = super::calibration_plan(&graph, &board, &images, None).unwrap();
        let convs: Vec<bool> = plan
            .layers
            .iter()
            .filter_map(|l| match &l.op {
                Op::Conv(conv) => Some(conv.winograd),
                _ => None,
            })
            .collect();
        assert_eq!(convs, [false, false], "fmnist_cnn's two convs");
    }
}

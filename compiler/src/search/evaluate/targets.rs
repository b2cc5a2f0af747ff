//! Which layers the search sets knobs on: every conv and fully connected layer, with where
//! it sits in the runtime plan and in the cost model's network.

use crate::error::{CompileError, Result};
use crate::hw::pipeline::Network;
use crate::ir::{Graph, Op};
use hass_runtime::Plan;
use std::sync::Arc;

/// A conv or fully connected layer whose knobs the search sets.
#[derive(Clone, Debug)]
pub struct Target {
    /// Layer name.
    pub name: String,
    /// Index in the runtime plan.
    pub layer: usize,
    /// Index of its stage in the network.
    pub stage: usize,
    /// Whether it reads the network input (whose values are an image, never thresholded).
    pub reads_image: bool,
    /// Dense multiply-accumulates per image.
    pub macs: u64,
    /// The unpruned weights.
    pub weights: Arc<Vec<f32>>,
    /// Output filters (rows of the weight matrix).
    pub(super) rows: usize,
    /// Bias values.
    pub(super) biases: usize,
    /// The biases (zeros without), which the fixed-point datapath re-quantizes with the
    /// weights.
    pub(super) bias_values: Arc<Vec<f32>>,
}

impl Target {
    /// The share of its weights' energy lost to rounding them at `bits` (per output
    /// channel, in the formats the quantizer picks).
    pub fn rounding_noise(&self, bits: u32) -> f64 {
        let formats = crate::quantize::weight_formats(&self.weights, self.rows, bits);
        let fan_in = self.weights.len() / self.rows.max(1);
        let (mut noise, mut energy) = (0.0, 0.0);
        for (row, f) in self.weights.chunks(fan_in.max(1)).zip(&formats) {
            for &w in row {
                let d = w as f64 - f.to_f64(f.quantize(w as f64));
                noise += d * d;
                energy += (w as f64) * (w as f64);
            }
        }
        if energy > 0.0 {
            noise / energy
        } else {
            0.0
        }
    }
}

/// The targets of `graph`, in execution order; `plan` and `network` were made from it.
pub(super) fn discover(graph: &Graph, plan: &Plan, network: &Network) -> Result<Vec<Target>> {
    let mut targets = Vec::new();
    for id in graph.layers() {
        let node = graph.node(id);
        let (weight, bias) = match &node.op {
            Op::Conv(c) => (c.weight, c.bias),
            Op::Dense(d) => (d.weight, d.bias),
            _ => continue,
        };
        let w = graph.weights.tensor(weight);
        let missing = |what: &str| CompileError::internal(format!("layer {} has no {what}", node.name));
        let layer = plan.layers.iter().position(|l| l.name == node.name).ok_or_else(|| missing("runtime layer"))?;
        let stage = network.stages.iter().position(|s| s.node == id).ok_or_else(|| missing("hardware stage"))?;
        targets.push(Target {
            name: node.name.clone(),
            layer,
            stage,
            reads_image: graph.inputs_of(id)[0] == graph.input,
            macs: network.stages[stage].macs,
            weights: Arc::new(w.data.clone()),
            rows: w.shape[0],
            biases: bias.map_or(0, |b| graph.weights.tensor(b).data.len()),
            bias_values: Arc::new(bias.map_or_else(|| vec![0.0; w.shape[0]], |b| graph.weights.tensor(b).data.clone())),
        });
    }
    Ok(targets)
}

//! `hassc inspect`: per-layer name, op, shapes, parameters and MACs, and totals.

use crate::ir::{Graph, Op};
use serde::Serialize;

/// One layer's row.
#[derive(Clone, Debug, Serialize)]
pub struct LayerSummary {
    /// Layer name (as in reports and artifacts).
    pub name: String,
    /// Op kind, with a fused activation after `+`.
    pub op: String,
    /// Per-image input shape (the first input's for multi-input layers).
    pub input_shape: Vec<usize>,
    /// Per-image output shape.
    pub output_shape: Vec<usize>,
    /// Weights and biases.
    pub params: u64,
    /// Multiply-accumulates per image.
    pub macs: u64,
}

/// The whole model.
#[derive(Clone, Debug, Serialize)]
pub struct ModelSummary {
    /// Model name.
    pub model: String,
    /// Per-image input shape.
    pub input_shape: Vec<usize>,
    /// Sum of `macs`.
    pub total_macs: u64,
    /// Sum of `params`.
    pub total_params: u64,
    /// Layers in execution order.
    pub layers: Vec<LayerSummary>,
}

/// Summarise a compiled (post-pipeline) graph.
pub fn summarize(graph: &Graph) -> ModelSummary {
    let layers: Vec<LayerSummary> = graph
        .layers()
        .into_iter()
        .map(|id| {
            let node = graph.node(id);
            let out = graph.shape(id).clone();
            let input_shape = graph.inputs_of(id).first().map(|&i| graph.shape(i).clone()).unwrap_or_default();
            let params: usize = node.op.weight_ids().iter().map(|&w| graph.weights.tensor(w).data.len()).sum();
            let macs = match &node.op {
                // Each output value takes one MAC per weight of its filter.
                Op::Conv(c) => {
                    let w = &graph.weights.tensor(c.weight).shape;
                    out.iter().product::<usize>() * w[1] * w[2] * w[3]
                }
                Op::Dense(d) => graph.weights.tensor(d.weight).data.len(),
                _ => 0,
            };
            LayerSummary {
                name: node.name.clone(),
                op: node.op.kind_name(),
                input_shape,
                output_shape: out,
                params: params as u64,
                macs: macs as u64,
            }
        })
        .collect();
    ModelSummary {
        model: graph.name.clone(),
        input_shape: graph.shape(graph.input).clone(),
        total_macs: layers.iter().map(|l| l.macs).sum(),
        total_params: layers.iter().map(|l| l.params).sum(),
        layers,
    }
}

impl ModelSummary {
    /// A plain-text table with a totals line.
    pub fn to_table(&self) -> String {
        let shape = |s: &[usize]| s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
        let name_w = self.layers.iter().map(|l| l.name.len()).max().unwrap_or(4).clamp(5, 48);
        let op_w = self.layers.iter().map(|l| l.op.len()).max().unwrap_or(2).clamp(2, 24);
        let mut out = format!("model {} (input {})\n", self.model, shape(&self.input_shape));
        out += &format!(
            "{:<name_w$}  {:<op_w$}  {:>12}  {:>12}  {:>10}  {:>14}\n",
            "layer", "op", "input", "output", "params", "MACs"
        );
        for l in &self.layers {
            out += &format!(
                "{:<name_w$}  {:<op_w$}  {:>12}  {:>12}  {:>10}  {:>14}\n",
                l.name,
                l.op,
                shape(&l.input_shape),
                shape(&l.output_shape),
                l.params,
                l.macs
            );
        }
        out += &format!(
            "total: {} layers, {} params, {} MACs ({:.3} GMAC)\n",
            self.layers.len(),
            self.total_params,
            self.total_macs,
            self.total_macs as f64 / 1e9
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_longer_than_a_format_width_print_without_panicking() {
        // `{:<w$}` panics for widths beyond u16::MAX; names come from untrusted models.
        let long = "n".repeat(70_000);
        let layer = LayerSummary {
            name: long.clone(),
            op: "o".repeat(70_000),
            input_shape: vec![1],
            output_shape: vec![1],
            params: 0,
            macs: 0,
        };
        let summary = ModelSummary {
            model: "m".into(),
            input_shape: vec![1],
            total_macs: 0,
            total_params: 0,
            layers: vec![layer],
        };
        assert!(summary.to_table().contains(&long));
    }
}

//! The graph as text, one node a line, for `hassc inspect MODEL --after PASS` and for
//! debugging a pass: what a newcomer reaches for first when a pass misbehaves.
//!
//! ```text
//! graph fmnist_cnn_op13 {
//!   %0 = input [1, 28, 28]                                     : [1, 28, 28]
//!   %1 = conv %0, w0 [16, 1, 3, 3], bias w1, pads [1, 1, 1, 1], relu : [16, 28, 28]  # /conv1/Conv
//!   ...
//!   outputs %9
//! }
//! ```
//!
//! Nodes print in execution order (node-id order if the graph has a cycle, so a broken graph
//! still prints); `%N` is the node id, `wN` a weight tensor with its shape. Shapes are `?`
//! before `infer_shapes`. Defaults (stride 1, no dilation, no padding, one group) are left out.

use super::{Activation, Graph, NodeId, Op, Padding, ReshapeTarget, WeightId};
use std::fmt::{self, Write};

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "graph {} {{", self.name)?;
        let order = self.topo_order().unwrap_or_else(|| self.nodes.node_indices().collect());
        for id in order {
            let node = self.node(id);
            let shape = node.shape.as_ref().map_or("?".to_string(), |s| format!("{s:?}"));
            writeln!(f, "  %{} = {} : {shape}  # {}", id.index(), self.describe(id), node.name)?;
        }
        let outputs: Vec<String> = self.outputs.iter().map(|o| format!("%{}", o.index())).collect();
        writeln!(f, "  outputs {}", outputs.join(", "))?;
        writeln!(f, "}}")
    }
}

impl Graph {
    /// One node's op, operands and attributes, as [`Graph`]'s `Display` prints them.
    pub fn describe(&self, id: NodeId) -> String {
        let mut s = String::new();
        let inputs: Vec<String> = self.inputs_of(id).iter().map(|i| format!("%{}", i.index())).collect();
        let weight = |w: WeightId| match self.weights.get(w) {
            Some(t) => format!("w{} {:?}", w.0, t.shape),
            None => format!("w{} <missing>", w.0),
        };
        let mut attrs: Vec<String> = Vec::new();
        let op = match &self.node(id).op {
            Op::Input { shape } => {
                attrs.push(format!("{shape:?}"));
                "input".to_string()
            }
            Op::Conv(c) => {
                attrs.push(weight(c.weight));
                attrs.extend(c.bias.map(|b| format!("bias {}", weight(b))));
                window_attrs(&mut attrs, None, c.stride, c.dilation, c.padding);
                if c.groups != 1 {
                    attrs.push(format!("groups {}", c.groups));
                }
                activation_attrs(&mut attrs, c.activation, c.input_threshold);
                "conv".to_string()
            }
            Op::Dense(d) => {
                attrs.push(weight(d.weight));
                attrs.extend(d.bias.map(|b| format!("bias {}", weight(b))));
                activation_attrs(&mut attrs, d.activation, d.input_threshold);
                "dense".to_string()
            }
            Op::Pool(p) => {
                window_attrs(&mut attrs, Some(p.kernel), p.stride, p.dilation, p.padding);
                if p.ceil_mode {
                    attrs.push("ceil_mode".into());
                }
                if p.count_include_pad {
                    attrs.push("count_include_pad".into());
                }
                self.node(id).op.kind_name().to_lowercase()
            }
            Op::GlobalAveragePool { keep_dims } => {
                if *keep_dims {
                    attrs.push("keep_dims".into());
                }
                "global_avg_pool".to_string()
            }
            Op::Eltwise { activation, .. } => {
                activation_attrs(&mut attrs, *activation, None);
                self.node(id).op.kind_name().split('+').next().unwrap_or_default().to_lowercase()
            }
            Op::ScaleShift(s) => {
                attrs.push(format!("scale {}", weight(s.scale)));
                attrs.push(format!("shift {}", weight(s.shift)));
                activation_attrs(&mut attrs, s.activation, None);
                "scale_shift".to_string()
            }
            Op::BroadcastConst { constant, .. } => {
                attrs.push(weight(*constant));
                self.node(id).op.kind_name().to_lowercase()
            }
            Op::Activation(a) => {
                activation_attrs(&mut attrs, Some(*a), None);
                "activation".to_string()
            }
            Op::Concat { axis } => {
                attrs.push(format!("axis {axis}"));
                "concat".to_string()
            }
            Op::Reshape(ReshapeTarget::Flatten) => "flatten".to_string(),
            Op::Reshape(ReshapeTarget::FlattenFrom(axis)) => {
                attrs.push(format!("axis {axis}"));
                "flatten".to_string()
            }
            Op::Reshape(ReshapeTarget::Dims(dims)) => {
                attrs.push(format!("{dims:?}"));
                "reshape".to_string()
            }
            Op::Identity => "identity".to_string(),
        };
        s.push_str(&op);
        let operands: Vec<String> = inputs.into_iter().chain(attrs).collect();
        if !operands.is_empty() {
            let _ = write!(s, " {}", operands.join(", "));
        }
        s
    }
}

fn window_attrs(
    attrs: &mut Vec<String>,
    kernel: Option<[usize; 2]>,
    stride: [usize; 2],
    dilation: [usize; 2],
    padding: Padding,
) {
    attrs.extend(kernel.map(|k| format!("kernel {k:?}")));
    if stride != [1, 1] {
        attrs.push(format!("stride {stride:?}"));
    }
    if dilation != [1, 1] {
        attrs.push(format!("dilation {dilation:?}"));
    }
    match padding {
        Padding::Explicit([0, 0, 0, 0]) => {}
        Padding::Explicit(p) => attrs.push(format!("pads {p:?}")),
        Padding::SameUpper => attrs.push("pads same_upper".into()),
        Padding::SameLower => attrs.push("pads same_lower".into()),
    }
}

fn activation_attrs(attrs: &mut Vec<String>, activation: Option<Activation>, threshold: Option<f32>) {
    match activation {
        Some(Activation::Clip { min, max }) => attrs.push(format!("clip [{min}, {max}]")),
        Some(Activation::HardSigmoid { alpha, beta }) => attrs.push(format!("hardsigmoid {alpha} x + {beta}")),
        Some(a) => attrs.push(a.name().to_string()),
        None => {}
    }
    attrs.extend(threshold.map(|t| format!("input_threshold {t}")));
}

#[cfg(test)]
mod tests {
    use crate::ir::{Activation, Op};
    use crate::passes::testing::{input_conv, then};

    #[test]
    fn prints_every_node_in_order_with_shapes_and_defaults_left_out() {
        let (mut g, conv) = input_conv(2, 4, 6);
        let relu = then(&mut g, conv, "relu", Op::Activation(Activation::Relu));
        g.outputs = vec![relu];
        let before = g.to_string();
        assert!(before.contains("conv %0, w0 [4, 2, 3, 3], bias w1 [4], pads [1, 1, 1, 1] : ?  # conv"), "{before}");
        assert!(before.contains("activation %1, relu : ?"), "{before}");
        assert!(!before.contains("stride"), "default stride is left out: {before}");
        crate::passes::run_pipeline(&mut g).unwrap();
        let after = g.to_string();
        assert!(after.contains(", relu : [4, 6, 6]"), "relu fused into the conv: {after}");
        assert!(!after.contains("activation"), "{after}");
        assert!(after.trim_end().ends_with("}") && after.contains("  outputs %"), "{after}");
    }
}

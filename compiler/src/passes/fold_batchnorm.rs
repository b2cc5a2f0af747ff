//! `fold_batchnorm`: fold a per-channel affine (`ScaleShift`: BatchNorm, or Add/Mul with a
//! constant such as a MatMul's bias) into the Conv or Dense that produces its input:
//! `W'[o] = W[o] * scale[o]`, `b'[o] = b[o] * scale[o] + shift[o]`.
//!
//! It folds only when the producer feeds nothing else, is not a model output and has no
//! activation yet. An affine that cannot fold (e.g. after an Add) stays a ScaleShift stage.

use crate::error::Result;
use crate::ir::{Graph, NodeId, Op};

/// Run the pass.
pub fn run(graph: &mut Graph) -> Result<()> {
    for id in graph.layers() {
        let Op::ScaleShift(s) = &graph.node(id).op else {
            continue;
        };
        if s.activation.is_some() {
            continue;
        }
        let (scale, shift) = (s.scale, s.shift);
        let producer = graph.inputs_of(id)[0];
        if !graph.feeds_only(producer, id) || !foldable(graph, producer) {
            continue;
        }
        let scale = graph.weights.tensor(scale).data.clone();
        let shift = graph.weights.tensor(shift).data.clone();
        let (weight, bias) = match &graph.node(producer).op {
            Op::Conv(c) => (c.weight, c.bias),
            Op::Dense(d) => (d.weight, d.bias),
            _ => unreachable!("foldable checked the kind"),
        };
        let old_bias = bias.map_or_else(|| vec![0.0; scale.len()], |b| graph.weights.tensor(b).data.clone());
        let new_bias: Vec<f32> = old_bias.iter().zip(&scale).zip(&shift).map(|((b, s), t)| b * s + t).collect();
        let w = graph.weights.tensor(weight);
        let per_output = w.data.len() / scale.len();
        let new_weight: Vec<f32> = w.data.iter().enumerate().map(|(i, v)| v * scale[i / per_output]).collect();
        let weight = graph.weights.add(w.shape.clone(), new_weight);
        let bias = Some(graph.weights.add(vec![scale.len()], new_bias));
        match &mut graph.node_mut(producer).op {
            Op::Conv(c) => (c.weight, c.bias) = (weight, bias),
            Op::Dense(d) => (d.weight, d.bias) = (weight, bias),
            _ => unreachable!(),
        }
        graph.bypass(id, producer);
    }
    Ok(())
}

fn foldable(graph: &Graph, id: NodeId) -> bool {
    match &graph.node(id).op {
        Op::Conv(c) => c.activation.is_none(),
        Op::Dense(d) => d.activation.is_none(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Activation, ScaleShift};
    use crate::passes::testing::{input_conv, then};
    use hass_proto::geometry::window_output_len;

    fn bn(g: &mut Graph, c: usize) -> Op {
        let scale = g.weights.add(vec![c], (0..c).map(|i| 0.5 + i as f32).collect());
        let shift = g.weights.add(vec![c], (0..c).map(|i| -(i as f32)).collect());
        Op::ScaleShift(ScaleShift { scale, shift, activation: None })
    }

    #[test]
    fn conv_then_batchnorm_folds_into_one_conv_with_the_same_function() {
        let (mut g, conv) = input_conv(2, 3, 5);
        let op = bn(&mut g, 3);
        let ss = then(&mut g, conv, "bn", op);
        g.outputs = vec![ss];
        crate::passes::infer_shapes::run(&mut g).unwrap();
        let before = crate::testing::run_graph(&g, 7);
        run(&mut g).unwrap();
        assert_eq!(g.layers(), vec![conv], "the ScaleShift is gone");
        let after = crate::testing::run_graph(&g, 7);
        crate::testing::assert_close(&before, &after, 1e-5);
        assert_eq!(window_output_len(5, 3, 1, 1, 1, 1, false), Some(5));
    }

    #[test]
    fn does_not_fold_across_an_activation_or_a_fork() {
        let (mut g, conv) = input_conv(1, 3, 4);
        let relu = then(&mut g, conv, "relu", Op::Activation(Activation::Relu));
        let op = bn(&mut g, 3);
        let after_relu = then(&mut g, relu, "bn1", op);
        let op = bn(&mut g, 3);
        let forked = then(&mut g, conv, "bn2", op);
        g.outputs = vec![after_relu, forked];
        crate::passes::infer_shapes::run(&mut g).unwrap();
        run(&mut g).unwrap();
        assert_eq!(g.layers().len(), 4);
    }
}

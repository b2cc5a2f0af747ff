//! `fuse_activation`: merge an activation into the stage that produces its input (Conv,
//! Dense, Add/Mul, ScaleShift), as a dataflow stage applies it on its output stream.
//!
//! It also recognises the HardSwish that opsets below 14 spell `x * HardSigmoid(x)` with
//! alpha 1/6 and beta 1/2, and turns it into one HardSwish activation first.

use crate::error::Result;
use crate::ir::{Activation, EltwiseKind, Graph, NodeId, Op};

/// Run the pass.
pub fn run(graph: &mut Graph) -> Result<()> {
    for id in graph.layers() {
        if graph.nodes.contains_node(id) {
            fuse_hardswish(graph, id);
        }
    }
    for id in graph.layers() {
        let Op::Activation(act) = graph.node(id).op else {
            continue;
        };
        let producer = graph.inputs_of(id)[0];
        if !graph.feeds_only(producer, id) {
            continue;
        }
        let slot = match &mut graph.node_mut(producer).op {
            Op::Conv(c) => &mut c.activation,
            Op::Dense(d) => &mut d.activation,
            Op::Eltwise { activation, .. } => activation,
            Op::ScaleShift(s) => &mut s.activation,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(act);
            graph.bypass(id, producer);
        }
    }
    Ok(())
}

/// `Mul(x, HardSigmoid(x))` with HardSwish's constants -> `HardSwish(x)` at the Mul.
fn fuse_hardswish(graph: &mut Graph, mul: NodeId) {
    if !matches!(graph.node(mul).op, Op::Eltwise { kind: EltwiseKind::Mul, activation: None }) {
        return;
    }
    let inputs = graph.inputs_of(mul);
    for (gate, x) in [(inputs[1], inputs[0]), (inputs[0], inputs[1])] {
        let Op::Activation(Activation::HardSigmoid { alpha, beta }) = graph.node(gate).op else {
            continue;
        };
        let is_hardswish = (alpha - 1.0 / 6.0).abs() < 1e-6 && (beta - 0.5).abs() < 1e-6;
        if is_hardswish && graph.inputs_of(gate) == [x] && graph.feeds_only(gate, mul) {
            graph.nodes.remove_node(gate);
            let edges: Vec<_> =
                graph.nodes.edges_connecting(x, mul).map(|e| petgraph::visit::EdgeRef::id(&e)).collect();
            for e in edges {
                graph.nodes.remove_edge(e);
            }
            graph.connect(x, mul, 0);
            graph.node_mut(mul).op = Op::Activation(Activation::HardSwish);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::testing::{input_conv, then};

    #[test]
    fn fuses_relu_into_conv() {
        let (mut g, conv) = input_conv(1, 2, 4);
        let relu = then(&mut g, conv, "relu", Op::Activation(Activation::Relu));
        g.outputs = vec![relu];
        crate::passes::infer_shapes::run(&mut g).unwrap();
        let before = crate::testing::run_graph(&g, 3);
        run(&mut g).unwrap();
        assert_eq!(g.layers(), vec![conv]);
        assert_eq!(g.outputs, vec![conv]);
        let Op::Conv(c) = &g.node(conv).op else { unreachable!() };
        assert_eq!(c.activation, Some(Activation::Relu));
        crate::testing::assert_close(&before, &crate::testing::run_graph(&g, 3), 0.0);
    }

    #[test]
    fn a_second_activation_stays_standalone() {
        let (mut g, conv) = input_conv(1, 2, 4);
        let relu = then(&mut g, conv, "relu", Op::Activation(Activation::Relu));
        let clip = then(&mut g, relu, "clip", Op::Activation(Activation::Clip { min: 0.0, max: 6.0 }));
        g.outputs = vec![clip];
        crate::passes::infer_shapes::run(&mut g).unwrap();
        run(&mut g).unwrap();
        assert_eq!(g.layers(), vec![conv, clip]);
    }

    #[test]
    fn x_times_hardsigmoid_x_becomes_one_fused_hardswish() {
        let (mut g, conv) = input_conv(1, 2, 4);
        let hs = then(&mut g, conv, "hsig", Op::Activation(Activation::HardSigmoid { alpha: 1.0 / 6.0, beta: 0.5 }));
        let mul = g.add_node("mul".into(), Op::Eltwise { kind: EltwiseKind::Mul, activation: None });
        g.connect(conv, mul, 0);
        g.connect(hs, mul, 1);
        g.outputs = vec![mul];
        crate::passes::infer_shapes::run(&mut g).unwrap();
        let before = crate::testing::run_graph(&g, 5);
        run(&mut g).unwrap();
        assert_eq!(g.layers(), vec![conv]);
        let Op::Conv(c) = &g.node(conv).op else { unreachable!() };
        assert_eq!(c.activation, Some(Activation::HardSwish));
        crate::testing::assert_close(&before, &crate::testing::run_graph(&g, 5), 1e-6);
    }
}

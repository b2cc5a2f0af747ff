//! The verifier, run after import and after every pass. It checks, and lists every
//! violation of:
//!
//! 1. the graph is acyclic, has exactly one [`Op::Input`] node (the recorded input) with no
//!    incoming edges, and at least one output, all of them live nodes;
//! 2. every node's input ports are `0..n` without gaps, and `n` fits the op's arity;
//! 3. every weight id a node references exists;
//! 4. from [`Phase::Shaped`] on: every node has a shape, equal to what its op's shape rule
//!    gives for its inputs' shapes (so no `auto_pad` is left unresolved), and no
//!    `BroadcastConst` is left (it became a `ScaleShift`);
//! 5. from [`Phase::Canonical`] on: no `Identity` remains.

use super::{Graph, Op};
use petgraph::Direction;

/// How far lowering has come; each phase adds invariants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Straight from the frontend: structure only.
    Imported,
    /// Shapes inferred and padding resolved.
    Shaped,
    /// Plumbing removed.
    Canonical,
}

/// Check `graph` against the invariants of `phase`; `Err` lists every problem found.
pub fn verify(graph: &Graph, phase: Phase) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let g = &graph.nodes;
    if !g.contains_node(graph.input) || !matches!(g[graph.input].op, Op::Input { .. }) {
        problems.push("the recorded input is not an Input node".to_string());
    }
    if graph.outputs.is_empty() {
        problems.push("the graph has no outputs".to_string());
    }
    for o in &graph.outputs {
        if !g.contains_node(*o) {
            problems.push(format!("output {o:?} is not a node"));
        }
    }
    if graph.topo_order().is_none() {
        problems.push("the graph has a cycle".to_string());
    }
    for id in g.node_indices() {
        let node = &g[id];
        let name = &node.name;
        if matches!(node.op, Op::Input { .. }) && id != graph.input {
            problems.push(format!("{name}: a second Input node"));
        }
        let mut ports: Vec<usize> = g.edges_directed(id, Direction::Incoming).map(|e| *e.weight()).collect();
        ports.sort_unstable();
        if ports.iter().enumerate().any(|(i, &p)| i != p) {
            problems.push(format!("{name}: input ports {ports:?} are not 0..{}", ports.len()));
        }
        match node.op.arity() {
            Some(n) if n != ports.len() => {
                problems.push(format!("{name}: {} takes {n} input(s), has {}", node.op.kind_name(), ports.len()))
            }
            None if ports.is_empty() => problems.push(format!("{name}: {} has no inputs", node.op.kind_name())),
            _ => {}
        }
        for w in node.op.weight_ids() {
            if graph.weights.get(w).is_none() {
                problems.push(format!("{name}: weight {} does not exist", w.0));
            }
        }
        if phase >= Phase::Shaped {
            check_shape(graph, id, &mut problems);
        }
        if phase >= Phase::Canonical && matches!(node.op, Op::Identity) {
            problems.push(format!("{name}: Identity should be gone after remove_plumbing"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn check_shape(graph: &Graph, id: super::NodeId, problems: &mut Vec<String>) {
    let node = &graph.nodes[id];
    let Some(shape) = &node.shape else {
        problems.push(format!("{}: no shape", node.name));
        return;
    };
    let inputs = graph.inputs_of(id);
    let Some(in_shapes) = inputs.iter().map(|&i| graph.nodes[i].shape.as_deref()).collect::<Option<Vec<_>>>() else {
        return; // reported on the input node
    };
    match node.op.output_shape(&in_shapes, &graph.weights) {
        Ok(expected) if &expected != shape => {
            problems.push(format!("{}: shape {shape:?} but its inputs give {expected:?}", node.name))
        }
        Err(e) => problems.push(format!("{}: {e}", node.name)),
        Ok(_) => {}
    }
    if matches!(node.op, Op::BroadcastConst { .. }) {
        problems.push(format!("{}: BroadcastConst should be a ScaleShift after infer_shapes", node.name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Activation, EltwiseKind};

    fn chain() -> Graph {
        let mut g = Graph::default();
        g.input = g.add_node("x".into(), Op::Input { shape: vec![4, 8, 8] });
        let relu = g.add_node("relu".into(), Op::Activation(Activation::Relu));
        g.connect(g.input, relu, 0);
        g.outputs = vec![relu];
        for n in [g.input, relu] {
            g.node_mut(n).shape = Some(vec![4, 8, 8]);
        }
        g
    }

    #[test]
    fn accepts_a_well_formed_graph() {
        assert_eq!(verify(&chain(), Phase::Canonical), Ok(()));
    }

    #[test]
    fn reports_every_problem_at_once() {
        let mut g = chain();
        let add = g.add_node("add".into(), Op::Eltwise { kind: EltwiseKind::Add, activation: None });
        g.connect(g.input, add, 1); // port 0 missing, and only one input
        let idn = g.add_node("id".into(), Op::Identity);
        g.connect(g.input, idn, 0);
        g.node_mut(idn).shape = Some(vec![4, 8, 9]);
        let problems = verify(&g, Phase::Canonical).unwrap_err();
        let text = problems.join("\n");
        assert!(text.contains("add: input ports [1]"), "{text}");
        assert!(text.contains("add: Add takes 2 input(s), has 1"), "{text}");
        assert!(text.contains("add: no shape"), "{text}");
        assert!(text.contains("id: shape [4, 8, 9] but its inputs give [4, 8, 8]"), "{text}");
        assert!(text.contains("id: Identity should be gone"), "{text}");
    }

    #[test]
    fn finds_cycles() {
        let mut g = chain();
        let relu = g.outputs[0];
        let second = g.add_node("again".into(), Op::Activation(Activation::Relu));
        g.connect(relu, second, 0);
        g.connect(second, relu, 1);
        let problems = verify(&g, Phase::Imported).unwrap_err();
        assert!(problems.iter().any(|p| p.contains("cycle")), "{problems:?}");
    }

    /// One graph per invariant, each broken in one way: the verifier must reject it at the
    /// phase where the invariant starts to hold, with the message written beside it, and
    /// accept it one phase earlier when the invariant is phase-specific.
    #[test]
    fn rejects_one_broken_invariant_at_a_time() {
        use crate::ir::{Padding, ScaleShift, WeightId};
        type Break = fn(&mut Graph);
        let cases: &[(&str, Break, Phase, &str)] = &[
            (
                "input not an Input",
                |g| g.input = g.outputs[0],
                Phase::Imported,
                "the recorded input is not an Input node",
            ),
            ("no outputs", |g| g.outputs.clear(), Phase::Imported, "the graph has no outputs"),
            ("dead output", |g| g.outputs.push(crate::ir::NodeId::new(99)), Phase::Imported, "is not a node"),
            (
                "second input",
                |g| {
                    g.add_node("x2".into(), Op::Input { shape: vec![1] });
                },
                Phase::Imported,
                "x2: a second Input node",
            ),
            (
                "port gap",
                |g| {
                    let relu = g.outputs[0];
                    let e = g.nodes.find_edge(g.input, relu).unwrap();
                    g.nodes[e] = 1;
                },
                Phase::Imported,
                "relu: input ports [1] are not 0..1",
            ),
            (
                "arity",
                |g| {
                    let relu = g.outputs[0];
                    g.connect(g.input, relu, 1);
                },
                Phase::Imported,
                "relu: relu takes 1 input(s), has 2",
            ),
            (
                "concat of nothing",
                |g| {
                    let c = g.add_node("cat".into(), Op::Concat { axis: 1 });
                    g.outputs.push(c);
                },
                Phase::Imported,
                "cat: Concat has no inputs",
            ),
            (
                "missing weight",
                |g| {
                    let ss = ScaleShift { scale: WeightId(7), shift: WeightId(8), activation: None };
                    let n = g.add_node("affine".into(), Op::ScaleShift(ss));
                    g.connect(g.outputs[0], n, 0);
                },
                Phase::Imported,
                "affine: weight 7 does not exist",
            ),
            ("no shape", |g| g.node_mut(g.outputs[0]).shape = None, Phase::Shaped, "relu: no shape"),
            (
                "wrong shape",
                |g| g.node_mut(g.outputs[0]).shape = Some(vec![4, 8, 7]),
                Phase::Shaped,
                "relu: shape [4, 8, 7] but its inputs give [4, 8, 8]",
            ),
            (
                "unresolved auto_pad",
                |g| {
                    let w = g.weights.add(vec![4, 4, 3, 3], vec![0.0; 144]);
                    let conv = crate::ir::Conv {
                        weight: w,
                        bias: None,
                        stride: [1, 1],
                        dilation: [1, 1],
                        padding: Padding::SameUpper,
                        groups: 1,
                        activation: None,
                        input_threshold: None,
                    };
                    let n = g.add_node("conv".into(), Op::Conv(conv));
                    g.connect(g.outputs[0], n, 0);
                    g.node_mut(n).shape = Some(vec![4, 8, 8]);
                },
                Phase::Shaped,
                "conv:",
            ),
            (
                "broadcast constant left",
                |g| {
                    let c = g.weights.add(vec![1], vec![2.0]);
                    let n = g.add_node("mul".into(), Op::BroadcastConst { kind: EltwiseKind::Mul, constant: c });
                    g.connect(g.outputs[0], n, 0);
                    g.node_mut(n).shape = Some(vec![4, 8, 8]);
                },
                Phase::Shaped,
                "mul: BroadcastConst should be a ScaleShift after infer_shapes",
            ),
            (
                "identity left",
                |g| {
                    let n = g.add_node("id".into(), Op::Identity);
                    g.connect(g.outputs[0], n, 0);
                    g.node_mut(n).shape = Some(vec![4, 8, 8]);
                },
                Phase::Canonical,
                "id: Identity should be gone after remove_plumbing",
            ),
        ];
        for phase in [Phase::Imported, Phase::Shaped, Phase::Canonical] {
            assert_eq!(verify(&chain(), phase), Ok(()), "the unbroken graph at {phase:?}");
        }
        for (case, break_it, phase, expected) in cases {
            let mut g = chain();
            break_it(&mut g);
            let problems = verify(&g, *phase).expect_err(case);
            assert!(problems.iter().any(|p| p.contains(expected)), "{case}: {problems:?}");
            let earlier = match phase {
                Phase::Imported => continue,
                Phase::Shaped => Phase::Imported,
                Phase::Canonical => Phase::Shaped,
            };
            assert_eq!(verify(&g, earlier), Ok(()), "{case} is not checked before {phase:?}");
        }
    }
}

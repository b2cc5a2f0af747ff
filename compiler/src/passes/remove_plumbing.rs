//! `remove_plumbing`: drop Identity (and inference-time Dropout) nodes, and every node
//! whose value reaches no output, e.g. what an exporter left of unused shape arithmetic.

use crate::error::Result;
use crate::ir::{Graph, Op};
use petgraph::visit::Bfs;
use petgraph::visit::{Reversed, Walker};

/// Run the pass.
pub fn run(graph: &mut Graph) -> Result<()> {
    let identities: Vec<_> = graph.nodes.node_indices().filter(|&n| matches!(graph.node(n).op, Op::Identity)).collect();
    for id in identities {
        let source = graph.inputs_of(id)[0];
        graph.bypass(id, source);
    }
    let mut live = std::collections::HashSet::new();
    for &out in &graph.outputs {
        live.extend(Bfs::new(Reversed(&graph.nodes), out).iter(Reversed(&graph.nodes)));
    }
    let dead: Vec<_> = graph.nodes.node_indices().filter(|n| !live.contains(n) && *n != graph.input).collect();
    for id in dead {
        graph.nodes.remove_node(id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Activation;
    use crate::passes::testing::{input_conv, then};

    #[test]
    fn drops_identity_chains_and_dead_branches() {
        let (mut g, conv) = input_conv(1, 2, 4);
        let a = then(&mut g, conv, "id1", Op::Identity);
        let b = then(&mut g, a, "id2", Op::Identity);
        let relu = then(&mut g, b, "relu", Op::Activation(Activation::Relu));
        let _dead = then(&mut g, conv, "unused", Op::Activation(Activation::Sigmoid));
        g.outputs = vec![relu];
        run(&mut g).unwrap();
        let names: Vec<_> = g.layers().iter().map(|&n| g.node(n).name.clone()).collect();
        assert_eq!(names, ["conv", "relu"]);
        assert_eq!(g.inputs_of(relu), vec![conv]);
    }

    #[test]
    fn an_identity_output_is_replaced_by_its_source() {
        let (mut g, conv) = input_conv(1, 2, 4);
        let id = then(&mut g, conv, "out", Op::Identity);
        g.outputs = vec![id];
        run(&mut g).unwrap();
        assert_eq!(g.outputs, vec![conv]);
    }
}

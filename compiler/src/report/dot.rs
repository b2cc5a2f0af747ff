//! Graphviz view of a compiled graph: one box per layer with its op and output shape.

use crate::ir::Graph;
use petgraph::visit::EdgeRef;

/// The graph in DOT syntax; nodes in execution order, so the text is deterministic.
pub fn to_dot(graph: &Graph) -> String {
    let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out =
        format!("digraph \"{}\" {{\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n", quote(&graph.name));
    let order = graph.topo_order().unwrap_or_default();
    for &id in &order {
        let node = graph.node(id);
        let shape = node.shape.as_ref().map(|s| format!("{s:?}")).unwrap_or_default();
        out += &format!("  n{} [label=\"{}\\n{}\\n{}\"];\n", id.index(), quote(&node.name), node.op.kind_name(), shape);
    }
    for &id in &order {
        let mut edges: Vec<_> = graph.nodes.edges(id).map(|e| (e.target().index(), *e.weight())).collect();
        edges.sort_unstable();
        for (to, port) in edges {
            out += &format!("  n{} -> n{to} [label=\"{port}\"];\n", id.index());
        }
    }
    out + "}\n"
}

//! The graph container: nodes and edges in a petgraph `StableDiGraph`, the one input node,
//! the output nodes, and the weight pool.

use super::{Op, Shape, WeightPool};
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Identifies a node; stable across removals of other nodes.
pub type NodeId = NodeIndex<u32>;

/// One layer.
#[derive(Clone, Debug)]
pub struct Node {
    /// Unique name (from the ONNX node, or made up when it had none).
    pub name: String,
    /// What it computes.
    pub op: Op,
    /// Per-image output shape; `None` until `infer_shapes` has run.
    pub shape: Option<Shape>,
}

/// A CNN as a dataflow graph. Edge weights are input port numbers (0, 1, ...).
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// Nodes and edges.
    pub nodes: StableDiGraph<Node, usize, u32>,
    /// The node of kind [`Op::Input`].
    pub input: NodeId,
    /// Nodes whose values are the model's outputs, in ONNX order.
    pub outputs: Vec<NodeId>,
    /// Constant tensors.
    pub weights: WeightPool,
    /// Model name (file stem), carried to artifacts and reports.
    pub name: String,
}

impl Graph {
    /// Add a node with no edges yet.
    pub fn add_node(&mut self, name: String, op: Op) -> NodeId {
        self.nodes.add_node(Node { name, op, shape: None })
    }

    /// Feed `from`'s output into input `port` of `to`.
    pub fn connect(&mut self, from: NodeId, to: NodeId, port: usize) {
        self.nodes.add_edge(from, to, port);
    }

    /// The node `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// The node `id`, mutably.
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id]
    }

    /// Producers of `id`'s inputs, in port order.
    pub fn inputs_of(&self, id: NodeId) -> Vec<NodeId> {
        let mut edges: Vec<(usize, NodeId)> =
            self.nodes.edges_directed(id, Direction::Incoming).map(|e| (*e.weight(), e.source())).collect();
        edges.sort_unstable();
        edges.into_iter().map(|(_, n)| n).collect()
    }

    /// Nodes that read `id`'s output (each once, in id order).
    pub fn consumers(&self, id: NodeId) -> Vec<NodeId> {
        let mut c: Vec<NodeId> = self.nodes.neighbors_directed(id, Direction::Outgoing).collect();
        c.sort_unstable();
        c.dedup();
        c
    }

    /// Whether `id`'s output is read only by `consumer` and is not a model output, so a
    /// pass may merge the two.
    pub fn feeds_only(&self, id: NodeId, consumer: NodeId) -> bool {
        !self.outputs.contains(&id)
            && self.nodes.edges_directed(id, Direction::Outgoing).all(|e| e.target() == consumer)
    }

    /// Per-image output shape of `id`; panics before shape inference (a compiler bug).
    pub fn shape(&self, id: NodeId) -> &Shape {
        self.nodes[id].shape.as_ref().expect("shapes are inferred before this point")
    }

    /// Make every reader of `old` (and the output list) read `new` instead, then remove `old`.
    pub fn bypass(&mut self, old: NodeId, new: NodeId) {
        let readers: Vec<(NodeId, usize)> =
            self.nodes.edges_directed(old, Direction::Outgoing).map(|e| (e.target(), *e.weight())).collect();
        for (reader, port) in readers {
            self.nodes.add_edge(new, reader, port);
        }
        for o in &mut self.outputs {
            if *o == old {
                *o = new;
            }
        }
        self.nodes.remove_node(old);
    }

    /// Nodes in a topological order, ties broken by node id so the order is deterministic.
    /// Returns `None` if the graph has a cycle.
    pub fn topo_order(&self) -> Option<Vec<NodeId>> {
        let mut pending: std::collections::HashMap<NodeId, usize> =
            self.nodes.node_indices().map(|n| (n, self.nodes.edges_directed(n, Direction::Incoming).count())).collect();
        let mut ready: BinaryHeap<Reverse<NodeId>> =
            pending.iter().filter(|(_, &d)| d == 0).map(|(&n, _)| Reverse(n)).collect();
        let mut order = Vec::with_capacity(pending.len());
        while let Some(Reverse(n)) = ready.pop() {
            order.push(n);
            for e in self.nodes.edges_directed(n, Direction::Outgoing) {
                let d = pending.get_mut(&e.target()).expect("every node is counted");
                *d -= 1;
                if *d == 0 {
                    ready.push(Reverse(e.target()));
                }
            }
        }
        (order.len() == self.nodes.node_count()).then_some(order)
    }

    /// Compute layers in execution order: the topological order without the input node.
    pub fn layers(&self) -> Vec<NodeId> {
        self.topo_order().expect("verified graphs are acyclic").into_iter().filter(|&n| n != self.input).collect()
    }
}

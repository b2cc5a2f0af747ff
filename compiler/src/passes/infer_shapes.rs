//! `infer_shapes`: give every node its static per-image shape, in topological order.
//!
//! On the way it resolves `auto_pad = SAME_*` into explicit pads (they depend on the input
//! size) and turns each Add/Mul with a constant (`BroadcastConst`) into a per-channel
//! ScaleShift, which needs the input's rank to read the constant's broadcast layout.

use crate::error::{CompileError, Result};
use crate::ir::{per_channel_len, EltwiseKind, Graph, NodeId, Op, Padding, ReshapeTarget, ScaleShift, WeightId};
use hass_proto::geometry::same_padding;

/// Run the pass.
pub fn run(graph: &mut Graph) -> Result<()> {
    let order = graph
        .topo_order()
        .ok_or_else(|| CompileError::Shape { node: graph.name.clone(), reason: "the graph has a cycle".into() })?;
    for id in order {
        let in_shapes: Vec<Vec<usize>> = graph.inputs_of(id).iter().map(|&i| graph.shape(i).clone()).collect();
        let name = graph.node(id).name.clone();
        let fail = |reason: String| CompileError::Shape { node: name.clone(), reason };
        resolve_padding(graph, id, in_shapes.first().map(|s| s.as_slice()));
        if let Op::BroadcastConst { kind, constant } = graph.node(id).op {
            let affine = to_scale_shift(graph, kind, constant, &in_shapes[0]).map_err(fail)?;
            graph.node_mut(id).op = Op::ScaleShift(affine);
        }
        let refs: Vec<&[usize]> = in_shapes.iter().map(|s| s.as_slice()).collect();
        let shape = graph.node(id).op.output_shape(&refs, &graph.weights).map_err(fail)?;
        if let Op::Reshape(ReshapeTarget::FlattenFrom(_)) = graph.node(id).op {
            // The shape rule accepted it: it is a Flatten at axis 1.
            graph.node_mut(id).op = Op::Reshape(ReshapeTarget::Flatten);
        }
        graph.node_mut(id).shape = Some(shape);
    }
    Ok(())
}

/// Replace `SAME_*` padding by explicit pads for this input size.
fn resolve_padding(graph: &mut Graph, id: NodeId, input: Option<&[usize]>) {
    let kernel = match &graph.node(id).op {
        Op::Pool(p) => p.kernel,
        Op::Conv(c) => match graph.weights.tensor(c.weight).shape.as_slice() {
            &[_, _, kh, kw] => [kh, kw],
            _ => return, // output_shape reports the bad weight
        },
        _ => return,
    };
    let (padding, stride, dilation) = match &mut graph.node_mut(id).op {
        Op::Pool(p) => (&mut p.padding, p.stride, p.dilation),
        Op::Conv(c) => (&mut c.padding, c.stride, c.dilation),
        _ => return,
    };
    let upper = match padding {
        Padding::SameUpper => true,
        Padding::SameLower => false,
        Padding::Explicit(_) => return,
    };
    let Some(&[_, h, w]) = input else { return };
    let (top, bottom) = same_padding(h, kernel[0], stride[0], dilation[0], upper);
    let (left, right) = same_padding(w, kernel[1], stride[1], dilation[1], upper);
    *padding = Padding::Explicit([top, left, bottom, right]);
}

/// The per-channel ScaleShift equal to `x (kind) constant`, if the constant is a scalar or
/// varies only along channels for this input.
fn to_scale_shift(
    graph: &mut Graph,
    kind: EltwiseKind,
    constant: WeightId,
    input: &[usize],
) -> Result<ScaleShift, String> {
    let channels = *input.first().ok_or("needs a channel axis")?;
    let c = graph.weights.tensor(constant);
    let values = match per_channel_len(&c.shape, input) {
        Some(1) => vec![c.data[0]; channels],
        Some(_) => c.data.clone(),
        None => return Err(format!("constant of shape {:?} is neither a scalar nor per-channel for input {input:?}; only per-channel constants are supported", c.shape)),
    };
    let (scale, shift) = match kind {
        EltwiseKind::Add => (vec![1.0; channels], values),
        EltwiseKind::Mul => (values, vec![0.0; channels]),
    };
    Ok(ScaleShift {
        scale: graph.weights.add(vec![channels], scale),
        shift: graph.weights.add(vec![channels], shift),
        activation: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::testing::{input_conv, then};

    #[test]
    fn infers_conv_and_resolves_same_padding() {
        let (mut g, conv) = input_conv(2, 4, 9);
        if let Op::Conv(c) = &mut g.node_mut(conv).op {
            c.padding = Padding::SameUpper;
            c.stride = [2, 2];
        }
        g.outputs = vec![conv];
        run(&mut g).unwrap();
        assert_eq!(g.shape(conv), &vec![4, 5, 5]);
        let Op::Conv(c) = &g.node(conv).op else { unreachable!() };
        // ceil(9 / 2) = 5 outputs need (5 - 1) * 2 + 3 - 9 = 2 pixels of padding.
        assert_eq!(c.padding, Padding::Explicit([1, 1, 1, 1]));
    }

    #[test]
    fn scalar_and_broadcast_constants_become_per_channel() {
        let (mut g, conv) = input_conv(1, 3, 4);
        let scalar = g.weights.add(vec![], vec![2.0]);
        let shift = g.weights.add(vec![1, 3, 1, 1], vec![1.0, 2.0, 3.0]);
        let mul = then(&mut g, conv, "mul", Op::BroadcastConst { kind: EltwiseKind::Mul, constant: scalar });
        let add = then(&mut g, mul, "add", Op::BroadcastConst { kind: EltwiseKind::Add, constant: shift });
        g.outputs = vec![add];
        run(&mut g).unwrap();
        let Op::ScaleShift(m) = &g.node(mul).op else { panic!("Mul became {:?}", g.node(mul).op) };
        assert_eq!((&g.weights.tensor(m.scale).data, &g.weights.tensor(m.shift).data), (&vec![2.0; 3], &vec![0.0; 3]));
        let Op::ScaleShift(a) = &g.node(add).op else { panic!("Add became {:?}", g.node(add).op) };
        assert_eq!(
            (&g.weights.tensor(a.scale).data, &g.weights.tensor(a.shift).data),
            (&vec![1.0; 3], &vec![1.0, 2.0, 3.0])
        );
    }

    #[test]
    fn a_vector_along_the_last_axis_is_not_per_channel() {
        // ONNX broadcasting aligns a [3] constant with W, not C, of a [3, 4, 3] map.
        let mut g = Graph::default();
        g.input = g.add_node("x".into(), Op::Input { shape: vec![3, 4, 3] });
        let c = g.weights.add(vec![3], vec![1.0, 2.0, 3.0]);
        let x = g.input;
        let add = then(&mut g, x, "add_w", Op::BroadcastConst { kind: EltwiseKind::Add, constant: c });
        g.outputs = vec![add];
        let err = run(&mut g).unwrap_err().to_string();
        assert!(err.contains("add_w") && err.contains("neither a scalar nor per-channel"), "{err}");
    }

    #[test]
    fn spatial_constant_is_refused_with_the_node_name() {
        let (mut g, conv) = input_conv(1, 3, 4);
        let map = g.weights.add(vec![4, 4], vec![1.0; 16]);
        let ss = then(&mut g, conv, "bias_map", Op::BroadcastConst { kind: EltwiseKind::Add, constant: map });
        g.outputs = vec![ss];
        let err = run(&mut g).unwrap_err().to_string();
        assert!(err.contains("bias_map") && err.contains("neither a scalar nor per-channel"), "{err}");
    }
}

//! Compile time against graph size: a chain of N ReLUs after one 1x1 conv (the model is
//! built in memory as ONNX bytes), imported, run through the pass pipeline, allocated and
//! emitted. Compile time must grow about linearly with N: the 10,000-node chain is the
//! issue-11 bar (under 2 s).
//!
//! Run: `cargo bench --bench compile_chain` (or with `-- --quick`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hassc::board::Board;
use prost::Message;
use tract_onnx::pb;

/// An ONNX model: input `[1, 4, 8, 8]` -> 1x1 Conv -> `relus` Relu nodes in a chain.
fn chain_model(relus: usize) -> Vec<u8> {
    let value = |name: &str| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: 1,
                shape: Some(pb::TensorShapeProto {
                    dim: [1, 4, 8, 8]
                        .iter()
                        .map(|&d| pb::tensor_shape_proto::Dimension {
                            value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let node = |op: &str, input: Vec<String>, output: String| pb::NodeProto {
        op_type: op.into(),
        name: output.clone(),
        input,
        output: vec![output],
        ..Default::default()
    };
    let weight = pb::TensorProto {
        name: "w".into(),
        dims: vec![4, 4, 1, 1],
        data_type: 1,
        float_data: (0..16).map(|i| if i % 5 == 0 { 1.0 } else { 0.1 }).collect(),
        ..Default::default()
    };
    let mut nodes = vec![node("Conv", vec!["x".into(), "w".into()], "v0".into())];
    for i in 0..relus {
        nodes.push(node("Relu", vec![format!("v{i}")], format!("v{}", i + 1)));
    }
    let graph = pb::GraphProto {
        name: "chain".into(),
        node: nodes,
        initializer: vec![weight],
        input: vec![value("x")],
        output: vec![value(&format!("v{relus}"))],
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 13 }],
        graph: Some(graph),
        ..Default::default()
    };
    model.encode_to_vec()
}

fn compile(bytes: &[u8], board: &Board) -> usize {
    let mut graph = hassc::frontend::import_bytes(bytes, None, "chain").unwrap();
    hassc::passes::run_pipeline(&mut graph).unwrap();
    hassc::compile_graph(graph, board, &Default::default()).unwrap().artifact.len()
}

fn bench(c: &mut Criterion) {
    let board = Board::resolve("u250").unwrap();
    let mut group = c.benchmark_group("compile_chain");
    for relus in [1_000, 2_000, 4_000, 10_000] {
        let bytes = chain_model(relus);
        group
            .bench_with_input(BenchmarkId::from_parameter(relus), &bytes, |b, bytes| b.iter(|| compile(bytes, &board)));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);

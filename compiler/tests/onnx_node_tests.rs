//! The ONNX project's backend node tests and PyTorch's converted module tests (Debian's
//! `libonnx-testdata`, reference outputs included), restricted to tests whose ops hassc supports, with every graph input but the
//! first turned into an initializer (weights are constants on an accelerator). Each test is
//! compiled for u250, run by the runtime on its input and compared with its reference
//! output. `testdata/onnx_node_tests.txt` lists what each test must do: `pass`, or
//! `refuse <words the error must contain>` with the reason. A test that panics, gives a
//! wrong answer, or does otherwise than listed fails the suite, so a regression in any
//! supported op shows at once.
//!
//! Needs `apt-get install libonnx-testdata` (`.ci/run` installs it). Without it the test
//! says so and passes, unless `HASS_REQUIRE_ONNX_TESTDATA=1` (set by CI) makes it fail.
//! `HASS_BLESS_ONNX_TESTS=1` prints the outcomes in the manifest's format, for review.

mod common;

use hassc::frontend::tensor::{decode, ConstData};
use prost::Message;
use std::collections::BTreeMap;
use std::path::Path;
use tract_onnx::pb;

/// The node tests, and PyTorch's converted module tests (opset 6).
const SUITES: [&str; 2] =
    ["/usr/share/libonnx-testdata/data/node", "/usr/share/libonnx-testdata/data/pytorch-converted"];

/// What happened to one test.
#[derive(Debug, PartialEq)]
enum Outcome {
    Pass,
    Refused(String),
    Wrong(String),
    Panicked(String),
}

fn tensor(path: &Path) -> Result<(Vec<usize>, Vec<f32>), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let t = pb::TensorProto::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
    let c = decode(&t, None)?;
    let data = match c.data {
        ConstData::F32(v) => v,
        ConstData::I64(v) => v.into_iter().map(|x| x as f32).collect(),
    };
    Ok((c.dims, data))
}

/// The test's model with every graph input after the first made an initializer holding
/// that input's test data.
fn with_constant_weights(dir: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(dir.join("model.onnx")).map_err(|e| e.to_string())?;
    let mut model = pb::ModelProto::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
    let graph = model.graph.as_mut().ok_or("no graph")?;
    let data = dir.join("test_data_set_0");
    for (k, input) in graph.input.clone().iter().enumerate().skip(1) {
        if graph.initializer.iter().any(|t| t.name == input.name) {
            continue; // already a constant (older files list initializers as inputs too)
        }
        let raw = std::fs::read(data.join(format!("input_{k}.pb"))).map_err(|e| e.to_string())?;
        let mut t = pb::TensorProto::decode(raw.as_slice()).map_err(|e| e.to_string())?;
        t.name = input.name.clone();
        graph.initializer.push(t);
    }
    let initializers: Vec<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    let first = graph.input.iter().find(|i| !initializers.contains(&i.name)).cloned();
    graph.input = first.into_iter().collect();
    Ok(model.encode_to_vec())
}

/// A test compiled: the artifact, its input (shape, values) and the reference output.
struct Compiled {
    artifact: Vec<u8>,
    shape: Vec<usize>,
    input: Vec<f32>,
    expected: Vec<f32>,
}

fn compile(dir: &Path) -> Result<Compiled, String> {
    let board = hassc::board::Board::resolve("u250").unwrap();
    let bytes = with_constant_weights(dir)?;
    let mut graph = hassc::frontend::import_bytes(&bytes, None, "node").map_err(|e| e.to_string())?;
    hassc::passes::run_pipeline(&mut graph).map_err(|e| e.to_string())?;
    // The float datapath: these tests pin ONNX semantics at float tolerances.
    let float = hassc::CompileOptions { datapath: hassc::quantize::Datapath::Float, ..Default::default() };
    let artifact = hassc::compile_graph(graph, &board, &float).map_err(|e| e.to_string())?.artifact;
    let (shape, input) = tensor(&dir.join("test_data_set_0/input_0.pb"))?;
    let (_, expected) = tensor(&dir.join("test_data_set_0/output_0.pb"))?;
    Ok(Compiled { artifact, shape, input, expected })
}

fn run_test(dir: &Path) -> Outcome {
    let Compiled { artifact, shape, input, expected } = match compile(dir) {
        Ok(c) => c,
        Err(e) => return Outcome::Refused(e),
    };
    let plan = match hass_runtime::load_bytes(&artifact) {
        Ok(p) => p,
        Err(e) => return Outcome::Wrong(format!("the runtime rejects the artifact: {e}")),
    };
    let input = match hass_runtime::Tensor::new(shape, input) {
        Ok(t) => t,
        Err(e) => return Outcome::Refused(e.to_string()),
    };
    let outputs = match hass_runtime::run(&plan, &input) {
        Ok(o) => o,
        Err(e) => return Outcome::Refused(e.to_string()),
    };
    let got = outputs[0].data();
    if got.len() != expected.len() {
        return Outcome::Wrong(format!("{} values, expected {}", got.len(), expected.len()));
    }
    let scale = expected.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    match got.iter().zip(&expected).position(|(a, b)| (a - b).abs() > 1e-4 * scale) {
        Some(i) => Outcome::Wrong(format!("value {i}: {} instead of {}", got[i], expected[i])),
        None => Outcome::Pass,
    }
}

/// Whether every node of the test's model is an op hassc supports.
fn in_scope(dir: &Path) -> bool {
    let Ok(bytes) = std::fs::read(dir.join("model.onnx")) else { return false };
    let Ok(model) = pb::ModelProto::decode(bytes.as_slice()) else { return false };
    let graph = model.graph.unwrap_or_default();
    !graph.node.is_empty() && graph.node.iter().all(|n| hassc::frontend::SUPPORTED_OPS.contains(&n.op_type.as_str()))
}

/// The manifest: test name -> `None` for pass, `Some(words)` for a refusal.
fn manifest() -> BTreeMap<String, Option<String>> {
    let text = std::fs::read_to_string(common::testdata("onnx_node_tests.txt")).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, rest) = l.split_once(' ').unwrap_or((l, ""));
            let rest = rest.trim();
            let expected = match rest.strip_prefix("refuse ") {
                Some(words) => Some(words.trim().to_string()),
                None if rest == "pass" => None,
                None => panic!("manifest line {l:?}: expected `pass` or `refuse <words>`"),
            };
            (name.to_string(), expected)
        })
        .collect()
}

#[test]
fn onnx_node_tests_of_supported_ops() {
    let suite = SUITES[0];
    if !Path::new(suite).is_dir() {
        let required = std::env::var_os("HASS_REQUIRE_ONNX_TESTDATA").is_some();
        assert!(!required, "{suite} is missing: apt-get install libonnx-testdata");
        eprintln!("skipping the ONNX node tests: {suite} is missing (apt-get install libonnx-testdata)");
        return;
    }
    let mut dirs: Vec<_> = SUITES
        .iter()
        .flat_map(|s| std::fs::read_dir(s).unwrap().map(|e| e.unwrap().path()))
        .filter(|d| in_scope(d))
        .collect();
    dirs.sort();
    let bless = std::env::var_os("HASS_BLESS_ONNX_TESTS").is_some();
    let expected = manifest();
    let mut failures = Vec::new();
    let (mut passed, mut refused) = (0, 0);
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let outcome = std::panic::catch_unwind(|| run_test(dir))
            .unwrap_or_else(|p| Outcome::Panicked(p.downcast_ref::<String>().cloned().unwrap_or_default()));
        if bless {
            match &outcome {
                Outcome::Pass => println!("{name} pass"),
                Outcome::Refused(e) | Outcome::Wrong(e) | Outcome::Panicked(e) => println!("{name} ?? {e}"),
            }
        }
        match (&outcome, expected.get(&name)) {
            (Outcome::Pass, Some(None)) => passed += 1,
            (Outcome::Refused(e), Some(Some(words))) if e.contains(words.as_str()) && !e.contains('\n') => refused += 1,
            (_, None) => failures.push(format!("{name}: not in the manifest ({outcome:?})")),
            (o, Some(want)) => failures.push(format!("{name}: {o:?}, the manifest says {want:?}")),
        }
    }
    let missing: Vec<&String> =
        expected.keys().filter(|k| !dirs.iter().any(|d| d.file_name().unwrap().to_string_lossy() == **k)).collect();
    assert!(missing.is_empty(), "manifest entries with no test in scope: {missing:?}");
    assert!(
        failures.is_empty(),
        "{} of {} tests differ from the manifest:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n")
    );
    eprintln!("ONNX node tests: {passed} pass, {refused} refused as listed, of {}", dirs.len());
}

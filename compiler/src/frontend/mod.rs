//! ONNX -> IR, and back (`export`). The only module that reads or writes ONNX (through
//! `tract_onnx::pb`).
//!
//! The whole model is scanned first and every unsupported node is reported at once; only
//! then are nodes lowered, in file order (ONNX requires topological order), one builder
//! per op family in [`ops`].

pub mod export;
mod external;
mod ops;
pub mod tensor;

use crate::error::{CompileError, Result, UnsupportedNode};
use crate::ir::{Graph, NodeId, Op};
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use tensor::Const;
use tract_onnx::pb;

/// Op types hassc lowers (default ONNX domain).
pub const SUPPORTED_OPS: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Clip",
    "Concat",
    "Constant",
    "Conv",
    "Dropout",
    "Flatten",
    "Gemm",
    "GlobalAveragePool",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "MatMul",
    "MaxPool",
    "Mul",
    "ReduceMean",
    "Relu",
    "Reshape",
    "Sigmoid",
];

/// Default-domain opsets hassc reads. 11 to 18 are what current exporters write and are
/// tested with them; 6 to 10 are read for older files (the ONNX model zoo's classic CNNs,
/// PyTorch's converted tests), where the supported ops differ only in what the builders
/// handle: Clip bounds as attributes before 11, Add/Mul's `broadcast`/`axis` before 7,
/// BatchNormalization's `spatial` before 9, and attributes pooling gained later (absent
/// attributes take the defaults that held then).
pub const OPSETS: std::ops::RangeInclusive<i64> = 6..=18;

/// Read an ONNX file (and its external data files, if any) into an IR graph.
pub fn import_file(path: &Path) -> Result<Graph> {
    let bytes = std::fs::read(path).map_err(|source| CompileError::Io { path: path.to_path_buf(), source })?;
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let dir = path.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p });
    import_bytes(&bytes, dir, &name).map_err(|e| match e {
        CompileError::InvalidModel { reason, .. } => CompileError::InvalidModel { path: path.to_path_buf(), reason },
        other => other,
    })
}

/// Import ONNX bytes; `model_dir` resolves external data. `name` names the model.
pub fn import_bytes(bytes: &[u8], model_dir: Option<&Path>, name: &str) -> Result<Graph> {
    let invalid = |reason: String| CompileError::InvalidModel { path: name.into(), reason };
    let model = pb::ModelProto::decode(bytes)
        .map_err(|e| invalid(format!("protobuf decoding failed ({e}); is the file complete?")))?;
    let graph = model.graph.as_ref().ok_or_else(|| invalid("it has no graph".into()))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| invalid("it declares no default-domain opset".into()))?;
    check_supported(graph)?;
    // Below opset 6 a model is read only if none of its ops changed since: for those ops
    // the older opset means the same.
    let unchanged_since_1 = |op: &str| matches!(op, "GlobalAveragePool" | "Identity" | "Flatten" | "MatMul");
    let old_but_unchanged =
        (1..*OPSETS.start()).contains(&opset) && graph.node.iter().all(|n| unchanged_since_1(&n.op_type));
    if !OPSETS.contains(&opset) && !old_but_unchanged {
        return Err(invalid(format!(
            "opset {opset} is not supported (hassc reads opsets {} to {}, and older ones whose ops have not changed since); re-export the model",
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    let mut importer = Importer {
        graph: Graph { name: name.to_string(), ..Graph::default() },
        values: HashMap::new(),
        names: HashSet::new(),
        opset,
        batch: 1,
    };
    for init in &graph.initializer {
        let value = tensor::decode(init, model_dir).map_err(invalid)?;
        importer.values.insert(init.name.clone(), Value::Const(value));
    }
    importer.reserve_node_names(graph)?;
    importer.import_input(graph).map_err(invalid)?;
    for (index, node) in graph.node.iter().enumerate() {
        importer.import_node(node, index)?;
    }
    for out in &graph.output {
        match importer.values.get(&out.name) {
            Some(Value::Node(id)) => importer.graph.outputs.push(*id),
            Some(Value::Const(_)) => return Err(invalid(format!("output {} is a constant", out.name))),
            None => return Err(invalid(format!("output {} is not produced by any node", out.name))),
        }
    }
    Ok(importer.graph)
}

/// Every node outside [`SUPPORTED_OPS`], gathered before anything is lowered.
fn check_supported(graph: &pb::GraphProto) -> Result<()> {
    let nodes: Vec<UnsupportedNode> = graph
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            !(n.domain.is_empty() || n.domain == "ai.onnx") || !SUPPORTED_OPS.contains(&n.op_type.as_str())
        })
        .map(|(i, n)| UnsupportedNode {
            name: if n.name.is_empty() { format!("#{i}") } else { n.name.clone() },
            op_type: if n.domain.is_empty() { n.op_type.clone() } else { format!("{}:{}", n.domain, n.op_type) },
        })
        .collect();
    if nodes.is_empty() {
        Ok(())
    } else {
        Err(CompileError::UnsupportedOps { nodes })
    }
}

/// What an ONNX value name refers to during import.
#[derive(Clone, Debug)]
enum Value {
    Node(NodeId),
    Const(Const),
}

struct Importer {
    graph: Graph,
    values: HashMap<String, Value>,
    names: HashSet<String>,
    opset: i64,
    /// The input's declared batch size (1 when symbolic).
    batch: usize,
}

impl Importer {
    fn import_input(&mut self, graph: &pb::GraphProto) -> Result<(), String> {
        check_declared_inputs(graph)?;
        let inputs: Vec<&pb::ValueInfoProto> =
            graph.input.iter().filter(|i| !self.values.contains_key(&i.name)).collect();
        let [input] = inputs.as_slice() else {
            let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
            return Err(format!(
                "hassc compiles models with exactly one input, this one has {}: {names:?}",
                names.len()
            ));
        };
        let (batch, shape) = input_shape(input)?;
        self.batch = batch;
        let name = self.fresh_name(input.name.clone());
        let id = self.graph.add_node(name, Op::Input { shape });
        self.graph.input = id;
        self.values.insert(input.name.clone(), Value::Node(id));
        Ok(())
    }

    fn import_node(&mut self, node: &pb::NodeProto, index: usize) -> Result<()> {
        let name = self.node_name(node, index);
        let ctx = NodeCtx { node, name: name.clone(), values: &self.values, opset: self.opset, batch: self.batch };
        let out = ctx.output(0)?.to_string();
        if self.values.contains_key(&out) {
            return Err(ctx.err(format!("its output {out:?} is already defined; every value must have one producer")));
        }
        match ops::lower(&ctx, &mut self.graph.weights)? {
            Lowered::Const(c) => {
                self.values.insert(out, Value::Const(c));
            }
            Lowered::Op(op, inputs) => {
                let id = self.graph.add_node(name, op);
                for (port, from) in inputs.into_iter().enumerate() {
                    self.graph.connect(from, id, port);
                }
                self.values.insert(out, Value::Node(id));
            }
        }
        Ok(())
    }

    /// Reserve every node's own name, refusing two nodes of one name (as onnxruntime does:
    /// reports and artifacts name layers), so made-up names never take a real one.
    fn reserve_node_names(&mut self, graph: &pb::GraphProto) -> Result<()> {
        for node in graph.node.iter().filter(|n| !n.name.is_empty()) {
            if !self.names.insert(node.name.clone()) {
                return Err(CompileError::Node {
                    node: node.name.clone(),
                    op_type: node.op_type.clone(),
                    reason: "another node has the same name; node names must be unique".into(),
                });
            }
        }
        Ok(())
    }

    /// The node's own (reserved) name, or a made-up one (op type and index) when it has none.
    fn node_name(&mut self, node: &pb::NodeProto, index: usize) -> String {
        if node.name.is_empty() {
            self.fresh_name(format!("{}_{index}", node.op_type))
        } else {
            node.name.clone()
        }
    }

    /// `base`, or `base_k` for the first `k` that no node has.
    fn fresh_name(&mut self, base: String) -> String {
        let mut name = base.clone();
        let mut k = 1;
        while !self.names.insert(name.clone()) {
            name = format!("{base}_{k}");
            k += 1;
        }
        name
    }
}

/// Refuse graph inputs that onnxruntime refuses rather than ignore them: a name declared
/// twice, and an input backed by an initializer whose declared type or shape is not the
/// initializer's (the initializer is what hassc compiles, so the declaration would lie).
fn check_declared_inputs(graph: &pb::GraphProto) -> Result<(), String> {
    use pb::tensor_shape_proto::dimension::Value as Dim;
    use pb::type_proto::Value as Ty;
    let mut seen = HashSet::new();
    for input in &graph.input {
        if !seen.insert(input.name.as_str()) {
            return Err(format!("graph input {:?} is declared twice; every input needs its own name", input.name));
        }
        let Some(init) = graph.initializer.iter().find(|t| t.name == input.name) else { continue };
        let Some(Ty::TensorType(declared)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else { continue };
        if declared.elem_type != 0 && declared.elem_type != init.data_type {
            return Err(format!(
                "graph input {:?} is declared with element type {} but its initializer has element type {}",
                input.name, declared.elem_type, init.data_type
            ));
        }
        let Some(shape) = &declared.shape else { continue };
        let dims_match = shape.dim.len() == init.dims.len()
            && shape.dim.iter().zip(&init.dims).all(|(d, &n)| !matches!(d.value, Some(Dim::DimValue(v)) if v != n));
        if !dims_match {
            return Err(format!(
                "graph input {:?} is declared with a shape its initializer does not have ({:?}); fix the declaration or the initializer",
                input.name, init.dims
            ));
        }
    }
    Ok(())
}

/// The declared batch (1 when symbolic) and the per-image shape. The batch is only a
/// default for running: the runtime takes any batch size.
fn input_shape(input: &pb::ValueInfoProto) -> Result<(usize, Vec<usize>), String> {
    use pb::tensor_shape_proto::dimension::Value as Dim;
    use pb::type_proto::Value as Ty;
    let Some(Ty::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(format!("input {} is not a tensor", input.name));
    };
    if t.elem_type != 1 {
        return Err(format!("input {} has element type {}; hassc compiles float32 models", input.name, t.elem_type));
    }
    let dims = t.shape.as_ref().map(|s| s.dim.as_slice()).unwrap_or_default();
    let Some((batch, rest)) = dims.split_first() else {
        return Err(format!("input {} has no shape; export the model with a static input shape", input.name));
    };
    let batch = match &batch.value {
        Some(Dim::DimValue(b)) if *b >= 1 => *b as usize,
        Some(Dim::DimValue(b)) => return Err(format!("input {} has batch dimension {b}", input.name)),
        _ => 1,
    };
    let shape = rest
        .iter()
        .map(|d| match d.value {
            Some(Dim::DimValue(v)) if v > 0 => Ok(v as usize),
            _ => Err(format!(
                "input {} has a symbolic or unknown dimension besides the batch; hassc needs static shapes",
                input.name
            )),
        })
        .collect::<Result<_, _>>()?;
    Ok((batch, shape))
}

/// What a builder makes of one ONNX node.
pub(crate) enum Lowered {
    /// A layer with these inputs, in port order.
    Op(Op, Vec<NodeId>),
    /// A constant value (a `Constant` node, or an `Identity` of a constant).
    Const(Const),
}

/// One ONNX node and what it can see, for the op builders.
pub(crate) struct NodeCtx<'a> {
    node: &'a pb::NodeProto,
    name: String,
    values: &'a HashMap<String, Value>,
    opset: i64,
    batch: usize,
}

impl NodeCtx<'_> {
    /// An error about this node.
    pub fn err(&self, reason: impl Into<String>) -> CompileError {
        CompileError::Node { node: self.name.clone(), op_type: self.node.op_type.clone(), reason: reason.into() }
    }

    pub fn op_type(&self) -> &str {
        &self.node.op_type
    }

    pub fn opset(&self) -> i64 {
        self.opset
    }

    /// The model input's declared batch size (1 when symbolic).
    pub fn batch(&self) -> usize {
        self.batch
    }

    fn output(&self, i: usize) -> Result<&str> {
        self.node.output.get(i).map(|s| s.as_str()).ok_or_else(|| self.err(format!("has no output {i}")))
    }

    fn value(&self, i: usize) -> Result<Option<&Value>> {
        match self.node.input.get(i).map(|s| s.as_str()) {
            None | Some("") => Ok(None),
            Some(name) => self
                .values
                .get(name)
                .map(Some)
                .ok_or_else(|| self.err(format!("input {name:?} is not produced by any earlier node"))),
        }
    }

    /// Number of inputs named (empty names count).
    pub fn input_count(&self) -> usize {
        self.node.input.len()
    }

    /// Input `i`, which must be a computed value.
    pub fn input_node(&self, i: usize) -> Result<NodeId> {
        match self.value(i)? {
            Some(Value::Node(id)) => Ok(*id),
            Some(Value::Const(_)) => {
                Err(self.err(format!("input {i} is a constant; hassc expects a computed value there")))
            }
            None => Err(self.err(format!("input {i} is missing"))),
        }
    }

    /// Input `i` if it is a constant; `Ok(None)` if it is absent.
    pub fn input_const(&self, i: usize) -> Result<Option<&Const>> {
        match self.value(i)? {
            Some(Value::Const(c)) => Ok(Some(c)),
            Some(Value::Node(_)) => {
                Err(self.err(format!("input {i} must be a constant (an initializer or a Constant node)")))
            }
            None => Ok(None),
        }
    }

    /// Input `i` as either kind.
    pub fn input_either(&self, i: usize) -> Result<std::result::Result<NodeId, &Const>> {
        match self.value(i)? {
            Some(Value::Node(id)) => Ok(Ok(*id)),
            Some(Value::Const(c)) => Ok(Err(c)),
            None => Err(self.err(format!("input {i} is missing"))),
        }
    }

    fn attr(&self, name: &str) -> Option<&pb::AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    pub fn attr_int(&self, name: &str, default: i64) -> i64 {
        self.attr(name).map_or(default, |a| a.i)
    }

    pub fn attr_int_opt(&self, name: &str) -> Option<i64> {
        self.attr(name).map(|a| a.i)
    }

    pub fn attr_float(&self, name: &str, default: f32) -> f32 {
        self.attr(name).map_or(default, |a| a.f)
    }

    pub fn attr_ints(&self, name: &str) -> Option<Vec<i64>> {
        self.attr(name).map(|a| a.ints.clone())
    }

    pub fn attr_string(&self, name: &str) -> Option<String> {
        self.attr(name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }

    pub fn attr_tensor(&self, name: &str) -> Option<&pb::TensorProto> {
        self.attr(name).and_then(|a| a.t.as_ref())
    }

    /// Whether output `i` exists and is used under a name (e.g. MaxPool's Indices).
    pub fn has_output(&self, i: usize) -> bool {
        self.node.output.get(i).is_some_and(|s| !s.is_empty())
    }
}

impl NodeCtx<'_> {
    pub fn attr_float_opt(&self, name: &str) -> Option<f32> {
        self.attr(name).map(|a| a.f)
    }

    pub fn attr_floats(&self, name: &str) -> Option<Vec<f32>> {
        self.attr(name).map(|a| a.floats.clone())
    }
}

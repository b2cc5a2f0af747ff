//! `hassc inspect OUT.hass`: what an artifact holds, layer by layer: op, output shape,
//! folding, and how its weights are stored (encoding, bytes, compression over dense).

use hass_proto as pb;
use serde::Serialize;

/// One layer of an artifact.
#[derive(Clone, Debug, Serialize)]
pub struct ArtifactLayer {
    /// Layer name.
    pub name: String,
    /// Op kind.
    pub op: String,
    /// Per-image output shape.
    pub output_shape: Vec<u32>,
    /// `coarse_in x coarse_out x coarse_group x fine x spatial`.
    pub folding: String,
    /// Weight encoding (null without weights).
    pub encoding: Option<&'static str>,
    /// Stored weight bits (all tensors of the layer).
    pub bits: u64,
    /// Dense float32 bits of the same tensors (fixed-point artifacts gain their width too).
    pub dense_bits: u64,
    /// `dense_bits / bits`.
    pub compression: f64,
}

/// An artifact's summary.
#[derive(Clone, Debug, Serialize)]
pub struct ArtifactSummary {
    /// Format version of the file.
    pub format_version: u32,
    /// Model name.
    pub model: String,
    /// Producer.
    pub producer: String,
    /// Board.
    pub board: String,
    /// Weights section bytes.
    pub weights_bytes: u64,
    /// The same weights dense, bytes.
    pub dense_weights_bytes: u64,
    /// Layers in execution order.
    pub layers: Vec<ArtifactLayer>,
    /// Each layer's fixed-point formats (null for a float artifact).
    pub datapath: Option<super::datapath::DatapathReport>,
}

fn encoding_name(e: i32) -> &'static str {
    match pb::WeightEncoding::try_from(e) {
        Ok(pb::WeightEncoding::Dense) => "dense",
        Ok(pb::WeightEncoding::Bitmap) => "bitmap",
        Ok(pb::WeightEncoding::RunLength) => "run-length",
        Ok(pb::WeightEncoding::Csr) => "csr",
        Err(_) => "unknown",
    }
}

/// Summarise artifact bytes (the container is checked; see `hass_runtime::load_bytes` for
/// full validation).
pub fn summarize_artifact(bytes: &[u8]) -> Result<ArtifactSummary, pb::ContainerError> {
    let pb::Decoded { version, schedule, weights } = pb::open(bytes)?;
    let datapath = super::datapath::from_schedule(&schedule, "as recorded in the artifact".into(), None);
    let mut dense_total = 0;
    let layers = schedule
        .layers
        .iter()
        .map(|l| {
            use pb::layer::Op;
            let (op, refs): (&str, Vec<&pb::WeightRef>) = match &l.op {
                Some(Op::Conv(c)) => ("Conv", [&c.weight, &c.bias].into_iter().flatten().collect()),
                Some(Op::Dense(d)) => ("Dense", [&d.weight, &d.bias].into_iter().flatten().collect()),
                Some(Op::Pool(_)) => ("Pool", vec![]),
                Some(Op::GlobalAveragePool(_)) => ("GlobalAvgPool", vec![]),
                Some(Op::Eltwise(_)) => ("Eltwise", vec![]),
                Some(Op::ScaleShift(s)) => ("ScaleShift", [&s.scale, &s.shift].into_iter().flatten().collect()),
                Some(Op::Activation(_)) => ("Activation", vec![]),
                Some(Op::Concat(_)) => ("Concat", vec![]),
                Some(Op::Reshape(_)) => ("Reshape", vec![]),
                None => ("unknown", vec![]),
            };
            let dense_bits: u64 = refs.iter().map(|r| 32 * r.shape.iter().map(|&d| d as u64).product::<u64>()).sum();
            let bits: u64 = refs
                .iter()
                .map(|r| {
                    if r.byte_length == 0 {
                        32 * r.shape.iter().map(|&d| d as u64).product::<u64>()
                    } else {
                        8 * r.byte_length
                    }
                })
                .sum();
            dense_total += dense_bits / 8;
            let f = l.folding.clone().unwrap_or_default();
            ArtifactLayer {
                name: l.name.clone(),
                op: op.to_string(),
                output_shape: l.output.as_ref().map(|t| t.shape.clone()).unwrap_or_default(),
                folding: format!("{}x{}x{}x{}x{}", f.coarse_in, f.coarse_out, f.coarse_group, f.fine, f.spatial),
                encoding: refs.first().map(|r| encoding_name(r.encoding)),
                bits,
                dense_bits,
                compression: if bits > 0 { dense_bits as f64 / bits as f64 } else { 1.0 },
            }
        })
        .collect();
    Ok(ArtifactSummary {
        format_version: version,
        model: schedule.model,
        producer: schedule.producer,
        board: schedule.board.map(|b| b.name).unwrap_or_default(),
        weights_bytes: weights.len() as u64,
        dense_weights_bytes: dense_total,
        layers,
        datapath,
    })
}

impl ArtifactSummary {
    /// A plain-text table.
    pub fn to_table(&self) -> String {
        let name_w = self.layers.iter().map(|l| l.name.len()).max().unwrap_or(5).clamp(5, 48);
        let mut out = format!(
            "artifact format {} of {} ({}), board {}\n{:<name_w$}  {:<13}  {:>14}  {:>14}  {:<10}  {:>10}  {:>7}\n",
            self.format_version,
            self.model,
            self.producer,
            self.board,
            "layer",
            "op",
            "output",
            "folding",
            "encoding",
            "bits",
            "ratio"
        );
        for l in &self.layers {
            let shape = l.output_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
            out += &format!(
                "{:<name_w$}  {:<13}  {:>14}  {:>14}  {:<10}  {:>10}  {:>6.2}x\n",
                l.name,
                l.op,
                shape,
                l.folding,
                l.encoding.unwrap_or("-"),
                l.bits,
                l.compression
            );
        }
        out += &format!(
            "weights: {} bytes stored, {} bytes dense ({:.2}x)\n",
            self.weights_bytes,
            self.dense_weights_bytes,
            self.dense_weights_bytes as f64 / self.weights_bytes.max(1) as f64
        );
        if let Some(d) = &self.datapath {
            out += &d.to_table();
        }
        out
    }
}

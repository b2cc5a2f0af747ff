//! The fixed-point datapath in reports: each layer's formats and accumulator width, read
//! back from the artifact (what ships is what is reported), and how far the fixed-point
//! model's predictions move from the float model's.

use hass_proto as pb;
use hass_proto::fixed::{stream_width, Format};
use serde::Serialize;

/// A fixed-point format as hardware people write it: `fixed<W,I>` (as `ap_fixed`), `W` bits
/// of which `I` are integer bits, sign included (`I = W - frac`); `ufixed<W,I>` (as
/// `ap_ufixed`) for a stream no input can make negative, which the artifact holds in a
/// signed format one bit wider.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct FormatLine {
    /// Total bits (of magnitude, when unsigned).
    pub bits: u32,
    /// Fractional bits (the value of an integer `q` is `q * 2^-frac`).
    pub frac: i32,
    /// Never negative.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unsigned: bool,
}

impl std::fmt::Display for FormatLine {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let kind = if self.unsigned { "ufixed" } else { "fixed" };
        write!(f, "{kind}<{},{}>", self.bits, self.bits as i32 - self.frac)
    }
}

/// `f` as written for a stream that is never negative (`unsigned`) or may be.
fn line(f: Option<&pb::FixedFormat>, unsigned: bool) -> Option<FormatLine> {
    // Read from an artifact `inspect` has not validated: any width, any flag.
    let unsigned = unsigned && f.is_some_and(|f| f.bits > 1);
    f.map(|f| FormatLine {
        bits: stream_width(Format { bits: f.bits, frac: f.frac }, unsigned),
        frac: f.frac,
        unsigned,
    })
}

/// One layer's arithmetic.
#[derive(Clone, Debug, Serialize)]
pub struct LayerDatapath {
    /// Layer name.
    pub name: String,
    /// Its output stream.
    pub output: FormatLine,
    /// What its HardSigmoid, HardSwish or Sigmoid reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_activation: Option<FormatLine>,
    /// Weight width (layers with weights).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_bits: Option<u32>,
    /// The smallest and largest per-channel fractional bits of its weights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_frac: Option<[i32; 2]>,
    /// Its accumulator width.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accumulator_bits: Option<u32>,
}

/// The datapath block of a report.
#[derive(Clone, Debug, Serialize)]
pub struct DatapathReport {
    /// The input's format.
    pub input: FormatLine,
    /// Where the activation ranges came from.
    pub ranges: String,
    /// With calibration images: % of them whose top-1 is the float model's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top1_agreement_with_float: Option<f64>,
    /// Per layer, in execution order.
    pub layers: Vec<LayerDatapath>,
}

/// The datapath block of a fixed-point artifact's schedule (`None` for a float one).
pub fn from_schedule(schedule: &pb::Schedule, ranges: String, agreement: Option<f64>) -> Option<DatapathReport> {
    let input = line(schedule.input_format.as_ref(), false)?;
    let layers = schedule
        .layers
        .iter()
        .filter_map(|l| {
            let fixed = l.fixed.as_ref()?;
            let weight_bits = match &l.op {
                Some(pb::layer::Op::Conv(c)) => c.weight.as_ref().map(|w| w.bits),
                Some(pb::layer::Op::Dense(d)) => d.weight.as_ref().map(|w| w.bits),
                Some(pb::layer::Op::ScaleShift(s)) => s.scale.as_ref().map(|w| w.bits),
                _ => None,
            };
            let fracs = &fixed.weight_frac;
            Some(LayerDatapath {
                name: l.name.clone(),
                output: line(fixed.output.as_ref(), fixed.unsigned_output)?,
                pre_activation: line(fixed.pre_activation.as_ref(), false),
                weight_bits,
                weight_frac: fracs.iter().min().zip(fracs.iter().max()).map(|(a, b)| [*a, *b]),
                accumulator_bits: (fixed.accumulator_bits > 0).then_some(fixed.accumulator_bits),
            })
        })
        .collect();
    Some(DatapathReport { input, ranges, top1_agreement_with_float: agreement, layers })
}

impl DatapathReport {
    /// The table's block: a line per layer, then the summary.
    pub fn to_table(&self) -> String {
        let width = self.layers.iter().map(|l| l.name.len()).max().unwrap_or(5).clamp(5, 48);
        let mut out = format!(
            "\n{:<width$}  {:<15}  {:<15}  {:<22}  {:>5}\n",
            "datapath", "output", "pre-activation", "weights (frac range)", "acc"
        );
        for l in &self.layers {
            let name: String = l.name.chars().take(width).collect();
            let weights = match (l.weight_bits, l.weight_frac) {
                (Some(b), Some([lo, hi])) => format!("{b} bits ({lo}..{hi})"),
                _ => "-".into(),
            };
            let pre = l.pre_activation.map_or("-".into(), |p| p.to_string());
            let acc = l.accumulator_bits.map_or("-".into(), |a| a.to_string());
            out +=
                &format!("{:<width$}  {:<15}  {:<15}  {:<22}  {:>5}\n", name, l.output.to_string(), pre, weights, acc);
        }
        out += &format!("fixed point input {}; {}", self.input, self.ranges);
        match self.top1_agreement_with_float {
            Some(a) => out += &format!("; top-1 agrees with float on {a:.1} % of them\n"),
            None => out += "\n",
        }
        out
    }
}

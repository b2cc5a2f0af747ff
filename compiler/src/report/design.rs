//! The compile report: what the design achieves (`--report FILE.json` and the stdout table).

use crate::board::Board;
use crate::design::{chosen_cost, Design};
use crate::hw::cost::Placement;
use serde::Serialize;

/// One resource: used, the board's count, the utilisation cap.
#[derive(Clone, Debug, Serialize)]
pub struct ResourceLine {
    /// Used by the design (the largest partition's use when partitioned).
    pub used: f64,
    /// The board's count.
    pub available: f64,
    /// The fraction of `available` a design may use.
    pub cap: f64,
}

/// Per-resource usage.
#[derive(Clone, Debug, Serialize)]
pub struct Resources {
    /// DSP slices.
    pub dsp: ResourceLine,
    /// BRAM18s.
    pub bram18: ResourceLine,
    /// URAMs.
    pub uram: ResourceLine,
    /// LUTs.
    pub lut: ResourceLine,
    /// FFs.
    pub ff: ResourceLine,
    /// Off-chip bandwidth, Gbit/s.
    pub bandwidth_gbps: ResourceLine,
}

/// One layer's line.
#[derive(Clone, Debug, Serialize)]
pub struct LayerLine {
    /// Layer name (as in `hassc inspect`).
    pub name: String,
    /// Op (as in `hassc inspect`).
    pub op: String,
    /// Dense MACs per image.
    pub macs: u64,
    /// Folding.
    pub coarse_in: usize,
    /// Folding.
    pub coarse_out: usize,
    /// Folding.
    pub coarse_group: usize,
    /// Folding.
    pub fine: usize,
    /// Output pixels per cycle.
    pub spatial: usize,
    /// Cycles per image.
    pub cycles: f64,
    /// DSPs.
    pub dsp: f64,
    /// BRAM18s.
    pub bram18: f64,
    /// URAMs.
    pub uram: f64,
    /// LUTs.
    pub lut: f64,
    /// Flip-flops.
    pub ff: f64,
    /// Where the weights live ("bram", "uram", "off-chip"; null without weights).
    pub weights: Option<&'static str>,
    /// Partition index.
    pub partition: usize,
    /// Fraction of zero weights (null when unknown).
    pub weight_sparsity: Option<f64>,
    /// Fraction of zero input activations (null when unknown).
    pub activation_sparsity: Option<f64>,
    /// Fraction of zero products (null when unknown).
    pub product_sparsity: Option<f64>,
    /// Whether this stage sets its partition's interval.
    pub bottleneck: bool,
}

/// Width converters between stages.
#[derive(Clone, Debug, Serialize)]
pub struct Converters {
    /// How many.
    pub count: usize,
    /// LUTs.
    pub lut: f64,
    /// Flip-flops.
    pub ff: f64,
    /// BRAM18s.
    pub bram18: f64,
}

fn converters(design: &Design) -> Converters {
    let mut c = Converters { count: 0, lut: 0.0, ff: 0.0, bram18: 0.0 };
    for part in &design.partitions {
        let (count, u) = part.network.converters_counted(&part.choices);
        c.count += count;
        c.lut += u.lut.round();
        c.ff += u.ff.round();
        c.bram18 += u.bram18;
    }
    c
}

/// How the weights are stored.
#[derive(Clone, Debug, Serialize)]
pub struct Memory {
    /// "on-chip", "off-chip weights" or "partitioned".
    pub strategy: String,
    /// Weight bits kept on chip.
    pub weight_bits_on_chip: f64,
    /// Weight bits streamed from off-chip memory per image.
    pub weight_bits_off_chip: f64,
    /// What the strategy costs, in words.
    pub cost: String,
}

/// The compile report.
#[derive(Clone, Debug, Serialize)]
pub struct DesignReport {
    /// Model name.
    pub model: String,
    /// Board name.
    pub board: String,
    /// Accelerator clock.
    pub clock_mhz: f64,
    /// Images per second (steady state; for several partitions, over one batch).
    pub throughput_fps: f64,
    /// Images per second over a batch of `batch`, pipeline fill included.
    pub batch_fps: f64,
    /// Batch size of `batch_fps`.
    pub batch: usize,
    /// First image's latency.
    pub latency_ms: f64,
    /// Initiation interval (the largest over partitions).
    pub ii_cycles: f64,
    /// 2 * dense MACs * throughput / 1e9 / DSPs used.
    pub gops_per_dsp: f64,
    /// clock * capped DSPs * MACs per DSP / dense MACs per image.
    pub roofline_fps: f64,
    /// The same limit over non-zero products, when sparsity is known.
    pub sparse_roofline_fps: Option<f64>,
    /// Number of device configurations.
    pub partitions: usize,
    /// Allocator used.
    pub allocator: &'static str,
    /// Foldings it could choose ("any", or "divisors": fpgaConvNet's).
    pub folding: &'static str,
    /// What kept the interval from going lower ("dsp", "lut", "bram18", "uram", "ff",
    /// "bandwidth", or "folding": the bottleneck stage is fully unrolled).
    pub binding: String,
    /// The slowest stage (of the slowest partition).
    pub bottleneck: String,
    /// Weight width (every layer not set otherwise).
    pub weight_bits: u32,
    /// Activation width (every layer not set otherwise, and the network input).
    pub activation_bits: u32,
    /// Layers given their own widths (`[layers."NAME"]` in the config file).
    pub layers_at_other_widths: usize,
    /// Where the sparsity statistics came from.
    pub sparsity_source: String,
    /// Weight storage.
    pub memory: Memory,
    /// Resources.
    pub resources: Resources,
    /// The width converters between stages whose stream widths differ (all partitions;
    /// included in `resources`, not in any layer's line).
    pub converters: Converters,
    /// Dense MACs per image.
    pub total_macs: u64,
    /// Layers in execution order.
    pub layers: Vec<LayerLine>,
    /// The sparsity search that chose the knobs, when one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<crate::search::SearchSummary>,
    /// The fixed-point datapath (null for a float artifact).
    pub datapath: Option<super::datapath::DatapathReport>,
}

/// Build the report of `design` for `board`.
pub fn report(model: &str, board: &Board, design: &Design) -> DesignReport {
    let net = &design.network;
    let budget = &design.budget;
    let precision = net.precision;
    let slowest =
        design.partitions.iter().max_by(|a, b| a.eval.ii.total_cmp(&b.eval.ii)).expect("at least one partition");
    let (layers, weight_bits) = layer_lines(design);
    // DSP-cycles per image, each stage's multiply-accumulates at its own width.
    let dsp_cycles = |nonzero: &dyn Fn(usize) -> f64| -> f64 {
        net.stages.iter().enumerate().map(|(i, s)| s.macs as f64 * nonzero(i) * s.precision.dsp_per_mult()).sum()
    };
    let dense = dsp_cycles(&|_| 1.0);
    let sparse = dsp_cycles(&|i| 1.0 - net.sparsity[i].as_ref().map_or(0.0, |x| x.product));
    let roofline = budget.clock_hz * budget.dsp / dense.max(1e-9);
    DesignReport {
        model: model.to_string(),
        board: board.device.name.clone(),
        clock_mhz: board.system.clock_mhz,
        throughput_fps: design.throughput_fps(),
        batch_fps: design.batch_fps(),
        batch: design.options.batch,
        latency_ms: design.latency_s() * 1e3,
        ii_cycles: slowest.eval.ii,
        gops_per_dsp: design.gops_per_dsp(),
        roofline_fps: roofline,
        sparse_roofline_fps: (sparse < dense).then(|| budget.clock_hz * budget.dsp / sparse.max(1e-9)),
        partitions: design.partitions.len(),
        allocator: design.options.allocator.name(),
        folding: design.options.folds.name(),
        binding: slowest.binding.clone(),
        bottleneck: net.stages[slowest.offset + slowest.eval.bottleneck].name.clone(),
        weight_bits: precision.weight_bits,
        activation_bits: precision.activation_bits,
        layers_at_other_widths: design.options.precision.layers.len(),
        sparsity_source: match &design.options.sparsity {
            crate::design::SparsitySource::Dense => "none (dense)".into(),
            crate::design::SparsitySource::Uniform(s) => format!("assumed uniform product sparsity {s}"),
            crate::design::SparsitySource::PerLayer(_) => "assumed per layer (file)".into(),
            crate::design::SparsitySource::Measured { source, .. } => source.clone(),
        },
        memory: memory(design, weight_bits),
        resources: resources(board, design),
        converters: converters(design),
        total_macs: net.macs,
        layers,
        search: None,
        datapath: None,
    }
}

/// Weight bits on chip and off chip, in the artifact's encodings.
#[derive(Clone, Copy, Default)]
struct WeightBits {
    on_chip: f64,
    off_chip: f64,
}

/// One line per stage, and where the weights went.
fn layer_lines(design: &Design) -> (Vec<LayerLine>, WeightBits) {
    let net = &design.network;
    let mut layers = Vec::with_capacity(net.stages.len());
    let mut bits = WeightBits::default();
    for (i, s) in net.stages.iter().enumerate() {
        let (cost, p) = chosen_cost(design, i);
        let part = &design.partitions[p];
        let choice = part.choices[i - part.offset];
        let wbits = s.encoded_weight_bits.unwrap_or(s.weights * s.precision.weight_bits as u64) as f64;
        if choice.placement == Placement::OffChip {
            bits.off_chip += wbits;
        } else {
            bits.on_chip += wbits;
        }
        let sp = net.sparsity[i].as_ref();
        let f = choice.folding;
        layers.push(LayerLine {
            name: s.name.clone(),
            op: s.op.clone(),
            macs: s.macs,
            coarse_in: f.coarse_in,
            coarse_out: f.coarse_out,
            coarse_group: f.coarse_group,
            fine: f.fine,
            spatial: f.spatial,
            cycles: cost.cycles,
            dsp: cost.usage.dsp,
            bram18: cost.usage.bram18,
            uram: cost.usage.uram,
            lut: cost.usage.lut.round(),
            ff: cost.usage.ff.round(),
            weights: s.is_conv().then(|| choice.placement.name()),
            partition: p,
            weight_sparsity: sp.and_then(|s| s.weight),
            activation_sparsity: sp.and_then(|s| s.activation),
            product_sparsity: sp.map(|s| s.product),
            bottleneck: part.eval.bottleneck + part.offset == i && !part.eval.memory_bound,
        });
    }
    (layers, bits)
}

/// How the weights are stored and what that costs.
fn memory(design: &Design, bits: WeightBits) -> Memory {
    let strategy = if design.partitions.len() > 1 {
        "partitioned"
    } else if bits.off_chip > 0.0 {
        "off-chip weights"
    } else {
        "on-chip"
    };
    let cost = match strategy {
        "partitioned" => format!(
            "{} device configurations, {:.1} ms of reconfiguration per batch of {}",
            design.partitions.len(),
            design.reconfiguration_s * 1e3 * design.partitions.len() as f64,
            design.options.batch
        ),
        "off-chip weights" => format!(
            "{:.1} Mbit of weights streamed per image: {:.1} of {:.1} Gbit/s",
            bits.off_chip / 1e6,
            bandwidth_gbps(design),
            design.budget.bandwidth_gbps
        ),
        _ => "none: every weight stays on chip".to_string(),
    };
    Memory { strategy: strategy.into(), weight_bits_on_chip: bits.on_chip, weight_bits_off_chip: bits.off_chip, cost }
}

/// The largest partition's off-chip traffic, Gbit/s.
fn bandwidth_gbps(design: &Design) -> f64 {
    design.partitions.iter().map(|p| p.eval.bandwidth_gbps).fold(0.0, f64::max)
}

/// Each resource used (by the largest partition) against the board and its cap.
fn resources(board: &Board, design: &Design) -> Resources {
    let max_usage =
        |get: fn(&crate::hw::Usage) -> f64| design.partitions.iter().map(|p| get(&p.eval.usage)).fold(0.0, f64::max);
    let line = |used: f64, available: f64, cap: f64| ResourceLine { used, available, cap };
    let (r, l) = (&board.resources, &board.limits);
    Resources {
        dsp: line(max_usage(|u| u.dsp), r.dsp as f64, l.dsp),
        bram18: line(max_usage(|u| u.bram18), r.bram18 as f64, l.bram18),
        uram: line(max_usage(|u| u.uram), r.uram as f64, l.uram),
        lut: line(max_usage(|u| u.lut).round(), r.lut as f64, l.lut),
        ff: line(max_usage(|u| u.ff).round(), r.ff as f64, l.ff),
        bandwidth_gbps: line(bandwidth_gbps(design), board.system.memory_bandwidth_gbps, 1.0),
    }
}

impl DesignReport {
    /// The per-layer table and the summary block.
    pub fn to_table(&self) -> String {
        let name_w = self.layers.iter().map(|l| l.name.len()).max().unwrap_or(5).clamp(5, 48);
        let op_w = self.layers.iter().map(|l| l.op.len()).max().unwrap_or(2).clamp(2, 24);
        let ii = self.ii_cycles.max(1.0);
        let parted = self.partitions > 1;
        let mut out = format!(
            "{:<name_w$}  {:<op_w$}  {:>5} {:>5} {:>4} {:>4} {:>3}  {:>10}  {:>6}  {:>6}  {:>6}  {:>5}  {:>8}{}\n",
            "layer",
            "op",
            "c_in",
            "c_out",
            "grp",
            "fine",
            "px",
            "cycles",
            "% II",
            "DSP",
            "BRAM",
            "URAM",
            "weights",
            if parted { "  part" } else { "" }
        );
        for l in &self.layers {
            let name: String = if l.name.len() > name_w {
                format!("…{}", &l.name[l.name.len() - name_w + 1..])
            } else {
                l.name.clone()
            };
            out += &format!(
                "{:<name_w$}  {:<op_w$}  {:>5} {:>5} {:>4} {:>4} {:>3}  {:>10.0}  {:>5.1}%  {:>6.0}  {:>6.0}  {:>5.0}  {:>8}{}{}\n",
                name,
                l.op,
                l.coarse_in,
                l.coarse_out,
                l.coarse_group,
                l.fine,
                l.spatial,
                l.cycles,
                100.0 * l.cycles / ii,
                l.dsp,
                l.bram18,
                l.uram,
                l.weights.unwrap_or("-"),
                if parted { format!("  {:>4}", l.partition) } else { String::new() },
                if l.bottleneck { "  <- bottleneck" } else { "" }
            );
        }
        let r = &self.resources;
        let pct = |x: &ResourceLine| 100.0 * x.used / x.available.max(1e-9);
        out += &format!(
            "\n{} on {} at {} MHz ({} allocator{}, {}-bit weights, {}-bit activations{})\n",
            self.model,
            self.board,
            self.clock_mhz,
            self.allocator,
            if self.folding == "any" { String::new() } else { format!(", {} folding", self.folding) },
            self.weight_bits,
            self.activation_bits,
            match self.layers_at_other_widths {
                0 => String::new(),
                n => format!("; {n} layer(s) at their own widths, see the datapath"),
            }
        );
        out += &format!(
            "throughput  {:.1} images/s steady state, {:.1} images/s over a batch of {}\n",
            self.throughput_fps, self.batch_fps, self.batch
        );
        out += &format!(
            "latency     {:.3} ms    II {:.0} cycles    partitions {}\n",
            self.latency_ms, self.ii_cycles, self.partitions
        );
        out += &format!(
            "efficiency  {:.3} GOP/s per DSP; {:.1} % of the DSP roofline ({:.1} images/s){}\n",
            self.gops_per_dsp,
            100.0 * self.throughput_fps / self.roofline_fps,
            self.roofline_fps,
            self.sparse_roofline_fps.map(|s| format!(", sparse roofline {s:.1} images/s")).unwrap_or_default()
        );
        out += &format!("bound by    {} (bottleneck stage {})\n", self.binding, self.bottleneck);
        out += &format!("memory      {}: {}\n", self.memory.strategy, self.memory.cost);
        out += &format!(
            "resources   DSP {:.0}/{:.0} ({:.1} %)  BRAM18 {:.0}/{:.0} ({:.1} %)  URAM {:.0}/{:.0} ({:.1} %)  LUT {:.0}/{:.0} ({:.1} %)  FF {:.0}/{:.0} ({:.1} %)  bandwidth {:.1}/{:.1} Gbit/s\n",
            r.dsp.used, r.dsp.available, pct(&r.dsp),
            r.bram18.used, r.bram18.available, pct(&r.bram18),
            r.uram.used, r.uram.available, pct(&r.uram),
            r.lut.used, r.lut.available, pct(&r.lut),
            r.ff.used, r.ff.available, pct(&r.ff),
            r.bandwidth_gbps.used, r.bandwidth_gbps.available,
        );
        if self.converters.count > 0 {
            let c = &self.converters;
            out += &format!(
                "converters  {} width converters between stages: LUT {:.0}  FF {:.0}  BRAM18 {:.0} (in the resources above)\n",
                c.count, c.lut, c.ff, c.bram18
            );
        }
        out += &format!("caps        {:.0} % of each resource (board [limits])\n", 100.0 * r.dsp.cap);
        if let Some(s) = &self.search {
            out += &search_lines(s);
        }
        if let Some(d) = &self.datapath {
            out += &d.to_table();
        }
        out
    }
}

/// The search block of the table: what it found, then one line per layer it changed.
fn search_lines(s: &crate::search::SearchSummary) -> String {
    // The same names as in the JSON ("global-greedy", "time-budget").
    let name = |v: serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let mut out = format!(
        "search      {} over {} evaluations in {:.1} s ({}); budget {:.2} points of {} on {} images\n",
        name(serde_json::json!(s.strategy)),
        s.evaluations,
        s.wall_seconds,
        name(serde_json::json!(s.stopped)).replace('-', " "),
        s.max_accuracy_drop,
        s.accuracy,
        s.calibration_images
    );
    out += &format!(
        "            dense {:.0} images/s; own zeros {:.0} images/s; chosen {:.0} images/s ({:.2}x dense) at top-1 {:.2} % ({:+.2} points)\n",
        s.dense.throughput_fps,
        s.free_zeros.throughput_fps,
        s.chosen.throughput_fps,
        s.chosen.throughput_fps / s.dense.throughput_fps,
        s.chosen.top1,
        s.chosen.top1 - s.dense.top1
    );
    if let Some(m) = &s.message {
        out += &format!("            {m}\n");
    }
    let width = s.layers.iter().map(|l| l.name.len()).max().unwrap_or(5).clamp(5, 48);
    for l in &s.layers {
        out += &format!("  {:<width$}  {}\n", l.name, l.reason);
    }
    out
}

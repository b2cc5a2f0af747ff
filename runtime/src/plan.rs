//! The executable form of an artifact: layers in order, weights decoded, shapes checked.
//!
//! Every `Plan` comes out of [`crate::load`], which validates it, so the kernels can rely
//! on shapes and lengths being consistent.

pub use hass_proto::fixed::{ActivationUnit, Format};
pub use hass_proto::geometry::Pads;
pub use hass_proto::semantics::{Activation, EltwiseKind, PoolKind};

/// A 2-D convolution's geometry and weights.
#[derive(Clone, Debug)]
pub struct Conv {
    /// `[C_out, C_in / groups, K_h, K_w]`, row-major.
    pub weight: Vec<f32>,
    /// `[C_out]` (zeros when the model had no bias).
    pub bias: Vec<f32>,
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// `[K_h, K_w]`.
    pub kernel: [usize; 2],
    /// `[S_h, S_w]`.
    pub stride: [usize; 2],
    /// `[D_h, D_w]`.
    pub dilation: [usize; 2],
    /// `[top, left, bottom, right]`.
    pub pads: Pads,
    /// Channel groups (C_in for depthwise).
    pub groups: usize,
    /// Fused activation.
    pub activation: Option<Activation>,
    /// Input values at or below this read as zero (the activation threshold).
    pub input_threshold: Option<f32>,
    /// The weights' non-zeros by filter, when pruned enough for zero-skipping kernels.
    pub sparse_weight: Option<crate::sparse_rows::SparseRows>,
    /// Whether the float path may compute it by Winograd's minimal filtering
    /// ([`crate::kernels::winograd`]), whose sums round differently from a direct sum's
    /// (by a few parts in ten million): on when running a model, off in the compiler's
    /// calibration runs ([`Plan::with_direct_sums`]).
    pub winograd: bool,
    /// What a kernel makes of `weight` once (the float GEMM's packed copy). Whoever
    /// changes `weight` resets it: `conv.derived = Derived::default()`.
    pub derived: Derived,
}

impl Conv {
    /// A plain convolution of `c_in -> c_out` channels with a `kernel` window: stride 1, no
    /// dilation, no padding, one group, zero bias, no activation or threshold. Set the rest
    /// with struct update syntax: `Conv { pads: [1; 4], ..Conv::new(weight, 3, 8, [3, 3]) }`.
    pub fn new(weight: Vec<f32>, c_in: usize, c_out: usize, kernel: [usize; 2]) -> Conv {
        Conv {
            weight,
            bias: vec![0.0; c_out],
            c_in,
            c_out,
            kernel,
            stride: [1, 1],
            dilation: [1, 1],
            pads: [0; 4],
            groups: 1,
            activation: None,
            input_threshold: None,
            sparse_weight: None,
            winograd: true,
            derived: Derived::default(),
        }
    }
}

/// What a kernel derives from a layer's weights once (a packed copy), made on first use and
/// shared by clones of the layer; of a type the plan does not know. Reset it (replace it
/// with `Derived::default()`) when the weights change.
#[derive(Clone, Default)]
pub struct Derived(std::sync::OnceLock<std::sync::Arc<dyn std::any::Any + Send + Sync>>);

impl Derived {
    /// What `derive` makes of the weights, made on the first call; every call must ask for
    /// the same type (one kernel per layer kind uses it).
    pub(crate) fn get_or<T: std::any::Any + Send + Sync>(&self, derive: impl FnOnce() -> T) -> &T {
        self.0
            .get_or_init(|| std::sync::Arc::new(derive()))
            .downcast_ref()
            .expect("one kernel derives one type from a layer's weights")
    }
}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "Derived(made)" } else { "Derived(not yet)" })
    }
}

/// A fully connected layer: `y = x W^T + b`.
#[derive(Clone, Debug)]
pub struct Dense {
    /// `[out, in]`, row-major.
    pub weight: Vec<f32>,
    /// `[out]`.
    pub bias: Vec<f32>,
    /// Input features.
    pub inputs: usize,
    /// Output features.
    pub outputs: usize,
    /// Fused activation.
    pub activation: Option<Activation>,
    /// Input values at or below this read as zero (the activation threshold).
    pub input_threshold: Option<f32>,
    /// The weights' non-zeros by output, when pruned enough for zero-skipping kernels.
    pub sparse_weight: Option<crate::sparse_rows::SparseRows>,
}

impl Dense {
    /// The layer's geometry as a 1x1 convolution on a 1x1 map (no weights), as the
    /// accelerator sees a fully connected layer.
    pub fn geometry(&self) -> Conv {
        Conv {
            bias: Vec::new(),
            input_threshold: self.input_threshold,
            ..Conv::new(Vec::new(), self.inputs, self.outputs, [1, 1])
        }
    }
}

/// A pooling layer's geometry.
#[derive(Clone, Debug)]
pub struct Pool {
    /// Max or average.
    pub kind: PoolKind,
    /// `[K_h, K_w]`.
    pub kernel: [usize; 2],
    /// `[S_h, S_w]`.
    pub stride: [usize; 2],
    /// `[D_h, D_w]`.
    pub dilation: [usize; 2],
    /// `[top, left, bottom, right]`.
    pub pads: Pads,
    /// Whether partial windows at the end count.
    pub ceil_mode: bool,
    /// Whether padding counts in the average's divisor.
    pub count_include_pad: bool,
}

/// What a layer computes.
#[derive(Clone, Debug)]
pub enum Op {
    /// 2-D convolution.
    Conv(Conv),
    /// Fully connected.
    Dense(Dense),
    /// Pooling.
    Pool(Pool),
    /// Mean over H and W.
    GlobalAveragePool,
    /// Broadcasting binary op, optionally followed by an activation.
    Eltwise {
        /// Add or Mul.
        kind: EltwiseKind,
        /// Fused activation.
        activation: Option<Activation>,
    },
    /// Per-channel `x * scale + shift`.
    ScaleShift {
        /// `[C]`.
        scale: Vec<f32>,
        /// `[C]`.
        shift: Vec<f32>,
        /// Fused activation.
        activation: Option<Activation>,
    },
    /// A stand-alone activation.
    Activation(Activation),
    /// Concatenation along channels.
    Concat,
    /// Same values, new shape.
    Reshape,
}

impl Op {
    /// The activation the layer applies (fused, or the layer itself).
    pub fn activation(&self) -> Option<Activation> {
        match self {
            Op::Conv(c) => c.activation,
            Op::Dense(d) => d.activation,
            Op::Eltwise { activation, .. } | Op::ScaleShift { activation, .. } => *activation,
            Op::Activation(a) => Some(*a),
            Op::Pool(_) | Op::GlobalAveragePool | Op::Concat | Op::Reshape => None,
        }
    }

    /// Whether no input can make its output negative, given which of its inputs cannot be
    /// (in order): its activation never outputs a negative value
    /// ([`Activation::is_non_negative`]), or it pools, reshapes, concatenates, adds or
    /// multiplies such values alone. The compiler's `quantize::non_negative_values` follows
    /// the same rule.
    pub fn output_is_non_negative(&self, inputs_non_negative: impl IntoIterator<Item = bool>) -> bool {
        match (self, self.activation()) {
            (_, Some(activation)) => activation.is_non_negative(),
            (Op::Pool(_) | Op::GlobalAveragePool | Op::Concat | Op::Reshape | Op::Eltwise { .. }, None) => {
                inputs_non_negative.into_iter().all(|n| n)
            }
            _ => false,
        }
    }
}

/// The accelerator stage a layer runs on, as the compiler allocated it (used by the cycle
/// simulation, not by execution).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hardware {
    /// Input channels in parallel per group (channel lanes for element-wise stages).
    pub coarse_in: usize,
    /// Output channels in parallel per group.
    pub coarse_out: usize,
    /// Groups in parallel.
    pub coarse_group: usize,
    /// Multipliers per window.
    pub fine: usize,
    /// Output pixels per cycle.
    pub spatial: usize,
    /// Conv stages: the input stream of each input channel (empty: round-robin).
    pub channel_stream: Vec<usize>,
    /// Conv stages: zero-skipping crossbar.
    pub sparse: bool,
}

/// A layer's fixed-point arithmetic (ARCHITECTURE.md, "Datapath"). Values between layers
/// stay `f32` holding each fixed-point number's exact real value, so everything that reads
/// values (traces, statistics, the simulation) works on both datapaths alike.
#[derive(Clone, Debug)]
pub struct Fixed {
    /// The activation unit after the layer's arithmetic; it holds the output format.
    pub unit: ActivationUnit,
    /// Conv, Dense, ScaleShift: the per-channel arithmetic.
    pub channels: Option<FixedChannels>,
    /// The output is declared unsigned (ARCHITECTURE.md, "Unsigned streams"): never
    /// negative, one bit of its format unused, which the next layer's accumulator omits.
    pub unsigned_output: bool,
}

/// The multiply-accumulate side of a fixed-point Conv, Dense or ScaleShift. Built with
/// [`FixedChannels::new`] and replaced whole, never edited: the kernels keep a packed copy
/// of the weights beside it.
#[derive(Clone, Debug)]
pub struct FixedChannels {
    weight: Vec<f64>,
    weight_frac: Vec<i32>,
    bias: Vec<i64>,
    /// The integer GEMM's packed copy of the weights.
    derived: Derived,
}

impl FixedChannels {
    /// `weight` (ScaleShift: the scales) as `f64`, each exactly `q * 2^-frac` with `q` within
    /// 16 bits, `weight_frac` per output channel, and per output channel the `bias`
    /// (ScaleShift: the shift) at the accumulator's binary point, `input frac +
    /// weight_frac[o]`, the accumulator needing at most [`MAX_EXACT_ACCUMULATOR_BITS`].
    pub fn new(weight: Vec<f64>, weight_frac: Vec<i32>, bias: Vec<i64>) -> FixedChannels {
        FixedChannels { weight, weight_frac, bias, derived: Default::default() }
    }

    /// The weights as exact reals: products and sums of them are exact while the
    /// accumulator stays within 53 bits, so a float GEMM computes the integer accumulator
    /// exactly, in any order.
    pub fn weight(&self) -> &[f64] {
        &self.weight
    }

    /// Per output channel: the fractional bits of its weights.
    pub fn weight_frac(&self) -> &[i32] {
        &self.weight_frac
    }

    /// Per output channel: the bias at the accumulator's binary point.
    pub fn bias(&self) -> &[i64] {
        &self.bias
    }

    /// What `derive` makes of these weights, made on the first call; every call must ask
    /// for the same type (one kernel per layer kind uses it).
    pub(crate) fn derived<T: std::any::Any + Send + Sync>(&self, derive: impl FnOnce() -> T) -> &T {
        self.derived.get_or(derive)
    }
}

/// The widest accumulator the runtime computes exactly: the products' sum (one bit less)
/// must fit an `f64`'s 53-bit significand.
pub const MAX_EXACT_ACCUMULATOR_BITS: u32 = 54;

/// One executable layer.
#[derive(Clone, Debug)]
pub struct Layer {
    /// Name, as in the compiler's reports.
    pub name: String,
    /// Value ids read: 0 is the graph input, `i + 1` the output of layer `i`.
    pub inputs: Vec<usize>,
    /// Per-image output shape.
    pub output_shape: Vec<usize>,
    /// What to compute.
    pub op: Op,
    /// The stage it runs on.
    pub hardware: Hardware,
    /// Its fixed-point arithmetic; `None` on the float datapath.
    pub fixed: Option<Fixed>,
}

/// A validated, executable schedule.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Model name recorded by the compiler.
    pub model: String,
    /// Board the schedule was compiled for.
    pub board: String,
    /// The board's clock, MHz.
    pub clock_mhz: f64,
    /// Per-image input shape.
    pub input_shape: Vec<usize>,
    /// Layers in execution order.
    pub layers: Vec<Layer>,
    /// Value ids of the outputs.
    pub outputs: Vec<usize>,
    /// The fixed-point datapath's input format (every layer then has [`Layer::fixed`]);
    /// `None` on the float datapath.
    pub input_format: Option<Format>,
}

impl Plan {
    /// This plan with every conv summed directly (none by Winograd's minimal filtering): the
    /// compiler's calibration runs, whose ranges, dense reference and re-fit targets steer
    /// the search through near ties, so that a design does not follow which fast kernel
    /// the runtime picks for a layer (its sums as the accelerator's are, product by product).
    pub fn with_direct_sums(mut self) -> Plan {
        for layer in &mut self.layers {
            if let Op::Conv(conv) = &mut layer.op {
                conv.winograd = false;
            }
        }
        self
    }

    /// A plan of one convolution of an `[h, w]` map, its output shape worked out: what unit
    /// tests of kernels and of calibration need. `None` when the window does not fit.
    pub fn one_conv(conv: Conv, [h, w]: [usize; 2]) -> Option<Plan> {
        let len = |axis: usize, input: usize| {
            let (k, s, d) = (conv.kernel[axis], conv.stride[axis], conv.dilation[axis]);
            hass_proto::geometry::window_output_len(input, k, s, d, conv.pads[axis], conv.pads[axis + 2], false)
        };
        let output = vec![conv.c_out, len(0, h)?, len(1, w)?];
        let input = vec![conv.c_in, h, w];
        Some(Plan::one_layer(Op::Conv(conv), input, output))
    }

    /// A plan of one layer that reads the input and is the output, with no board: what unit
    /// tests of a kernel or of calibration need. Not validated (see [`crate::load`]).
    pub fn one_layer(op: Op, input_shape: Vec<usize>, output_shape: Vec<usize>) -> Plan {
        Plan {
            model: "one layer".into(),
            board: String::new(),
            clock_mhz: 100.0,
            input_shape,
            layers: vec![Layer {
                name: "layer".into(),
                inputs: vec![0],
                output_shape,
                op,
                hardware: Default::default(),
                fixed: None,
            }],
            outputs: vec![1],
            input_format: None,
        }
    }

    /// The fixed-point format of value `id` (`None` on the float datapath).
    pub fn value_format(&self, id: usize) -> Option<Format> {
        if id == 0 {
            self.input_format
        } else {
            self.layers[id - 1].fixed.as_ref().map(|f| f.unit.out())
        }
    }

    /// Whether no input can make value `id` negative (see [`Op::output_is_non_negative`]):
    /// the kernels then take its integers as unsigned.
    pub fn is_non_negative(&self, id: usize) -> bool {
        let mut non_negative = vec![false; id + 1];
        for (i, layer) in self.layers.iter().enumerate().take(id) {
            non_negative[i + 1] = layer.op.output_is_non_negative(layer.inputs.iter().map(|&v| non_negative[v]));
        }
        non_negative[id]
    }

    /// Whether value `id` is declared unsigned ([`Fixed::unsigned_output`]; the input never
    /// is): what the accumulator widths of the layers reading it follow.
    pub fn value_unsigned(&self, id: usize) -> bool {
        id > 0 && self.layers[id - 1].fixed.as_ref().is_some_and(|f| f.unsigned_output)
    }

    /// Per-image shape of value `id`.
    pub fn value_shape(&self, id: usize) -> &[usize] {
        if id == 0 {
            &self.input_shape
        } else {
            &self.layers[id - 1].output_shape
        }
    }
}

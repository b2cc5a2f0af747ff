//! The accelerator's cost model (fpgaConvNet-style dataflow, REFERENCE §2), pure and
//! deterministic: for a layer's stage and a folding, how many cycles per image it takes and
//! which resources it uses.
//!
//! - [`stage`]: the stages of a graph (one per layer) and their geometry.
//! - [`sparse`]: window histograms, expected cycles per window, channel-to-stream dealing.
//! - [`cost`]: cycles and resources of one stage at one folding and weight placement.
//! - [`modules`]: the building blocks of a stage (sliding window, dot products,
//!   accumulators, converters ...), each priced from its parallelism and widths.
//! - [`memory`]: BRAM18 / URAM / LUTRAM shapes.
//! - [`pipeline`]: II, throughput, latency, roofline of a whole design.
//!
//! Architecture invariant: `hw` reads the IR and the board, never the runtime, ONNX or
//! files; it does not search (that is `search/`).

pub mod cost;
pub mod memory;
pub mod modules;
pub mod pipeline;
pub mod sparse;
pub mod stage;

use std::ops::{Add, AddAssign};

/// Operand widths of the datapath.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Precision {
    /// Weight width in bits.
    pub weight_bits: u32,
    /// Activation width in bits.
    pub activation_bits: u32,
}

impl Default for Precision {
    fn default() -> Self {
        Self { weight_bits: 16, activation_bits: 16 }
    }
}

impl Precision {
    /// DSP slices per multiplier: one at 16 bit, two multiplies share one at 8 bit, four at 4.
    pub fn dsp_per_mult(&self) -> f64 {
        match self.weight_bits.max(self.activation_bits) {
            0..=4 => 0.25,
            5..=8 => 0.5,
            _ => 1.0,
        }
    }

    /// Multiply-accumulates one DSP performs per cycle.
    pub fn macs_per_dsp(&self) -> f64 {
        1.0 / self.dsp_per_mult()
    }
}

/// Resources a stage or a design uses. Off-chip traffic is in bits per image.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// DSP slices.
    pub dsp: f64,
    /// 18 Kb block RAMs.
    pub bram18: f64,
    /// UltraRAMs.
    pub uram: f64,
    /// Look-up tables.
    pub lut: f64,
    /// Flip-flops.
    pub ff: f64,
    /// Off-chip memory traffic per image, bits (weights streamed in, plus the network's
    /// input and output).
    pub offchip_bits: f64,
}

impl Usage {
    /// Whether `self` needs at most as much as `other` of every resource.
    pub fn at_most(&self, other: &Usage) -> bool {
        self.dsp <= other.dsp
            && self.bram18 <= other.bram18
            && self.uram <= other.uram
            && self.lut <= other.lut
            && self.ff <= other.ff
            && self.offchip_bits <= other.offchip_bits
    }
}

impl Add for Usage {
    type Output = Usage;
    fn add(self, o: Usage) -> Usage {
        Usage {
            dsp: self.dsp + o.dsp,
            bram18: self.bram18 + o.bram18,
            uram: self.uram + o.uram,
            lut: self.lut + o.lut,
            ff: self.ff + o.ff,
            offchip_bits: self.offchip_bits + o.offchip_bits,
        }
    }
}

impl std::ops::Sub for Usage {
    type Output = Usage;
    fn sub(self, o: Usage) -> Usage {
        Usage {
            dsp: self.dsp - o.dsp,
            bram18: self.bram18 - o.bram18,
            uram: self.uram - o.uram,
            lut: self.lut - o.lut,
            ff: self.ff - o.ff,
            offchip_bits: self.offchip_bits - o.offchip_bits,
        }
    }
}

impl std::ops::Mul<f64> for Usage {
    type Output = Usage;
    /// `k` copies of the same hardware.
    fn mul(self, k: f64) -> Usage {
        Usage {
            dsp: self.dsp * k,
            bram18: self.bram18 * k,
            uram: self.uram * k,
            lut: self.lut * k,
            ff: self.ff * k,
            offchip_bits: self.offchip_bits * k,
        }
    }
}

impl AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        *self = *self + o;
    }
}

impl std::iter::Sum for Usage {
    fn sum<I: Iterator<Item = Usage>>(iter: I) -> Usage {
        iter.fold(Usage::default(), Add::add)
    }
}

/// The resources a design may use on a board: counts times utilisation caps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    /// DSP slices.
    pub dsp: f64,
    /// BRAM18s.
    pub bram18: f64,
    /// URAMs.
    pub uram: f64,
    /// LUTs.
    pub lut: f64,
    /// FFs.
    pub ff: f64,
    /// Off-chip bandwidth, Gbit/s.
    pub bandwidth_gbps: f64,
    /// Clock, Hz.
    pub clock_hz: f64,
}

impl Budget {
    /// The capped budget of `board`.
    pub fn of(board: &crate::board::Board) -> Budget {
        let (r, l) = (&board.resources, &board.limits);
        Budget {
            dsp: (r.dsp as f64 * l.dsp).floor(),
            bram18: (r.bram18 as f64 * l.bram18).floor(),
            uram: (r.uram as f64 * l.uram).floor(),
            lut: (r.lut as f64 * l.lut).floor(),
            ff: (r.ff as f64 * l.ff).floor(),
            bandwidth_gbps: board.system.memory_bandwidth_gbps,
            clock_hz: board.system.clock_mhz * 1e6,
        }
    }

    /// Off-chip bits per image that fit the bandwidth at initiation interval `ii` cycles.
    pub fn offchip_bits_at(&self, ii: f64) -> f64 {
        self.bandwidth_gbps * 1e9 * ii / self.clock_hz
    }

    /// The on-chip resources (not bandwidth) that `u` exceeds, by name.
    pub fn exceeded(&self, u: &Usage) -> Vec<&'static str> {
        let mut over = Vec::new();
        for (name, used, cap) in [
            ("dsp", u.dsp, self.dsp),
            ("bram18", u.bram18, self.bram18),
            ("uram", u.uram, self.uram),
            ("lut", u.lut, self.lut),
            ("ff", u.ff, self.ff),
        ] {
            if used > cap + 1e-9 {
                over.push(name);
            }
        }
        over
    }
}

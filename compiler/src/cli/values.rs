//! The command line's spelling of the library's choices. The library's enums stay free of
//! clap; each flag's values are declared here and converted at the edge.

use clap::ValueEnum;
use hassc::alloc::Allocator;
use hassc::hw::pipeline::Folds;
use hassc::quantize::Datapath;
use hassc::search::{Objective, Strategy};

/// `--allocator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AllocatorArg {
    /// Search over the initiation interval (default).
    Exact,
    /// fpgaConvNet's greedy rule (baseline).
    Greedy,
}

/// `--folding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FoldingArg {
    /// Any factor, several pixels per cycle where that pays (default).
    Any,
    /// Factors that divide the loops, one pixel per cycle (fpgaConvNet's designs).
    Divisors,
}

impl From<FoldingArg> for Folds {
    fn from(f: FoldingArg) -> Self {
        match f {
            FoldingArg::Any => Folds::Any,
            FoldingArg::Divisors => Folds::Divisors,
        }
    }
}

impl From<AllocatorArg> for Allocator {
    fn from(a: AllocatorArg) -> Self {
        match a {
            AllocatorArg::Exact => Allocator::Exact,
            AllocatorArg::Greedy => Allocator::Greedy,
        }
    }
}

/// `--datapath`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DatapathArg {
    /// Fixed point, as the accelerator computes (default).
    Fixed,
    /// Float32, the reference.
    Float,
}

impl From<DatapathArg> for Datapath {
    fn from(d: DatapathArg) -> Self {
        match d {
            DatapathArg::Fixed => Datapath::Fixed,
            DatapathArg::Float => Datapath::Float,
        }
    }
}

/// `--search`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    /// Per-layer thresholds, moves ranked by the hardware model (default).
    Hass,
    /// One global weight and one global activation threshold, stepped (the predecessor).
    GlobalGreedy,
    /// The same fraction pruned in every layer and one activation threshold, blind to the
    /// hardware (a baseline).
    Uniform,
    /// No search: the dense model with the zeros it produces by itself.
    None,
}

impl StrategyArg {
    /// The flag value as typed.
    pub fn name(self) -> String {
        self.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
    }
}

impl From<StrategyArg> for Strategy {
    fn from(s: StrategyArg) -> Self {
        match s {
            StrategyArg::Hass => Strategy::Hass,
            StrategyArg::GlobalGreedy => Strategy::GlobalGreedy,
            StrategyArg::Uniform => Strategy::Uniform,
            StrategyArg::None => Strategy::None,
        }
    }
}

/// `--objective`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ObjectiveArg {
    /// Images per second.
    Throughput,
    /// GOP/s per DSP in use.
    Efficiency,
    /// First image's latency (minimised).
    Latency,
}

impl From<ObjectiveArg> for Objective {
    fn from(o: ObjectiveArg) -> Self {
        match o {
            ObjectiveArg::Throughput => Objective::Throughput,
            ObjectiveArg::Efficiency => Objective::Efficiency,
            ObjectiveArg::Latency => Objective::Latency,
        }
    }
}

/// An on/off flag value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Turned on.
    On,
    /// Turned off.
    Off,
}

//! Board files: the target device's resources and system figures, in TOML, with units in
//! the key names. Built-in boards ship as TOML too (`builtin/`), so `hassc boards show`
//! prints exactly what a user can copy and edit.
//!
//! ```toml
//! [device]
//! name = "u250"
//! part = "xcu250-figd2104-2L-e"
//! [resources]
//! dsp = 12288
//! bram18 = 5376
//! uram = 1280
//! lut = 1728000
//! ff = 3456000
//! [system]
//! clock_mhz = 250.0
//! memory_bandwidth_gbps = 614.4
//! port_width_bits = 512
//! reconfiguration_s = 0.08255
//! [limits]          # optional: utilisation caps, default 0.8 each
//! dsp = 0.8
//! ```

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Built-in boards: name and TOML text.
pub const BUILTIN: &[(&str, &str)] = &[
    ("u250", include_str!("builtin/u250.toml")),
    ("u200", include_str!("builtin/u200.toml")),
    ("vcu1525", include_str!("builtin/vcu1525.toml")),
    ("zcu102", include_str!("builtin/zcu102.toml")),
    ("zcu104", include_str!("builtin/zcu104.toml")),
    ("vc709", include_str!("builtin/vc709.toml")),
];

/// Why a board could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    /// Neither a built-in name nor a readable file.
    #[error("unknown board {name:?}: not a built-in board ({}) and not a readable file ({reason}); `hassc boards` lists the built-ins", BUILTIN.iter().map(|b| b.0).collect::<Vec<_>>().join(", "))]
    Unknown {
        /// What the user gave.
        name: String,
        /// Why the file could not be read.
        reason: String,
    },
    /// The TOML does not match the schema (missing field, unknown key, wrong type).
    #[error("board file {file}: {message}")]
    Parse {
        /// File (or built-in name).
        file: String,
        /// The parser's message, which names the key.
        message: String,
    },
    /// A value is out of range.
    #[error("board file {file}: {key} = {value}: {reason}")]
    Invalid {
        /// File (or built-in name).
        file: String,
        /// Dotted key.
        key: &'static str,
        /// The value given.
        value: String,
        /// The accepted range.
        reason: &'static str,
    },
}

/// A target board.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    /// Identity.
    pub device: Device,
    /// Resource counts.
    pub resources: Resources,
    /// Clock, memory, reconfiguration.
    pub system: System,
    /// Utilisation caps.
    #[serde(default)]
    pub limits: Limits,
}

/// `[device]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Short name, e.g. "u250".
    pub name: String,
    /// FPGA part number.
    pub part: String,
}

/// `[resources]`: counts on the device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// DSP slices.
    pub dsp: u64,
    /// 18 Kb block RAMs.
    pub bram18: u64,
    /// UltraRAMs (288 Kb).
    pub uram: u64,
    /// Look-up tables.
    pub lut: u64,
    /// Flip-flops.
    pub ff: u64,
}

/// `[system]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct System {
    /// Accelerator clock in MHz.
    pub clock_mhz: f64,
    /// Off-chip memory bandwidth in Gbit/s.
    pub memory_bandwidth_gbps: f64,
    /// Memory port width in bits.
    pub port_width_bits: u32,
    /// Time to reconfigure the device, in seconds.
    pub reconfiguration_s: f64,
}

/// `[limits]`: the fraction of each resource a design may use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// DSP cap.
    pub dsp: f64,
    /// BRAM18 cap.
    pub bram18: f64,
    /// URAM cap.
    pub uram: f64,
    /// LUT cap.
    pub lut: f64,
    /// FF cap.
    pub ff: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { dsp: 0.8, bram18: 0.8, uram: 0.8, lut: 0.8, ff: 0.8 }
    }
}

impl Board {
    /// A built-in board by name, or a board file by path.
    pub fn resolve(target: &str) -> Result<Board, BoardError> {
        if let Some((name, text)) = BUILTIN.iter().find(|(n, _)| *n == target) {
            return Board::parse(text, name);
        }
        let path = Path::new(target);
        let text = std::fs::read_to_string(path)
            .map_err(|e| BoardError::Unknown { name: target.to_string(), reason: e.to_string() })?;
        Board::parse(&text, &path.display().to_string())
    }

    /// Parse and validate board TOML; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Board, BoardError> {
        let board: Board = toml::from_str(text)
            .map_err(|e| BoardError::Parse { file: file.to_string(), message: one_line(&e, text) })?;
        board.validate(file)?;
        Ok(board)
    }

    fn validate(&self, file: &str) -> Result<(), BoardError> {
        let invalid = |key, value: f64, reason| {
            Err(BoardError::Invalid { file: file.to_string(), key, value: value.to_string(), reason })
        };
        let s = &self.system;
        // Ranges far wider than any FPGA's, narrow enough that no figure derived from them
        // overflows or vanishes.
        for (key, value, range, reason) in [
            ("system.clock_mhz", s.clock_mhz, 1.0..=5_000.0, "must be between 1 and 5000 (MHz)"),
            (
                "system.memory_bandwidth_gbps",
                s.memory_bandwidth_gbps,
                1e-3..=1e6,
                "must be between 0.001 and 1e6 (Gbit/s)",
            ),
        ] {
            if !range.contains(&value) {
                return invalid(key, value, reason);
            }
        }
        if s.port_width_bits == 0 {
            return invalid("system.port_width_bits", 0.0, "must be positive");
        }
        if !(s.reconfiguration_s.is_finite() && s.reconfiguration_s >= 0.0) {
            return invalid("system.reconfiguration_s", s.reconfiguration_s, "must be zero or positive");
        }
        let l = &self.limits;
        for (key, value) in [
            ("limits.dsp", l.dsp),
            ("limits.bram18", l.bram18),
            ("limits.uram", l.uram),
            ("limits.lut", l.lut),
            ("limits.ff", l.ff),
        ] {
            if !(value > 0.0 && value <= 1.0) {
                return invalid(key, value, "must be a fraction in (0, 1]");
            }
        }
        Ok(())
    }

    /// The board's figures as recorded in artifacts.
    pub fn to_proto(&self) -> hass_proto::Board {
        hass_proto::Board {
            name: self.device.name.clone(),
            part: self.device.part.clone(),
            dsp: self.resources.dsp,
            bram18: self.resources.bram18,
            uram: self.resources.uram,
            lut: self.resources.lut,
            ff: self.resources.ff,
            clock_mhz: self.system.clock_mhz,
            memory_bandwidth_gbps: self.system.memory_bandwidth_gbps,
            port_width_bits: self.system.port_width_bits,
            reconfiguration_s: self.system.reconfiguration_s,
        }
    }
}

/// toml's messages span several lines (a source excerpt); keep the reason and point at
/// the offending line, which names the key.
fn one_line(e: &toml::de::Error, text: &str) -> String {
    // Long lines and values are quoted only in part: the message stays one readable line.
    let msg = shorten(&e.message().trim().replace('\n', " "), 160);
    match e.span() {
        Some(span) => {
            let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let line = shorten(text.lines().nth(line_no - 1).unwrap_or("").trim(), 60);
            format!("line {line_no} (`{line}`): {msg}")
        }
        None => msg,
    }
}

/// The first `chars` characters of `s`, with `...` when it was longer.
fn shorten(s: &str, chars: usize) -> String {
    match s.char_indices().nth(chars) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U250: &str = include_str!("builtin/u250.toml");

    #[test]
    fn every_builtin_parses() {
        for (name, text) in BUILTIN {
            let b = Board::parse(text, name).unwrap();
            assert_eq!(&b.device.name, name);
        }
        assert_eq!(Board::resolve("zcu102").unwrap().resources.dsp, 2520);
    }

    #[test]
    fn missing_field_is_named() {
        let text = U250.replace("dsp = 12288\n", "");
        let err = Board::parse(&text, "b.toml").unwrap_err().to_string();
        assert!(err.contains("missing field `dsp`"), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let text = U250.replace("ff = 3456000", "ff = 3456000\nflipflops = 2");
        let err = Board::parse(&text, "b.toml").unwrap_err().to_string();
        assert!(err.contains("unknown field `flipflops`"), "{err}");
    }

    #[test]
    fn negative_dsp_is_refused() {
        let text = U250.replace("dsp = 12288", "dsp = -4");
        let err = Board::parse(&text, "b.toml").unwrap_err().to_string();
        assert!(err.contains("`dsp = -4`") && err.contains("b.toml"), "{err}");
    }

    #[test]
    fn limits_default_to_point_eight_and_are_checked() {
        let text = U250.split("[limits]").next().unwrap().to_string();
        assert_eq!(Board::parse(&text, "b").unwrap().limits, Limits::default());
        let bad = format!("{text}[limits]\nlut = 1.5\n");
        let err = Board::parse(&bad, "b").unwrap_err().to_string();
        assert!(err.contains("limits.lut"), "{err}");
    }

    #[test]
    fn unknown_board_lists_builtins() {
        let err = Board::resolve("no-such-board").unwrap_err().to_string();
        assert!(err.contains("u250, u200"), "{err}");
    }

    #[test]
    fn implausible_figures_and_long_lines_give_one_short_line() {
        let text = U250.replace("clock_mhz = 250.0", "clock_mhz = 1e-300");
        let err = Board::parse(&text, "b.toml").unwrap_err().to_string();
        assert!(err.contains("system.clock_mhz = 0.") && err.contains("between 1 and 5000"), "{err}");
        let long = format!("dsp = \"{}\"", "9".repeat(200_000));
        let err = Board::parse(&U250.replace("dsp = 12288", &long), "b.toml").unwrap_err().to_string();
        assert!(err.len() < 400 && err.lines().count() == 1, "{} bytes: {}", err.len(), &err[..200]);
    }
}

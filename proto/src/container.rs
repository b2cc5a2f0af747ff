//! The `.hass` container: magic, format version, a section table and a CRC-32 per section.
//!
//! Layout, all integers little-endian:
//!
//! ```text
//! offset  size      field
//! 0       8         MAGIC = b"HASSART\0"
//! 8       4         format version (u32), FORMAT_VERSION for files this crate writes
//! 12      4         section count n (u32)
//! 16      24 * n    section table: kind u32, crc32 u32, byte offset u64, byte length u64
//! 16+24n  4         CRC-32 of bytes [0, 16 + 24n): guards the header and the table
//! ...               section payloads, in table order, back to back, to the end of file
//! ```
//!
//! Sections: [`SectionKind::Schedule`] (a protobuf [`Schedule`]) and
//! [`SectionKind::Weights`] (raw little-endian weight values). Both must be present once.
//! Every check that can fail is a [`ContainerError`]; decoding never panics on any input.

use crate::Schedule;
use prost::Message;

/// First eight bytes of every artifact.
pub const MAGIC: [u8; 8] = *b"HASSART\0";
/// The artifact format version this crate writes.
pub const FORMAT_VERSION: u32 = 3;
/// The oldest format version this crate reads. Version 1 lacks activation thresholds;
/// its files read as version 2 files without them. Version 3 adds the fixed-point datapath;
/// files of versions 1 and 2 are float32 throughout.
pub const MIN_FORMAT_VERSION: u32 = 1;

const FIXED_HEADER_BYTES: usize = 16;
const TABLE_ENTRY_BYTES: usize = 24;
const MAX_SECTIONS: u32 = 64;

/// What a section holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum SectionKind {
    /// The protobuf-encoded [`Schedule`].
    Schedule = 1,
    /// Raw little-endian weights.
    Weights = 2,
}

impl SectionKind {
    fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Schedule),
            2 => Some(Self::Weights),
            _ => None,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Weights => "weights",
        }
    }
}

/// Why an artifact could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The file does not start with [`MAGIC`].
    #[error("not a hassc artifact (bad magic bytes); was it written by `hassc`?")]
    BadMagic,
    /// The file was written by a different format version.
    #[error("artifact format version {found} is not supported (this build reads versions 1 to {supported}); recompile the model with this hassc")]
    UnsupportedVersion {
        /// Version in the file.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// The file ends before a field it declares.
    #[error("artifact is truncated: {what} needs {needed} bytes, the file has {available}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// The header or section table does not match its checksum.
    #[error("artifact header is corrupt (checksum mismatch)")]
    HeaderChecksum,
    /// A section does not match its checksum.
    #[error("artifact {section} section is corrupt (checksum mismatch)")]
    SectionChecksum {
        /// Section name.
        section: &'static str,
    },
    /// The section table is inconsistent.
    #[error("artifact section table is invalid: {0}")]
    BadTable(String),
    /// The schedule section is not a valid protobuf message.
    #[error("artifact schedule cannot be decoded: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// Serialise a schedule and its weights into container bytes. Deterministic.
pub fn encode(schedule: &Schedule, weights: &[u8]) -> Vec<u8> {
    let schedule_bytes = schedule.encode_to_vec();
    let sections: [(SectionKind, &[u8]); 2] =
        [(SectionKind::Schedule, &schedule_bytes), (SectionKind::Weights, weights)];
    let header_len = FIXED_HEADER_BYTES + TABLE_ENTRY_BYTES * sections.len();
    let mut out = Vec::with_capacity(header_len + 4 + schedule_bytes.len() + weights.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    let mut offset = (header_len + 4) as u64;
    for (kind, payload) in &sections {
        out.extend_from_slice(&(*kind as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        offset += payload.len() as u64;
    }
    let header_crc = crc32fast::hash(&out);
    out.extend_from_slice(&header_crc.to_le_bytes());
    for (_, payload) in &sections {
        out.extend_from_slice(payload);
    }
    out
}

/// A checked container: its format version, the decoded schedule and the weights bytes.
#[derive(Debug)]
pub struct Decoded<'a> {
    /// Format version the file was written with (between [`MIN_FORMAT_VERSION`] and
    /// [`FORMAT_VERSION`]).
    pub version: u32,
    /// The SCHEDULE section.
    pub schedule: Schedule,
    /// The WEIGHTS section, which the schedule's `WeightRef`s point into.
    pub weights: &'a [u8],
}

/// Check and split container bytes into the decoded schedule and the weights bytes.
pub fn decode(bytes: &[u8]) -> Result<(Schedule, &[u8]), ContainerError> {
    open(bytes).map(|d| (d.schedule, d.weights))
}

/// Check container bytes and decode them, keeping the format version.
pub fn open(bytes: &[u8]) -> Result<Decoded<'_>, ContainerError> {
    let available = bytes.len() as u64;
    let need = |what, needed: usize| {
        if bytes.len() < needed {
            Err(ContainerError::Truncated { what, needed: needed as u64, available })
        } else {
            Ok(())
        }
    };
    need("the magic bytes", MAGIC.len())?;
    if bytes[..8] != MAGIC {
        return Err(ContainerError::BadMagic);
    }
    need("the header", FIXED_HEADER_BYTES)?;
    let version = read_u32(bytes, 8);
    if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(ContainerError::UnsupportedVersion { found: version, supported: FORMAT_VERSION });
    }
    let count = read_u32(bytes, 12);
    if count > MAX_SECTIONS {
        // A flipped bit in the count must not make us read a huge table.
        return Err(ContainerError::HeaderChecksum);
    }
    let table_end = FIXED_HEADER_BYTES + TABLE_ENTRY_BYTES * count as usize;
    need("the section table", table_end + 4)?;
    if crc32fast::hash(&bytes[..table_end]) != read_u32(bytes, table_end) {
        return Err(ContainerError::HeaderChecksum);
    }

    let mut schedule = None;
    let mut weights = None;
    let mut expected_offset = (table_end + 4) as u64;
    for i in 0..count as usize {
        let entry = FIXED_HEADER_BYTES + TABLE_ENTRY_BYTES * i;
        let kind_raw = read_u32(bytes, entry);
        let kind = SectionKind::from_u32(kind_raw)
            .ok_or_else(|| ContainerError::BadTable(format!("unknown section kind {kind_raw}")))?;
        let crc = read_u32(bytes, entry + 4);
        let offset = read_u64(bytes, entry + 8);
        let length = read_u64(bytes, entry + 16);
        if offset != expected_offset {
            return Err(ContainerError::BadTable(format!(
                "{} section starts at byte {offset}, expected {expected_offset}",
                kind.name()
            )));
        }
        let end = offset
            .checked_add(length)
            .ok_or_else(|| ContainerError::BadTable(format!("{} section length overflows", kind.name())))?;
        if end > available {
            return Err(ContainerError::Truncated { what: kind.name(), needed: end, available });
        }
        let payload = &bytes[offset as usize..end as usize];
        if crc32fast::hash(payload) != crc {
            return Err(ContainerError::SectionChecksum { section: kind.name() });
        }
        let slot = match kind {
            SectionKind::Schedule => &mut schedule,
            SectionKind::Weights => &mut weights,
        };
        if slot.replace(payload).is_some() {
            return Err(ContainerError::BadTable(format!("{} section appears twice", kind.name())));
        }
        expected_offset = end;
    }
    if expected_offset != available {
        return Err(ContainerError::BadTable(format!(
            "{} trailing bytes after the last section",
            available - expected_offset
        )));
    }
    let schedule = schedule.ok_or_else(|| ContainerError::BadTable("no schedule section".into()))?;
    let weights = weights.ok_or_else(|| ContainerError::BadTable("no weights section".into()))?;
    Ok(Decoded { version, schedule: Schedule::decode(schedule)?, weights })
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("caller checked the length"))
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("caller checked the length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let schedule = Schedule { model: "m".into(), producer: "test".into(), ..Default::default() };
        encode(&schedule, &[1, 2, 3, 4, 5, 6, 7, 8])
    }

    #[test]
    fn round_trips() {
        let bytes = sample();
        let (schedule, weights) = decode(&bytes).unwrap();
        assert_eq!(schedule.model, "m");
        assert_eq!(weights, &[1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn encoding_is_deterministic() {
        assert_eq!(sample(), sample());
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = sample();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut corrupt = bytes.clone();
                corrupt[i] ^= 1 << bit;
                assert!(decode(&corrupt).is_err(), "flip of bit {bit} in byte {i} went unnoticed");
            }
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample();
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "truncation to {len} bytes accepted");
        }
    }

    #[test]
    fn newer_version_is_named() {
        let mut bytes = sample();
        bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let err = decode(&bytes).unwrap_err();
        assert!(
            matches!(err, ContainerError::UnsupportedVersion { found, supported: FORMAT_VERSION } if found == FORMAT_VERSION + 1),
            "{err}"
        );
    }
}

//! Sparse weight encodings of the WEIGHTS section. Each tensor is stored in the smallest of:
//!
//! | encoding | bytes |
//! |---|---|
//! | `Dense` | `n` float32 values |
//! | `Bitmap` | `ceil(n / 8)` bytes of a non-zero bitmap (LSB first), then the non-zero values |
//! | `RunLength` | u32 entry count, then entries `(u8 zeros skipped, f32 value)`; a gap over 255 is bridged by entries that store an explicit 0.0 |
//! | `Csr` | per row (first dimension) a u32 start offset, plus one past the end (`rows + 1` values), then a u32 column index and an f32 value per non-zero |
//!
//! All integers and floats little-endian. Ties go to the earlier encoding in that list.
//! Decoding validates every count, offset and index: a damaged tensor is an error, never a
//! panic. [`hardware_bits`] gives the size of the same encoding at the accelerator's weight
//! width, for the memory model.

use crate::WeightEncoding;

/// Encode `values` (a tensor whose first dimension has `rows` entries) in the smallest
/// encoding.
pub fn encode(values: &[f32], rows: usize) -> (WeightEncoding, Vec<u8>) {
    let (encoding, _) = smallest(values, rows);
    let bytes = match encoding {
        WeightEncoding::Dense => dense(values),
        WeightEncoding::Bitmap => bitmap(values),
        WeightEncoding::RunLength => run_length(values),
        WeightEncoding::Csr => csr(values, rows),
    };
    (encoding, bytes)
}

/// The encoding [`encode`] writes `values` in and its length in bytes, worked out without
/// writing any: the memory model asks this of a layer's weights at every move of a search
/// (writing all four encodings to compare them was most of a move's statistics).
pub fn smallest(values: &[f32], rows: usize) -> (WeightEncoding, usize) {
    // Every sparse encoding spends at least 4 bytes per non-zero plus n / 8 bytes (bitmap)
    // or more: with fewer than 1/32 zeros, dense wins without trying the others.
    let n = values.len();
    let nnz = non_zeros(values);
    if nnz * 32 > n * 31 {
        return (WeightEncoding::Dense, 4 * n);
    }
    lengths(values, rows, nnz).into_iter().min_by_key(|&(_, len)| len).expect("four candidates")
}

/// Each encoding's length in bytes for `values` (`nnz` of them non-zero), in the order
/// ties are broken.
fn lengths(values: &[f32], rows: usize, nnz: usize) -> [(WeightEncoding, usize); 4] {
    let n = values.len();
    let rows = rows.max(1);
    // The rows' values only (a length that is not a multiple of `rows` leaves the rest out).
    let whole = rows * (n / rows);
    let in_rows = if whole == n { nnz } else { non_zeros(&values[..whole]) };
    [
        (WeightEncoding::Dense, 4 * n),
        (WeightEncoding::Bitmap, n.div_ceil(8) + 4 * nnz),
        (WeightEncoding::RunLength, 4 + 5 * run_length_entries(values)),
        (WeightEncoding::Csr, 4 * (rows + 1) + 8 * in_rows),
    ]
}

fn non_zeros(values: &[f32]) -> usize {
    values.iter().filter(|v| **v != 0.0).count()
}

/// Entries of the run-length encoding: one per non-zero, and one per zero that ends a gap
/// of 255 zeros.
fn run_length_entries(values: &[f32]) -> usize {
    let (mut entries, mut gap) = (0usize, 0usize);
    for &v in values {
        if v == 0.0 && gap < 255 {
            gap += 1;
        } else {
            entries += 1;
            gap = 0;
        }
    }
    entries
}

fn put_f32(out: &mut Vec<u8>, v: f32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn dense(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn bitmap(values: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; values.len().div_ceil(8)];
    for (i, v) in values.iter().enumerate() {
        if *v != 0.0 {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    for v in values.iter().filter(|v| **v != 0.0) {
        put_f32(&mut out, *v);
    }
    out
}

fn run_length(values: &[f32]) -> Vec<u8> {
    let mut entries: Vec<(u8, f32)> = Vec::new();
    let mut gap = 0usize;
    for &v in values {
        if v == 0.0 && gap < 255 {
            gap += 1;
            continue;
        }
        // Either a non-zero, or a zero that ends a gap of 255 (stored explicitly).
        entries.push((gap as u8, v));
        gap = 0;
    }
    let mut out = (entries.len() as u32).to_le_bytes().to_vec();
    for (skip, v) in entries {
        out.push(skip);
        put_f32(&mut out, v);
    }
    out
}

fn csr(values: &[f32], rows: usize) -> Vec<u8> {
    let rows = rows.max(1);
    let cols = values.len() / rows;
    let mut starts = Vec::with_capacity(rows + 1);
    let (mut idx, mut vals) = (Vec::new(), Vec::new());
    for r in 0..rows {
        starts.push(idx.len() as u32);
        for (c, &v) in values[r * cols..(r + 1) * cols].iter().enumerate() {
            if v != 0.0 {
                idx.push(c as u32);
                vals.push(v);
            }
        }
    }
    starts.push(idx.len() as u32);
    let mut out = Vec::with_capacity(4 * (starts.len() + 2 * idx.len()));
    starts.iter().chain(&idx).for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
    vals.iter().for_each(|v| put_f32(&mut out, *v));
    out
}

/// Why a tensor could not be decoded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("weight tensor is malformed: {0}")]
pub struct DecodeError(pub String);

pub(crate) fn err<T>(msg: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(msg.into()))
}

fn f32_at(bytes: &[u8], at: usize) -> Option<f32> {
    bytes.get(at..at + 4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

pub(crate) fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    bytes.get(at..at.checked_add(4)?).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The CSR layout's structure at the start of `bytes` (per row a u32 start offset, plus one
/// past the end, then a u32 column index per stored value), every offset and index checked:
/// the flat index of each stored value in order, and where the values begin. Float and
/// integer tensors share it ([`crate::packed`]); only how values are stored differs.
pub(crate) fn csr_positions(bytes: &[u8], count: usize, rows: usize) -> Result<(Vec<usize>, usize), DecodeError> {
    let rows = rows.max(1);
    if !count.is_multiple_of(rows) {
        return err(format!("{count} values do not split into {rows} rows"));
    }
    let cols = count / rows;
    let starts: Option<Vec<u32>> = (0..=rows).map(|r| u32_at(bytes, 4 * r)).collect();
    let Some(starts) = starts else { return err("row offsets are truncated") };
    let nnz = starts[rows] as usize;
    let columns_at = 4 * (rows + 1);
    let values_at = columns_at + 4 * nnz;
    if starts[0] != 0 || starts.windows(2).any(|w| w[0] > w[1]) || bytes.len() < values_at {
        return err("row offsets are inconsistent");
    }
    let mut positions = Vec::with_capacity(nnz);
    for r in 0..rows {
        for k in starts[r] as usize..starts[r + 1] as usize {
            let c = u32_at(bytes, columns_at + 4 * k).expect("length checked") as usize;
            if c >= cols {
                return err(format!("column {c} out of {cols}"));
            }
            positions.push(r * cols + c);
        }
    }
    Ok((positions, values_at))
}

/// Decode `bytes` (exactly the tensor's bytes) into `count` values.
pub fn decode(encoding: WeightEncoding, bytes: &[u8], count: usize, rows: usize) -> Result<Vec<f32>, DecodeError> {
    let mut out = vec![0.0f32; count];
    match encoding {
        WeightEncoding::Dense => {
            if bytes.len() != count * 4 {
                return err(format!("dense tensor of {count} values has {} bytes", bytes.len()));
            }
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        WeightEncoding::Bitmap => {
            let map = count.div_ceil(8);
            let Some(mask) = bytes.get(..map) else { return err("bitmap is truncated") };
            let nnz: usize = mask.iter().map(|b| b.count_ones() as usize).sum();
            if bytes.len() != map + 4 * nnz || (!count.is_multiple_of(8) && mask[map - 1] >> (count % 8) != 0) {
                return err(format!("bitmap with {nnz} non-zeros does not match {} bytes", bytes.len()));
            }
            let mut k = map;
            for (i, o) in out.iter_mut().enumerate() {
                if mask[i / 8] >> (i % 8) & 1 == 1 {
                    *o = f32_at(bytes, k).expect("length checked");
                    k += 4;
                }
            }
        }
        WeightEncoding::RunLength => {
            let Some(n) = u32_at(bytes, 0) else { return err("run-length count is truncated") };
            if bytes.len() != 4 + 5 * n as usize {
                return err(format!("run-length tensor with {n} entries has {} bytes", bytes.len()));
            }
            let mut pos = 0usize;
            for e in 0..n as usize {
                let at = 4 + 5 * e;
                pos += bytes[at] as usize;
                if pos >= count {
                    return err(format!("run-length entry {e} lands past the {count} values"));
                }
                out[pos] = f32_at(bytes, at + 1).expect("length checked");
                pos += 1;
            }
        }
        WeightEncoding::Csr => {
            let (positions, values_at) = csr_positions(bytes, count, rows)?;
            if bytes.len() != values_at + 4 * positions.len() {
                return err("row offsets are inconsistent");
            }
            for (k, &at) in positions.iter().enumerate() {
                out[at] = f32_at(bytes, values_at + 4 * k).expect("length checked");
            }
        }
    }
    Ok(out)
}

/// Bits the tensor takes on the accelerator in `encoding` with `weight_bits`-wide values
/// (run lengths in 8 bits, CSR column indices in just enough bits for a row, row offsets
/// in 32 bits).
pub fn hardware_bits(values: &[f32], rows: usize, encoding: WeightEncoding, weight_bits: u64) -> u64 {
    let n = values.len() as u64;
    let nnz = values.iter().filter(|v| **v != 0.0).count() as u64;
    match encoding {
        WeightEncoding::Dense => n * weight_bits,
        WeightEncoding::Bitmap => n + nnz * weight_bits,
        WeightEncoding::RunLength => run_length_entries(values) as u64 * (8 + weight_bits),
        WeightEncoding::Csr => {
            let cols = (n / rows.max(1) as u64).max(1);
            let index_bits = 64 - (cols - 1).leading_zeros() as u64;
            (rows as u64 + 1) * 32 + nnz * (index_bits.max(1) + weight_bits)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sparse_vec() -> impl Strategy<Value = (Vec<f32>, usize)> {
        (1usize..8, 1usize..40).prop_flat_map(|(rows, cols)| {
            (prop::collection::vec(prop_oneof![3 => Just(0.0f32), 1 => -100.0f32..100.0], rows * cols), Just(rows))
        })
    }

    proptest! {
        #[test]
        fn every_encoding_round_trips((values, rows) in sparse_vec()) {
            for enc in [WeightEncoding::Dense, WeightEncoding::Bitmap, WeightEncoding::RunLength, WeightEncoding::Csr] {
                let bytes = match enc {
                    WeightEncoding::Dense => dense(&values),
                    WeightEncoding::Bitmap => bitmap(&values),
                    WeightEncoding::RunLength => run_length(&values),
                    WeightEncoding::Csr => csr(&values, rows),
                };
                prop_assert_eq!(decode(enc, &bytes, values.len(), rows).unwrap(), values.clone());
            }
            let (enc, bytes) = encode(&values, rows);
            prop_assert!(bytes.len() <= values.len() * 4);
            prop_assert_eq!(decode(enc, &bytes, values.len(), rows).unwrap(), values);
        }

        /// The lengths worked out without writing are the encodings' lengths, and the
        /// encoding chosen is the first of the shortest.
        #[test]
        fn lengths_are_the_written_encodings((values, rows) in sparse_vec()) {
            let written = [dense(&values).len(), bitmap(&values).len(), run_length(&values).len(), csr(&values, rows).len()];
            let worked_out = lengths(&values, rows, non_zeros(&values)).map(|(_, len)| len);
            prop_assert_eq!(worked_out, written);
            let (enc, bytes) = encode(&values, rows);
            let first_shortest = (0..4).find(|&i| written[i] == *written.iter().min().unwrap()).unwrap();
            let all = [WeightEncoding::Dense, WeightEncoding::Bitmap, WeightEncoding::RunLength, WeightEncoding::Csr];
            if non_zeros(&values) * 32 <= values.len() * 31 {
                prop_assert_eq!(enc, all[first_shortest]);
            }
            prop_assert_eq!(smallest(&values, rows), (enc, bytes.len()));
        }

        #[test]
        fn damaged_tensors_never_panic((values, rows) in sparse_vec(), flip in any::<prop::sample::Index>(), cut in any::<prop::sample::Index>()) {
            let (enc, mut bytes) = encode(&values, rows);
            if !bytes.is_empty() {
                let i = flip.index(bytes.len());
                bytes[i] ^= 0xA5;
                let _ = decode(enc, &bytes, values.len(), rows);
                let n = cut.index(bytes.len());
                let _ = decode(enc, &bytes[..n], values.len(), rows);
            }
        }
    }

    #[test]
    fn long_zero_runs_are_bridged() {
        let mut values = vec![0.0f32; 600];
        values[599] = 2.5;
        let bytes = run_length(&values);
        // 599 zeros: two explicit zeros after 255-gaps (positions 255 and 511), then 87 more.
        assert_eq!(u32::from_le_bytes(bytes[..4].try_into().unwrap()), 3);
        assert_eq!(decode(WeightEncoding::RunLength, &bytes, 600, 1).unwrap(), values);
        assert_eq!(lengths(&values, 1, 1)[2], (WeightEncoding::RunLength, bytes.len()));
    }

    #[test]
    fn seventy_percent_sparse_weights_shrink_by_three() {
        let values: Vec<f32> = (0..1000).map(|i| if i % 10 < 7 { 0.0 } else { 1.0 + i as f32 }).collect();
        let (enc, bytes) = encode(&values, 10);
        assert_eq!(enc, WeightEncoding::Bitmap);
        assert_eq!(bytes.len(), 125 + 300 * 4);
        assert_eq!(hardware_bits(&values, 10, enc, 16), 1000 + 300 * 16);
    }
}

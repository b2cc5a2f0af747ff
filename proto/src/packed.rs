//! Integer tensors of the fixed-point datapath (format 3), packed at their width: weights at
//! 2 to 16 bits, biases at their accumulator's (up to 64).
//! The same four encodings as float tensors ([`crate::encoding`]), with every value a
//! `bits`-wide two's-complement integer in one LSB-first bit stream at the tensor's end,
//! padded to a byte:
//!
//! | encoding | bytes |
//! |---|---|
//! | `Dense` | the `n` values packed |
//! | `Bitmap` | `ceil(n / 8)` bytes of a non-zero bitmap (LSB first), then the non-zero values packed |
//! | `RunLength` | u32 entry count `e`, `e` bytes of zeros skipped before each entry, then the `e` entry values packed (a gap over 255 is bridged by an entry holding 0) |
//! | `Csr` | per row (first dimension) a u32 start offset, plus one past the end, then a u32 column index per non-zero, then the non-zero values packed |
//!
//! Integers little-endian; ties go to the earlier encoding. Decoding validates every count,
//! offset, index and the padding: a damaged tensor is an error, never a panic.

use crate::encoding::{csr_positions, err, u32_at, DecodeError};
use crate::WeightEncoding;

/// Bytes that `count` values of `bits` take packed.
pub fn packed_len(count: usize, bits: u32) -> usize {
    (count * bits as usize).div_ceil(8)
}

/// Pack `values` (each within `bits`, two's complement; 2 to 64 bits) LSB first.
pub fn pack(values: &[i64], bits: u32) -> Vec<u8> {
    let len = packed_len(values.len(), bits);
    let mut out = Vec::with_capacity(len);
    let mask = u64::MAX >> (64 - bits);
    // Bits not yet written, in a window wide enough for 63 of them and one more value;
    // whole 64-bit words go out at once (a loop over each value's bytes had made packing
    // most of a ResNet-18 compile's artifact writing).
    let (mut pending, mut held) = (0u128, 0u32);
    for &v in values {
        pending |= u128::from((v as u64) & mask) << held;
        held += bits;
        if held >= 64 {
            out.extend_from_slice(&(pending as u64).to_le_bytes());
            pending >>= 64;
            held -= 64;
        }
    }
    out.extend_from_slice(&pending.to_le_bytes()[..held.div_ceil(8) as usize]);
    debug_assert_eq!(out.len(), len);
    out
}

/// Unpack `count` values of `bits` from exactly [`packed_len`] bytes (padding must be 0).
pub fn unpack(bytes: &[u8], count: usize, bits: u32) -> Result<Vec<i64>, DecodeError> {
    if bytes.len() != packed_len(count, bits) {
        return err(format!(
            "{count} values of {bits} bits take {} bytes, not {}",
            packed_len(count, bits),
            bytes.len()
        ));
    }
    let used = count * bits as usize;
    if !used.is_multiple_of(8) && bytes[used / 8] >> (used % 8) != 0 {
        return err("packed values have non-zero padding");
    }
    let mask = u64::MAX >> (64 - bits);
    let mut out = Vec::with_capacity(count);
    // A window of bits read ahead, refilled a 64-bit word at a time while whole words are
    // left (a byte at a time at the end).
    let (mut window, mut held, mut next) = (0u128, 0u32, 0usize);
    for _ in 0..count {
        if held < bits {
            if let Some(word) = bytes.get(next..next + 8) {
                window |= u128::from(u64::from_le_bytes(word.try_into().expect("8 bytes"))) << held;
                (held, next) = (held + 64, next + 8);
            } else {
                while held < bits {
                    window |= u128::from(bytes[next]) << held;
                    (held, next) = (held + 8, next + 1);
                }
            }
        }
        let word = (window as u64) & mask;
        window >>= bits;
        held -= bits;
        // Sign-extend.
        out.push(((word << (64 - bits)) as i64) >> (64 - bits));
    }
    Ok(out)
}

/// Encode `values` (first dimension `rows`, each within `bits`) in the smallest encoding.
pub fn encode(values: &[i64], rows: usize, bits: u32) -> (WeightEncoding, Vec<u8>) {
    // Each encoding's length is worked out first, and only the shortest is written.
    let encoding = encoded_lens(values, rows, bits)
        .into_iter()
        .min_by_key(|&(_, len)| len)
        .map(|(encoding, _)| encoding)
        .expect("four candidates");
    let bytes = match encoding {
        WeightEncoding::Dense => pack(values, bits),
        WeightEncoding::Bitmap => bitmap(values, bits),
        WeightEncoding::RunLength => run_length(values, bits),
        WeightEncoding::Csr => csr(values, rows, bits),
    };
    (encoding, bytes)
}

/// The bytes each encoding of `values` takes, in the order ties are broken.
fn encoded_lens(values: &[i64], rows: usize, bits: u32) -> [(WeightEncoding, usize); 4] {
    let nonzero = values.iter().filter(|v| **v != 0).count();
    let entries = run_length_entries(values).count();
    let in_rows = csr_rows(values, rows).flatten().filter(|v| **v != 0).count();
    [
        (WeightEncoding::Dense, packed_len(values.len(), bits)),
        (WeightEncoding::Bitmap, values.len().div_ceil(8) + packed_len(nonzero, bits)),
        (WeightEncoding::RunLength, 4 + entries + packed_len(entries, bits)),
        (WeightEncoding::Csr, 4 * (rows.max(1) + 1 + in_rows) + packed_len(in_rows, bits)),
    ]
}

/// Run-length entries of `values`, as (zeros skipped before it, value): every non-zero, and
/// a zero wherever 255 zeros have gone by since the last entry.
fn run_length_entries(values: &[i64]) -> impl Iterator<Item = (u8, i64)> + '_ {
    let mut gap = 0u8;
    values.iter().filter_map(move |&v| {
        if v == 0 && gap < u8::MAX {
            gap += 1;
            return None;
        }
        Some((std::mem::take(&mut gap), v))
    })
}

/// The rows [`csr`] stores: `rows` (at least one) whole rows of `values.len() / rows`.
fn csr_rows(values: &[i64], rows: usize) -> impl Iterator<Item = &[i64]> {
    let rows = rows.max(1);
    values.chunks((values.len() / rows).max(1)).take(rows)
}

fn bitmap(values: &[i64], bits: u32) -> Vec<u8> {
    let mut out = vec![0u8; values.len().div_ceil(8)];
    for (i, v) in values.iter().enumerate() {
        if *v != 0 {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    let nonzero: Vec<i64> = values.iter().copied().filter(|v| *v != 0).collect();
    out.extend(pack(&nonzero, bits));
    out
}

fn run_length(values: &[i64], bits: u32) -> Vec<u8> {
    let (skips, stored): (Vec<u8>, Vec<i64>) = run_length_entries(values).unzip();
    let mut out = (skips.len() as u32).to_le_bytes().to_vec();
    out.extend(skips);
    out.extend(pack(&stored, bits));
    out
}

fn csr(values: &[i64], rows: usize, bits: u32) -> Vec<u8> {
    let rows = rows.max(1);
    let (mut starts, mut columns, mut stored) = (Vec::with_capacity(rows + 1), Vec::new(), Vec::new());
    for row in csr_rows(values, rows) {
        starts.push(columns.len() as u32);
        for (c, &v) in row.iter().enumerate().filter(|(_, v)| **v != 0) {
            columns.push(c as u32);
            stored.push(v);
        }
    }
    starts.resize(rows, columns.len() as u32);
    starts.push(columns.len() as u32);
    let mut out: Vec<u8> = starts.iter().chain(&columns).flat_map(|x| x.to_le_bytes()).collect();
    out.extend(pack(&stored, bits));
    out
}

/// Decode `bytes` (exactly the tensor's) into `count` values of `bits` (2 to 64).
pub fn decode(
    encoding: WeightEncoding,
    bytes: &[u8],
    count: usize,
    rows: usize,
    bits: u32,
) -> Result<Vec<i64>, DecodeError> {
    if !(crate::fixed::MIN_DATA_BITS..=64).contains(&bits) {
        return err(format!("{bits}-bit values are outside 2..=64"));
    }
    match encoding {
        WeightEncoding::Dense => unpack(bytes, count, bits),
        WeightEncoding::Bitmap => {
            let map = count.div_ceil(8);
            let Some(mask) = bytes.get(..map) else { return err("bitmap is truncated") };
            if !count.is_multiple_of(8) && mask[map - 1] >> (count % 8) != 0 {
                return err("bitmap marks values past the tensor's end");
            }
            let nnz: usize = mask.iter().map(|b| b.count_ones() as usize).sum();
            let mut stored = unpack(&bytes[map..], nnz, bits)?.into_iter();
            let mut out = vec![0; count];
            for (i, o) in out.iter_mut().enumerate().filter(|(i, _)| mask[i / 8] >> (i % 8) & 1 == 1) {
                *o = stored.next().filter(|v| *v != 0).ok_or_else(|| DecodeError(format!("bitmap value {i} is 0")))?;
            }
            Ok(out)
        }
        WeightEncoding::RunLength => {
            let Some(n) = u32_at(bytes, 0) else { return err("run-length count is truncated") };
            let Some(skips) = bytes.get(4..4 + n as usize) else { return err("run-length skips are truncated") };
            let stored = unpack(&bytes[4 + n as usize..], n as usize, bits)?;
            let (mut out, mut pos) = (vec![0; count], 0usize);
            for (e, (&skip, v)) in skips.iter().zip(stored).enumerate() {
                pos += skip as usize;
                if pos >= count {
                    return err(format!("run-length entry {e} lands past the {count} values"));
                }
                out[pos] = v;
                pos += 1;
            }
            Ok(out)
        }
        WeightEncoding::Csr => {
            let (positions, values_at) = csr_positions(bytes, count, rows)?;
            let mut out = vec![0; count];
            for (&at, value) in positions.iter().zip(unpack(&bytes[values_at..], positions.len(), bits)?) {
                out[at] = value;
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sparse_ints() -> impl Strategy<Value = (Vec<i64>, usize, u32)> {
        (1usize..8, 1usize..40, prop_oneof![2u32..=16, Just(47u32), Just(64u32)]).prop_flat_map(|(rows, cols, bits)| {
            let (lo, hi) = (i64::MIN >> (64 - bits), i64::MAX >> (64 - bits));
            let value = prop_oneof![3 => Just(0i64), 1 => lo..=hi];
            (prop::collection::vec(value, rows * cols), Just(rows), Just(bits))
        })
    }

    proptest! {
        #[test]
        fn every_encoding_round_trips((values, rows, bits) in sparse_ints()) {
            for (enc, bytes) in [
                (WeightEncoding::Dense, pack(&values, bits)),
                (WeightEncoding::Bitmap, bitmap(&values, bits)),
                (WeightEncoding::RunLength, run_length(&values, bits)),
                (WeightEncoding::Csr, csr(&values, rows, bits)),
            ] {
                prop_assert_eq!(decode(enc, &bytes, values.len(), rows, bits).unwrap(), values.clone(), "{:?}", enc);
            }
            let (enc, bytes) = encode(&values, rows, bits);
            prop_assert!(bytes.len() <= packed_len(values.len(), bits));
            prop_assert_eq!(decode(enc, &bytes, values.len(), rows, bits).unwrap(), values);
        }

        #[test]
        fn damaged_tensors_never_panic((values, rows, bits) in sparse_ints(), flip in any::<prop::sample::Index>(), cut in any::<prop::sample::Index>()) {
            let (enc, mut bytes) = encode(&values, rows, bits);
            if !bytes.is_empty() {
                let i = flip.index(bytes.len());
                bytes[i] ^= 0xA5;
                let _ = decode(enc, &bytes, values.len(), rows, bits);
                let n = cut.index(bytes.len());
                let _ = decode(enc, &bytes[..n], values.len(), rows, bits);
            }
        }
    }

    /// Packing a bit at a time, as the format defines it: the reference the word-wide
    /// loops are checked against.
    fn pack_bit_by_bit(values: &[i64], bits: u32) -> Vec<u8> {
        let mut out = vec![0u8; packed_len(values.len(), bits)];
        for (i, &v) in values.iter().enumerate() {
            for b in 0..bits as usize {
                let at = i * bits as usize + b;
                out[at / 8] |= (((v as u64) >> b & 1) as u8) << (at % 8);
            }
        }
        out
    }

    proptest! {
        #[test]
        fn packing_is_the_bit_stream_and_encode_writes_the_shortest((values, rows, bits) in sparse_ints()) {
            let packed = pack(&values, bits);
            prop_assert_eq!(&packed, &pack_bit_by_bit(&values, bits));
            prop_assert_eq!(unpack(&packed, values.len(), bits).unwrap(), values.clone());
            let all = [
                (WeightEncoding::Dense, packed),
                (WeightEncoding::Bitmap, bitmap(&values, bits)),
                (WeightEncoding::RunLength, run_length(&values, bits)),
                (WeightEncoding::Csr, csr(&values, rows, bits)),
            ];
            for ((encoding, bytes), (same, len)) in all.iter().zip(encoded_lens(&values, rows, bits)) {
                prop_assert_eq!((*encoding, bytes.len()), (same, len));
            }
            let shortest = all.into_iter().min_by_key(|(_, b)| b.len()).unwrap();
            prop_assert_eq!(encode(&values, rows, bits), shortest);
        }
    }

    #[test]
    fn long_zero_runs_take_bridging_entries() {
        // 600 zeros, then a 3: entries at the 256th and 512th zero, then the 3.
        let mut values = vec![0i64; 601];
        values[600] = 3;
        let bytes = run_length(&values, 4);
        assert_eq!(u32_at(&bytes, 0), Some(3));
        assert_eq!(encoded_lens(&values, 1, 4)[2], (WeightEncoding::RunLength, bytes.len()));
        assert_eq!(decode(WeightEncoding::RunLength, &bytes, 601, 1, 4).unwrap(), values);
    }

    #[test]
    fn values_pack_at_their_width() {
        assert_eq!(pack(&[-1, 1, -8, 7], 4), [0x1f, 0x78]);
        assert_eq!(unpack(&[0x1f, 0x78], 4, 4).unwrap(), [-1, 1, -8, 7]);
        assert_eq!(pack(&[-3, 1, 0], 3), [0b0000_1101, 0]);
        assert_eq!(pack(&[-32768, 32767], 16), [0x00, 0x80, 0xff, 0x7f]);
        assert!(unpack(&[0x0d, 0x02], 3, 3).is_err(), "padding bits must be zero");
        // 8-bit dense weights are a quarter of float32.
        assert_eq!(encode(&[5; 100], 10, 8).1.len(), 100);
        assert_eq!(unpack(&pack(&[i64::MIN, -1, i64::MAX], 64), 3, 64).unwrap(), [i64::MIN, -1, i64::MAX]);
    }
}

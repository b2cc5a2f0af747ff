//! `.npy` files in and out. Writing them to disk goes through [`crate::output`].

use crate::{RuntimeError, Tensor};
use npyz::WriterBuilder;
use std::path::Path;

/// The whole of a regular file (not a device or a FIFO, which could stream for ever).
fn read_regular(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    std::fs::read(path).map_err(|e| e.to_string())
}

/// Check an `.npy` file's framing before `npyz` parses it: the header length must fit the
/// file (a version-2 header may claim 4 GiB), and the data the header's shape and dtype
/// declare must be exactly what follows it (a shape whose product wraps, or a huge one, is
/// refused before anything is allocated). Returns the parsed file.
fn checked_header(bytes: &[u8]) -> Result<npyz::NpyFile<&[u8]>, String> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < 10 || !bytes.starts_with(MAGIC) {
        return Err("not a .npy file (no NUMPY magic)".into());
    }
    let (header_len, preamble) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let data_start = preamble + header_len;
    // npyz parses the header's Python literal with a backtracking grammar that takes
    // exponential time on deep nesting (found by fuzzing: a header of 100 `{` hangs). A
    // numpy header nests two deep (a dict holding a shape tuple).
    let mut depth = 0usize;
    for &b in &bytes[preamble.min(bytes.len())..data_start.min(bytes.len())] {
        match b {
            b'{' | b'(' | b'[' => depth += 1,
            b'}' | b')' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > 4 {
            return Err("the header nests too deeply to be a numpy header".into());
        }
    }
    if data_start > bytes.len() {
        return Err(format!(
            "header of {header_len} bytes, but the file has only {} after the preamble",
            bytes.len() - preamble
        ));
    }
    let npy = npyz::NpyFile::new(bytes).map_err(|e| format!("not a valid .npy file ({e})"))?;
    let item = npy.dtype().num_bytes().ok_or("unsupported dtype (record or object arrays)")?;
    let values = npy.shape().iter().try_fold(1u64, |n, &d| n.checked_mul(d));
    let need = values.and_then(|n| n.checked_mul(item as u64));
    let have = (bytes.len() - data_start) as u64;
    if need != Some(have) {
        return Err(format!(
            "shape {:?} of {item}-byte values needs {} data bytes, the file holds {have}",
            npy.shape(),
            need.map_or("more than 2^64".to_string(), |n| n.to_string())
        ));
    }
    Ok(npy)
}

/// Read an `.npy` file of float32 (or float64, converted) values as a [`Tensor`]. Every
/// value must be finite: the accelerator has no NaN or infinity, so an input that holds one
/// is refused, naming the image (the first index) and the position.
pub fn read_f32(path: &Path) -> Result<Tensor, RuntimeError> {
    let fail = |why: String| RuntimeError::Input(format!("cannot read {}: {why}", path.display()));
    let bytes = read_regular(path).map_err(fail)?;
    let npy = checked_header(&bytes).map_err(fail)?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    if npy.order() == npyz::Order::Fortran {
        return Err(fail("Fortran-ordered arrays are not supported; save a C-ordered array".into()));
    }
    let descr = npy.dtype().descr();
    // Either byte order: npyz converts.
    let data = if descr.ends_with("f4'") {
        npy.into_vec::<f32>().map_err(|e| fail(e.to_string()))?
    } else if descr.ends_with("f8'") {
        npy.into_vec::<f64>().map_err(|e| fail(e.to_string()))?.into_iter().map(|x| x as f32).collect()
    } else {
        return Err(fail(format!("expected float32 or float64 values, found dtype {descr}")));
    };
    if let Some(at) = data.iter().position(|v| !v.is_finite()) {
        let per_image: usize = shape.get(1..).map_or(1, |s| s.iter().product()).max(1);
        return Err(fail(format!(
            "image {} holds {} at position {}; the accelerator has no NaN or infinity, clean the input first",
            at / per_image,
            data[at],
            at % per_image
        )));
    }
    Tensor::new(shape, data).map_err(|e| fail(e.to_string()))
}

/// Read an `.npy` file of class labels: one integer per image (int64, int32 or uint8), as a
/// flat vector.
pub fn read_labels(path: &Path) -> Result<Vec<i64>, RuntimeError> {
    let fail = |why: String| RuntimeError::Input(format!("cannot read labels {}: {why}", path.display()));
    let bytes = read_regular(path).map_err(fail)?;
    let npy = checked_header(&bytes).map_err(fail)?;
    if npy.shape().len() != 1 {
        return Err(fail(format!("expected a 1-D array of class indices, found shape {:?}", npy.shape())));
    }
    let descr = npy.dtype().descr();
    let wrong = |e: std::io::Error| fail(e.to_string());
    if descr.ends_with("i8'") {
        npy.into_vec::<i64>().map_err(wrong)
    } else if descr.ends_with("i4'") {
        npy.into_vec::<i32>().map(|v| v.into_iter().map(i64::from).collect()).map_err(wrong)
    } else if descr.ends_with("u1'") {
        npy.into_vec::<u8>().map(|v| v.into_iter().map(i64::from).collect()).map_err(wrong)
    } else {
        Err(fail(format!("expected integer class indices (int64, int32 or uint8), found dtype {descr}")))
    }
}

/// Encode a tensor as `.npy` bytes (float32, C order).
pub fn to_npy_bytes(tensor: &Tensor) -> Vec<u8> {
    let shape: Vec<u64> = tensor.shape().iter().map(|&d| d as u64).collect();
    let mut out = Vec::with_capacity(128 + tensor.data().len() * 4);
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(&mut out)
        .begin_nd()
        .expect("writing to memory cannot fail");
    writer.extend(tensor.data().iter().copied()).expect("writing to memory cannot fail");
    writer.finish().expect("writing to memory cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::write_atomic;

    #[test]
    fn round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        let t = Tensor::new(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5]).unwrap();
        write_atomic(&path, &to_npy_bytes(&t)).unwrap();
        assert_eq!(read_f32(&path).unwrap(), t);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary file left behind");
    }

    #[test]
    fn integer_arrays_are_refused_with_their_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.npy");
        let mut bytes = Vec::new();
        let mut w = npyz::WriteOptions::new().default_dtype().shape(&[2]).writer(&mut bytes).begin_nd().unwrap();
        w.extend([1i64, 2]).unwrap();
        w.finish().unwrap();
        std::fs::write(&path, bytes).unwrap();
        let err = read_f32(&path).unwrap_err().to_string();
        assert!(err.contains("found dtype '<i8'"), "{err}");
    }

    /// A version-1 `.npy` header for `descr` and `shape`, padded as numpy pads it.
    fn header(descr: &str, shape: &str) -> Vec<u8> {
        let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + dict.len() + 1) % 64 != 0 {
            dict.push(' ');
        }
        dict.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((dict.len() as u16).to_le_bytes());
        out.extend(dict.as_bytes());
        out
    }

    #[test]
    fn headers_that_lie_are_refused_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        let read = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            read_f32(&path).unwrap_err().to_string()
        };
        // A shape whose element count wraps u64, and one far larger than the file.
        let mut wraps = header("<f4", "(4294967296, 4294967296, 2)");
        wraps.extend([0u8; 8]);
        assert!(read(&wraps).contains("needs more than 2^64 data bytes"), "{}", read(&wraps));
        let mut huge = header("<f4", "(1000000000, 1000)");
        huge.extend([0u8; 8]);
        assert!(read(&huge).contains("the file holds 8"), "{}", read(&huge));
        // A version-2 header claiming 4 GiB.
        let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
        v2.extend(u32::MAX.to_le_bytes());
        v2.extend([b' '; 16]);
        assert!(read(&v2).contains("header of 4294967295 bytes"), "{}", read(&v2));
        assert!(read(b"\x93NUMPY").contains("not a .npy file"));
        assert!(read(b"\x93NUMPY\x07\x00\x10\x00{}").contains("unsupported .npy version 7"));
        let err = read_labels(&dir.path().join("missing.npy")).unwrap_err().to_string();
        assert!(err.contains("cannot read labels"), "{err}");
        let err = read_f32(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn deeply_nested_headers_are_refused_at_once() {
        // Found by `scripts/fuzz.sh npy`: nested braces made the header parser backtrack for
        // ever. The file is kept as a regression case.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/fuzz/npy-deep-nesting.npy");
        let err = read_f32(&path).unwrap_err().to_string();
        assert!(err.contains("nests too deeply"), "{err}");
        assert!(read_labels(&path).is_err());
    }

    #[test]
    fn non_finite_inputs_are_refused_naming_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        let mut values = vec![0.5f32; 2 * 3 * 2];
        values[9] = f32::NAN;
        write_atomic(&path, &to_npy_bytes(&Tensor::new(vec![2, 3, 2], values).unwrap())).unwrap();
        let err = read_f32(&path).unwrap_err().to_string();
        assert!(err.contains("image 1 holds NaN at position 3"), "{err}");
    }
}

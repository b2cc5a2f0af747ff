//! `.npy` files in and out, and atomic file writes (temporary file, then rename), so that
//! a failed run never leaves a partial output behind.

use crate::{RuntimeError, Tensor};
use npyz::WriterBuilder;
use std::io::Write;
use std::path::Path;

/// Read an `.npy` file of float32 (or float64, converted) values as a [`Tensor`].
pub fn read_f32(path: &Path) -> Result<Tensor, RuntimeError> {
    let fail = |why: String| RuntimeError::Input(format!("cannot read {}: {why}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| fail(format!("not a valid .npy file ({e})")))?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    if npy.order() == npyz::Order::Fortran {
        return Err(fail("Fortran-ordered arrays are not supported; save a C-ordered array".into()));
    }
    let dtype = npy.dtype();
    let data = match npy.into_vec::<f32>() {
        Ok(v) => v,
        Err(_) => npyz::NpyFile::new(&bytes[..])
            .and_then(|f| f.into_vec::<f64>())
            .map(|v| v.into_iter().map(|x| x as f32).collect())
            .map_err(|_| fail(format!("expected float32 values, found dtype {}", dtype.descr())))?,
    };
    Tensor::new(shape, data).map_err(|e| fail(e.to_string()))
}

/// Read an `.npy` file of class labels: one integer per image (int64, int32 or uint8), as a
/// flat vector.
pub fn read_labels(path: &Path) -> Result<Vec<i64>, RuntimeError> {
    let fail = |why: String| RuntimeError::Input(format!("cannot read labels {}: {why}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| fail(format!("not a valid .npy file ({e})")))?;
    if npy.shape().len() != 1 {
        return Err(fail(format!("expected a 1-D array of class indices, found shape {:?}", npy.shape())));
    }
    let dtype = npy.dtype().descr();
    let open = || npyz::NpyFile::new(&bytes[..]).expect("parsed above");
    open()
        .into_vec::<i64>()
        .or_else(|_| open().into_vec::<i32>().map(|v| v.into_iter().map(i64::from).collect()))
        .or_else(|_| open().into_vec::<u8>().map(|v| v.into_iter().map(i64::from).collect()))
        .map_err(|_| fail(format!("expected integer class indices (int64, int32 or uint8), found dtype {dtype}")))
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

/// Write `bytes` to `path` through a temporary file in the same directory, then rename,
/// so readers see either the old file or the whole new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".hass-tmp");
    // Temporary files are private (0600); the result should be readable like any output.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let mut tmp = builder.tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(err.contains("<i8"), "{err}");
    }
}

//! ONNX `TensorProto` -> constant values, including tensors stored in external data files.

use std::path::Path;
use tract_onnx::pb;

/// Values of a constant tensor, as the frontend needs them.
#[derive(Clone, Debug, PartialEq)]
pub enum ConstData {
    /// Float values (float32, or float64 narrowed).
    F32(Vec<f32>),
    /// Integer values (int32 or int64), e.g. shapes and axes.
    I64(Vec<i64>),
}

/// A constant tensor: an initializer, a `Constant` node's value.
#[derive(Clone, Debug, PartialEq)]
pub struct Const {
    /// Dimensions.
    pub dims: Vec<usize>,
    /// Values, row-major.
    pub data: ConstData,
}

impl Const {
    /// Float values, converting integers.
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            ConstData::F32(v) => v.clone(),
            ConstData::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// Integer values, if the tensor is of an integer type.
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            ConstData::I64(v) => Some(v),
            ConstData::F32(_) => None,
        }
    }

    /// The single value of a scalar or one-element tensor.
    pub fn scalar_f32(&self) -> Option<f32> {
        let v = self.to_f32();
        (v.len() == 1).then(|| v[0])
    }
}

const FLOAT: i32 = 1;
const INT32: i32 = 6;
const INT64: i32 = 7;
const BOOL: i32 = 9;
const DOUBLE: i32 = 11;
const EXTERNAL: i32 = 1;

/// Decode `t`; `model_dir` resolves external data locations.
pub fn decode(t: &pb::TensorProto, model_dir: Option<&Path>) -> Result<Const, String> {
    let dims = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("tensor {} has a negative dimension {d}", t.name)))
        .collect::<Result<Vec<_>, _>>()?;
    let count = crate::ir::checked_elements(&dims)
        .ok_or_else(|| format!("tensor {} has dims {dims:?}: more than {} values", t.name, crate::ir::MAX_ELEMENTS))?;
    let external;
    let raw: &[u8] = if t.data_location == Some(EXTERNAL) {
        external = super::external::read(t, model_dir)?;
        &external
    } else {
        &t.raw_data
    };
    let wrong_len = |n: usize| format!("tensor {} has {n} values for dims {dims:?}", t.name);
    let data = match t.data_type {
        FLOAT if !raw.is_empty() => ConstData::F32(
            le_values(raw, 4, count, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| wrong_len(raw.len() / 4))?,
        ),
        FLOAT => ConstData::F32(t.float_data.clone()),
        DOUBLE if !raw.is_empty() => ConstData::F32(
            le_values(raw, 8, count, |b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                .ok_or_else(|| wrong_len(raw.len() / 8))?,
        ),
        DOUBLE => ConstData::F32(t.double_data.iter().map(|&x| x as f32).collect()),
        INT64 if !raw.is_empty() => ConstData::I64(
            le_values(raw, 8, count, |b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .ok_or_else(|| wrong_len(raw.len() / 8))?,
        ),
        INT64 => ConstData::I64(t.int64_data.clone()),
        INT32 if !raw.is_empty() => ConstData::I64(
            le_values(raw, 4, count, |b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
                .ok_or_else(|| wrong_len(raw.len() / 4))?,
        ),
        INT32 => ConstData::I64(t.int32_data.iter().map(|&x| x as i64).collect()),
        // Booleans (Dropout's training_mode, for one) read as 0 and 1.
        BOOL if !raw.is_empty() => {
            ConstData::I64(le_values(raw, 1, count, |b| i64::from(b[0] != 0)).ok_or_else(|| wrong_len(raw.len()))?)
        }
        BOOL => ConstData::I64(t.int32_data.iter().map(|&x| i64::from(x != 0)).collect()),
        other => {
            return Err(format!(
                "tensor {} has ONNX data type {other}, which hassc does not read (float32, float64, int32, int64, bool only)",
                t.name
            ))
        }
    };
    let len = match &data {
        ConstData::F32(v) => v.len(),
        ConstData::I64(v) => v.len(),
    };
    if len != count {
        return Err(wrong_len(len));
    }
    if let ConstData::F32(v) = &data {
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(format!(
                "tensor {} holds {} at index {i}; the accelerator has no NaN or infinity, fix the model",
                t.name, v[i]
            ));
        }
    }
    Ok(Const { dims, data })
}

fn le_values<T>(raw: &[u8], width: usize, count: usize, f: impl Fn(&[u8]) -> T) -> Option<Vec<T>> {
    (raw.len() == width * count).then(|| raw.chunks_exact(width).map(f).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_raw_and_typed_fields() {
        let raw = pb::TensorProto {
            dims: vec![2],
            data_type: FLOAT,
            raw_data: [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        };
        assert_eq!(decode(&raw, None).unwrap().data, ConstData::F32(vec![1.5, -2.0]));
        let ints =
            pb::TensorProto { dims: vec![3], data_type: INT64, int64_data: vec![1, -1, 0], ..Default::default() };
        assert_eq!(decode(&ints, None).unwrap().as_i64(), Some(&[1, -1, 0][..]));
    }

    #[test]
    fn external_data_is_read_at_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut blob = vec![0u8; 8];
        blob.extend([3.0f32, 4.0].iter().flat_map(|v| v.to_le_bytes()));
        std::fs::write(dir.path().join("w.bin"), &blob).unwrap();
        let entry = |k: &str, v: &str| pb::StringStringEntryProto { key: k.into(), value: v.into() };
        let t = pb::TensorProto {
            name: "w".into(),
            dims: vec![2],
            data_type: FLOAT,
            data_location: Some(EXTERNAL),
            external_data: vec![entry("location", "w.bin"), entry("offset", "8"), entry("length", "8")],
            ..Default::default()
        };
        assert_eq!(decode(&t, Some(dir.path())).unwrap().data, ConstData::F32(vec![3.0, 4.0]));
        let short = pb::TensorProto {
            external_data: vec![entry("location", "w.bin"), entry("offset", "12"), entry("length", "8")],
            ..t
        };
        assert!(decode(&short, Some(dir.path())).unwrap_err().contains("shorter"));
    }

    #[test]
    fn length_mismatch_is_an_error() {
        let t = pb::TensorProto {
            name: "b".into(),
            dims: vec![3],
            data_type: FLOAT,
            float_data: vec![1.0],
            ..Default::default()
        };
        assert!(decode(&t, None).unwrap_err().contains("1 values for dims [3]"));
    }

    #[test]
    fn non_finite_values_are_refused_naming_the_tensor() {
        let t = pb::TensorProto {
            name: "conv.weight".into(),
            dims: vec![3],
            data_type: FLOAT,
            float_data: vec![1.0, f32::INFINITY, f32::NAN],
            ..Default::default()
        };
        assert!(decode(&t, None).unwrap_err().contains("tensor conv.weight holds inf at index 1"));
    }
}

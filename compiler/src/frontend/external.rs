//! Reading a tensor stored in an external data file, which the model file names: untrusted
//! input. As onnxruntime does, a location is a relative path that stays inside the model's
//! folder once symlinks are resolved and names a regular file; only `offset..offset+length`
//! is read, checked against the file's size before anything is allocated. So a model cannot
//! make hassc read `/etc/passwd`, follow `../` or a symlink out of its folder, block on a
//! FIFO, or stream `/dev/zero` into memory.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};
use tract_onnx::pb;

/// The bytes of external tensor `t`, located relative to `model_dir`.
pub fn read(t: &pb::TensorProto, model_dir: Option<&Path>) -> Result<Vec<u8>, String> {
    let field = |key: &str| t.external_data.iter().find(|e| e.key == key).map(|e| e.value.as_str());
    let name = &t.name;
    let location = field("location").ok_or_else(|| format!("tensor {name} is external but names no location"))?;
    let refuse = |why: &str| format!("tensor {name}: external data location {location:?} {why}");
    let dir = model_dir.ok_or_else(|| refuse("cannot be resolved: the model was not loaded from a file"))?;
    let relative = Path::new(location);
    if location.is_empty() || !relative.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(refuse("must be a relative path inside the model's folder (no root, no '..')"));
    }
    let folder = dir.canonicalize().map_err(|e| refuse(&format!("cannot be resolved: {e}")))?;
    let path = folder.join(relative).canonicalize().map_err(|e| refuse(&format!("cannot be opened: {e}")))?;
    if !path.starts_with(&folder) {
        return Err(refuse("leads out of the model's folder through a symbolic link"));
    }
    let meta = std::fs::metadata(&path).map_err(|e| refuse(&format!("cannot be opened: {e}")))?;
    if !meta.is_file() {
        return Err(refuse("is not a regular file"));
    }
    let size = meta.len();
    let parse = |key: &str| {
        field(key).map(|v| v.parse::<u64>().map_err(|_| format!("tensor {name}: bad external {key} {v:?}"))).transpose()
    };
    let offset = parse("offset")?.unwrap_or(0);
    let length = match parse("length")? {
        Some(l) => l,
        None => size.checked_sub(offset).ok_or_else(|| refuse(&format!("is {size} bytes, before offset {offset}")))?,
    };
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(refuse(&format!("is {size} bytes, shorter than offset {offset} + length {length}")));
    }
    let mut file = std::fs::File::open(&path).map_err(|e| refuse(&format!("cannot be opened: {e}")))?;
    let mut bytes = vec![0u8; usize::try_from(length).map_err(|_| refuse("is too large"))?];
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut bytes))
        .map_err(|e| refuse(&format!("cannot be read: {e}")))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(location: &str, offset: Option<u64>, length: Option<u64>) -> pb::TensorProto {
        let entry = |k: &str, v: String| pb::StringStringEntryProto { key: k.into(), value: v };
        let mut external_data = vec![entry("location", location.into())];
        external_data.extend(offset.map(|o| entry("offset", o.to_string())));
        external_data.extend(length.map(|l| entry("length", l.to_string())));
        pb::TensorProto { name: "w".into(), external_data, ..Default::default() }
    }

    #[test]
    fn reads_only_the_named_range() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/w.bin"), [1u8, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(read(&tensor("sub/w.bin", Some(2), Some(3)), Some(dir.path())).unwrap(), vec![3, 4, 5]);
        assert_eq!(read(&tensor("./sub/w.bin", Some(4), None), Some(dir.path())).unwrap(), vec![5, 6]);
        let err = read(&tensor("sub/w.bin", Some(4), Some(3)), Some(dir.path())).unwrap_err();
        assert!(err.contains("is 6 bytes, shorter than offset 4 + length 3"), "{err}");
        let err = read(&tensor("sub/w.bin", Some(u64::MAX), Some(2)), Some(dir.path())).unwrap_err();
        assert!(err.contains("shorter than offset"), "{err}");
        let err = read(&tensor("sub/w.bin", Some(7), None), Some(dir.path())).unwrap_err();
        assert!(err.contains("before offset 7"), "{err}");
    }

    #[test]
    fn locations_outside_the_folder_or_not_regular_files_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let model_dir = root.path().join("model");
        std::fs::create_dir(&model_dir).unwrap();
        std::fs::write(root.path().join("secret"), b"secret").unwrap();
        std::os::unix::fs::symlink(root.path().join("secret"), model_dir.join("link")).unwrap();
        std::fs::create_dir(model_dir.join("folder")).unwrap();
        let fifo = model_dir.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success());
        let mut cases = vec![
            ("/etc/passwd", "must be a relative path"),
            ("../secret", "must be a relative path"),
            ("folder/../../secret", "must be a relative path"),
            ("", "must be a relative path"),
            ("link", "leads out of the model's folder"),
            ("folder", "is not a regular file"),
            ("missing.bin", "cannot be opened"),
        ];
        if made {
            cases.push(("fifo", "is not a regular file"));
        }
        for (location, expected) in cases {
            let err = read(&tensor(location, None, None), Some(&model_dir)).unwrap_err();
            assert!(err.starts_with("tensor w: external data location"), "{err}");
            assert!(err.contains(expected), "{location}: {err}");
        }
        let err = read(&tensor("w.bin", None, None), None).unwrap_err();
        assert!(err.contains("not loaded from a file"), "{err}");
    }
}

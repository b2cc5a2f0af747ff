//! Writing a command's output files safely, for both binaries.
//!
//! - Every output is staged in a temporary file beside its target and all of them are
//!   renamed into place together at [`Outputs::commit`], so a failure leaves no partial file
//!   and the artifact and its report never disagree. An interrupt (SIGINT, SIGTERM, SIGHUP)
//!   removes the staged files; if it arrives during the renames, it waits for them to end.
//! - An output that would replace one of the command's inputs is refused (the same file,
//!   whatever the path's spelling, symbolic links included).
//! - A symbolic link is written through: its target is replaced, the link stays.
//! - A special file (`/dev/null`, a FIFO, a terminal) is written to directly, not renamed
//!   over: renaming would replace the device node with a regular file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Staged files not yet renamed into place, for the interrupt handler to remove. The lock
/// is held during [`Outputs::commit`]'s renames, so an interrupt cannot split them.
static STAGED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Remove staged files on SIGINT, SIGTERM and SIGHUP, then exit with status 130. Call once,
/// early in `main`.
pub fn remove_staged_on_interrupt() {
    // Failing to install the handler (one is already set) only loses the clean-up.
    let _ = ctrlc::set_handler(|| {
        let staged = STAGED.lock().unwrap_or_else(|e| e.into_inner());
        for path in staged.iter() {
            let _ = std::fs::remove_file(path);
        }
        std::process::exit(130);
    });
}

/// Write `text` to standard output. Unlike `print!`, which panics when the reader has
/// gone (`hass-run ... --bench | head -1`), a closed pipe is not an error: the reader has
/// what it wanted, and the command goes on to write its files and exit as it would have.
/// Any other failure to write is returned.
pub fn print(text: std::fmt::Arguments) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_fmt(text).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result,
    }
}

/// Why an output cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The output is one of the inputs.
    #[error("{output} is also an input ({input}); write the output elsewhere")]
    IsInput {
        /// The output path as given.
        output: String,
        /// The input path as given.
        input: String,
    },
    /// Writing failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The output path as given.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Where an output's bytes go.
enum Staged {
    /// A temporary file to rename over `target` (the resolved path).
    Renamed { temp: tempfile::TempPath, target: PathBuf },
    /// A special file, written at commit.
    Direct { target: PathBuf, bytes: Vec<u8> },
}

/// A command's outputs, staged, then committed together.
pub struct Outputs {
    inputs: Vec<(PathBuf, Option<FileId>)>,
    staged: Vec<Staged>,
}

/// A file's identity: device and inode.
type FileId = (u64, u64);

fn file_id(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl Outputs {
    /// Outputs of a command that reads `inputs`.
    pub fn new<P: AsRef<Path>>(inputs: impl IntoIterator<Item = P>) -> Outputs {
        let inputs = inputs.into_iter().map(|p| (p.as_ref().to_path_buf(), file_id(p.as_ref()))).collect();
        Outputs { inputs, staged: Vec::new() }
    }

    /// Refuse `path` if it is one of the inputs; returns the file it writes (symbolic links
    /// followed, its folder made absolute, so two spellings of one file compare equal). Call
    /// it for every output before a long computation, to fail early; [`Self::stage`] calls
    /// it again.
    pub fn check(&self, path: &Path) -> Result<PathBuf, OutputError> {
        let io = |source| OutputError::Io { path: path.display().to_string(), source };
        let target = absolute_folder(&resolve_links(path).map_err(io)?);
        if let Some(id) = file_id(&target) {
            if let Some((input, _)) = self.inputs.iter().find(|(_, i)| *i == Some(id)) {
                return Err(OutputError::IsInput {
                    output: path.display().to_string(),
                    input: input.display().to_string(),
                });
            }
        }
        Ok(target)
    }

    /// Stage `bytes` for `path`. Nothing is visible at `path` before [`Self::commit`].
    pub fn stage(&mut self, path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
        let io = |source| OutputError::Io { path: path.display().to_string(), source };
        let target = self.check(path)?;
        let special = std::fs::metadata(&target).is_ok_and(|m| !m.is_file() && !m.is_dir());
        if special {
            self.staged.push(Staged::Direct { target, bytes: bytes.to_vec() });
            return Ok(());
        }
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut builder = tempfile::Builder::new();
        builder.prefix(".hass-tmp");
        // Temporary files are private (0600); the result should be readable like any output.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
        let mut tmp = builder.tempfile_in(dir).map_err(io)?;
        STAGED.lock().unwrap_or_else(|e| e.into_inner()).push(tmp.path().to_path_buf());
        tmp.write_all(bytes).and_then(|_| tmp.as_file().sync_all()).map_err(io)?;
        self.staged.push(Staged::Renamed { temp: tmp.into_temp_path(), target });
        Ok(())
    }

    /// Put every staged output in place. Holds the interrupt handler off until done.
    pub fn commit(self) -> Result<(), OutputError> {
        let mut registry = STAGED.lock().unwrap_or_else(|e| e.into_inner());
        // On the first failure the rest are dropped, which removes their temporary files.
        for staged in self.staged {
            let done = match staged {
                Staged::Renamed { temp, target } => {
                    let temp_path = temp.to_path_buf();
                    let done = temp.persist(&target).map(|_| ()).map_err(|e| (target, e.error));
                    registry.retain(|p| *p != temp_path);
                    done
                }
                Staged::Direct { target, bytes } => std::fs::OpenOptions::new()
                    .write(true)
                    .open(&target)
                    .and_then(|mut f| f.write_all(&bytes))
                    .map_err(|e| (target, e)),
            };
            done.map_err(|(target, source)| OutputError::Io { path: target.display().to_string(), source })?;
        }
        Ok(())
    }
}

/// `path` with every symbolic link along the final component followed (a dangling link
/// gives the path it points to, so writing creates that file).
fn resolve_links(path: &Path) -> std::io::Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&current) {
            Ok(m) if m.file_type().is_symlink() => {
                let next = std::fs::read_link(&current)?;
                current = match current.parent() {
                    Some(dir) if next.is_relative() => dir.join(next),
                    _ => next,
                };
            }
            _ => return Ok(current),
        }
    }
    Err(std::io::Error::other("too many levels of symbolic links"))
}

/// `path` in its folder's canonical spelling (`./r.json`, `r.json` and `x/../r.json` are one
/// file even before it exists); as given when the folder does not exist (writing will say so).
fn absolute_folder(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match (path.file_name(), dir.canonicalize()) {
        (Some(name), Ok(dir)) => dir.join(name),
        _ => path.to_path_buf(),
    }
}

/// Write one output at `path` through [`Outputs`] (no inputs to protect): staged, then
/// renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    let mut out = Outputs::new(std::iter::empty::<&Path>());
    out.stage(path, bytes)?;
    out.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn outputs_appear_together_at_commit_and_nothing_is_left_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.hass"), dir.path().join("a.json"));
        let mut out = Outputs::new([dir.path().join("model.onnx")]);
        out.stage(&a, b"artifact").unwrap();
        out.stage(&b, b"report").unwrap();
        assert!(!a.exists() && !b.exists(), "nothing visible before commit");
        out.commit().unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"artifact");
        assert_eq!(files_in(dir.path()), ["a.hass", "a.json"]);
        // Dropped without commit (an error after staging): the staged files go.
        let mut out = Outputs::new(std::iter::empty::<&Path>());
        out.stage(&dir.path().join("c.hass"), b"x").unwrap();
        drop(out);
        assert_eq!(files_in(dir.path()), ["a.hass", "a.json"]);
    }

    #[test]
    fn an_output_that_is_an_input_is_refused_however_spelled() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.onnx");
        std::fs::write(&model, b"model").unwrap();
        std::os::unix::fs::symlink(&model, dir.path().join("alias.hass")).unwrap();
        let mut out = Outputs::new([&model]);
        for spelling in [model.clone(), dir.path().join("./m.onnx"), dir.path().join("alias.hass")] {
            let err = out.stage(&spelling, b"x").unwrap_err().to_string();
            assert!(err.contains("is also an input") && err.contains("m.onnx"), "{err}");
        }
        assert_eq!(std::fs::read(&model).unwrap(), b"model");
    }

    #[test]
    fn two_spellings_of_a_new_file_are_one_target() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let out = Outputs::new(std::iter::empty::<&Path>());
        let plain = out.check(&dir.path().join("r.json")).unwrap();
        assert_eq!(out.check(&dir.path().join("./r.json")).unwrap(), plain);
        assert_eq!(out.check(&dir.path().join("sub/../r.json")).unwrap(), plain);
        assert_ne!(out.check(&dir.path().join("sub/r.json")).unwrap(), plain);
    }

    #[test]
    fn symbolic_links_are_written_through_and_devices_directly() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.npy");
        std::fs::write(&real, b"old").unwrap();
        let link = dir.path().join("link.npy");
        std::os::unix::fs::symlink("real.npy", &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link stays");
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        // A dangling link creates its target.
        let dangling = dir.path().join("dangling.npy");
        std::os::unix::fs::symlink("made.npy", &dangling).unwrap();
        write_atomic(&dangling, b"made").unwrap();
        assert_eq!(std::fs::read(dir.path().join("made.npy")).unwrap(), b"made");
        // /dev/null stays a device.
        write_atomic(Path::new("/dev/null"), b"discarded").unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());
    }
}

//! The I/O edge: writing generated files, only where their contents changed.

use std::path::Path;

use crate::error::GenError;
use crate::generate::GeneratedFile;

/// What writing did to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The file did not exist.
    Created,
    /// The file existed with other contents.
    Updated,
    /// The file already had these contents and was not touched.
    Unchanged,
}

/// Writes `contents` to `path` unless it already holds exactly that; creates parent folders.
pub fn write_if_changed(path: &Path, contents: &str) -> Result<WriteOutcome, GenError> {
    let io = |source| GenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let outcome = match std::fs::read(path) {
        Ok(existing) if existing == contents.as_bytes() => return Ok(WriteOutcome::Unchanged),
        Ok(_) => WriteOutcome::Updated,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => WriteOutcome::Created,
        Err(e) => return Err(io(e)),
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    // Write to a sibling and rename, so a reader never sees half a file.
    let tmp = path.with_extension("mha-gen-tmp");
    std::fs::write(&tmp, contents).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(outcome)
}

/// Writes every file under `out_dir`; returns each path with what happened to it.
pub fn write_all(
    out_dir: &Path,
    files: &[GeneratedFile],
) -> Result<Vec<(String, WriteOutcome)>, GenError> {
    files
        .iter()
        .map(|f| {
            Ok((
                f.path.clone(),
                write_if_changed(&out_dir.join(&f.path), &f.contents)?,
            ))
        })
        .collect()
}

//! The I/O edge: writing generated files, only where their contents changed, and only inside the
//! output folder.
//!
//! Every output path is relative, made of plain names (no `..`, no root, no drive), and is
//! checked again once joined to the output folder. A file is written to a temporary sibling
//! created exclusively (`create_new`: a file or link planted at that name is never followed or
//! reused), then renamed over the target, which replaces a link at the target rather than
//! writing through it.

use std::io::Write as _;
use std::path::{Component, Path, PathBuf};

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

fn escape_error(path: &str, why: &str) -> GenError {
    GenError::Io {
        path: PathBuf::from(path),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("refused: an output path must stay inside the output folder ({why})"),
        ),
    }
}

/// Checks that `path` (a generated file's `/`-separated path) is relative and made of plain,
/// visible names, so that joined to any folder it stays inside it.
pub(crate) fn check_relative(path: &str) -> Result<(), GenError> {
    if path.is_empty() {
        return Err(escape_error(path, "empty path"));
    }
    for part in path.split('/') {
        let plain = !part.is_empty()
            && part != "."
            && part != ".."
            && !part.contains(['\\', ':'])
            && !part.chars().any(mha_spec::is_hidden);
        if !plain {
            return Err(escape_error(
                path,
                "each part must be a plain file or folder name",
            ));
        }
    }
    let mut components = Path::new(path).components();
    if components.all(|c| matches!(c, Component::Normal(_))) {
        Ok(())
    } else {
        Err(escape_error(path, "not a relative path"))
    }
}

/// Writes `contents` to `path` unless it already holds exactly that; creates parent folders.
/// The new contents go to a temporary sibling made exclusively, then renamed over `path`.
pub fn write_if_changed(path: &Path, contents: &str) -> Result<WriteOutcome, GenError> {
    let io = |source| GenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let outcome = match std::fs::symlink_metadata(path) {
        // A link at the target is replaced, never read or written through.
        Ok(meta) if meta.file_type().is_symlink() => WriteOutcome::Updated,
        Ok(_) => match std::fs::read(path) {
            Ok(existing) if existing == contents.as_bytes() => return Ok(WriteOutcome::Unchanged),
            Ok(_) => WriteOutcome::Updated,
            Err(e) => return Err(io(e)),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => WriteOutcome::Created,
        Err(e) => return Err(io(e)),
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let (tmp, mut file) = create_temp(path).map_err(io)?;
    let written = file
        .write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(outcome)
}

/// A new file beside `path`, created exclusively under a name no other file has.
fn create_temp(path: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut last = None;
    for attempt in 0..16u32 {
        let tmp = path.with_file_name(format!(
            ".{name}.{}.{attempt}.mha-gen-tmp",
            std::process::id()
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free temporary name")))
}

/// Writes every file under `out_dir`; returns each path with what happened to it. A path that
/// would leave `out_dir` (after normalisation, through a folder that is a link, or at all) is
/// refused before anything is written.
pub fn write_all(
    out_dir: &Path,
    files: &[GeneratedFile],
) -> Result<Vec<(String, WriteOutcome)>, GenError> {
    for f in files {
        check_relative(&f.path)?;
    }
    std::fs::create_dir_all(out_dir).map_err(|source| GenError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let root = out_dir.canonicalize().map_err(|source| GenError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    files
        .iter()
        .map(|f| {
            let target = root.join(&f.path);
            check_inside(&root, &target, &f.path)?;
            Ok((f.path.clone(), write_if_changed(&target, &f.contents)?))
        })
        .collect()
}

/// Checks that the folders of `target` that exist resolve inside `root` (a folder inside the
/// output that is a link to elsewhere is refused).
fn check_inside(root: &Path, target: &Path, shown: &str) -> Result<(), GenError> {
    let mut dir = target.parent();
    while let Some(d) = dir {
        if let Ok(real) = d.canonicalize() {
            return if real.starts_with(root) {
                Ok(())
            } else {
                Err(escape_error(
                    shown,
                    "a folder on the way is a link out of it",
                ))
            };
        }
        dir = d.parent();
    }
    Err(escape_error(shown, "no folder of the path exists"))
}

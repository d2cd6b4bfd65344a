//! The build.rs API, in the style of prost-build.

use std::path::PathBuf;

use crate::error::GenError;
use crate::generate::{generate, GeneratedFile, Options};
use crate::templates::Templates;
use crate::write::write_all;

/// Generates code from op specs inside a build script.
///
/// ```no_run
/// // build.rs
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     mha_gen::Builder::new().rust_only().generate()?;
///     Ok(())
/// }
/// // lib.rs:
/// // include!(concat!(env!("OUT_DIR"), "/rust/multihead_attention.rs"));
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    spec_dir: Option<PathBuf>,
    template_dir: Option<PathBuf>,
    out_dir: Option<PathBuf>,
    options: Options,
    emit_rerun: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// Bundled specs and templates, all outputs, into `$OUT_DIR`.
    pub fn new() -> Builder {
        Builder {
            spec_dir: None,
            template_dir: None,
            out_dir: None,
            options: Options::default(),
            emit_rerun: true,
        }
    }

    /// Reads specs from `dir` instead of the bundled ones.
    pub fn spec_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spec_dir = Some(dir.into());
        self
    }

    /// Reads templates from `dir` instead of the bundled ones.
    pub fn template_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.template_dir = Some(dir.into());
        self
    }

    /// Writes under `dir` instead of `$OUT_DIR`.
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// Generates only the Rust code.
    pub fn rust_only(mut self) -> Self {
        self.options.python = false;
        self.options.docs = false;
        self.options.rust = true;
        self
    }

    /// Limits the glue to these frameworks.
    pub fn frameworks<I: IntoIterator<Item = S>, S: Into<String>>(mut self, keys: I) -> Self {
        self.options.frameworks = keys.into_iter().map(Into::into).collect();
        self
    }

    /// Limits the outputs to these ops (the specs' `op` names).
    pub fn ops<I: IntoIterator<Item = S>, S: Into<String>>(mut self, ops: I) -> Self {
        self.options.ops = ops.into_iter().map(Into::into).collect();
        self
    }

    /// Whether to print `cargo:rerun-if-changed` lines (on by default).
    pub fn emit_rerun_if_changed(mut self, on: bool) -> Self {
        self.emit_rerun = on;
        self
    }

    /// The files this builder would write, without writing them.
    pub fn files(&self) -> Result<Vec<GeneratedFile>, GenError> {
        let specs = match &self.spec_dir {
            Some(dir) => mha_spec::load_dir(dir)?,
            None => mha_spec::bundled()?,
        };
        let templates = match &self.template_dir {
            Some(dir) => Templates::from_dir(dir)?,
            None => Templates::bundled(),
        };
        generate(&specs, &templates, &self.options)
    }

    /// Generates and writes the files (only those whose contents changed).
    pub fn generate(self) -> Result<Vec<GeneratedFile>, GenError> {
        if self.emit_rerun {
            for dir in [&self.spec_dir, &self.template_dir].into_iter().flatten() {
                println!("cargo:rerun-if-changed={}", dir.display());
            }
        }
        let out_dir = match &self.out_dir {
            Some(dir) => dir.clone(),
            None => std::env::var_os("OUT_DIR")
                .map(PathBuf::from)
                .ok_or_else(|| GenError::Io {
                    path: PathBuf::from("$OUT_DIR"),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "OUT_DIR is not set: call out_dir() outside build.rs",
                    ),
                })?,
        };
        let files = self.files()?;
        write_all(&out_dir, &files)?;
        Ok(files)
    }
}

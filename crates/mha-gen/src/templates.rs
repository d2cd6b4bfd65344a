//! Template sets: the bundled `templates/` folder, or a folder given at run time.

use std::path::{Path, PathBuf};

use crate::error::{tera_message, GenError};

include!(concat!(env!("OUT_DIR"), "/bundled_templates.rs"));

/// A set of tera templates, by path relative to the templates folder (e.g. `python/keras.py.tera`).
#[derive(Debug, Clone)]
pub struct Templates {
    files: Vec<(String, String)>,
    /// The parsed engine, made on first use (parsing is most of a small generation's time).
    engine: std::sync::OnceLock<tera::Tera>,
}

impl Templates {
    /// The templates compiled into this binary.
    pub fn bundled() -> Templates {
        Templates {
            files: BUNDLED_TEMPLATES
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect(),
            engine: std::sync::OnceLock::new(),
        }
    }

    /// Every file under `dir`: `*.tera` templates and plain files (copied as they are).
    pub fn from_dir(dir: &Path) -> Result<Templates, GenError> {
        let mut files = Vec::new();
        collect(dir, dir, &mut files)?;
        files.sort();
        Ok(Templates {
            files,
            engine: std::sync::OnceLock::new(),
        })
    }

    /// Template paths (plain files too), sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(|(n, _)| n.as_str())
    }

    /// The text of a plain (non-template) file.
    pub(crate) fn plain(&self, name: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|(n, _)| n == name && !n.ends_with(".tera"))
            .map(|(_, t)| t.as_str())
    }

    fn templates(&self) -> impl Iterator<Item = &(String, String)> {
        self.files.iter().filter(|(n, _)| n.ends_with(".tera"))
    }

    /// Parses every template into one tera instance (so templates may include or import each other).
    pub(crate) fn engine(&self) -> Result<tera::Tera, GenError> {
        if let Some(tera) = self.engine.get() {
            return Ok(tera.clone());
        }
        let tera = self.parse()?;
        Ok(self.engine.get_or_init(|| tera).clone())
    }

    fn parse(&self) -> Result<tera::Tera, GenError> {
        let mut tera = tera::Tera::default();
        tera.autoescape_on(Vec::new());
        let all = tera.add_raw_templates(self.templates().map(|(n, t)| (n.as_str(), t.as_str())));
        if let Err(error) = all {
            // Parse each file alone, so that a syntax error names its file.
            for (name, text) in self.templates() {
                tera::Tera::default()
                    .add_raw_template(name, text)
                    .map_err(|e| GenError::Template {
                        name: name.clone(),
                        message: tera_message(&e),
                    })?;
            }
            return Err(GenError::Template {
                name: "templates".into(),
                message: tera_message(&error),
            });
        }
        Ok(tera)
    }
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, String)>) -> Result<(), GenError> {
    fn io(path: &Path) -> impl Fn(std::io::Error) -> GenError + '_ {
        move |source| GenError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path: PathBuf = entry.map_err(io(dir))?.path();
        if path.is_dir() {
            collect(root, &path, files)?;
        } else if path
            .file_name()
            .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
        {
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            let name = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            files.push((name, text));
        }
    }
    Ok(())
}

//! Generator errors: each names the spec, template or path at fault.

use std::path::PathBuf;

use mha_spec::SpecErrors;

/// Why generation failed.
///
/// `Debug` prints the same text as `Display` (one `file:line:column: field: message` line per spec
/// error), so that a build script's `fn main() -> Result<(), Box<dyn Error>>` shows readable errors.
pub enum GenError {
    /// The specs did not load or validate.
    Spec(SpecErrors),
    /// A template failed to parse.
    Template {
        /// The template's path under the templates folder.
        name: String,
        /// tera's explanation, with its causes.
        message: String,
    },
    /// A template failed to render for a spec.
    Render {
        /// The template's path under the templates folder.
        name: String,
        /// The op being rendered.
        op: String,
        /// tera's explanation, with its causes.
        message: String,
    },
    /// A Rust template rendered to something that is not valid Rust.
    RustSyntax {
        /// The output file.
        file: String,
        /// syn's explanation, with the offending line.
        message: String,
    },
    /// `--framework` named a framework no spec has.
    UnknownFramework {
        /// The name given.
        name: String,
        /// The frameworks there are.
        known: Vec<String>,
    },
    /// `--op` named an op no spec defines.
    UnknownOp {
        /// The name given.
        name: String,
        /// The ops there are.
        known: Vec<String>,
    },
    /// A template sits where no output goes.
    MisplacedTemplate {
        /// The template's path under the templates folder.
        name: String,
        /// Where such templates go.
        message: String,
    },
    /// A framework has no module template.
    MissingTemplate {
        /// The template expected.
        name: String,
    },
    /// Two outputs would be written to the same path.
    DuplicateOutput(String),
    /// A checkpoint conversion failed.
    Convert(crate::convert::ConvertError),
    /// Reading or writing a file failed.
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl std::fmt::Display for GenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GenError::Spec(errors) => write!(f, "{errors}"),
            GenError::Template { name, message } => {
                write!(f, "template `{name}` does not parse: {message}")
            }
            GenError::Render { name, op, message } => write!(
                f,
                "template `{name}` failed to render for `{op}`: {message}"
            ),
            GenError::RustSyntax { file, message } => {
                write!(f, "generated `{file}` is not valid Rust: {message}")
            }
            GenError::UnknownFramework { name, known } => write!(
                f,
                "unknown framework `{name}`{}; known: {}",
                mha_spec::did_you_mean(name, known.iter().map(String::as_str)),
                known.join(", ")
            ),
            GenError::UnknownOp { name, known } => write!(
                f,
                "unknown op `{name}`{}; known: {}",
                mha_spec::did_you_mean(name, known.iter().map(String::as_str)),
                known.join(", ")
            ),
            GenError::MisplacedTemplate { name, message } => {
                write!(f, "template `{name}`: {message}")
            }
            GenError::MissingTemplate { name } => write!(f, "missing template `{name}`"),
            GenError::DuplicateOutput(path) => {
                write!(f, "two outputs would be written to `{path}`")
            }
            GenError::Convert(e) => write!(f, "{e}"),
            GenError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::fmt::Debug for GenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A build script returning Err prints `Error: {:?}`: show the message the CLI shows.
        write!(f, "{self}")
    }
}

impl std::error::Error for GenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GenError::Spec(e) => Some(e),
            GenError::Convert(e) => Some(e),
            GenError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<crate::convert::ConvertError> for GenError {
    fn from(e: crate::convert::ConvertError) -> Self {
        GenError::Convert(e)
    }
}

impl From<SpecErrors> for GenError {
    fn from(e: SpecErrors) -> Self {
        GenError::Spec(e)
    }
}

/// tera's error with every cause, on one line.
pub(crate) fn tera_message(error: &tera::Error) -> String {
    let mut message = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    message
}

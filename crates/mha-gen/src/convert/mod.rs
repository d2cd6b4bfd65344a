//! Checkpoint conversion driven by the spec: `mha-gen convert --to FRAMEWORK IN OUT` (and
//! `--from FRAMEWORK` for the way back).
//!
//! Nothing here knows MultiheadAttention. Every layer of the op in a checkpoint is found by the
//! names of its parameters under some prefix (`layers.0.self_attn.`); its constructor parameters are
//! read from the tensors' shapes and presence where the spec's shape expressions and conditions
//! name them (a bare `embed_dim` dimension, `when: bias`), and taken from `--set` where the tensors
//! cannot tell (`num_heads` of a packed torch layer). The spec's per-framework weight mapping then
//! turns the reference's tensors into the target's (logical views split out of packed tensors, then
//! the mapping's `transpose` / `reshape` steps), or the target's back into the reference's (the steps
//! undone in reverse, the parts joined). Elements are moved, never recomputed: any dtype converts
//! exactly and a round trip gives back the same bytes. Every other tensor is copied unchanged.

mod files;
mod layer;
mod layout;
mod settings;
mod tensor;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use mha_spec::{Framework, Spec};

pub use files::{Checkpoint, Format};
pub use settings::Setting;
pub use tensor::RawTensor;

use layer::{Layer, Values};
use layout::{find_layers, present_under, Layout};
use settings::parse_settings;

/// Which way a conversion goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Reference layout (torch `state_dict` names) → the framework's native names and shapes.
    To,
    /// The framework's native names and shapes → the reference layout.
    From,
}

/// What to convert, and how.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// To or from the framework.
    pub direction: Direction,
    /// The framework key (`keras`, `mlx`, ...).
    pub framework: String,
    /// Constructor parameters the tensors cannot tell.
    pub settings: Vec<Setting>,
    /// Prefixes whose tensors are copied unchanged even though they look like a layer of the op.
    pub keep: Vec<String>,
}

/// One converted layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertedLayer {
    /// Its prefix in the checkpoint (the same on both sides).
    pub prefix: String,
    /// The constructor parameters it was converted with (those the conversion knew), as `name=value`.
    pub params: Vec<String>,
    /// The tensors read, (name without prefix, shape), in file order.
    pub read: Vec<(String, Vec<usize>)>,
    /// The tensors written, (name without prefix, shape).
    pub written: Vec<(String, Vec<usize>)>,
}

/// The result of [`convert`].
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// The new checkpoint.
    pub checkpoint: Checkpoint,
    /// Every converted layer, in file order.
    pub layers: Vec<ConvertedLayer>,
    /// The names of the tensors copied unchanged.
    pub copied: Vec<String>,
}

/// Why a conversion failed.
#[derive(Debug)]
pub enum ConvertError {
    /// Reading or writing a file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A checkpoint file is not valid, or cannot hold the result.
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The command line is wrong (a setting, a framework, an op).
    Usage(String),
    /// A layer cannot be converted.
    Layer {
        /// The layer's prefix.
        prefix: String,
        /// What is wrong, and what to do.
        message: String,
    },
    /// A constructor parameter the conversion needs is neither in the tensors nor given.
    NeedsSetting {
        /// The layer's prefix.
        prefix: String,
        /// The parameter.
        param: String,
    },
    /// The checkpoint holds no layer of the op.
    NoLayers {
        /// The op.
        op: String,
        /// The names that were looked for.
        looked_for: Vec<String>,
        /// The other directions that do find layers (`--to`, `--from keras`, ...).
        layouts_found: Vec<String>,
    },
}

impl std::fmt::Display for ConvertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConvertError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            ConvertError::File { path, message } => write!(f, "{}: {message}", path.display()),
            ConvertError::Usage(message) => f.write_str(message),
            ConvertError::Layer { prefix, message } => {
                write!(f, "layer `{prefix}`: {message}")
            }
            ConvertError::NeedsSetting { prefix, param } => write!(
                f,
                "layer `{prefix}`: `{param}` cannot be read from the tensors: pass --set \
                 {param}=VALUE (every layer) or --set {prefix}{param}=VALUE (this layer)"
            ),
            ConvertError::NoLayers {
                op,
                looked_for,
                layouts_found,
            } => {
                write!(
                    f,
                    "no {op} layer found: no prefix holds its parameters ({})",
                    looked_for.join(", ")
                )?;
                if !layouts_found.is_empty() {
                    write!(
                        f,
                        "; the file holds {op} layers in another layout: try {}",
                        layouts_found.join(" or ")
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConvertError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConvertError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Reads `input`, converts it and writes `output` (formats from the extensions); nothing is written
/// when the conversion fails.
pub fn convert_file(
    spec: &Spec,
    input: &Path,
    output: &Path,
    options: &ConvertOptions,
) -> Result<Converted, ConvertError> {
    let file_error = |path: &Path| {
        let path = path.to_path_buf();
        move |message| ConvertError::File {
            path: path.clone(),
            message,
        }
    };
    let in_format = Format::of(input).map_err(ConvertError::Usage)?;
    let out_format = Format::of(output).map_err(ConvertError::Usage)?;
    let bytes = std::fs::read(input).map_err(|source| ConvertError::Io {
        path: input.to_path_buf(),
        source,
    })?;
    let checkpoint = Checkpoint::from_bytes(&bytes, in_format).map_err(file_error(input))?;
    let converted = convert(spec, &checkpoint, options)?;
    let bytes = converted
        .checkpoint
        .to_bytes(out_format)
        .map_err(file_error(output))?;
    // Write to a sibling and rename, so that OUT may be IN and a reader never sees half a file.
    let io = |source| ConvertError::Io {
        path: output.to_path_buf(),
        source,
    };
    let tmp = output.with_extension("mha-gen-tmp");
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, output).map_err(io)?;
    Ok(converted)
}

/// Converts every layer of `spec`'s op in `input`; copies every other tensor unchanged.
pub fn convert(
    spec: &Spec,
    input: &Checkpoint,
    options: &ConvertOptions,
) -> Result<Converted, ConvertError> {
    let fw = spec.frameworks.get(&options.framework).ok_or_else(|| {
        let known: Vec<&str> = spec.frameworks.keys().map(String::as_str).collect();
        ConvertError::Usage(format!(
            "unknown framework `{}`{}; {} knows: {}",
            options.framework,
            mha_spec::did_you_mean(&options.framework, known.iter().copied()),
            spec.op,
            known.join(", ")
        ))
    })?;
    let layout = Layout::new(spec, fw, options.direction);
    let layers = find_layers(input, &layout, &options.keep);
    if layers.is_empty() {
        return Err(ConvertError::NoLayers {
            op: spec.op.clone(),
            looked_for: layout.entries.iter().map(|e| e.name.to_string()).collect(),
            layouts_found: other_layouts(spec, input, options),
        });
    }
    let settings = parse_settings(spec, &options.settings, &layers)?;
    let mut converted: HashMap<String, (ConvertedLayer, Vec<(String, RawTensor)>)> = HashMap::new();
    for (prefix, names) in &layers {
        let present = present_under(input, prefix, names);
        let mut given = settings.get("").cloned().unwrap_or_default();
        given.extend(settings.get(prefix).cloned().unwrap_or_default());
        let layer = Layer { spec, prefix };
        let values = layer.fit(&layout, &present, &given).map_err(|e| match e {
            // Names shared by two layouts (MLX's `out_proj.weight` is torch's): say which fits.
            ConvertError::Layer { prefix, message } => {
                let others = other_layouts(spec, input, options);
                let hint = match others.is_empty() {
                    true => String::new(),
                    false => format!(
                        "; the file holds {} layers in another layout: try {}",
                        spec.op,
                        others.join(" or ")
                    ),
                };
                ConvertError::Layer {
                    prefix,
                    message: message + &hint,
                }
            }
            other => other,
        })?;
        let written = match options.direction {
            Direction::To => layer.native_from_reference(fw, &present, &values)?,
            Direction::From => layer.reference_from_native(fw, &present, &values)?,
        };
        let report = ConvertedLayer {
            prefix: prefix.clone(),
            params: layer.shown(&values, &layout, fw),
            read: names
                .iter()
                .map(|n| {
                    (
                        n[prefix.len()..].to_string(),
                        present[&n[prefix.len()..]].shape.clone(),
                    )
                })
                .collect(),
            written: written
                .iter()
                .map(|(n, t)| (n.clone(), t.shape.clone()))
                .collect(),
        };
        converted.insert(prefix.clone(), (report, written));
    }
    // File order: each layer where its first tensor was, every other tensor where it was.
    let owner: HashMap<&str, &str> = layers
        .iter()
        .flat_map(|(p, names)| names.iter().map(move |n| (n.as_str(), p.as_str())))
        .collect();
    let mut out = Checkpoint {
        tensors: Vec::with_capacity(input.tensors.len()),
        metadata: input.metadata.clone(),
    };
    let (mut reports, mut copied) = (Vec::new(), Vec::new());
    for (name, tensor) in &input.tensors {
        match owner.get(name.as_str()) {
            Some(prefix) => {
                if let Some((report, written)) = converted.remove(*prefix) {
                    for (local, t) in written {
                        out.tensors.push((format!("{prefix}{local}"), t));
                    }
                    reports.push(report);
                }
            }
            None => {
                copied.push(name.clone());
                out.tensors.push((name.clone(), tensor.clone()));
            }
        }
    }
    let mut seen = BTreeSet::new();
    for (name, _) in &out.tensors {
        if !seen.insert(name.as_str()) {
            return Err(ConvertError::Usage(format!(
                "two tensors would be written as `{name}`: a converted name collides with a tensor \
                 that is copied unchanged"
            )));
        }
    }
    Ok(Converted {
        checkpoint: out,
        layers: reports,
        copied,
    })
}

/// The other ways to read `input` whose layers all fit (but for `--set` values): `--to` (the
/// reference layout, whatever the target) or `--from X` (a framework's native layout).
fn other_layouts(spec: &Spec, input: &Checkpoint, options: &ConvertOptions) -> Vec<String> {
    let fits = |fw: &Framework, direction| {
        let layout = Layout::new(spec, fw, direction);
        let layers = find_layers(input, &layout, &options.keep);
        !layers.is_empty()
            && layers.iter().all(|(prefix, names)| {
                let present = present_under(input, prefix, names);
                let layer = Layer { spec, prefix };
                matches!(
                    layer.fit(&layout, &present, &Values::new()),
                    Ok(_) | Err(ConvertError::NeedsSetting { .. })
                )
            })
    };
    let mut found = Vec::new();
    if let Some(reference) = spec.frameworks.get(&spec.reference) {
        if options.direction == Direction::From && fits(reference, Direction::To) {
            found.push("--to".to_string());
        }
    }
    for (key, fw) in &spec.frameworks {
        let asked = options.direction == Direction::From && *key == options.framework;
        if *key != spec.reference && !asked && fits(fw, Direction::From) {
            found.push(format!("--from {key}"));
        }
    }
    found
}

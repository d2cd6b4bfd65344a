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
mod tensor;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use mha_spec::{ExprValue, Framework, Literal, ParamType, Spec, Step};

pub use files::{Checkpoint, Format};
pub use tensor::RawTensor;

/// Which way a conversion goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Reference layout (torch `state_dict` names) → the framework's native names and shapes.
    To,
    /// The framework's native names and shapes → the reference layout.
    From,
}

/// A constructor parameter given on the command line: `[PREFIX]PARAM=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The layer prefix it applies to (`layers.1.self_attn.`), or empty for every layer.
    pub prefix: String,
    /// The parameter's name.
    pub param: String,
    /// The value as written.
    pub value: String,
}

impl std::str::FromStr for Setting {
    type Err = String;

    /// Parses `num_heads=6` or `layers.1.self_attn.num_heads=4`.
    fn from_str(text: &str) -> Result<Setting, String> {
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}`: expected [PREFIX.]PARAM=VALUE, e.g. num_heads=6"))?;
        let (prefix, param) = match key.rfind('.') {
            Some(dot) => (&key[..=dot], &key[dot + 1..]),
            None => ("", key),
        };
        if param.is_empty() || value.is_empty() {
            return Err(format!(
                "`{text}`: expected [PREFIX.]PARAM=VALUE, e.g. num_heads=6"
            ));
        }
        Ok(Setting {
            prefix: prefix.to_string(),
            param: param.to_string(),
            value: value.to_string(),
        })
    }
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

/// A layer's tensors by their names under its prefix.
fn present_under<'c>(
    input: &'c Checkpoint,
    prefix: &str,
    names: &'c [String],
) -> BTreeMap<&'c str, &'c RawTensor> {
    names
        .iter()
        .map(|n| {
            (
                &n[prefix.len()..],
                input.get(n).expect("a name of the file"),
            )
        })
        .collect()
}

/// One name of the input layout: a reference tensor (`--to`) or a native weight (`--from`).
struct Entry<'s> {
    /// The name under the layer's prefix.
    name: &'s str,
    /// Its shape, one expression per dimension.
    shape: Vec<mha_spec::Expr>,
    /// When it exists.
    exists: Exists<'s>,
}

enum Exists<'s> {
    /// A reference tensor's `when` (absent: always).
    When(Option<&'s mha_spec::Expr>),
    /// A native weight exists when the reference or logical tensor it comes from exists.
    Source(&'s str),
}

/// The names a layer of the op has in the input.
struct Layout<'s> {
    entries: Vec<Entry<'s>>,
}

impl<'s> Layout<'s> {
    fn new(spec: &'s Spec, fw: &'s Framework, direction: Direction) -> Layout<'s> {
        let entries = match direction {
            Direction::To => spec
                .weights
                .tensors
                .iter()
                .map(|t| Entry {
                    name: &t.name,
                    shape: t.shape.clone(),
                    exists: Exists::When(t.when.as_ref()),
                })
                .collect(),
            Direction::From => fw
                .weights
                .iter()
                .map(|m| {
                    let mut shape = source_shape(spec, &m.from);
                    for step in &m.steps {
                        match step {
                            Step::Transpose => shape.reverse(),
                            Step::Reshape(dims) => shape = dims.clone(),
                        }
                    }
                    Entry {
                        name: &m.native,
                        shape,
                        exists: Exists::Source(&m.from),
                    }
                })
                .collect(),
        };
        Layout { entries }
    }
}

/// The declared shape of a logical or reference tensor.
fn source_shape(spec: &Spec, name: &str) -> Vec<mha_spec::Expr> {
    spec.weights
        .logical
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.shape.clone())
        .or_else(|| {
            spec.weights
                .tensors
                .iter()
                .find(|t| t.name == name)
                .map(|t| t.shape.clone())
        })
        .unwrap_or_default()
}

/// Every prefix holding at least two of the layout's names (one name alone is too common: a
/// plain `out_proj.weight`), with the full names it holds, in file order.
fn find_layers(
    input: &Checkpoint,
    layout: &Layout<'_>,
    keep: &[String],
) -> Vec<(String, Vec<String>)> {
    let mut layers: Vec<(String, Vec<String>)> = Vec::new();
    for (name, _) in &input.tensors {
        for entry in &layout.entries {
            let Some(prefix) = name.strip_suffix(entry.name) else {
                continue;
            };
            if !(prefix.is_empty() || prefix.ends_with('.')) || keep.iter().any(|k| k == prefix) {
                continue;
            }
            match layers.iter_mut().find(|(p, _)| p == prefix) {
                Some((_, names)) => names.push(name.clone()),
                None => layers.push((prefix.to_string(), vec![name.clone()])),
            }
            break;
        }
    }
    layers.retain(|(_, names)| names.len() >= 2);
    layers
}

/// `--set` values by prefix (`""` for every layer), parsed by the parameters' types.
fn parse_settings(
    spec: &Spec,
    settings: &[Setting],
    layers: &[(String, Vec<String>)],
) -> Result<HashMap<String, HashMap<String, Literal>>, ConvertError> {
    let mut out: HashMap<String, HashMap<String, Literal>> = HashMap::new();
    for s in settings {
        let names = spec.signature.iter().map(|p| p.name.as_str());
        let param = spec.param(&s.param).ok_or_else(|| {
            ConvertError::Usage(format!(
                "--set {}{}={}: {} has no parameter `{}`{}",
                s.prefix,
                s.param,
                s.value,
                spec.op,
                s.param,
                mha_spec::did_you_mean(&s.param, names)
            ))
        })?;
        if !s.prefix.is_empty() && !layers.iter().any(|(p, _)| *p == s.prefix) {
            let prefixes: Vec<&str> = layers.iter().map(|(p, _)| p.as_str()).collect();
            return Err(ConvertError::Usage(format!(
                "--set {}{}: no {} layer has the prefix `{}`{}; the layers are: {}",
                s.prefix,
                s.param,
                spec.op,
                s.prefix,
                mha_spec::did_you_mean(&s.prefix, prefixes.iter().copied()),
                prefixes.join(", ")
            )));
        }
        let value = parse_value(param.ty, &s.value).ok_or_else(|| {
            ConvertError::Usage(format!(
                "--set {}{}={}: `{}` takes {}",
                s.prefix,
                s.param,
                s.value,
                s.param,
                match param.ty {
                    ParamType::Int => "a non-negative integer",
                    ParamType::OptionalInt => "a non-negative integer or null",
                    ParamType::Bool => "true or false",
                    ParamType::Float => "a number",
                }
            ))
        })?;
        out.entry(s.prefix.clone())
            .or_default()
            .insert(s.param.clone(), value);
    }
    Ok(out)
}

fn parse_value(ty: ParamType, text: &str) -> Option<Literal> {
    match ty {
        ParamType::Int => text.parse::<u32>().ok().map(|v| Literal::Int(v.into())),
        ParamType::OptionalInt if matches!(text, "null" | "none" | "None") => {
            Some(Literal::Null(()))
        }
        ParamType::OptionalInt => text.parse::<u32>().ok().map(|v| Literal::Int(v.into())),
        ParamType::Bool => match text {
            "true" | "True" => Some(Literal::Bool(true)),
            "false" | "False" => Some(Literal::Bool(false)),
            _ => None,
        },
        ParamType::Float => text
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Literal::Float),
    }
}

/// Where a logical or reference tensor comes from, for one config: a reference tensor, whole or
/// one of `of` parts along the first axis, viewed with `shape`.
struct Source<'s> {
    tensor: &'s str,
    chunk: Option<(usize, usize)>,
    shape: Vec<usize>,
}

type Values = HashMap<String, Literal>;

/// A piece of a reference tensor: part `(index, of)` along the first axis, or `None` for all of it.
type Part = (Option<(usize, usize)>, RawTensor);

/// One layer being converted.
struct Layer<'a> {
    spec: &'a Spec,
    prefix: &'a str,
}

impl<'a> Layer<'a> {
    fn error(&self, message: impl Into<String>) -> ConvertError {
        ConvertError::Layer {
            prefix: self.prefix.to_string(),
            message: message.into(),
        }
    }

    /// Evaluates a spec expression; a parameter nobody gave is an error that says how to give it.
    fn eval(&self, expr: &mha_spec::Expr, values: &Values) -> Result<ExprValue, ConvertError> {
        self.spec.eval(expr, values).map_err(|e| {
            let mut missing: Vec<String> = self
                .params_read(expr)
                .into_iter()
                .filter(|p| !values.contains_key(p))
                .collect();
            missing.sort();
            match missing.first() {
                Some(p) => ConvertError::NeedsSetting {
                    prefix: self.prefix.to_string(),
                    param: p.clone(),
                },
                None => self.error(format!("cannot evaluate `{expr}`: {e}")),
            }
        })
    }

    /// The constructor parameters an expression reads, through derived values.
    fn params_read(&self, expr: &mha_spec::Expr) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo: Vec<&mha_spec::Expr> = vec![expr];
        let mut seen = BTreeSet::new();
        while let Some(e) = todo.pop() {
            for name in e.identifiers() {
                if !seen.insert(name.to_string()) {
                    continue;
                }
                if let Some(d) = self.spec.derived.iter().find(|d| d.name == name) {
                    todo.push(&d.expr);
                } else {
                    out.insert(name.to_string());
                }
            }
        }
        out
    }

    fn eval_bool(
        &self,
        expr: Option<&mha_spec::Expr>,
        values: &Values,
    ) -> Result<bool, ConvertError> {
        match expr {
            None => Ok(true),
            Some(e) => match self.eval(e, values)? {
                ExprValue::Bool(b) => Ok(b),
                ExprValue::Int(i) => Ok(i != 0),
            },
        }
    }

    fn eval_dims(
        &self,
        dims: &[mha_spec::Expr],
        values: &Values,
    ) -> Result<Vec<usize>, ConvertError> {
        dims.iter()
            .map(|d| match self.eval(d, values)? {
                ExprValue::Int(i) => usize::try_from(i)
                    .map_err(|_| self.error(format!("dimension `{d}` is {i}, below zero"))),
                ExprValue::Bool(_) => Err(self.error(format!("dimension `{d}` is not a number"))),
            })
            .collect()
    }

    /// Where `name` (logical or reference) comes from for this config; `None` when it does not exist.
    fn source(&self, name: &'a str, values: &Values) -> Result<Option<Source<'a>>, ConvertError> {
        let weights = &self.spec.weights;
        if let Some(l) = weights.logical.iter().find(|l| l.name == name) {
            for s in &l.sources {
                if self.eval_bool(s.when.as_ref(), values)? {
                    return Ok(Some(Source {
                        tensor: &s.tensor,
                        chunk: s.chunk.zip(s.of),
                        shape: self.eval_dims(&l.shape, values)?,
                    }));
                }
            }
            return Ok(None);
        }
        match weights.tensors.iter().find(|t| t.name == name) {
            Some(t) if self.eval_bool(t.when.as_ref(), values)? => Ok(Some(Source {
                tensor: &t.name,
                chunk: None,
                shape: self.eval_dims(&t.shape, values)?,
            })),
            Some(_) => Ok(None),
            None => Err(self.error(format!(
                "the spec maps from `{name}`, which is neither a weight nor a logical view"
            ))),
        }
    }

    fn exists(&self, entry: &Entry<'a>, values: &Values) -> Result<bool, ConvertError> {
        match &entry.exists {
            Exists::When(when) => self.eval_bool(*when, values),
            Exists::Source(name) => Ok(self.source(name, values)?.is_some()),
        }
    }

    /// The constructor parameters of the layer: `given`, then what the tensors' shapes and presence
    /// say, then defaults; the booleans the tensors do not decide keep their given or default value.
    fn fit(
        &self,
        layout: &Layout<'a>,
        present: &BTreeMap<&str, &RawTensor>,
        given: &Values,
    ) -> Result<Values, ConvertError> {
        let spec = self.spec;
        let mut bound = given.clone();
        for entry in &layout.entries {
            let Some(t) = present.get(entry.name) else {
                continue;
            };
            for (expr, &dim) in entry.shape.iter().zip(&t.shape) {
                let name = expr.source();
                if !bound.contains_key(name)
                    && spec
                        .param(name)
                        .is_some_and(|p| matches!(p.ty, ParamType::Int | ParamType::OptionalInt))
                {
                    bound.insert(name.to_string(), Literal::Int(dim as i64));
                }
            }
        }
        let free: Vec<&str> = spec
            .signature
            .iter()
            .filter(|p| p.ty == ParamType::Bool && !given.contains_key(&p.name))
            .map(|p| p.name.as_str())
            .take(16)
            .collect();
        let defaults = spec.defaults();
        // Fewest flips from the defaults first: a flag the tensors do not decide keeps its default.
        let mut combos: Vec<u32> = (0..1u32 << free.len()).collect();
        combos.sort_by_key(|c| c.count_ones());
        let mut best: Option<Vec<String>> = None;
        for combo in combos {
            let mut trial = bound.clone();
            for (i, name) in free.iter().enumerate() {
                let default = matches!(defaults.get(*name), Some(Literal::Bool(true)));
                trial.insert(
                    name.to_string(),
                    Literal::Bool(default ^ (combo >> i & 1 == 1)),
                );
            }
            let values = spec.resolve(&trial);
            let problems = self.problems(layout, present, &values)?;
            if problems.is_empty() {
                let broken: Vec<String> = spec
                    .signature
                    .iter()
                    .flat_map(|p| spec.check_param(p, &values))
                    .collect();
                if !broken.is_empty() {
                    return Err(self.error(broken.join("; ")));
                }
                return Ok(values);
            }
            if best.as_ref().is_none_or(|b| problems.len() < b.len()) {
                best = Some(problems);
            }
        }
        Err(self.error(format!(
            "its tensors fit no {}: {} (if this is not a {} layer, pass --keep {} to copy it \
             unchanged)",
            spec.op,
            best.unwrap_or_default().join("; "),
            spec.op,
            self.prefix
        )))
    }

    /// How the present tensors differ from what `values` calls for.
    fn problems(
        &self,
        layout: &Layout<'a>,
        present: &BTreeMap<&str, &RawTensor>,
        values: &Values,
    ) -> Result<Vec<String>, ConvertError> {
        let mut problems = Vec::new();
        for entry in &layout.entries {
            let exists = self.exists(entry, values)?;
            match (exists, present.get(entry.name)) {
                (true, None) => problems.push(format!("`{}` is missing", entry.name)),
                (false, Some(_)) => problems.push(format!("`{}` is not expected", entry.name)),
                (true, Some(t)) => {
                    let want = self.eval_dims(&entry.shape, values)?;
                    if t.shape != want {
                        problems.push(format!(
                            "`{}` has shape {:?}, expected {want:?} ({})",
                            entry.name,
                            t.shape,
                            entry
                                .shape
                                .iter()
                                .map(|e| e.source())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                }
                (false, None) => {}
            }
        }
        Ok(problems)
    }

    /// Reference tensors → the framework's native tensors.
    fn native_from_reference(
        &self,
        fw: &'a Framework,
        present: &BTreeMap<&str, &RawTensor>,
        values: &Values,
    ) -> Result<Vec<(String, RawTensor)>, ConvertError> {
        let mut out = Vec::new();
        let mut used = BTreeSet::new();
        for m in &fw.weights {
            let Some(Source {
                tensor,
                chunk,
                shape,
            }) = self.source(&m.from, values)?
            else {
                continue;
            };
            let whole = present.get(tensor).ok_or_else(|| {
                self.error(format!("`{}` needs `{tensor}`, which is missing", m.native))
            })?;
            used.insert(tensor);
            let step_error =
                |e: String| self.error(format!("`{}` from `{}`: {e}", m.native, m.from));
            let mut t = match chunk {
                Some((i, of)) => whole.chunk(i, of).map_err(step_error)?,
                None => (*whole).clone(),
            }
            .reshape(&shape)
            .map_err(step_error)?;
            for step in &m.steps {
                t = match step {
                    Step::Transpose => t.transpose(),
                    Step::Reshape(dims) => t.reshape(&self.eval_dims(dims, values)?),
                }
                .map_err(step_error)?;
            }
            out.push((m.native.clone(), t));
        }
        if let Some(lost) = present.keys().find(|n| !used.contains(*n)) {
            return Err(self.error(format!(
                "the {} mapping has no place for `{lost}`: converting would drop it",
                fw.display_name
            )));
        }
        Ok(out)
    }

    /// The framework's native tensors → reference tensors (the steps undone in reverse).
    fn reference_from_native(
        &self,
        fw: &'a Framework,
        present: &BTreeMap<&str, &RawTensor>,
        values: &Values,
    ) -> Result<Vec<(String, RawTensor)>, ConvertError> {
        // reference tensor -> parts (chunk index or None for the whole tensor)
        let mut parts: BTreeMap<&str, Vec<Part>> = BTreeMap::new();
        for m in &fw.weights {
            let Some(Source {
                tensor,
                chunk,
                shape,
            }) = self.source(&m.from, values)?
            else {
                continue;
            };
            let step_error = |e: String| self.error(format!("`{}` to `{}`: {e}", m.native, m.from));
            let mut shapes = vec![shape];
            for step in &m.steps {
                let next = match step {
                    Step::Transpose => shapes
                        .last()
                        .expect("a shape")
                        .iter()
                        .rev()
                        .copied()
                        .collect(),
                    Step::Reshape(dims) => self.eval_dims(dims, values)?,
                };
                shapes.push(next);
            }
            let native = present
                .get(m.native.as_str())
                .ok_or_else(|| self.error(format!("`{}` is missing", m.native)))?;
            let mut t = (*native).clone();
            for (i, step) in m.steps.iter().enumerate().rev() {
                t = match step {
                    Step::Transpose => t.transpose(),
                    Step::Reshape(_) => t.reshape(&shapes[i]),
                }
                .map_err(step_error)?;
            }
            parts.entry(tensor).or_default().push((chunk, t));
        }
        let mut out = Vec::new();
        for w in &self.spec.weights.tensors {
            if !self.eval_bool(w.when.as_ref(), values)? {
                continue;
            }
            let shape = self.eval_dims(&w.shape, values)?;
            let mut pieces = parts.remove(w.name.as_str()).unwrap_or_default();
            let joined = match pieces.iter().position(|(c, _)| c.is_none()) {
                Some(whole) => pieces.swap_remove(whole).1,
                None => {
                    pieces.sort_by_key(|(c, _)| c.map(|(i, _)| i));
                    let of = pieces.first().and_then(|(c, _)| *c).map(|(_, of)| of);
                    let complete = of.is_some_and(|of| {
                        pieces.len() == of
                            && pieces
                                .iter()
                                .enumerate()
                                .all(|(i, (c, _))| c.is_some_and(|(j, _)| j == i))
                    });
                    if !complete {
                        return Err(self.error(format!(
                            "the {} mapping does not give every part of `{}`",
                            fw.display_name, w.name
                        )));
                    }
                    let tensors: Vec<RawTensor> = pieces.into_iter().map(|(_, t)| t).collect();
                    RawTensor::concat(&tensors)
                        .map_err(|e| self.error(format!("`{}`: {e}", w.name)))?
                }
            };
            let t = joined
                .reshape(&shape)
                .map_err(|e| self.error(format!("`{}`: {e}", w.name)))?;
            out.push((w.name.clone(), t));
        }
        Ok(out)
    }

    /// `name=value` for every parameter the conversion read (shapes, conditions, steps).
    fn shown(&self, values: &Values, layout: &Layout<'a>, fw: &Framework) -> Vec<String> {
        let mut read = BTreeSet::new();
        let mut exprs: Vec<&mha_spec::Expr> = Vec::new();
        for entry in &layout.entries {
            exprs.extend(&entry.shape);
            if let Exists::When(Some(when)) = entry.exists {
                exprs.push(when);
            }
        }
        let weights = &self.spec.weights;
        exprs.extend(
            weights
                .tensors
                .iter()
                .flat_map(|t| t.shape.iter().chain(&t.when)),
        );
        for l in &weights.logical {
            exprs.extend(&l.shape);
            exprs.extend(l.sources.iter().filter_map(|s| s.when.as_ref()));
        }
        for m in &fw.weights {
            for step in &m.steps {
                if let Step::Reshape(dims) = step {
                    exprs.extend(dims);
                }
            }
        }
        for e in exprs {
            read.extend(self.params_read(e));
        }
        self.spec
            .signature
            .iter()
            .filter(|p| read.contains(&p.name))
            .filter_map(|p| {
                let v = values.get(&p.name)?;
                Some(format!(
                    "{}={}",
                    p.name,
                    match v {
                        Literal::Bool(b) => b.to_string(),
                        Literal::Int(i) => i.to_string(),
                        Literal::Float(f) => format!("{f:?}"),
                        Literal::Null(()) => "null".into(),
                    }
                ))
            })
            .collect()
    }
}

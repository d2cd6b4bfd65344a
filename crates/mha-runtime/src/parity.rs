//! Parity against real PyTorch: runs fixture directories in the `mha-golden-fixtures/1` format
//! (an `index.json` and one safetensors file per case, made by `scripts/make_torch_fixtures.py`)
//! through [`MultiheadAttention`] and compares with torch's outputs.
//!
//! ```
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/torch");
//! let reports = mha_runtime::parity::run_dir(dir, mha_runtime::parity::Tolerance::default())?;
//! assert!(reports.iter().all(|r| r.passed()));
//! # Ok::<(), mha_runtime::MhaError>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, ArrayViewD};
use serde::Deserialize;

use crate::safetensors_io::{self, Loaded};
use crate::{ForwardOptions, Mask, MhaError, MultiheadAttention, MultiheadAttentionConfig};

/// The format name this module reads.
pub const FORMAT: &str = "mha-golden-fixtures/1";

/// Elementwise pass rule: `|got - want| <= atol + rtol * |want|`, NaN positions equal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Absolute part.
    pub atol: f32,
    /// Relative part.
    pub rtol: f32,
}

impl Default for Tolerance {
    /// The format's suggested tolerance: `atol = 1e-5`, `rtol = 1e-4`.
    fn default() -> Self {
        Self {
            atol: 1e-5,
            rtol: 1e-4,
        }
    }
}

/// Which forward the runner checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardPath {
    /// [`MultiheadAttention::forward`]: what users get (the fast kernels where they apply).
    #[default]
    Default,
    /// [`MultiheadAttention::forward_reference`]: the exact reference path (the oracle).
    Reference,
}

/// `index.json`: the parts the runner uses.
#[derive(Debug, Clone, Deserialize)]
pub struct FixtureIndex {
    /// Must be [`FORMAT`].
    pub format: String,
    /// The torch version that produced the set.
    #[serde(default)]
    pub torch_version: Option<String>,
    /// The cases.
    pub cases: Vec<FixtureCase>,
}

/// One case of `index.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct FixtureCase {
    /// Case name.
    pub name: String,
    /// The safetensors file beside `index.json`.
    pub file: String,
    /// What the case covers.
    #[serde(default)]
    pub description: String,
    /// Torch's constructor arguments.
    pub ctor: Ctor,
    /// Torch's forward flags.
    pub forward: ForwardFlags,
    /// Names of the parameter tensors in the file.
    pub params: Vec<String>,
    /// A note when the case only matches with the mask added in float32.
    #[serde(default)]
    pub precision_sensitive: Option<String>,
}

/// `ctor` of a case.
#[derive(Debug, Clone, Deserialize)]
pub struct Ctor {
    /// `embed_dim`.
    pub embed_dim: usize,
    /// `num_heads`.
    pub num_heads: usize,
    /// `dropout`.
    pub dropout: f64,
    /// `bias`.
    pub bias: bool,
    /// `add_bias_kv`.
    pub add_bias_kv: bool,
    /// `add_zero_attn`.
    pub add_zero_attn: bool,
    /// `kdim`.
    pub kdim: Option<usize>,
    /// `vdim`.
    pub vdim: Option<usize>,
    /// `batch_first`.
    pub batch_first: bool,
}

impl Ctor {
    /// The layer config.
    pub fn config(&self) -> MultiheadAttentionConfig {
        MultiheadAttentionConfig::new(self.embed_dim, self.num_heads)
            .with_dropout(self.dropout)
            .with_bias(self.bias)
            .with_add_bias_kv(self.add_bias_kv)
            .with_add_zero_attn(self.add_zero_attn)
            .with_kdim(self.kdim)
            .with_vdim(self.vdim)
            .with_batch_first(self.batch_first)
    }
}

/// `forward` flags of a case (the masks are read from the file when present).
#[derive(Debug, Clone, Deserialize)]
pub struct ForwardFlags {
    /// `need_weights`.
    pub need_weights: bool,
    /// `average_attn_weights`.
    pub average_attn_weights: bool,
    /// `is_causal`.
    pub is_causal: bool,
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseReport {
    /// Case name.
    pub name: String,
    /// Max `|got - want|` of `attn_output` over non-NaN positions (`None` if not computed).
    pub output_max_abs_err: Option<f32>,
    /// Same for `attn_weights`, when the case has them.
    pub weights_max_abs_err: Option<f32>,
    /// Why the case failed; empty when it passed.
    pub failures: Vec<String>,
}

impl CaseReport {
    /// No failures.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// How two tensors compare.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Max `|got - want|` over positions where neither is NaN.
    pub max_abs_err: f32,
    /// Positions outside the tolerance.
    pub out_of_tolerance: usize,
    /// Positions NaN in one and not the other.
    pub nan_mismatches: usize,
}

impl Comparison {
    /// Within tolerance everywhere with equal NaN positions.
    pub fn passed(&self) -> bool {
        self.out_of_tolerance == 0 && self.nan_mismatches == 0
    }
}

/// Compares `got` with `want` elementwise; `None` when the shapes differ.
///
/// ```
/// use mha_runtime::parity::{compare, Tolerance};
/// use ndarray::array;
///
/// let want = array![1.0f32, f32::NAN].into_dyn();
/// let got = array![1.00001f32, f32::NAN].into_dyn();
/// assert!(compare(got.view(), want.view(), Tolerance::default()).unwrap().passed());
/// ```
pub fn compare(
    got: ArrayViewD<'_, f32>,
    want: ArrayViewD<'_, f32>,
    tol: Tolerance,
) -> Option<Comparison> {
    if got.shape() != want.shape() {
        return None;
    }
    let mut c = Comparison {
        max_abs_err: 0.0,
        out_of_tolerance: 0,
        nan_mismatches: 0,
    };
    for (&g, &w) in got.iter().zip(want.iter()) {
        match (g.is_nan(), w.is_nan()) {
            (true, true) => {}
            (false, false) => {
                let err = if g == w { 0.0 } else { (g - w).abs() };
                if err.is_nan() || err > tol.atol + tol.rtol * w.abs() {
                    c.out_of_tolerance += 1;
                }
                if err > c.max_abs_err || err.is_nan() {
                    c.max_abs_err = err;
                }
            }
            _ => c.nan_mismatches += 1,
        }
    }
    Some(c)
}

/// Reads and checks `DIR/index.json`.
///
/// ```
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/torch");
/// let index = mha_runtime::parity::load_index(dir)?;
/// assert_eq!(index.format, mha_runtime::parity::FORMAT);
/// # Ok::<(), mha_runtime::MhaError>(())
/// ```
pub fn load_index(dir: impl AsRef<Path>) -> Result<FixtureIndex, MhaError> {
    let path = dir.as_ref().join("index.json");
    let bytes = safetensors_io::read_file(&path)?;
    let index: FixtureIndex =
        serde_json::from_slice(&bytes).map_err(|e| fixture_error(&path, e.to_string()))?;
    if index.format != FORMAT {
        return Err(fixture_error(
            &path,
            format!("format is {:?}, expected {FORMAT:?}", index.format),
        ));
    }
    Ok(index)
}

/// Runs every case of a fixture directory. A case that cannot be loaded is a failed report;
/// only an unreadable `index.json` is an error.
pub fn run_dir(dir: impl AsRef<Path>, tol: Tolerance) -> Result<Vec<CaseReport>, MhaError> {
    run_dir_with(dir, tol, ForwardPath::Default)
}

/// [`run_dir`] through the chosen forward.
///
/// ```
/// use mha_runtime::parity::{run_dir_with, ForwardPath, Tolerance};
///
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/torch");
/// let reports = run_dir_with(dir, Tolerance::default(), ForwardPath::Reference)?;
/// assert!(reports.iter().all(|r| r.passed()));
/// # Ok::<(), mha_runtime::MhaError>(())
/// ```
pub fn run_dir_with(
    dir: impl AsRef<Path>,
    tol: Tolerance,
    path: ForwardPath,
) -> Result<Vec<CaseReport>, MhaError> {
    let dir = dir.as_ref();
    let index = load_index(dir)?;
    Ok(index
        .cases
        .iter()
        .map(|case| match run_case_with(dir, case, tol, path) {
            Ok(report) => report,
            Err(e) => CaseReport {
                name: case.name.clone(),
                output_max_abs_err: None,
                weights_max_abs_err: None,
                failures: vec![e.to_string()],
            },
        })
        .collect())
}

/// Runs one case: builds the layer from the file's parameters, runs `forward` on its inputs and
/// masks, and compares `attn_output` (and `attn_weights`) with torch's.
///
/// ```
/// use mha_runtime::parity::{load_index, run_case, Tolerance};
///
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/torch");
/// let index = load_index(dir)?;
/// let report = run_case(dir, &index.cases[0], Tolerance::default())?;
/// assert!(report.passed(), "{:?}", report.failures);
/// # Ok::<(), mha_runtime::MhaError>(())
/// ```
pub fn run_case(
    dir: impl AsRef<Path>,
    case: &FixtureCase,
    tol: Tolerance,
) -> Result<CaseReport, MhaError> {
    run_case_with(dir, case, tol, ForwardPath::Default)
}

/// [`run_case`] through the chosen forward.
pub fn run_case_with(
    dir: impl AsRef<Path>,
    case: &FixtureCase,
    tol: Tolerance,
    forward: ForwardPath,
) -> Result<CaseReport, MhaError> {
    let path: PathBuf = dir.as_ref().join(&case.file);
    let bytes = safetensors_io::read_file(&path)?;
    let source = path.display().to_string();
    let file = safetensors_io::parse(&bytes, Some(&source))?;
    let mut tensors: BTreeMap<String, Loaded> = BTreeMap::new();
    for (name, view) in file.tensors() {
        let loaded = safetensors_io::convert(&name, &view)?;
        tensors.insert(name, loaded);
    }
    let float = |name: &str| -> Result<&ArrayD<f32>, MhaError> {
        match tensors.get(name) {
            Some(Loaded::Float(t)) => Ok(t),
            Some(Loaded::Bool(_)) => Err(MhaError::Dtype {
                tensor: name.to_string(),
                expected: "float32".into(),
                actual: "bool".into(),
            }),
            None => Err(fixture_error(&path, format!("missing tensor `{name}`"))),
        }
    };
    let mask = |name: &str| -> Option<Mask<'_>> {
        match tensors.get(name) {
            Some(Loaded::Float(t)) => Some(Mask::Float(t.view())),
            Some(Loaded::Bool(t)) => Some(Mask::Bool(t.view())),
            None => None,
        }
    };

    let params: Result<Vec<(String, ArrayD<f32>)>, MhaError> = case
        .params
        .iter()
        .map(|name| float(name).map(|t| (name.clone(), t.clone())))
        .collect();
    let layer = MultiheadAttention::from_tensors(case.ctor.config(), params?)?;
    let mut options = ForwardOptions::default()
        .with_need_weights(case.forward.need_weights)
        .with_average_attn_weights(case.forward.average_attn_weights)
        .with_is_causal(case.forward.is_causal);
    options.key_padding_mask = mask("key_padding_mask");
    options.attn_mask = mask("attn_mask");
    let (query, key, value) = (float("query")?, float("key")?, float("value")?);
    let got = match forward {
        ForwardPath::Default => layer.forward(query.view(), key.view(), value.view(), &options)?,
        ForwardPath::Reference => {
            layer.forward_reference(query.view(), key.view(), value.view(), &options)?
        }
    };

    let mut report = CaseReport {
        name: case.name.clone(),
        output_max_abs_err: None,
        weights_max_abs_err: None,
        failures: Vec::new(),
    };
    let want_output = float("attn_output")?;
    report.output_max_abs_err = check(
        &mut report.failures,
        "attn_output",
        got.output.view(),
        want_output.view(),
        tol,
    );
    match (tensors.contains_key("attn_weights"), got.weights) {
        (true, Some(w)) => {
            let want = float("attn_weights")?;
            report.weights_max_abs_err = check(
                &mut report.failures,
                "attn_weights",
                w.view(),
                want.view(),
                tol,
            );
        }
        (false, None) => {}
        (true, None) => report
            .failures
            .push("attn_weights: torch returned weights, the layer did not".into()),
        (false, Some(_)) => report
            .failures
            .push("attn_weights: the layer returned weights, torch did not".into()),
    }
    Ok(report)
}

fn check(
    failures: &mut Vec<String>,
    name: &str,
    got: ArrayViewD<'_, f32>,
    want: ArrayViewD<'_, f32>,
    tol: Tolerance,
) -> Option<f32> {
    match compare(got.view(), want.view(), tol) {
        None => {
            failures.push(format!(
                "{name}: shape {:?}, torch {:?}",
                got.shape(),
                want.shape()
            ));
            None
        }
        Some(c) => {
            if c.out_of_tolerance > 0 {
                failures.push(format!(
                    "{name}: {} of {} values outside tolerance (max abs err {:e})",
                    c.out_of_tolerance,
                    want.len(),
                    c.max_abs_err
                ));
            }
            if c.nan_mismatches > 0 {
                failures.push(format!(
                    "{name}: NaN at {} positions where torch differs",
                    c.nan_mismatches
                ));
            }
            Some(c.max_abs_err)
        }
    }
}

fn fixture_error(path: &Path, message: String) -> MhaError {
    MhaError::Fixture {
        path: path.to_path_buf(),
        message,
    }
}

//! `mha-golden-fixtures/1` (`../shared/parity/FORMAT.md`): `torch.nn.MultiheadAttention` cases
//! (made by `scripts/make_torch_fixtures.py`), run through [`MultiheadAttention`].
//!
//! ```
//! use mha_parity::{mha, DispatchPath, Tolerance};
//!
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/torch");
//! let index = mha::load_index(dir)?;
//! let report = mha::run_case(dir, &index.cases[0], Tolerance::default(), &DispatchPath::all());
//! assert!(report.passed(), "{:?}", report.failures);
//! # Ok::<(), mha_parity::ParityError>(())
//! ```

use std::path::Path;

use mha_runtime::{
    ForwardOptions, LoadedTensor, Mask, MultiheadAttention, MultiheadAttentionConfig,
};
use serde::Deserialize;

use crate::{check, CaseFile, CaseReport, DispatchPath, ParityError, Tolerance};

/// The format name this module reads.
pub const FORMAT: &str = "mha-golden-fixtures/1";

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

/// Reads and checks `DIR/index.json`.
///
/// ```
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/torch");
/// let index = mha_parity::mha::load_index(dir)?;
/// assert_eq!(index.format, mha_parity::mha::FORMAT);
/// # Ok::<(), mha_parity::ParityError>(())
/// ```
pub fn load_index(dir: impl AsRef<Path>) -> Result<FixtureIndex, ParityError> {
    crate::load_index(dir.as_ref())
}

/// Runs every case of a directory in this format on `paths`.
pub fn run_dir_on(
    dir: impl AsRef<Path>,
    tol: Tolerance,
    paths: &[DispatchPath],
) -> Result<Vec<CaseReport>, ParityError> {
    crate::run_format_on::<FixtureIndex>(dir.as_ref(), tol, paths)
}

/// Runs one case on each of `paths`: builds the layer from the file's parameters, runs the
/// forward on its inputs and masks, and compares `attn_output` (and `attn_weights`) with torch's.
/// A case that cannot be loaded or run is a failed report.
pub fn run_case(
    dir: impl AsRef<Path>,
    case: &FixtureCase,
    tol: Tolerance,
    paths: &[DispatchPath],
) -> CaseReport {
    crate::run_case::<FixtureIndex>(dir.as_ref(), case, tol, paths)
}

impl crate::FixtureFormat for FixtureIndex {
    const FORMAT: &'static str = FORMAT;
    type Case = FixtureCase;

    fn format(&self) -> &str {
        &self.format
    }

    fn cases(&self) -> &[FixtureCase] {
        &self.cases
    }

    fn name(case: &FixtureCase) -> &str {
        &case.name
    }

    fn run_into(
        report: &mut CaseReport,
        dir: &Path,
        case: &FixtureCase,
        tol: Tolerance,
        paths: &[DispatchPath],
    ) -> Result<(), ParityError> {
        run_case_into(report, dir, case, tol, paths)
    }
}

fn run_case_into(
    report: &mut CaseReport,
    dir: &Path,
    case: &FixtureCase,
    tol: Tolerance,
    paths: &[DispatchPath],
) -> Result<(), ParityError> {
    let file = CaseFile::load(dir, &case.file)?;
    let mask = |name: &str| -> Option<Mask<'_>> {
        match file.get(name) {
            Some(LoadedTensor::Float(t)) => Some(Mask::Float(t.view())),
            Some(LoadedTensor::Bool(t)) => Some(Mask::Bool(t.view())),
            None => None,
        }
    };
    let params: Result<Vec<(String, _)>, ParityError> = case
        .params
        .iter()
        .map(|name| file.float(name).map(|t| (name.clone(), t.clone())))
        .collect();
    let layer = MultiheadAttention::from_tensors(case.ctor.config(), params?)?;
    let mut options = ForwardOptions::default()
        .with_need_weights(case.forward.need_weights)
        .with_average_attn_weights(case.forward.average_attn_weights)
        .with_is_causal(case.forward.is_causal);
    options.key_padding_mask = mask("key_padding_mask");
    options.attn_mask = mask("attn_mask");
    let (query, key, value) = (
        file.float("query")?,
        file.float("key")?,
        file.float("value")?,
    );
    let want_output = file.float("attn_output")?;
    let want_weights = if file.has("attn_weights") {
        Some(file.float("attn_weights")?)
    } else {
        None
    };
    for &path in paths {
        let (q, k, v) = (query.view(), key.view(), value.view());
        let got = match path {
            DispatchPath::Reference => layer.forward_reference(q, k, v, &options),
            DispatchPath::Fast(isa) => layer.forward_with_isa(q, k, v, &options, isa),
        };
        let got = match got {
            Ok(got) => got,
            Err(e) => {
                report.failures.push(format!("{path}: {e}"));
                continue;
            }
        };
        check(
            report,
            format!("{path} attn_output"),
            got.output.view(),
            want_output.view(),
            tol,
            |r| &mut r.output_max_abs_err,
        );
        match (want_weights, got.weights) {
            (Some(want), Some(w)) => check(
                report,
                format!("{path} attn_weights"),
                w.view(),
                want.view(),
                tol,
                |r| &mut r.weights_max_abs_err,
            ),
            (None, None) => {}
            (Some(_), None) => report.failures.push(format!(
                "{path} attn_weights: torch returned weights, the layer did not"
            )),
            (None, Some(_)) => report.failures.push(format!(
                "{path} attn_weights: the layer returned weights, torch did not"
            )),
        }
    }
    Ok(())
}

//! `sdpa-golden-fixtures/1` (`../shared/parity/sdpa/FORMAT.md`):
//! `torch.nn.functional.scaled_dot_product_attention` cases (made by
//! `scripts/make_sdpa_fixtures.py`), run through [`mha_runtime::scaled_dot_product_attention`].
//!
//! ```
//! use mha_parity::{sdpa, DispatchPath, Tolerance};
//!
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/sdpa");
//! let index = sdpa::load_index(dir)?;
//! let report = sdpa::run_case(dir, &index.cases[0], Tolerance::default(), &DispatchPath::all());
//! assert!(report.passed(), "{:?}", report.failures);
//! # Ok::<(), mha_parity::ParityError>(())
//! ```

use std::path::Path;

use mha_runtime::{LoadedTensor, SdpaMask, SdpaOptions};
use serde::Deserialize;

use crate::{check, fixture_error, CaseFile, CaseReport, DispatchPath, ParityError, Tolerance};

/// The format name this module reads.
pub const FORMAT: &str = "sdpa-golden-fixtures/1";

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
    /// The call's arguments.
    pub call: Call,
    /// A note when the case only matches with the mask added in float32.
    #[serde(default)]
    pub precision_sensitive: Option<String>,
}

/// `call` of a case (the mask itself is read from the file).
#[derive(Debug, Clone, Deserialize)]
pub struct Call {
    /// `{dtype, shape}` of `attn_mask`, or null.
    pub attn_mask: Option<MaskInfo>,
    /// `dropout_p` (the format's cases have 0).
    pub dropout_p: f64,
    /// `is_causal`.
    pub is_causal: bool,
    /// `scale` (`None` = `1/√E`).
    pub scale: Option<f64>,
    /// `enable_gqa`.
    pub enable_gqa: bool,
}

/// `call.attn_mask`.
#[derive(Debug, Clone, Deserialize)]
pub struct MaskInfo {
    /// `"bool"` or `"float32"`.
    pub dtype: String,
    /// The mask's shape.
    pub shape: Vec<usize>,
}

/// Reads and checks `DIR/index.json`.
///
/// ```
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/sdpa");
/// let index = mha_parity::sdpa::load_index(dir)?;
/// assert_eq!(index.format, mha_parity::sdpa::FORMAT);
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

/// Runs one case on each of `paths` and compares `output` with torch's. A case that cannot be
/// loaded or run is a failed report.
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
    let attn_mask = match (file.get("attn_mask"), &case.call.attn_mask) {
        (Some(LoadedTensor::Bool(m)), Some(_)) => Some(SdpaMask::Bool(m.view())),
        (Some(LoadedTensor::Float(m)), Some(_)) => Some(SdpaMask::Float(m.view())),
        (None, None) => None,
        (Some(_), None) => {
            return Err(fixture_error(
                &file.path,
                "holds `attn_mask` but the case's call has none".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(fixture_error(
                &file.path,
                "missing tensor `attn_mask`".into(),
            ))
        }
    };
    let options = SdpaOptions {
        attn_mask,
        dropout_p: case.call.dropout_p,
        is_causal: case.call.is_causal,
        scale: case.call.scale,
        enable_gqa: case.call.enable_gqa,
        dropout_seed: None,
    };
    let (query, key, value) = (
        file.float("query")?,
        file.float("key")?,
        file.float("value")?,
    );
    let want = file.float("output")?;
    for &path in paths {
        let (q, k, v) = (query.view(), key.view(), value.view());
        let got = match path {
            DispatchPath::Reference => {
                mha_runtime::scaled_dot_product_attention_reference(q, k, v, &options)
            }
            DispatchPath::Fast(isa) => {
                mha_runtime::scaled_dot_product_attention_with_isa(q, k, v, &options, isa)
            }
        };
        match got {
            Ok(got) => check(
                report,
                format!("{path} output"),
                got.view(),
                want.view(),
                tol,
                |r| &mut r.output_max_abs_err,
            ),
            Err(e) => report.failures.push(format!("{path}: {e}")),
        }
    }
    Ok(())
}

//! Parity against real PyTorch: runs fixture directories made by torch through `mha-runtime` on
//! every dispatch path and compares with torch's outputs.
//!
//! A fixture directory holds an `index.json` and one safetensors file per case; the index's
//! `format` field says which op the cases are for:
//! - `mha-golden-fixtures/1` ([`mha`]): `torch.nn.MultiheadAttention` cases, run through
//!   [`MultiheadAttention`](mha_runtime::MultiheadAttention);
//! - `sdpa-golden-fixtures/1` ([`sdpa`]): `torch.nn.functional.scaled_dot_product_attention`
//!   cases, run through [`mha_runtime::scaled_dot_product_attention`].
//!
//! Each case is checked on every [`DispatchPath`] this CPU runs (the exact reference path and the
//! fast kernels of every supported instruction-set level) unless the caller picks paths.
//!
//! ```
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/torch");
//! let reports = mha_parity::run_dir(dir, mha_parity::Tolerance::default())?;
//! assert!(reports.iter().all(|r| r.passed()));
//! # Ok::<(), mha_parity::ParityError>(())
//! ```

pub mod mha;
pub mod sdpa;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mha_runtime::fast::Isa;
use mha_runtime::{LoadedTensor, MhaError};
use ndarray::{ArrayD, ArrayViewD};
use serde::de::DeserializeOwned;

/// Elementwise pass rule: `|got - want| <= atol + rtol * |want|`, NaN positions equal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Absolute part.
    pub atol: f32,
    /// Relative part.
    pub rtol: f32,
}

impl Default for Tolerance {
    /// The formats' suggested tolerance: `atol = 1e-5`, `rtol = 1e-4`.
    fn default() -> Self {
        Self {
            atol: 1e-5,
            rtol: 1e-4,
        }
    }
}

/// Which implementation a case runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatchPath {
    /// The exact reference path (the oracle).
    Reference,
    /// The fast kernels of one instruction-set level (one this CPU supports).
    Fast(Isa),
}

impl DispatchPath {
    /// The reference path, then the fast kernels of every level this CPU supports.
    ///
    /// ```
    /// use mha_parity::DispatchPath;
    /// let paths = DispatchPath::all();
    /// assert_eq!(paths[0], DispatchPath::Reference);
    /// assert!(paths.len() >= 2); // the portable kernels run everywhere
    /// ```
    pub fn all() -> Vec<DispatchPath> {
        std::iter::once(DispatchPath::Reference)
            .chain(Isa::supported().into_iter().map(DispatchPath::Fast))
            .collect()
    }
}

impl std::fmt::Display for DispatchPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DispatchPath::Reference => f.write_str("reference"),
            DispatchPath::Fast(isa) => write!(f, "fast-{isa}"),
        }
    }
}

/// Why a fixture directory could not be run at all (a broken case is a failed [`CaseReport`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParityError {
    /// A fixture file is not in the expected format.
    #[error("invalid parity fixture `{}`: {message}", .path.display())]
    Fixture {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// The runtime refused a case's tensors or call.
    #[error(transparent)]
    Runtime(#[from] MhaError),
}

/// The result of one case over the paths it ran on.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseReport {
    /// Case name.
    pub name: String,
    /// Max `|got - want|` of the op's output over non-NaN positions and every path (`None` if
    /// not computed).
    pub output_max_abs_err: Option<f32>,
    /// Same for the attention weights, when the case has them.
    pub weights_max_abs_err: Option<f32>,
    /// Why the case failed, each prefixed with the path; empty when it passed.
    pub failures: Vec<String>,
}

impl CaseReport {
    /// No failures.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            output_max_abs_err: None,
            weights_max_abs_err: None,
            failures: Vec::new(),
        }
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
/// use mha_parity::{compare, Tolerance};
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

/// The fixture formats this crate runs, by their `format` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `mha-golden-fixtures/1`: [`mha`].
    MultiheadAttention,
    /// `sdpa-golden-fixtures/1`: [`sdpa`].
    ScaledDotProductAttention,
}

impl Format {
    /// The `format` field's value.
    pub fn name(self) -> &'static str {
        match self {
            Format::MultiheadAttention => mha::FORMAT,
            Format::ScaledDotProductAttention => sdpa::FORMAT,
        }
    }
}

/// Reads `DIR/index.json`'s `format` field.
///
/// ```
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/sdpa");
/// assert_eq!(mha_parity::detect_format(dir)?, mha_parity::Format::ScaledDotProductAttention);
/// # Ok::<(), mha_parity::ParityError>(())
/// ```
pub fn detect_format(dir: impl AsRef<Path>) -> Result<Format, ParityError> {
    #[derive(serde::Deserialize)]
    struct Header {
        format: String,
    }
    let path = dir.as_ref().join("index.json");
    let header: Header = read_json(&path)?;
    match header.format.as_str() {
        mha::FORMAT => Ok(Format::MultiheadAttention),
        sdpa::FORMAT => Ok(Format::ScaledDotProductAttention),
        other => Err(fixture_error(
            &path,
            format!(
                "format is {other:?}, expected {:?} or {:?}",
                mha::FORMAT,
                sdpa::FORMAT
            ),
        )),
    }
}

/// Runs every case of a fixture directory, of either format, on every [`DispatchPath`].
/// A case that cannot be loaded is a failed report; only an unreadable `index.json` is an error.
pub fn run_dir(dir: impl AsRef<Path>, tol: Tolerance) -> Result<Vec<CaseReport>, ParityError> {
    run_dir_on(dir, tol, &DispatchPath::all())
}

/// [`run_dir`] on the given paths.
///
/// ```
/// use mha_parity::{run_dir_on, DispatchPath, Tolerance};
///
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/sdpa");
/// let reports = run_dir_on(dir, Tolerance::default(), &[DispatchPath::Reference])?;
/// assert!(reports.len() >= 30 && reports.iter().all(|r| r.passed()));
/// # Ok::<(), mha_parity::ParityError>(())
/// ```
pub fn run_dir_on(
    dir: impl AsRef<Path>,
    tol: Tolerance,
    paths: &[DispatchPath],
) -> Result<Vec<CaseReport>, ParityError> {
    let dir = dir.as_ref();
    match detect_format(dir)? {
        Format::MultiheadAttention => mha::run_dir_on(dir, tol, paths),
        Format::ScaledDotProductAttention => sdpa::run_dir_on(dir, tol, paths),
    }
}

/// One fixture format: its index (read from `index.json`) and how one of its cases runs.
trait FixtureFormat: DeserializeOwned {
    /// The `format` field's value.
    const FORMAT: &'static str;
    /// One entry of the index's `cases`.
    type Case;
    /// The index's `format` field.
    fn format(&self) -> &str;
    /// The index's cases.
    fn cases(&self) -> &[Self::Case];
    /// The case's name, for its report.
    fn name(case: &Self::Case) -> &str;
    /// Runs `case` of `dir` on each of `paths`, recording what differs in `report`.
    fn run_into(
        report: &mut CaseReport,
        dir: &Path,
        case: &Self::Case,
        tol: Tolerance,
        paths: &[DispatchPath],
    ) -> Result<(), ParityError>;
}

/// Reads and checks `DIR/index.json` as format `F`.
fn load_index<F: FixtureFormat>(dir: &Path) -> Result<F, ParityError> {
    let path = dir.join("index.json");
    let index: F = read_json(&path)?;
    if index.format() != F::FORMAT {
        return Err(fixture_error(
            &path,
            format!("format is {:?}, expected {:?}", index.format(), F::FORMAT),
        ));
    }
    Ok(index)
}

/// Runs every case of a directory in format `F` on `paths`.
fn run_format_on<F: FixtureFormat>(
    dir: &Path,
    tol: Tolerance,
    paths: &[DispatchPath],
) -> Result<Vec<CaseReport>, ParityError> {
    let index = load_index::<F>(dir)?;
    Ok(index
        .cases()
        .iter()
        .map(|case| run_case::<F>(dir, case, tol, paths))
        .collect())
}

/// Runs one case; a case that cannot be loaded or run is a failed report.
fn run_case<F: FixtureFormat>(
    dir: &Path,
    case: &F::Case,
    tol: Tolerance,
    paths: &[DispatchPath],
) -> CaseReport {
    let mut report = CaseReport::new(F::name(case));
    if let Err(e) = F::run_into(&mut report, dir, case, tol, paths) {
        report.failures.push(e.to_string());
    }
    report
}

/// Reads a JSON file into `T` (errors name the file).
fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, ParityError> {
    let bytes = read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| fixture_error(path, e.to_string()))
}

fn read(path: &Path) -> Result<Vec<u8>, ParityError> {
    std::fs::read(path).map_err(|e| fixture_error(path, format!("cannot read: {e}")))
}

fn fixture_error(path: &Path, message: String) -> ParityError {
    ParityError::Fixture {
        path: path.to_path_buf(),
        message,
    }
}

/// The tensors of one case file, by name.
struct CaseFile {
    path: PathBuf,
    tensors: BTreeMap<String, LoadedTensor>,
}

impl CaseFile {
    fn load(dir: &Path, file: &str) -> Result<Self, ParityError> {
        let path = dir.join(file);
        let bytes = read(&path)?;
        let source = path.display().to_string();
        let tensors = mha_runtime::read_tensors(&bytes, Some(&source))?
            .into_iter()
            .collect();
        Ok(Self { path, tensors })
    }

    fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// A float tensor that must be present.
    fn float(&self, name: &str) -> Result<&ArrayD<f32>, ParityError> {
        match self.tensors.get(name) {
            Some(LoadedTensor::Float(t)) => Ok(t),
            Some(LoadedTensor::Bool(_)) => Err(MhaError::Dtype {
                tensor: name.to_string(),
                expected: "float32".into(),
                actual: "bool".into(),
            }
            .into()),
            None => Err(fixture_error(
                &self.path,
                format!("missing tensor `{name}`"),
            )),
        }
    }

    fn get(&self, name: &str) -> Option<&LoadedTensor> {
        self.tensors.get(name)
    }
}

/// Compares one output of one path into `report`: failures prefixed with the path, the max error
/// folded into `max`.
fn check(
    report: &mut CaseReport,
    label: String,
    got: ArrayViewD<'_, f32>,
    want: ArrayViewD<'_, f32>,
    tol: Tolerance,
    max: fn(&mut CaseReport) -> &mut Option<f32>,
) {
    match compare(got.view(), want.view(), tol) {
        None => report.failures.push(format!(
            "{label}: shape {:?}, torch {:?}",
            got.shape(),
            want.shape()
        )),
        Some(c) => {
            if c.out_of_tolerance > 0 {
                report.failures.push(format!(
                    "{label}: {} of {} values outside tolerance (max abs err {:e})",
                    c.out_of_tolerance,
                    want.len(),
                    c.max_abs_err
                ));
            }
            if c.nan_mismatches > 0 {
                report.failures.push(format!(
                    "{label}: NaN at {} positions where torch differs",
                    c.nan_mismatches
                ));
            }
            let slot = max(report);
            *slot = Some(slot.map_or(c.max_abs_err, |m| m.max(c.max_abs_err)));
        }
    }
}

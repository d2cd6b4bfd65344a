//! The committed torch fixtures and the shared samples pass on every fast-kernel dispatch path
//! this CPU runs (forced process-wide with `force_isa`; this file holds one test so nothing
//! else runs while the level is forced).

use std::path::{Path, PathBuf};

use mha_runtime::fast::{force_isa, Isa};
use mha_runtime::parity::{run_dir, Tolerance};

fn dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut dirs = vec![
        root.join("tests/fixtures/torch"),
        root.join("tests/fixtures/torch_runtime_only"),
    ];
    let samples = root.join("../shared/parity/samples");
    if samples.join("index.json").exists() {
        dirs.push(samples);
    }
    dirs
}

#[test]
fn every_fixture_passes_on_every_dispatch_path() {
    let mut failed = Vec::new();
    let mut cases = 0;
    for isa in Isa::supported() {
        force_isa(Some(isa)).unwrap();
        for dir in dirs() {
            let reports = run_dir(&dir, Tolerance::default()).unwrap();
            cases += reports.len();
            failed.extend(
                reports
                    .iter()
                    .filter(|r| !r.passed())
                    .map(|r| format!("{isa} {}: {}", r.name, r.failures.join("; "))),
            );
        }
    }
    force_isa(None).unwrap();
    assert!(cases >= 50 * Isa::supported().len(), "only {cases} cases");
    assert!(failed.is_empty(), "failed:\n{}", failed.join("\n"));
}

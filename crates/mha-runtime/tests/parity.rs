//! The committed torch fixture set (tests/fixtures/torch, made by scripts/make_torch_fixtures.py)
//! through the same library code as the parity runner.

use std::path::{Path, PathBuf};

use mha_runtime::parity::{load_index, run_dir, Tolerance};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/torch")
}

#[test]
fn every_committed_torch_case_passes() {
    let reports = run_dir(fixtures(), Tolerance::default()).unwrap();
    assert!(reports.len() >= 50, "only {} cases", reports.len());
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| format!("{}: {}", r.name, r.failures.join("; ")))
        .collect();
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
    // Every case compared its output, and its weights whenever torch returned them.
    assert!(reports.iter().all(|r| r.output_max_abs_err.is_some()));
}

#[test]
fn every_committed_torch_case_passes_on_the_reference_path() {
    use mha_runtime::parity::{run_dir_with, ForwardPath};
    let reports = run_dir_with(fixtures(), Tolerance::default(), ForwardPath::Reference).unwrap();
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| format!("{}: {}", r.name, r.failures.join("; ")))
        .collect();
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
}

/// Torch's non-finite corners that other frameworks do not share (so the framework suite does
/// not read them): every case passes on the default and the reference path.
#[test]
fn runtime_only_torch_cases_pass_on_both_paths() {
    use mha_runtime::parity::{run_dir_with, ForwardPath};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/torch_runtime_only");
    for path in [ForwardPath::Default, ForwardPath::Reference] {
        let reports = run_dir_with(&dir, Tolerance::default(), path).unwrap();
        assert!(reports.len() >= 4, "only {} cases", reports.len());
        let failed: Vec<String> = reports
            .iter()
            .filter(|r| !r.passed())
            .map(|r| format!("{path:?} {}: {}", r.name, r.failures.join("; ")))
            .collect();
        assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
    }
}

#[test]
fn committed_set_covers_every_behaviour() {
    let index = load_index(fixtures()).unwrap();
    let has = |f: &dyn Fn(&mha_runtime::parity::FixtureCase) -> bool| index.cases.iter().any(f);
    assert!(has(&|c| c.ctor.batch_first));
    assert!(has(&|c| !c.ctor.batch_first));
    assert!(has(&|c| c.ctor.kdim.is_some() && c.ctor.vdim.is_some()));
    assert!(has(&|c| !c.ctor.bias));
    assert!(has(&|c| c.ctor.add_bias_kv && c.ctor.add_zero_attn));
    assert!(has(&|c| c.forward.is_causal && !c.forward.need_weights));
    assert!(has(&|c| c.forward.is_causal && c.forward.need_weights));
    assert!(has(
        &|c| !c.forward.average_attn_weights && c.forward.need_weights
    ));
    assert!(has(&|c| c.precision_sensitive.is_some()));
    assert!(has(&|c| c.name.contains("unbatched")));
    assert!(has(
        &|c| c.name.contains("fully_masked") && c.forward.need_weights
    ));
    assert!(has(
        &|c| c.name.contains("fully_masked") && !c.forward.need_weights
    ));
    assert!(has(&|c| c.name.contains("large_logits")));
    // NaN and infinities in inputs and masks, with and without weights.
    for need_weights in [true, false] {
        assert!(has(
            &|c| c.name.starts_with("nonfinite_") && c.forward.need_weights == need_weights
        ));
    }
}

/// The runner must notice a wrong number and a wrong NaN pattern.
#[test]
fn a_tampered_fixture_fails() {
    use safetensors::tensor::TensorView;
    use safetensors::SafeTensors;

    let src = fixtures();
    let index = load_index(&src).unwrap();
    let case = index
        .cases
        .iter()
        .find(|c| c.name == "kdim_vdim")
        .expect("kdim_vdim case");
    let dir = std::env::temp_dir().join(format!("mha_parity_tampered_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = std::fs::read(src.join(&case.file)).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    for (name, _, _, data) in owned.iter_mut() {
        if name == "attn_output" {
            // first value + 1e-3 (outside tolerance), second value NaN
            let x = f32::from_le_bytes([data[0], data[1], data[2], data[3]]) + 1e-3;
            data[..4].copy_from_slice(&x.to_le_bytes());
            data[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
        }
    }
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(
        dir.join(&case.file),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("index.json")).unwrap()).unwrap();
    let cases = json["cases"].as_array_mut().unwrap();
    cases.retain(|c| c["name"] == "kdim_vdim");
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&json).unwrap()).unwrap();

    let reports = run_dir(&dir, Tolerance::default()).unwrap();
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert!(!r.passed());
    assert_eq!(r.failures.len(), 2, "{:?}", r.failures);
    assert!(r.failures[0].starts_with("attn_output: 1 of 160 values outside tolerance"));
    assert_eq!(
        r.failures[1],
        "attn_output: NaN at 1 positions where torch differs"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_directory_in_another_format_is_an_error() {
    let dir = std::env::temp_dir().join(format!("mha_parity_format_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("index.json"),
        br#"{"format": "other/2", "cases": []}"#,
    )
    .unwrap();
    let err = run_dir(&dir, Tolerance::default()).unwrap_err().to_string();
    assert!(
        err.ends_with("index.json`: format is \"other/2\", expected \"mha-golden-fixtures/1\""),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

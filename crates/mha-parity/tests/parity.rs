//! The committed fixture sets (tests/fixtures/torch from scripts/make_torch_fixtures.py,
//! tests/fixtures/sdpa from scripts/make_sdpa_fixtures.py) and ../shared's samples through the
//! same library code as the runner, on every dispatch path this CPU runs.

use std::path::{Path, PathBuf};

use mha_parity::{mha, run_dir, run_dir_on, sdpa, CaseReport, DispatchPath, Tolerance};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/torch")
}

fn sdpa_fixtures() -> PathBuf {
    root().join("tests/fixtures/sdpa")
}

fn failures(reports: &[CaseReport]) -> Vec<String> {
    reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| format!("{}: {}", r.name, r.failures.join("; ")))
        .collect()
}

#[test]
fn every_committed_torch_case_passes_on_every_path() {
    let reports = run_dir(fixtures(), Tolerance::default()).unwrap();
    assert!(reports.len() >= 50, "only {} cases", reports.len());
    let failed = failures(&reports);
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
    // Every case compared its output, and its weights whenever torch returned them.
    assert!(reports.iter().all(|r| r.output_max_abs_err.is_some()));
}

/// Torch's non-finite corners that other frameworks do not share (so the framework suite does
/// not read them): every case passes on every path, the reference path included.
#[test]
fn runtime_only_torch_cases_pass_on_every_path() {
    let reports = run_dir(
        root().join("tests/fixtures/torch_runtime_only"),
        Tolerance::default(),
    )
    .unwrap();
    assert!(reports.len() >= 4, "only {} cases", reports.len());
    let failed = failures(&reports);
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
}

#[test]
fn every_committed_sdpa_case_passes_on_every_path() {
    let reports = run_dir(sdpa_fixtures(), Tolerance::default()).unwrap();
    assert!(reports.len() >= 60, "only {} cases", reports.len());
    let failed = failures(&reports);
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
    assert!(reports.iter().all(|r| r.output_max_abs_err.is_some()));
    assert!(reports.iter().all(|r| r.weights_max_abs_err.is_none()));
}

#[test]
fn the_shared_samples_of_both_formats_pass() {
    for dir in ["../shared/parity/samples", "../shared/parity/sdpa/samples"] {
        let dir = root().join(dir);
        if !dir.join("index.json").exists() {
            continue;
        }
        let reports = run_dir(&dir, Tolerance::default()).unwrap();
        assert_eq!(reports.len(), 3);
        let failed = failures(&reports);
        assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
    }
}

#[test]
fn committed_torch_set_covers_every_behaviour() {
    let index = mha::load_index(fixtures()).unwrap();
    let has = |f: &dyn Fn(&mha::FixtureCase) -> bool| index.cases.iter().any(f);
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

#[test]
fn committed_sdpa_set_covers_every_behaviour() {
    let index = sdpa::load_index(sdpa_fixtures()).unwrap();
    let has = |f: &dyn Fn(&sdpa::FixtureCase) -> bool| index.cases.iter().any(f);
    let mask_shapes: Vec<(String, Vec<usize>)> = index
        .cases
        .iter()
        .filter_map(|c| c.call.attn_mask.as_ref())
        .map(|m| (m.dtype.clone(), m.shape.clone()))
        .collect();
    for dtype in ["bool", "float32"] {
        // (L, S), (1, S), (L, 1), (H, L, S), (N, 1, L, S), (N, 1, 1, S), (N, H, L, S), ...
        let shapes = mask_shapes.iter().filter(|(d, _)| d == dtype).count();
        assert!(shapes >= 10, "{dtype}: {shapes} mask shapes");
    }
    assert!(has(&|c| c.call.enable_gqa && c.name.contains("mqa")));
    assert!(has(&|c| c.call.enable_gqa && c.name.contains("gqa")));
    assert!(has(&|c| c.call.is_causal && c.name.contains("L4_S9")));
    assert!(has(&|c| c.call.is_causal && c.name.contains("L9_S4")));
    assert!(has(&|c| c.call.scale.is_some()));
    assert!(has(&|c| c.name.contains("fully_masked")));
    assert!(has(&|c| c.precision_sensitive.is_some()));
    for name in [
        "rank2",
        "rank3",
        "rank5",
        "key_batch_1",
        "decode_L1",
        "head_size_1",
        "head_size_128",
        "not_tile_multiple",
        "long_S",
    ] {
        assert!(has(&|c| c.name.contains(name)), "no {name} case");
    }
}

/// Copies one case of `src` into a fresh directory, with `edit` applied to its tensors.
fn tampered_copy(
    src: &Path,
    file: &str,
    tag: &str,
    edit: impl Fn(&str, &mut safetensors::Dtype, &mut Vec<u8>),
) -> PathBuf {
    use safetensors::tensor::TensorView;
    use safetensors::SafeTensors;

    let dir = std::env::temp_dir().join(format!("mha_parity_{tag}_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = std::fs::read(src.join(file)).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    for (name, dtype, _, data) in owned.iter_mut() {
        edit(name, dtype, data);
    }
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(dir.join(file), safetensors::serialize(views, None).unwrap()).unwrap();
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("index.json")).unwrap()).unwrap();
    json["cases"]
        .as_array_mut()
        .unwrap()
        .retain(|c| c["file"] == file);
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&json).unwrap()).unwrap();
    dir
}

/// First value + 1e-3 (outside tolerance), second value NaN.
fn spoil(data: &mut [u8]) {
    let x = f32::from_le_bytes([data[0], data[1], data[2], data[3]]) + 1e-3;
    data[..4].copy_from_slice(&x.to_le_bytes());
    data[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
}

/// The runner must notice a wrong number and a wrong NaN pattern, in both formats.
#[test]
fn a_tampered_fixture_fails() {
    let reference = [DispatchPath::Reference];
    let dir = tampered_copy(&fixtures(), "14_kdim_vdim.safetensors", "mha", |n, _, d| {
        if n == "attn_output" {
            spoil(d)
        }
    });
    let reports = run_dir_on(&dir, Tolerance::default(), &reference).unwrap();
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(r.failures.len(), 2, "{:?}", r.failures);
    assert!(r.failures[0].starts_with("reference attn_output: 1 of 160 values outside tolerance"));
    assert_eq!(
        r.failures[1],
        "reference attn_output: NaN at 1 positions where torch differs"
    );
    std::fs::remove_dir_all(&dir).ok();

    let dir = tampered_copy(
        &sdpa_fixtures(),
        "00_basic_self.safetensors",
        "sdpa",
        |n, _, d| {
            if n == "output" {
                spoil(d)
            }
        },
    );
    let reports = run_dir(&dir, Tolerance::default()).unwrap();
    let r = &reports[0];
    // Both faults on every path.
    assert_eq!(
        r.failures.len(),
        2 * DispatchPath::all().len(),
        "{:?}",
        r.failures
    );
    assert!(r.failures[0].starts_with("reference output: 1 of 1024 values outside tolerance"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_mask_of_a_wrong_dtype_is_a_failed_case() {
    let dir = tampered_copy(
        &fixtures(),
        "31_attn_mask_bool_2d.safetensors",
        "mask_dtype",
        |n, dtype, data| {
            if n == "attn_mask" {
                *dtype = safetensors::Dtype::I64;
                *data = data
                    .iter()
                    .flat_map(|&b| i64::from(b).to_le_bytes())
                    .collect();
            }
        },
    );
    let reports = run_dir(&dir, Tolerance::default()).unwrap();
    assert_eq!(
        reports[0].failures,
        vec!["`attn_mask` has dtype I64, but expected float32 (or float64 / float16 / bfloat16, converted), or bool for a mask"]
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
        err.ends_with(
            "index.json`: format is \"other/2\", expected \"mha-golden-fixtures/1\" or \"sdpa-golden-fixtures/1\""
        ),
        "{err}"
    );
    let err = mha::load_index(&dir).unwrap_err().to_string();
    assert!(err.ends_with("expected \"mha-golden-fixtures/1\""), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

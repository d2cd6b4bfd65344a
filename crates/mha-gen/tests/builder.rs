//! The build.rs API: writes only what changed.

use std::time::{Duration, SystemTime};

use mha_gen::{Builder, WriteOutcome};

#[test]
fn builder_writes_the_rust_config_and_leaves_unchanged_files_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = Builder::new()
        .rust_only()
        .emit_rerun_if_changed(false)
        .out_dir(dir.path())
        .generate()
        .expect("generate");
    assert_eq!(
        files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
        [
            "rust/multihead_attention.rs",
            "rust/multihead_attention_weights.rs",
            "rust/scaled_dot_product_attention_call.rs"
        ]
    );
    let one = Builder::new()
        .rust_only()
        .ops(["ScaledDotProductAttention"])
        .files()
        .expect("one op");
    assert_eq!(
        one.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
        ["rust/scaled_dot_product_attention_call.rs"]
    );
    let path = dir.path().join("rust/multihead_attention.rs");
    let old = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(old))
        .expect("backdate the generated file");

    Builder::new()
        .rust_only()
        .emit_rerun_if_changed(false)
        .out_dir(dir.path())
        .generate()
        .expect("generate again");
    let modified = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    assert_eq!(modified, old, "an unchanged file must not be rewritten");
}

#[test]
fn write_if_changed_reports_what_it_did() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("a/b.txt");
    assert_eq!(
        mha_gen::write_if_changed(&path, "x").unwrap(),
        WriteOutcome::Created
    );
    assert_eq!(
        mha_gen::write_if_changed(&path, "x").unwrap(),
        WriteOutcome::Unchanged
    );
    assert_eq!(
        mha_gen::write_if_changed(&path, "y").unwrap(),
        WriteOutcome::Updated
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "y");
}

#[test]
fn builder_reports_spec_errors_with_file_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = include_str!("../../../specs/multihead_attention.yaml").replacen(
        "summary: Multi-head",
        "sumary: Multi-head",
        1,
    );
    std::fs::write(dir.path().join("multihead_attention.yaml"), spec).expect("write spec");
    let error = Builder::new()
        .spec_dir(dir.path())
        .out_dir(dir.path().join("out"))
        .emit_rerun_if_changed(false)
        .generate()
        .expect_err("a broken spec must be refused");
    let message = error.to_string();
    assert!(
        message.contains("multihead_attention.yaml:4:1"),
        "{message}"
    );
    assert!(message.contains("did you mean `summary`"), "{message}");
    assert!(
        !dir.path().join("out").exists(),
        "nothing is written on error"
    );
    // A build script's `main() -> Result<(), Box<dyn Error>>` prints `Error: {:?}`: the same lines.
    let boxed: Box<dyn std::error::Error> = Box::new(error);
    let debug = format!("{boxed:?}");
    assert_eq!(debug, message);
    let first = debug.lines().next().unwrap_or_default();
    assert!(
        first.ends_with(
            "multihead_attention.yaml:4:1: sumary: unknown field `sumary` (did you mean `summary`?)"
        ),
        "{debug}"
    );
    assert!(!debug.contains("SpecError {"), "{debug}");
}

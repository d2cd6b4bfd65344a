//! The `mha-gen` binary: generate, check, list, and its errors.

use std::process::{Command, Output};

fn mha_gen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mha-gen"))
        .args(args)
        .output()
        .expect("run mha-gen")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn generate_writes_every_output_and_is_idempotent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().to_str().expect("utf-8 path");
    let first = mha_gen(&["generate", "--out", out]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    for path in [
        "python/mha_glue/__init__.py",
        "python/mha_glue/multihead_attention/flax_nnx.py",
        "python/mha_glue/scaled_dot_product_attention/_spec.py",
        "docs/ops/MultiheadAttention.rst",
        "docs/ops/ScaledDotProductAttention.rst",
        "docs/index.rst",
        "docs/_static/op_tabs.js",
        "rust/multihead_attention.rs",
    ] {
        assert!(dir.path().join(path).is_file(), "{path} not written");
    }
    let second = mha_gen(&["generate", "--out", out]);
    let stdout = text(&second.stdout);
    assert!(second.status.success());
    assert!(
        !stdout.contains("created") && !stdout.contains("updated"),
        "{stdout}"
    );
}

#[test]
fn generate_one_framework() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().to_str().expect("utf-8 path");
    let run = mha_gen(&["generate", "--out", out, "--framework", "mlx"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(dir
        .path()
        .join("python/mha_glue/multihead_attention/mlx.py")
        .is_file());
    assert!(!dir
        .path()
        .join("python/mha_glue/multihead_attention/keras.py")
        .exists());
}

#[test]
fn generate_one_op() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().to_str().expect("utf-8 path");
    let run = mha_gen(&[
        "generate",
        "--out",
        out,
        "--op",
        "ScaledDotProductAttention",
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(dir
        .path()
        .join("docs/ops/ScaledDotProductAttention.rst")
        .is_file());
    assert!(!dir.path().join("docs/ops/MultiheadAttention.rst").exists());
    assert!(!dir
        .path()
        .join("python/mha_glue/multihead_attention")
        .exists());
    let run = mha_gen(&["list", "--op", "MultiheadAttentio"]);
    assert!(!run.status.success());
    assert!(
        text(&run.stderr)
            .contains("unknown op `MultiheadAttentio` (did you mean `MultiheadAttention`?)"),
        "{}",
        text(&run.stderr)
    );
}

#[test]
fn check_accepts_the_bundled_specs() {
    let run = mha_gen(&["check"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let stdout = text(&run.stdout);
    assert!(
        stdout.contains("ok: MultiheadAttention (a layer, 9 parameters, 5 frameworks)"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("ok: ScaledDotProductAttention (a function, 8 call arguments, 5 frameworks)"),
        "{stdout}"
    );
}

#[test]
fn check_reports_every_error_and_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = include_str!("../../../specs/multihead_attention.yaml")
        .replacen("summary: Multi-head", "sumary: Multi-head", 1)
        .replacen(
            "{plugin: repack_attn_keras}",
            "{plugin: repack_attn_kers}",
            1,
        );
    std::fs::write(dir.path().join("multihead_attention.yaml"), spec).expect("write spec");
    let run = mha_gen(&["check", "--specs", dir.path().to_str().expect("utf-8 path")]);
    assert!(!run.status.success());
    let stderr = text(&run.stderr);
    assert!(stderr.contains("did you mean `summary`"), "{stderr}");
    assert!(
        stderr.contains("did you mean `repack_attn_keras`"),
        "{stderr}"
    );
    assert!(stderr.contains("2 errors"), "{stderr}");
}

#[test]
fn list_names_every_framework_with_its_strategy() {
    let run = mha_gen(&["list"]);
    assert!(run.status.success());
    let stdout = text(&run.stdout);
    for needle in [
        "MultiheadAttention (layer, glue package mha_glue.multihead_attention)",
        "ScaledDotProductAttention (function, glue package mha_glue.scaled_dot_product_attention)",
        "keras.ops.dot_product_attention",
        "pytorch",
        "keras",
        "tensorflow",
        "mlx",
        "flax_nnx",
        "Plugin (repack_attn_keras)",
    ] {
        assert!(stdout.contains(needle), "{needle} missing from:\n{stdout}");
    }
}

#[test]
fn unknown_framework_fails_cleanly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = mha_gen(&[
        "generate",
        "--out",
        dir.path().to_str().expect("utf-8"),
        "--framework",
        "jax",
    ]);
    assert!(!run.status.success());
    assert!(text(&run.stderr).contains("jax"));
}

//! Every file `mha-gen generate` writes from the bundled specs and templates, pinned by
//! snapshots, plus the checks a snapshot cannot make: the seed page is reproduced exactly, the
//! Python compiles, the Rust parses and carries the `@generated` header.

use std::path::Path;
use std::process::Command;

use mha_gen::{GeneratedFile, Options, Templates};

mod common;
use common::copy_dir;

fn generate(options: &Options) -> Vec<GeneratedFile> {
    let specs = mha_spec::bundled().unwrap_or_else(|e| panic!("bundled specs: {e}"));
    mha_gen::generate(&specs, &Templates::bundled(), options)
        .unwrap_or_else(|e| panic!("generate: {e}"))
}

fn all_files() -> Vec<GeneratedFile> {
    generate(&Options::default())
}

#[test]
fn every_generated_file_matches_its_snapshot() {
    for file in all_files() {
        let name = file.path.replace('/', "__");
        insta::with_settings!({ snapshot_path => "snapshots/generated", prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!(name, file.contents);
        });
    }
}

#[test]
fn writes_the_five_glue_modules_both_doc_pages_and_the_rust_file() {
    let paths: Vec<String> = all_files().into_iter().map(|f| f.path).collect();
    for expected in [
        "python/pyproject.toml",
        "python/mha_glue/__init__.py",
        "python/mha_glue/_shared.py",
        "python/mha_glue/_frameworks.py",
        "python/mha_glue/checkpoints.py",
        "python/mha_glue/multihead_attention/__init__.py",
        "python/mha_glue/multihead_attention/_spec.py",
        "python/mha_glue/multihead_attention/_common.py",
        "python/mha_glue/multihead_attention/_keras_glue.py",
        "python/mha_glue/multihead_attention/pytorch.py",
        "python/mha_glue/multihead_attention/keras.py",
        "python/mha_glue/multihead_attention/tensorflow.py",
        "python/mha_glue/multihead_attention/mlx.py",
        "python/mha_glue/multihead_attention/flax_nnx.py",
        "python/mha_glue/scaled_dot_product_attention/__init__.py",
        "python/mha_glue/scaled_dot_product_attention/_spec.py",
        "docs/ops/MultiheadAttention.rst",
        "docs/ops/MultiheadAttention.details.rst",
        "docs/ops/ScaledDotProductAttention.rst",
        "docs/ops/ScaledDotProductAttention.details.rst",
        "docs/index.rst",
        "docs/conf.py",
        "docs/_static/op_tabs.js",
        "docs/_static/op_tabs.css",
        "rust/multihead_attention.rs",
        "rust/scaled_dot_product_attention_call.rs",
    ] {
        assert!(
            paths.iter().any(|p| p == expected),
            "{expected} missing from {paths:?}"
        );
    }
}

#[test]
fn seed_page_is_reproduced_exactly() {
    let seed = include_str!("fixtures/MultiheadAttention.seed.rst");
    let page = all_files()
        .into_iter()
        .find(|f| f.path == "docs/ops/MultiheadAttention.rst")
        .expect("the op page is generated");
    if page.contents != seed {
        let first_diff = seed
            .lines()
            .zip(page.contents.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(seed.lines().count().min(page.contents.lines().count()));
        panic!(
            "generated page differs from the seed from line {}:\n seed: {:?}\n  got: {:?}",
            first_diff + 1,
            seed.lines().nth(first_diff),
            page.contents.lines().nth(first_diff)
        );
    }
}

/// The site is whole: every script or style a page or `conf.py` names is a generated file at the
/// path it resolves to, and the index lists every op page and details page.
#[test]
fn docs_site_ships_what_its_pages_load_and_indexes_every_page() {
    let files = all_files();
    let has = |path: &str| files.iter().any(|f| f.path == path);
    let text = |path: &str| {
        &files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("{path} is generated"))
            .contents
    };
    let index = text("docs/index.rst");
    let pages: Vec<&GeneratedFile> = files
        .iter()
        .filter(|f| f.path.starts_with("docs/ops/") && f.path.ends_with(".rst"))
        .collect();
    assert_eq!(pages.len(), 4, "two ops: each its page and details page");
    for page in pages {
        let doc = page.path["docs/".len()..].trim_end_matches(".rst");
        assert!(
            index.lines().any(|l| l.trim() == doc),
            "index.rst has no toctree entry `{doc}`:\n{index}"
        );
        for src in page.contents.split("src=\"").skip(1) {
            let src = &src[..src.find('"').expect("a closing quote")];
            let resolved = src.strip_prefix("../").expect("relative to docs/ops/");
            assert!(
                has(&format!("docs/{resolved}")),
                "{} loads {src}: not shipped",
                page.path
            );
        }
    }
    let conf = text("docs/conf.py");
    assert!(conf.contains("html_static_path = [\"_static\"]"), "{conf}");
    assert!(conf.contains("html_css_files = [\"op_tabs.css\"]") && has("docs/_static/op_tabs.css"));
    assert!(text("docs/_static/op_tabs.js").contains("function openOpTab(event, paneId)"));
}

/// The details page shows the glue's calls as the generated modules spell them: each call's
/// function is defined in that framework's module and takes the page's arguments, in order.
#[test]
fn details_page_calls_are_the_glue_modules_functions() {
    let files = all_files();
    let details = &files
        .iter()
        .find(|f| f.path == "docs/ops/MultiheadAttention.details.rst")
        .expect("details page")
        .contents;
    let specs = mha_spec::bundled().expect("bundled specs");
    for key in specs[0].frameworks.keys() {
        let module = &files
            .iter()
            .find(|f| f.path == format!("python/mha_glue/multihead_attention/{key}.py"))
            .expect("glue module")
            .contents;
        let mut calls = 0;
        for line in details.lines().map(str::trim) {
            let Some(at) = line.find(&format!("{key}.")) else {
                continue;
            };
            let call = &line[at + key.len() + 1..];
            let Some(open) = call.find('(') else { continue };
            let function = &call[..open];
            let args: Vec<&str> = call[open + 1..call.find(')').expect("closing paren")]
                .split(", ")
                .map(|a| a.split('=').next().unwrap_or(a))
                .filter(|a| *a != "...")
                .collect();
            let def = format!("def {function}({}", args.join(", "));
            assert!(
                module.contains(&def),
                "the details page calls `{key}.{function}({})`; {key}.py has no `{def}`",
                args.join(", ")
            );
            calls += 1;
        }
        assert_eq!(calls, 3, "{key}: build, load_state_dict and forward");
    }
}

#[test]
fn generated_python_compiles() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = all_files();
    mha_gen::write_all(dir.path(), &files).expect("write generated files");
    let python: Vec<_> = files
        .iter()
        .filter(|f| f.path.ends_with(".py"))
        .map(|f| dir.path().join(&f.path))
        .collect();
    assert!(python.len() >= 6, "expected the package and five modules");
    let status = Command::new("python3")
        .args(["-m", "py_compile"])
        .args(&python)
        .status()
        .expect("python3 must be on PATH to check the generated glue");
    assert!(status.success(), "py_compile failed on the generated glue");
}

#[test]
fn generated_rust_parses_and_is_marked_generated() {
    for file in all_files().iter().filter(|f| f.path.ends_with(".rs")) {
        assert!(
            file.contents.starts_with("// @generated"),
            "{} lacks the @generated header",
            file.path
        );
        syn::parse_file(&file.contents)
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", file.path));
    }
}

#[test]
fn framework_selection_limits_the_glue() {
    let files = generate(&Options {
        frameworks: vec!["keras".into()],
        ..Options::default()
    });
    let glue: Vec<&str> = files
        .iter()
        .map(|f| f.path.as_str())
        .filter(|p| p.starts_with("python/"))
        .collect();
    assert!(
        glue.contains(&"python/mha_glue/multihead_attention/keras.py"),
        "{glue:?}"
    );
    for other in ["pytorch", "tensorflow", "mlx", "flax_nnx"] {
        let module = format!("python/mha_glue/multihead_attention/{other}.py");
        assert!(
            !glue.contains(&module.as_str()),
            "{module} generated: {glue:?}"
        );
    }
}

#[test]
fn unknown_framework_is_an_error_naming_the_known_ones() {
    let specs = mha_spec::bundled().expect("bundled specs");
    let error = mha_gen::generate(
        &specs,
        &Templates::bundled(),
        &Options {
            frameworks: vec!["kears".into()],
            ..Options::default()
        },
    )
    .expect_err("an unknown framework must be refused");
    let message = error.to_string();
    assert!(
        message.contains("kears") && message.contains("keras"),
        "{message}"
    );
}

/// The bundled templates copied to a temp dir with the op page replaced by `page`, then generated.
fn generate_with_op_page(page: &str) -> Result<Vec<GeneratedFile>, mha_gen::GenError> {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates"),
        dir.path(),
    );
    std::fs::write(dir.path().join("docs/op_page.rst.tera"), page).expect("write template");
    let specs = mha_spec::bundled().expect("bundled specs");
    Templates::from_dir(dir.path()).and_then(|t| mha_gen::generate(&specs, &t, &Options::default()))
}

#[test]
fn template_errors_name_the_template() {
    let error =
        generate_with_op_page("{{ spec.op }\n").expect_err("a broken template must be refused");
    assert!(error.to_string().contains("op_page.rst.tera"), "{error}");
}

#[test]
fn undefined_variable_in_a_template_names_the_template() {
    let error = generate_with_op_page("{{ spec.no_such_field }}\n")
        .expect_err("an undefined variable must be refused");
    let message = error.to_string();
    assert!(
        message.contains("op_page.rst.tera") && message.contains("no_such_field"),
        "{message}"
    );
}

/// A function's seed-format page shows its call (with the spec's defaults) where a layer's shows
/// its constructor, and a tab per framework; its details page shows each framework's call of the
/// glue module `mha_glue.<op_module>.<framework>` and the layouts the glue permutes to.
#[test]
fn a_functions_pages_show_its_call_per_framework() {
    let files = all_files();
    let text = |path: &str| {
        files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("{path} is generated"))
            .contents
            .clone()
    };
    let page = text("docs/ops/ScaledDotProductAttention.rst");
    assert!(page.contains(
        "``scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False)``"
    ), "{page}");
    for name in ["PyTorch", "Keras", "TensorFlow", "Apple MLX", "Flax NNX"] {
        assert!(page.contains(&format!(">{name}</button>")), "{name} tab");
    }
    let details = text("docs/ops/ScaledDotProductAttention.details.rst");
    for key in ["pytorch", "keras", "tensorflow", "mlx", "flax_nnx"] {
        assert!(details.contains(&format!(
            "   from mha_glue.scaled_dot_product_attention import {key}\n\n   output = {key}.scaled_dot_product_attention(query, key, value, ...)"
        )), "{key}:\n{details}");
    }
    assert!(
        details.contains("- ``query``: ``(..., L, Hq, E)``"),
        "{details}"
    );
    assert!(!details.contains("Canonical weights") && !details.contains("Constructor\n"));
}

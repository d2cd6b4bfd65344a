//! Property test of the contract of `check`: whatever text a spec's prose fields hold, the spec
//! either fails to load with a positioned error, or generates output whose Python compiles and
//! whose Rust parses. Few cases (each renders every template in a debug build); the hostile
//! corpus in `hostile.rs` holds the known attacks.

use std::process::Command;

use mha_gen::{Options, Templates};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, TestRunner};

const BUNDLED: &str = include_str!("../../../specs/multihead_attention.yaml");
const FUNCTION: &str = include_str!("../../../specs/scaled_dot_product_attention.yaml");

/// (line prefix, key) of the prose fields the fuzzer fills, in the order they appear.
const FIELDS: &[(&str, &str)] = &[
    ("summary: ", "summary"),
    ("    doc: Total dimension", "    doc"),
    ("    doc: Features per head.", "    doc"),
    ("  scaling: ", "  scaling"),
    ("    display_name: PyTorch", "    display_name"),
];

/// The function op's prose fields: a dimension's doc, a call argument's doc, a convention, a note.
const FUNCTION_FIELDS: &[(&str, &str)] = &[
    ("summary: ", "summary"),
    ("  - {name: Hq, doc:", "  - {name: Hq, doc"),
    ("      doc: Probability of dropping", "      doc"),
    ("  causal: ", "  causal"),
    ("    display_name: Keras", "    display_name"),
];

fn with_texts(base: &str, fields: &[(&str, &str)], texts: &[String]) -> String {
    let mut out = Vec::new();
    let mut next = 0;
    for line in base.lines() {
        match fields.get(next) {
            Some((prefix, key)) if line.starts_with(prefix) => {
                let value = serde_json::to_string(&texts[next]).expect("JSON string");
                // A flow mapping item keeps its closing brace.
                let close = if key.contains('{') { "}" } else { "" };
                out.push(format!("{key}: {value}{close}"));
                next += 1;
            }
            _ => out.push(line.to_string()),
        }
    }
    assert_eq!(
        next,
        fields.len(),
        "test setup: every field is in the spec, in order"
    );
    out.join("\n")
}

#[test]
fn accepted_prose_always_generates_compiling_code() {
    prose_cases(BUNDLED, FIELDS);
}

#[test]
fn accepted_prose_in_a_function_spec_always_generates_compiling_code() {
    prose_cases(FUNCTION, FUNCTION_FIELDS);
}

fn prose_cases(base: &str, fields: &[(&str, &str)]) {
    let text = "[\\PC\"'`\\\\{}%#*|_<>&;:.\\u{a0}\\u{2028}\\n]{1,30}";
    let strategy = proptest::collection::vec(text, fields.len());
    let mut runner = TestRunner::new(Config {
        cases: 12,
        failure_persistence: None,
        ..Config::default()
    });
    let templates = Templates::bundled();
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut accepted, mut refused) = (0, 0);
    for case in 0..12 {
        let texts = strategy.new_tree(&mut runner).expect("a value").current();
        match mha_spec::load_str("fuzz.yaml", &with_texts(base, fields, &texts)) {
            Err(errors) => {
                assert!(
                    errors.0.iter().all(|e| e.line >= 1 && !e.path.is_empty()),
                    "{errors}"
                );
                refused += 1;
            }
            Ok(spec) => {
                let files = mha_gen::generate(&[spec], &templates, &Options::default())
                    .unwrap_or_else(|e| {
                        panic!("{texts:?} passed check but does not generate: {e}")
                    });
                for f in files.iter().filter(|f| f.path.ends_with(".rs")) {
                    syn::parse_file(&f.contents)
                        .unwrap_or_else(|e| panic!("{texts:?}: {} does not parse: {e}", f.path));
                }
                mha_gen::write_all(&dir.path().join(case.to_string()), &files).expect("write");
                accepted += 1;
            }
        }
    }
    let status = Command::new("python3")
        .args(["-m", "compileall", "-q"])
        .arg(dir.path())
        .status()
        .expect("python3 on PATH");
    assert!(status.success(), "generated Python does not compile");
    eprintln!("{accepted} accepted, {refused} refused");
}

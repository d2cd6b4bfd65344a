//! Property tests (stable Rust, run by `cargo test`): the expression parser and the spec loader
//! never panic, never overflow the stack and always answer; an error names a file, a line and
//! a column. The hostile inputs of the corpus in `mha-gen/tests/hostile.rs` are regressions here
//! too, as fixed cases.

use mha_spec::{Expr, ExprType, ExprValue};
use proptest::prelude::*;

const FILE: &str = "fuzz.yaml";
const BUNDLED: &str = include_str!("../../../specs/multihead_attention.yaml");
const FUNCTION: &str = include_str!("../../../specs/scaled_dot_product_attention.yaml");

/// Expression-shaped text: tokens of the language, names, and some characters it has not.
fn expression_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("embed_dim".to_string()),
        Just("num_heads".to_string()),
        Just("bias".to_string()),
        Just("nope".to_string()),
        Just("true".to_string()),
        Just("not".to_string()),
        Just("and".to_string()),
        Just("or".to_string()),
        Just("(".to_string()),
        Just(")".to_string()),
        Just("+".to_string()),
        Just("-".to_string()),
        Just("*".to_string()),
        Just("//".to_string()),
        Just("==".to_string()),
        Just("!=".to_string()),
        (0u64..u64::MAX).prop_map(|v| v.to_string()),
        "[\\PC]{0,3}",
    ];
    prop::collection::vec(token, 0..80).prop_map(|t| t.join(" "))
}

fn scope(name: &str) -> Option<ExprType> {
    match name {
        "embed_dim" | "num_heads" => Some(ExprType::Int),
        "bias" => Some(ExprType::Bool),
        _ => None,
    }
}

fn values(name: &str) -> Option<ExprValue> {
    match name {
        "embed_dim" => Some(ExprValue::Int(i64::MAX)),
        "num_heads" => Some(ExprValue::Int(0)),
        "bias" => Some(ExprValue::Bool(true)),
        _ => None,
    }
}

/// Every pass over a parsed expression answers without panicking.
fn exercise(source: &str) {
    if let Ok(e) = Expr::parse(source) {
        let _ = e.type_of(&scope);
        let _ = e.eval(&values);
        let _ = e.to_python();
        let _ = e.to_rust(&scope, &|n| n.to_string());
        let _ = e.to_rust_checked(&scope, &|n| n.to_string());
        assert!(e.source().len() <= mha_spec::MAX_EXPR_LEN);
    }
}

/// The spots of the bundled spec a hostile value is put into, as (line prefix to replace).
const SPOTS: &[&str] = &[
    "op: ",
    "summary: ",
    "  - name: embed_dim",
    "    doc: Total dimension",
    "    default: 0.0",
    "    expr: embed_dim // num_heads",
    "    display_name: PyTorch",
    "    api: torch.nn.MultiheadAttention",
    "    package: torch",
    "    backend: jax",
    "    docs_url: https://pytorch.org",
    "  - name: in_proj_weight",
    "    when_null: embed_dim",
    "  float_masks: ",
    "    extends: keras",
];

/// The spots of the function op's spec: its dimensions, shapes, layouts, kind and defaults.
const FUNCTION_SPOTS: &[&str] = &[
    "kind: ",
    "  - {name: Hq,",
    "      shape: [\"...\", Hq, L, E]",
    "      query: [",
    "      default: 0.0",
    "    extends: keras",
    "  causal: ",
    "      - {native: mask, from: attn_mask}",
];

/// The bundled spec with the line starting with `SPOTS[spot]` given `value` (a YAML
/// double-quoted scalar, or the raw text when `raw`).
fn with_value(spot: usize, value: &str, raw: bool) -> String {
    with_value_in(BUNDLED, SPOTS, spot, value, raw)
}

fn with_value_in(base: &str, spots: &[&str], spot: usize, value: &str, raw: bool) -> String {
    let prefix = spots[spot % spots.len()];
    let key = prefix.split(':').next().unwrap_or(prefix);
    let scalar = if raw {
        value.to_string()
    } else {
        serde_json::to_string(value).expect("a JSON string is a YAML double-quoted scalar")
    };
    let mut done = false;
    base.lines()
        .map(|line| {
            if !done && line.starts_with(prefix) {
                done = true;
                format!("{key}: {scalar}")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn check_answer(text: &str) {
    if let Err(errors) = mha_spec::load_str(FILE, text) {
        assert!(!errors.0.is_empty());
        for e in &errors.0 {
            assert!(e.file == FILE && e.line >= 1 && e.column >= 1, "{e}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn expressions_never_panic(source in expression_text()) {
        exercise(&source);
    }

    #[test]
    fn arbitrary_text_never_panics_the_parser(source in "\\PC{0,200}") {
        exercise(&source);
    }

    #[test]
    fn small_yaml_documents_always_get_an_answer(text in "[a-z:\\[\\]{}&*!|>'\"#%@`, \\n-]{0,120}") {
        check_answer(&text);
    }
}

proptest! {
    // The whole bundled spec is parsed each case: fewer cases keep the debug run short.
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_string_in_any_field_gets_an_answer(spot in 0usize..SPOTS.len(), value in "\\PC{0,40}|[\\x00-\\x7f\\u{2028}\\u{ad}]{0,20}") {
        check_answer(&with_value(spot, &value, false));
    }

    #[test]
    fn any_yaml_in_any_field_gets_an_answer(spot in 0usize..SPOTS.len(), value in "[a-z0-9:\\[\\]{}&*!|>'\"#, .-]{0,40}") {
        check_answer(&with_value(spot, &value, true));
    }

    #[test]
    fn any_string_or_yaml_in_a_function_field_gets_an_answer(spot in 0usize..FUNCTION_SPOTS.len(), value in "\\PC{0,40}|[a-zA-Z0-9:\\[\\]{}&*!|>'\"#, .-]{0,40}", raw: bool) {
        check_answer(&with_value_in(FUNCTION, FUNCTION_SPOTS, spot, &value, raw));
    }
}

#[test]
fn hostile_expressions_are_refused_quickly() {
    let cases = [
        format!("{}1{}", "(".repeat(1500), ")".repeat(1500)),
        format!("{}1{}", "(".repeat(5700), ")".repeat(5700)),
        format!("{}true", "not ".repeat(37_000)),
        vec!["1"; 65_000].join(" + "),
        format!("{}1{}", "(".repeat(40), ")".repeat(40)),
        vec!["embed_dim"; 40].join(" * "),
        "99999999999999999999999".to_string(),
        "é + 1".to_string(),
        "0 - 1".to_string(),
    ];
    for source in &cases {
        exercise(source);
    }
    for source in &cases[..6] {
        assert!(Expr::parse(source).is_err(), "{}", &source[..20]);
    }
}

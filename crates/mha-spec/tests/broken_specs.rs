//! The loader's messages for broken specs, pinned by snapshots.
//!
//! Each case takes the bundled MultiheadAttention spec, applies text edits that break it, and
//! snapshots every message the loader reports. Messages must name the file, line and column and
//! the field path; a spec with several mistakes reports all of them at once.

const FILE: &str = "specs/multihead_attention.yaml";
const BUNDLED: &str = include_str!("../../../specs/multihead_attention.yaml");

/// Applies `(find, replace)` edits (each `find` must occur exactly once) and loads the result.
fn load_broken(edits: &[(&str, &str)]) -> String {
    let mut text = BUNDLED.to_string();
    for (find, replace) in edits {
        assert_eq!(
            text.matches(find).count(),
            1,
            "test setup: `{find}` must occur exactly once in the bundled spec"
        );
        text = text.replacen(find, replace, 1);
    }
    match mha_spec::load_str(FILE, &text) {
        Ok(_) => panic!("the broken spec loaded without errors"),
        Err(errors) => errors.to_string(),
    }
}

macro_rules! broken_spec {
    ($($name:ident: [$(($find:expr, $replace:expr)),+ $(,)?];)+) => {$(
        #[test]
        fn $name() {
            insta::assert_snapshot!(load_broken(&[$(($find, $replace)),+]));
        }
    )+};
}

broken_spec! {
    unknown_top_level_field: [("summary: Multi-head", "sumary: Multi-head")];
    unknown_param_field: [("    type: int\n    constraints: [positive]\n    doc: Total", "    type: int\n    constrains: [positive]\n    doc: Total")];
    wrong_param_type: [("  - name: bias\n    type: bool", "  - name: bias\n    type: boolean")];
    default_of_wrong_type: [("    type: bool\n    default: true\n    doc: Add a bias", "    type: bool\n    default: yes please\n    doc: Add a bias")];
    default_violates_constraint: [("    default: 0.0\n    constraints: [{at_least: 0.0}, {below: 1.0}]", "    default: 1.5\n    constraints: [{at_least: 0.0}, {below: 1.0}]")];
    duplicate_param: [("  - name: add_zero_attn\n", "  - name: add_bias_kv\n    type: bool\n    default: false\n    doc: Listed twice.\n  - name: add_zero_attn\n")];
    unknown_strategy: [("    strategy: {plugin: repack_attn_keras}", "    strategy: rewrite")];
    unknown_plugin: [("    strategy: {plugin: repack_attn_keras}", "    strategy: {plugin: repack_attn_kerass}")];
    arg_map_names_unknown_param: [("      - {native: num_heads, from: num_heads}\n      - {native: dropout, from: dropout}", "      - {native: num_heads, from: num_head}\n      - {native: dropout, from: dropout}")];
    derived_expr_unknown_name: [("    expr: embed_dim // num_heads\n    doc: Features per head.", "    expr: embed_dim // heads\n    doc: Features per head.")];
    derived_expr_syntax: [("    expr: embed_dim // num_heads\n    doc: Features per head.", "    expr: embed_dim // (num_heads\n    doc: Features per head.")];
    weight_mapping_unknown_tensor: [("      - {native: out_proj.bias, from: out_proj.bias}\n    support: {}", "      - {native: out_proj.bias, from: out_proj.biass}\n    support: {}")];
    yaml_syntax_error: [("op: MultiheadAttention", "op: [MultiheadAttention")];
    three_mistakes_three_messages: [
        ("summary: Multi-head", "sumary: Multi-head"),
        ("    strategy: {plugin: repack_attn_keras}", "    strategy: {plugin: repack_attn_kerass}"),
        ("    default: 0.0\n    constraints: [{at_least: 0.0}, {below: 1.0}]", "    default: 1.5\n    constraints: [{at_least: 0.0}, {below: 1.0}]"),
    ];
}

#[test]
fn bundled_spec_loads() {
    let spec = mha_spec::load_str(FILE, BUNDLED).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.op, "MultiheadAttention");
}

#[test]
fn every_error_names_file_line_and_column() {
    let text = BUNDLED
        .replacen("summary: Multi-head", "sumary: Multi-head", 1)
        .replacen("{plugin: repack_attn_keras}", "{plugin: nope}", 1);
    let errors = mha_spec::load_str(FILE, &text).expect_err("broken spec must not load");
    assert_eq!(errors.0.len(), 2, "{errors}");
    for error in &errors.0 {
        assert_eq!(error.file, FILE);
        assert!(error.line > 1 && error.column >= 1, "{error}");
        assert!(!error.path.is_empty(), "{error}");
    }
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let errors = mha_spec::load_file(std::path::Path::new("no/such/spec.yaml"))
        .expect_err("a missing file must not load");
    assert!(errors.to_string().contains("no/such/spec.yaml"), "{errors}");
}

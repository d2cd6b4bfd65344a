//! A corpus of hostile specs, each the bundled spec with a few edits, as an attacker or a
//! careless author would write them. Every one must end in one of two ways:
//!
//! - an error that names the file, a line and the field at fault; or
//! - output that compiles (Python: `py_compile`; Rust: syn, plus one real rustc build of the
//!   generated config) and is inert: the payload is data in every language (no Python or Rust
//!   code names it, no RST line starts a directive the templates did not write, the HTML has no
//!   new tag, attribute or quote; `pyproject.toml` parses with the tables and keys the template
//!   wrote, and every spec text put through `toml_str` reads back as itself), and every output
//!   path stays inside the output folder.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use mha_gen::{GeneratedFile, Options, Templates};

const FILE: &str = "hostile.yaml";
const BUNDLED: &str = include_str!("../../../specs/multihead_attention.yaml");
/// The function op's spec: its cases (`FUNCTION_CASES`) are edits of this one.
const FUNCTION: &str = include_str!("../../../specs/scaled_dot_product_attention.yaml");

/// The word every code-shaped payload uses: it must never be a name in generated code.
const MARK: &str = "PWNED";

enum Expect {
    /// An error whose field path contains this text.
    Error(&'static str),
    /// Generates, compiles, and is inert.
    Inert,
}
use Expect::{Error, Inert};

/// (name, edits as (find, replace); each `find` must occur in the spec, the first is replaced, expected).
type Case = (
    &'static str,
    &'static [(&'static str, &'static str)],
    Expect,
);

const SUMMARY: &str = "summary: Multi-head attention mechanism.";
const EMBED_DOC: &str =
    "doc: Total dimension of the model (the query's feature size and the output's).";
const DROPOUT_DEFAULT: &str = "default: 0.0\n    constraints: [{at_least: 0.0}, {below: 1.0}]";
const HEAD_DIM: &str = "expr: embed_dim // num_heads";
const TORCH_NAME: &str = "display_name: PyTorch";
const TORCH_API: &str = "api: torch.nn.MultiheadAttention";
const TORCH_PKG: &str = "package: torch";
const KERAS_BACKEND: &str = "backend: jax";
const FIRST_WEIGHT: &str = "- name: in_proj_weight";
const TORCH_URL: &str =
    "docs_url: https://pytorch.org/docs/stable/generated/torch.nn.MultiheadAttention.html";

const CASES: &[Case] = &[
    // Python code from spec strings.
    ("summary_triple_quote", &[(SUMMARY, r#"summary: 'x"""; import os; os.system("echo PWNED > PWNED.txt"); """'"#)], Inert),
    ("summary_single_quote_and_backslash", &[(SUMMARY, r#"summary: 'x\"; PWNED(); \'"#)], Inert),
    ("display_name_triple_quote", &[(TORCH_NAME, r#"display_name: 'Py"""; PWNED(); """Torch'"#)], Inert),
    ("display_name_newline", &[(TORCH_NAME, "display_name: \"PyTorch\\nimport os; os.system('PWNED')\"")], Error("frameworks.pytorch.display_name")),
    ("api_triple_quote", &[(TORCH_API, r#"api: 'torch.nn"""; PWNED(); """'"#)], Error("frameworks.pytorch.api")),
    ("package_newline", &[(TORCH_PKG, "package: \"torch\\nimport PWNED\"")], Error("frameworks.pytorch.package")),
    ("package_statement", &[(TORCH_PKG, "package: 'os; PWNED()'")], Error("frameworks.pytorch.package")),
    ("backend_triple_quote", &[(KERAS_BACKEND, r#"backend: 'jax"""; PWNED(); """'"#)], Error("frameworks.keras.backend")),
    ("convention_triple_quote", &[("scaling: \"scores = (q / sqrt(head_dim)) k^T + masks; softmax over keys.\"", r#"scaling: 'x"""; PWNED(); """ '"#)], Inert),
    ("note_quotes", &[("note: \"inputs and outputs transposed by the glue\"", r#"note: 'a """ b '' c \ PWNED()'"#)], Inert),
    ("reason_newline", &[("reason: \"Keras infers the key projection's input size from the key tensor\"", "reason: \"x\\n\\\"\\\"\\\"; PWNED()\"")], Error(".reason")),
    ("summary_toml_table", &[(SUMMARY, r#"summary: 'x" ]] [tool.PWNED] k = "\u0041 \U0001F600 '''' """ # y'"#)], Inert),
    ("template_syntax_in_text", &[(SUMMARY, "summary: '{{ 7 * 7 }} {% raw %} PWNED'")], Inert),
    // Rust code from spec strings.
    ("derived_doc_newline_adds_method", &[("doc: Features per head.", "doc: \"x\\n    pub fn PWNED(&self) {}\\n    /// y\"")], Error("derived[0].doc")),
    ("weight_name_quote", &[(FIRST_WEIGHT, "- name: 'in_proj_weight\", shape: vec![] }); std::fs::write(\"PWNED\", \"\"); shapes.push(WeightShape { name: \"x'")], Error("weights.tensors[0].name")),
    ("doc_comment_closers", &[(EMBED_DOC, r#"doc: 'Total */ /* " \" PWNED()'"#)], Inert),
    // Paths outside the output folder.
    ("op_parent_dirs", &[("op: MultiheadAttention", "op: ../../../x/X")], Error("op")),
    ("op_inner_parent_dir", &[("op: MultiheadAttention", "op: 'Multihead/../../X'")], Error("op")),
    ("op_absolute", &[("op: MultiheadAttention", "op: /tmp/X")], Error("op")),
    ("framework_key_parent_dir", &[("  pytorch:\n", "  ../pytorch:\n"), ("reference: pytorch", "reference: ../pytorch")], Error("frameworks.../pytorch")),
    // Python that would not compile.
    ("docstring_backslashes", &[(SUMMARY, r#"summary: 'C:\Users \N{x} \u12 \x'"#)], Inert),
    ("nbsp", &[(SUMMARY, "summary: \"non\\u00a0breaking\"")], Inert),
    ("soft_hyphen", &[(SUMMARY, "summary: \"soft\\u00adhyphen\"")], Error("summary")),
    ("zero_width_space", &[(EMBED_DOC, "doc: \"zero\\u200bwidth\"")], Error("signature[0].doc")),
    ("line_separator", &[(EMBED_DOC, "doc: \"line\\u2028separator\"")], Error("signature[0].doc")),
    ("paragraph_separator", &[(TORCH_NAME, "display_name: \"Py\\u2029Torch\"")], Error("display_name")),
    ("del_char", &[(EMBED_DOC, "doc: \"del\\x7f\"")], Error("signature[0].doc")),
    ("bidi_override", &[(EMBED_DOC, "doc: \"bidi\\u202eevil\"")], Error("signature[0].doc")),
    ("carriage_return", &[(EMBED_DOC, "doc: \"a\\rb\"")], Error("signature[0].doc")),
    ("astral_emoji", &[(EMBED_DOC, "doc: \"Total \\U0001F600 features\"")], Inert),
    ("param_named_class", &[("- name: embed_dim", "- name: class")], Error("signature[0].name")),
    ("param_named_none", &[("- name: dropout", "- name: None")], Error("signature[2].name")),
    ("param_named_lambda", &[("- name: bias\n", "- name: lambda\n")], Error("signature[3].name")),
    ("param_named_true", &[("- name: batch_first", "- name: 'True'")], Error("signature[8].name")),
    ("param_named_rust_keyword", &[("- name: batch_first", "- name: type")], Error("signature[8].name")),
    ("param_named_builtin", &[("- name: batch_first", "- name: len")], Error("signature[8].name")),
    ("native_arg_keyword", &[("- {native: use_bias, from: bias}\n      - {native: output_shape", "- {native: import, from: bias}\n      - {native: output_shape")], Error(".native")),
    ("native_weight_quote", &[("{native: output_dense.bias, from: out_bias}", "{native: \"output_dense.bias')PWNED(\", from: out_bias}")], Error(".native")),
    // Rust that would not compile.
    ("float_default_nan", &[(DROPOUT_DEFAULT, "default: .nan\n    constraints: [{at_least: 0.0}, {below: 1.0}]")], Error("signature[2].default")),
    ("float_default_inf", &[(DROPOUT_DEFAULT, "default: .inf\n    constraints: []")], Error("signature[2].default")),
    ("int_default_negative", &[("- name: kdim\n    type: optional_int\n    default: null", "- name: kdim\n    type: optional_int\n    default: -1")], Error("signature[6].default")),
    ("divides_a_float", &[("constraints: [positive, {divides: embed_dim}]", "constraints: [positive, {divides: dropout}]")], Error("divides")),
    ("positive_on_bool", &[("- name: bias\n    type: bool\n", "- name: bias\n    type: bool\n    constraints: [positive]\n")], Error("signature[3].constraints[0]")),
    ("below_on_int", &[("- name: embed_dim\n    type: int\n    constraints: [positive]", "- name: embed_dim\n    type: int\n    constraints: [positive, {below: 0.5}]")], Error("signature[0].constraints[1]")),
    ("bound_nan", &[(DROPOUT_DEFAULT, "default: 0.0\n    constraints: [{at_least: .nan}, {below: 1.0}]")], Error("signature[2].constraints[0]")),
    ("derived_negative_constant", &[(HEAD_DIM, "expr: 0 - 1")], Error("derived[0].expr")),
    ("derived_bool_arithmetic", &[("expr: add_bias_kv + add_zero_attn", "expr: true + true")], Inert),
    ("shape_negative_constant", &[("shape: [1, 1, embed_dim]", "shape: [1, 0 - 1, embed_dim]")], Error("weights.tensors[5].shape[1]")),
    ("when_null_to_bool", &[("when_null: embed_dim", "when_null: bias")], Error("when_null")),
    // Work without bound.
    ("expr_deep_parentheses", &[(HEAD_DIM, "expr: ((((((((((((((((((((((((((((((((((((((((embed_dim))))))))))))))))))))))))))))))))))))))))")], Error("derived[0].expr")),
    ("non_ascii_param_name", &[("- name: embed_dim", "- name: é")], Error("signature[0].name")),
    ("non_ascii_feature_name", &[("{name: seq_first_layout,", "{name: é,")], Error("features[0].name")),
    ("long_name", &[("- name: batch_first", "- name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")], Error("signature[8].name")),
    // Docs and HTML.
    ("doc_newline_directive", &[(EMBED_DOC, "doc: \"x\\n.. raw:: html\\n\\n   <script>PWNED()</script>\"")], Error("signature[0].doc")),
    ("doc_starts_directive", &[(SUMMARY, "summary: '.. raw:: html  <script>PWNED()</script>'")], Inert),
    ("doc_inline_link", &[(EMBED_DOC, "doc: '`click <javascript:PWNED()>`_ |sub| [1]_ *x* **y** :raw:`z`'")], Inert),
    ("doc_enumerator", &[(SUMMARY, "summary: '1.'")], Inert),
    ("display_name_html", &[(TORCH_NAME, "display_name: '<img src=x onerror=PWNED()>'")], Inert),
    ("display_name_js_quote", &[(TORCH_NAME, "display_name: \"');PWNED();('\"")], Inert),
    ("display_name_attr_quote", &[(TORCH_NAME, "display_name: '\" onmouseover=\"PWNED()'")], Inert),
    ("docs_url_javascript", &[(TORCH_URL, "docs_url: 'javascript:PWNED()'")], Error("docs_url")),
    ("docs_url_quote", &[(TORCH_URL, "docs_url: 'https://x/\" onclick=\"PWNED()'")], Error("docs_url")),
    ("docs_url_rst", &[(TORCH_URL, "docs_url: 'https://x/>`__ PWNED'")], Error("docs_url")),
    // `extends`: a framework entry written as a change of another.
    ("extends_unknown", &[("extends: keras", "extends: kerass")], Error("frameworks.tensorflow.extends")),
    ("extends_itself", &[("extends: keras", "extends: tensorflow")], Error("frameworks.tensorflow.extends")),
    ("extends_payload", &[("extends: keras", "extends: '../keras\"; PWNED()'")], Error("frameworks.tensorflow.extends")),
    ("extends_a_list", &[("extends: keras", "extends: [keras]")], Error("frameworks.tensorflow.extends")),
    ("extends_chain", &[("  mlx:\n    display_name", "  mlx:\n    extends: tensorflow\n    display_name")], Error("frameworks.mlx.extends")),
    ("extends_overrides_with_payload", &[("    display_name: TensorFlow\n", "    display_name: '\" onclick=\"PWNED()'\n")], Inert),
];

/// Hostile edits of the function op's spec (its new fields: dimensions, shapes, layouts, and
/// what a function may not have).
const FUNCTION_CASES: &[Case] = &[
    ("dimension_name_payload", &[("{name: Hq,", "{name: \"Hq'); PWNED('\",")], Error("dimensions[1].name")),
    ("dimension_doc_newline", &[("{name: Hq, doc: \"query heads (and output heads)\"}", "{name: Hq, doc: \"x\\n.. raw:: html\"}")], Error("dimensions[1].doc")),
    ("dimension_twice", &[("{name: Ev,", "{name: E,")], Error("dimensions[6].name")),
    ("shape_unknown_dimension", &[("shape: [\"...\", Hq, L, E]", "shape: [\"...\", Hq, L, PWNED]")], Error("call.args[0].shape[3]")),
    ("shape_dimension_twice", &[("shape: [\"...\", Hq, L, E]", "shape: [\"...\", Hq, L, L]")], Error("call.args[0].shape[3]")),
    ("shape_leading_dims_last", &[("shape: [\"...\", Hq, L, E]", "shape: [Hq, L, E, \"...\"]")], Error("call.args[0].shape[3]")),
    ("shape_on_a_flag", &[("default: false\n      doc: \"Apply", "default: false\n      shape: [L]\n      doc: \"Apply")], Error("call.args[5].shape")),
    ("layout_not_a_permutation", &[("query: [\"...\", L, Hq, E]", "query: [\"...\", L, Hq, Ev]")], Error("frameworks.keras.layouts.query")),
    ("layout_of_unknown_tensor", &[("output: [\"...\", L, Hq, Ev]", "PWNED: [\"...\", L, Hq, Ev]")], Error("frameworks.keras.layouts.PWNED")),
    ("function_with_weights", &[("features:\n", "weights:\n  tensors: [{name: w, shape: [1], doc: x}]\n\nfeatures:\n")], Error("weights")),
    ("function_with_signature", &[("dimensions:\n", "signature:\n  - {name: n, type: int, doc: x}\n\ndimensions:\n")], Error("signature")),
    ("function_framework_layout", &[("    mask_polarity: true_attends\n    args:\n      - {native: q,", "    mask_polarity: true_attends\n    layout: batch_first\n    args:\n      - {native: q,")], Error("frameworks.mlx.layout")),
    ("call_default_nan", &[("default: 0.0\n      doc: Probability", "default: .nan\n      doc: Probability")], Error("call.args[4].default")),
    ("call_default_wrong_type", &[("default: false\n      doc: \"Grouped", "default: 3\n      doc: \"Grouped")], Error("call.args[7].default")),
    ("call_argument_unmapped", &[("      - {native: scale, from: scale}\n      - {drop: is_causal", "      - {drop: is_causal")], Error("frameworks.mlx.args")),
    ("op_kind_unknown", &[("kind: function", "kind: PWNED")], Error("kind")),
    ("layer_without_signature", &[("kind: function", "kind: layer")], Error("signature")),
    ("dimension_doc_quotes", &[("{name: Hq, doc: \"query heads (and output heads)\"}", "{name: Hq, doc: 'x \"\"\" PWNED() '''' \\ y </div>'}")], Inert),
    ("convention_causal_payload", &[("  causal: \"is_causal masks", "  causal: \"*/ \\\" PWNED(); \\\"\\\"\\\" .. raw:: html is_causal masks")], Inert),
    ("call_doc_payload", &[("doc: Probability of dropping an attention probability (random; 0 in evaluation).", "doc: '\"; PWNED(); // */ Probability'")], Inert),
    ("support_note_payload", &[("{status: native, note: \"the reference\"}", "{status: native, note: \"'); PWNED(); (' <script>\"}")], Inert),
];

fn apply(edits: &[(&str, &str)]) -> String {
    apply_to(BUNDLED, edits)
}

fn apply_to(base: &str, edits: &[(&str, &str)]) -> String {
    let mut text = base.to_string();
    for (find, replace) in edits {
        assert!(
            text.contains(find),
            "test setup: `{find}` is not in the bundled spec"
        );
        text = text.replacen(find, replace, 1);
    }
    text
}

/// Hostile texts that are not edits of the bundled spec: YAML bombs and size limits.
fn whole_documents() -> Vec<(&'static str, String)> {
    let aliases = {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        doc
    };
    vec![
        (
            "nested_flow_sequence",
            format!("op: {}{}", "[".repeat(100_000), "]".repeat(100_000)),
        ),
        (
            "nested_block_mappings",
            (0..200)
                .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
                .collect(),
        ),
        ("alias_bomb", aliases),
        (
            "too_large",
            format!("{BUNDLED}\n# {}\n", "x".repeat(mha_spec::MAX_SPEC_BYTES)),
        ),
        (
            // 600 entries extending keras: each copy is small, together they are not.
            "extends_bomb",
            BUNDLED.replacen(
                "  mlx:\n",
                &(0..600)
                    .map(|i| format!("  fw{i}:\n    extends: keras\n"))
                    .chain(["  mlx:\n".to_string()])
                    .collect::<String>(),
                1,
            ),
        ),
        (
            "expr_1500_parentheses",
            BUNDLED.replacen(
                HEAD_DIM,
                &format!("expr: {}1{}", "(".repeat(1500), ")".repeat(1500)),
                1,
            ),
        ),
        (
            "expr_37000_nots",
            BUNDLED.replacen(HEAD_DIM, &format!("expr: {}true", "not ".repeat(37_000)), 1),
        ),
        (
            "expr_65000_terms",
            BUNDLED.replacen(
                HEAD_DIM,
                &format!("expr: {}", vec!["1"; 65_000].join(" + ")),
                1,
            ),
        ),
        (
            "not_utf8_escape",
            BUNDLED.replacen(SUMMARY, "summary: \"\\uD800 Multi-head\"", 1),
        ),
    ]
}

fn check_error(name: &str, result: Result<mha_spec::Spec, mha_spec::SpecErrors>, field: &str) {
    let errors = match result {
        Ok(_) => panic!("{name}: the hostile spec loaded; expected an error at `{field}`"),
        Err(e) => e,
    };
    let shown = errors.to_string();
    assert!(
        errors
            .0
            .iter()
            .any(|e| e.file == FILE && e.line >= 1 && e.column >= 1 && e.path.contains(field)),
        "{name}: no error names `{field}`:\n{shown}"
    );
    assert!(shown.starts_with(&format!("{FILE}:")), "{name}: {shown}");
}

/// Every identifier of a Rust token stream, strings excluded.
fn rust_idents(tokens: proc_macro2::TokenStream, out: &mut BTreeSet<String>) {
    for tree in tokens {
        match tree {
            proc_macro2::TokenTree::Ident(i) => {
                out.insert(i.to_string());
            }
            proc_macro2::TokenTree::Group(g) => rust_idents(g.stream(), out),
            _ => {}
        }
    }
}

/// The directives the bundled templates write; a page may start no others.
const OWN_DIRECTIVES: &[&str] = &[
    ".. raw:: html",
    ".. list-table::",
    ".. code-block:: python",
    ".. toctree::",
];

fn check_inert(name: &str, files: &[GeneratedFile], baseline: &[GeneratedFile]) {
    for f in files {
        assert!(
            !f.path.contains("..") && !f.path.starts_with('/'),
            "{name}: output path {}",
            f.path
        );
        if f.path.ends_with(".rs") {
            let tokens: proc_macro2::TokenStream = f
                .contents
                .parse()
                .unwrap_or_else(|e| panic!("{name}: {} does not lex: {e}", f.path));
            syn::parse_file(&f.contents)
                .unwrap_or_else(|e| panic!("{name}: {} does not parse: {e}", f.path));
            let mut idents = BTreeSet::new();
            rust_idents(tokens, &mut idents);
            assert!(
                !idents.iter().any(|i| i.contains(MARK) || i == "fs"),
                "{name}: the payload became Rust code in {}",
                f.path
            );
        }
        if f.path.ends_with(".rst") {
            for line in f.contents.lines() {
                let t = line.trim_start();
                if t.starts_with("..") {
                    assert!(
                        OWN_DIRECTIVES.contains(&t.trim_end()),
                        "{name}: {} starts a directive: {line:?}",
                        f.path
                    );
                }
            }
            // The site index: the toctree entries are the templates' (a summary adds none).
            if f.path == "docs/index.rst" {
                let entries = |s: &str| -> Vec<String> {
                    s.lines()
                        .filter(|l| l.starts_with("   ") && !l.trim_start().starts_with(':'))
                        .map(str::to_string)
                        .collect()
                };
                let base = baseline.iter().find(|b| b.path == f.path).expect("index");
                assert_eq!(
                    entries(&f.contents),
                    entries(&base.contents),
                    "{name}: index.rst toctree changed"
                );
            }
            // The raw HTML block: no new tag, quote or attribute.
            let base = baseline
                .iter()
                .find(|b| b.path == f.path)
                .expect("baseline page");
            for c in ['<', '>', '"', '\''] {
                let count = |s: &str| {
                    s.lines()
                        .filter(|l| l.contains("op-tab"))
                        .map(|l| l.matches(c).count())
                        .sum::<usize>()
                };
                assert_eq!(
                    count(&f.contents),
                    count(&base.contents),
                    "{name}: {} has new `{c}` in its HTML",
                    f.path
                );
            }
        }
    }
}

/// One Python process checks every accepted case's modules: each compiles, and the payload
/// word is never a name, attribute or import, only ever inside a string constant.
fn check_python(dir: &Path) {
    let script = format!(
        r#"
import ast, pathlib, sys
bad = []
for path in sorted(pathlib.Path(sys.argv[1]).rglob("*.py")):
    src = path.read_text(encoding="utf-8")
    try:
        tree = ast.parse(compile(src, str(path), "exec", ast.PyCF_ONLY_AST))
    except SyntaxError as e:
        bad.append(f"{{path}}: {{e}}")
        continue
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Name): names = [node.id]
        elif isinstance(node, ast.Attribute): names = [node.attr]
        elif isinstance(node, (ast.Import, ast.ImportFrom)): names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
        if any("{MARK}" in n or n == "system" for n in names):
            bad.append(f"{{path}}:{{node.lineno}}: payload is code: {{ast.dump(node)[:120]}}")
import json, tomllib
PROJECT = {{"name", "version", "description", "requires-python", "dependencies", "optional-dependencies"}}
for path in sorted(pathlib.Path(sys.argv[1]).rglob("pyproject.toml")):
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    if set(doc) != {{"build-system", "project", "tool"}} or set(doc["project"]) != PROJECT:
        bad.append(f"{{path}}: tables {{sorted(doc)}}, project keys {{sorted(doc['project'])}}")
    if "{MARK}" in json.dumps(doc):
        bad.append(f"{{path}}: payload in pyproject.toml")
probes = sorted(pathlib.Path(sys.argv[1]).rglob("toml_probe.toml"))
if not probes or not list(pathlib.Path(sys.argv[1]).rglob("pyproject.toml")):
    bad.append("no pyproject.toml or TOML probe was generated")
for path in probes:
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    spec = json.loads(path.with_name("toml_probe.json").read_text(encoding="utf-8"))
    if doc != spec:
        bad.append(f"{{path}}: spec text did not read back from TOML:\n{{doc}}\n{{spec}}")
print("\n".join(bad))
sys.exit(1 if bad else 0)
"#
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .output()
        .expect("python3 must be on PATH to check the generated glue");
    assert!(
        out.status.success(),
        "generated Python is not inert:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hostile_specs_that_must_fail_name_file_line_and_field() {
    let mut errors = 0;
    for (base, cases) in [(BUNDLED, CASES), (FUNCTION, FUNCTION_CASES)] {
        for (name, edits, expect) in cases {
            if let Error(field) = expect {
                check_error(
                    name,
                    mha_spec::load_str(FILE, &apply_to(base, edits)),
                    field,
                );
                errors += 1;
            }
        }
    }
    for (name, text) in whole_documents() {
        let refused = match mha_spec::load_str(FILE, &text) {
            Ok(_) => panic!("{name}: loaded"),
            Err(e) => e,
        };
        assert!(
            refused.0.iter().all(|e| e.file == FILE && e.line >= 1),
            "{name}: {refused}"
        );
    }
    assert!(errors >= 60, "only {errors} error cases");
}

/// Spec texts written as TOML strings by `toml_str` and `pip_name` (`python/toml_probe.toml`)
/// and as JSON (`python/toml_probe.json`): the Python check reads both and compares.
const TOML_PROBE: &str = r#"{% set spec = ops[0].spec %}summary = {{ spec.summary | toml_str }}
reference = {{ spec.reference | toml_str }}
{%- for c, text in spec.conventions %}
{{ c | toml_str }} = {{ text | toml_str }}
{%- endfor %}
[docs]
{%- for p in spec.signature %}
{{ p.name | toml_str }} = {{ p.doc | toml_str }}
{%- endfor %}
{%- for k, fw in spec.frameworks %}
[frameworks.{{ k | toml_str }}]
display_name = {{ fw.display_name | toml_str }}
api = {{ fw.api | toml_str }}
package = {{ fw.package | pip_name }}
{%- endfor %}
"#;
const JSON_PROBE: &str = r#"{% set spec = ops[0].spec %}{"summary": {{ spec.summary | json_encode }}, "reference": {{ spec.reference | json_encode }},
{%- for c, text in spec.conventions %} {{ c | json_encode }}: {{ text | json_encode }},{% endfor %}
"docs": { {%- for p in spec.signature %}{{ p.name | json_encode }}: {{ p.doc | json_encode }}{% if not loop.last %}, {% endif %}{% endfor -%} },
"frameworks": { {%- for k, fw in spec.frameworks %}{{ k | json_encode }}: {"display_name": {{ fw.display_name | json_encode }}, "api": {{ fw.api | json_encode }}, "package": {{ fw.package | json_encode }}}{% if not loop.last %}, {% endif %}{% endfor -%} }}
"#;

/// The bundled templates written into `dir`, plus the TOML probe.
fn with_toml_probe(dir: &Path) -> Templates {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates");
    let mut files: Vec<(String, String)> = Templates::bundled()
        .names()
        .map(|name| {
            let text = std::fs::read_to_string(root.join(name)).expect("read a bundled template");
            (name.to_string(), text)
        })
        .collect();
    files.push((
        "python_package/toml_probe.toml.tera".into(),
        TOML_PROBE.into(),
    ));
    files.push((
        "python_package/toml_probe.json.tera".into(),
        JSON_PROBE.into(),
    ));
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write a template");
    }
    Templates::from_dir(dir).expect("templates with the probe")
}

/// A package name that Python can import but pip cannot install stops generation with an error
/// that names the pyproject template and the name (it never becomes a broken pyproject.toml).
#[test]
fn a_package_that_is_not_a_distribution_name_is_a_render_error() {
    let spec = mha_spec::load_str(FILE, &apply(&[(TORCH_PKG, "package: _torch")]))
        .expect("`_torch` is an importable module name");
    let err = mha_gen::generate(&[spec], &Templates::bundled(), &Options::default())
        .expect_err("`_torch` is no PEP 508 name");
    let message = err.to_string();
    assert!(
        message.contains("pyproject.toml") && message.contains("`_torch`"),
        "{message}"
    );
}

/// The accepted cases of both bases, in two halves that run in parallel; each is compared with
/// its base spec's own output.
fn inert_cases(half: usize) {
    let probe_dir = tempfile::tempdir().expect("temp dir");
    let templates = with_toml_probe(probe_dir.path());
    let dir = tempfile::tempdir().expect("temp dir");
    let accepted = [(BUNDLED, CASES), (FUNCTION, FUNCTION_CASES)]
        .into_iter()
        .flat_map(|(base, cases)| cases.iter().map(move |case| (base, case)))
        .filter(|(_, (_, _, e))| matches!(e, Inert));
    let baselines: Vec<(&str, Vec<GeneratedFile>)> = [BUNDLED, FUNCTION]
        .into_iter()
        .map(|base| {
            let spec = mha_spec::load_str(FILE, base).expect("a bundled spec");
            let files =
                mha_gen::generate(&[spec], &templates, &Options::default()).expect("baseline");
            (base, files)
        })
        .collect();
    for (base, (name, edits, _)) in accepted.skip(half).step_by(2) {
        let spec = mha_spec::load_str(FILE, &apply_to(base, edits))
            .unwrap_or_else(|e| panic!("{name}: expected inert output:\n{e}"));
        let files = mha_gen::generate(&[spec], &templates, &Options::default())
            .unwrap_or_else(|e| panic!("{name}: generate: {e}"));
        let baseline = &baselines.iter().find(|(b, _)| *b == base).expect("base").1;
        check_inert(name, &files, baseline);
        mha_gen::write_all(&dir.path().join(name), &files)
            .unwrap_or_else(|e| panic!("{name}: write: {e}"));
    }
    check_python(dir.path());
}

#[test]
fn hostile_specs_that_load_generate_inert_output_first_half() {
    inert_cases(0);
}

#[test]
fn hostile_specs_that_load_generate_inert_output_second_half() {
    inert_cases(1);
}

/// One real rustc build of the Rust generated from each base spec holding every accepted
/// payload of its cases (the layer's config, the function's call options).
#[test]
fn generated_config_from_hostile_text_compiles_with_rustc() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sources = String::from("#![deny(warnings)]\n");
    let bases = [(BUNDLED, CASES), (FUNCTION, FUNCTION_CASES)];
    for (i, (base, cases)) in bases.into_iter().enumerate() {
        // Every accepted payload at once, the first of each spot.
        let mut edits: Vec<(&str, &str)> = Vec::new();
        for (_, case_edits, expect) in cases {
            if matches!(expect, Inert) {
                for (find, replace) in case_edits.iter() {
                    if !edits.iter().any(|(f, _)| f == find) {
                        edits.push((find, replace));
                    }
                }
            }
        }
        let spec =
            mha_spec::load_str(FILE, &apply_to(base, &edits)).unwrap_or_else(|e| panic!("{e}"));
        let files = mha_gen::generate(
            &[spec],
            &Templates::bundled(),
            &Options {
                python: false,
                docs: false,
                ..Options::default()
            },
        )
        .expect("generate");
        // The layer has its config and its weight layout, the function its call options: the
        // files of one op share a module, as the runtime includes them.
        assert!(!files.is_empty(), "Rust for every op");
        let op_source: Vec<&str> = files.iter().map(|f| f.contents.as_str()).collect();
        sources.push_str(&format!("pub mod op{i} {{\n{}\n}}\n", op_source.join("\n")));
    }
    let lib = dir.path().join("lib.rs");
    std::fs::write(&lib, sources).expect("write lib.rs");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "--crate-type",
            "lib",
            "--emit",
            "metadata",
            "-o",
        ])
        .arg(dir.path().join("liblib.rmeta"))
        .arg(&lib)
        .output()
        .expect("rustc");
    assert!(
        out.status.success(),
        "the generated Rust does not compile:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A spec built or changed in code skips the loader; `generate` holds it to the same rules
/// before any template runs (a non-ASCII name once panicked inside tera).
#[test]
fn specs_built_in_code_are_checked_before_rendering() {
    let mut spec = mha_spec::bundled().expect("bundled specs").remove(0);
    spec.signature[0].name = "é".into();
    spec.op = "../../X".into();
    let err = mha_gen::generate(&[spec], &Templates::bundled(), &Options::default())
        .expect_err("an unchecked spec must be refused");
    let message = err.to_string();
    assert!(
        message.contains("signature[0].name") && message.contains("op: "),
        "{message}"
    );
}

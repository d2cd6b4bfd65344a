//! The argument checks of `#[attention_layer]` as users meet them: each error's message and the
//! source text it points at, checked on the expansion without compiling a crate. (`mha-macros`'
//! `tests/ui/` keeps the cases only a compiler run proves: how rustc renders these spans, the
//! stub that keeps the user's code type-checking, the compiler's hint for a method of the
//! dynamic layer.)

use std::str::FromStr;

use proc_macro2::TokenStream;

/// Where an error points: the source text its span covers, or the call site (the whole
/// attribute, as rustc shows it).
#[derive(Debug, PartialEq, Eq)]
enum At<'s> {
    Text(&'s str),
    CallSite,
}

use At::{CallSite, Text};

/// Each error of `#[attention_layer(<args>)] <item>`, in order: its message and where it points.
fn diagnostics<'s>(args: &'s str, item: &'s str) -> Vec<(String, At<'s>)> {
    // The item is parsed after a newline, so that its spans start on line 2 and the arguments'
    // stay on line 1.
    let item_source = format!("\n{item}");
    let tokens = mha_macros_core::attention_layer(
        TokenStream::from_str(args).expect("arguments tokenize"),
        TokenStream::from_str(&item_source).expect("item tokenizes"),
    );
    let file: syn::File = syn::parse2(tokens).expect("the expansion is valid Rust syntax");
    file.items
        .iter()
        .filter_map(|item| match item {
            syn::Item::Macro(m) if m.mac.path.segments.last()?.ident == "compile_error" => Some(m),
            _ => None,
        })
        .map(|m| {
            let message = m
                .mac
                .parse_body::<syn::LitStr>()
                .expect("a message")
                .value();
            // `syn::Error::to_compile_error` spans the path from the error's first token and the
            // braces to its last.
            let first = m.mac.path.segments[0].ident.span();
            let last = match &m.mac.delimiter {
                syn::MacroDelimiter::Brace(b) => b.span.join(),
                _ => panic!("`compile_error!` with braces expected"),
            };
            let range = first.byte_range().start..last.byte_range().end;
            let at = if range.is_empty() {
                CallSite
            } else if first.start().line == 1 {
                Text(&args[range])
            } else {
                Text(&item[range.start - 1..range.end - 1])
            };
            (message, at)
        })
        .collect()
}

/// The diagnostics of arguments on a plain `struct L;`.
fn of_args(args: &str) -> Vec<(String, At<'_>)> {
    diagnostics(args, "struct L;")
}

fn one(message: &str, at: At<'static>) -> Vec<(String, At<'static>)> {
    vec![(message.to_string(), at)]
}

#[test]
fn applied_twice_is_one_error_at_the_second_attribute() {
    let item = "#[attention_layer(embed_dim = 16, num_heads = 2)]\nstruct Twice;";
    assert_eq!(
        diagnostics("embed_dim = 16, num_heads = 4", item),
        one(
            "`#[attention_layer]` is applied more than once to `Twice`; keep one: one attribute gives all the layer's arguments",
            Text("#[attention_layer(embed_dim = 16, num_heads = 2)]"),
        )
    );
}

#[test]
fn dropout_out_of_range() {
    assert_eq!(
        of_args("embed_dim = 64, num_heads = 8, dropout = 1.0"),
        one(
            "MultiheadAttention: `dropout` must be below 1.0, got 1.0",
            Text("1.0")
        )
    );
    assert_eq!(
        of_args("embed_dim = 64, num_heads = 8, dropout = -0.1"),
        one(
            "MultiheadAttention: `dropout` must be at least 0.0, got -0.1",
            Text("-0.1")
        )
    );
}

#[test]
fn missing_num_heads_points_at_the_attribute() {
    assert_eq!(
        of_args("embed_dim = 64, dropout = 0.1"),
        one(
            "missing argument `num_heads` (Number of parallel attention heads; each head has embed_dim // num_heads features); \
             e.g. `#[attention_layer(embed_dim = 512, num_heads = 8)]`",
            CallSite,
        )
    );
}

#[test]
fn the_most_negative_values_are_quoted_as_written() {
    assert_eq!(
        of_args("embed_dim = -9223372036854775808, num_heads = 1"),
        one(
            "MultiheadAttention: `embed_dim` must be positive, got -9223372036854775808",
            Text("-9223372036854775808"),
        )
    );
    assert_eq!(
        of_args("embed_dim = 8, num_heads = -99999999999999999999"),
        one(
            "`num_heads` = -99999999999999999999: number too small to fit in target type",
            Text("-99999999999999999999"),
        )
    );
}

#[test]
fn negative_and_zero_sizes() {
    let cases = [
        ("embed_dim = 64, num_heads = -8", "num_heads", "-8"),
        ("embed_dim = 64, num_heads = 8, kdim = -1", "kdim", "-1"),
        ("embed_dim = 0, num_heads = 8", "embed_dim", "0"),
        ("embed_dim = 64, num_heads = 8, vdim = 0", "vdim", "0"),
    ];
    for (args, name, value) in cases {
        assert_eq!(
            of_args(args),
            one(
                &format!("MultiheadAttention: `{name}` must be positive, got {value}"),
                Text(value)
            ),
            "{args}"
        );
    }
}

#[test]
fn heads_that_do_not_divide_point_at_num_heads() {
    assert_eq!(
        of_args("embed_dim = 10, num_heads = 4"),
        one(
            "MultiheadAttention: `num_heads` must divide `embed_dim` (10), got 4; the nearest valid `num_heads` are 2 and 5",
            Text("4"),
        )
    );
    assert_eq!(
        of_args("embed_dim = 512, num_heads = 12"),
        one(
            "MultiheadAttention: `num_heads` must divide `embed_dim` (512), got 12; the nearest valid `num_heads` are 8 and 16",
            Text("12"),
        )
    );
}

#[test]
fn not_a_struct() {
    assert_eq!(
        diagnostics("embed_dim = 64, num_heads = 8", "fn layer() {}"),
        one(
            "`#[attention_layer]` applies to a struct without fields, e.g. `struct Encoder;`",
            Text("fn"),
        )
    );
    assert_eq!(
        diagnostics("embed_dim = 64, num_heads = 8", "enum Layer {\n    Small,\n}"),
        one(
            "`#[attention_layer]` applies to a struct without fields, not to an enum; declare the layer as `struct Layer;`",
            Text("enum"),
        )
    );
    assert_eq!(
        diagnostics(
            "embed_dim = 64, num_heads = 8",
            "struct Layer {\n    scale: f32,\n}"
        ),
        one(
            "`#[attention_layer]` generates the fields of `Layer` itself; declare the layer as `struct Layer;`",
            Text("{\n    scale: f32,\n}"),
        )
    );
}

#[test]
fn sizes_past_one_allocation() {
    assert_eq!(
        of_args("embed_dim = 9223372036854775807, num_heads = 1"),
        one(
            "`embed_dim` is too large: `in_proj_weight` (3 * embed_dim, embed_dim) has a dimension past 64-bit integers, \
             more than one allocation can hold (9223372036854775807 bytes)",
            Text("9223372036854775807"),
        )
    );
    assert_eq!(
        of_args("embed_dim = 8, num_heads = 2, kdim = 4611686018427387904"),
        one(
            "`kdim` is too large: `k_proj_weight` (embed_dim, kdim) would need 147573952589676412928 bytes, \
             more than one allocation can hold (9223372036854775807 bytes)",
            Text("4611686018427387904"),
        )
    );
}

#[test]
fn unknown_argument_suggests_the_closest() {
    assert_eq!(
        of_args("embed_dim = 64, num_heads = 8, batchfirst = true"),
        one(
            "unknown argument `batchfirst` (did you mean `batch_first`?)",
            Text("batchfirst")
        )
    );
}

#[test]
fn wrong_literal_types() {
    assert_eq!(
        of_args(r#"embed_dim = "64", num_heads = 8.0, bias = 1, dropout = false, kdim = 'k'"#),
        vec![
            (
                r#"`embed_dim` expects an integer, found a string `"64"`: write e.g. `embed_dim = 512`"#
                    .to_string(),
                Text(r#""64""#)
            ),
            (
                "`num_heads` expects an integer, found a float `8.0`: write e.g. `num_heads = 8`"
                    .to_string(),
                Text("8.0")
            ),
            (
                "`bias` expects `true` or `false`, found an integer `1`: write e.g. `bias = true`"
                    .to_string(),
                Text("1")
            ),
            (
                "`dropout` expects a number, found a bool `false`: write e.g. `dropout = 0.1`"
                    .to_string(),
                Text("false")
            ),
            (
                "`kdim` expects an integer or `None`, found a character `'k'`: write e.g. `kdim = 64`"
                    .to_string(),
                Text("'k'")
            ),
        ]
    );
}

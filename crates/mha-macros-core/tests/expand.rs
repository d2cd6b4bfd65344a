//! Snapshots of the expansion (formatted with prettyplease) and the error messages of bad input.

use mha_macros_core::attention_layer;
use proc_macro2::TokenStream;
use quote::quote;

/// The expansion as formatted Rust.
fn pretty(args: TokenStream, item: TokenStream) -> String {
    let tokens = attention_layer(args, item);
    let file: syn::File = syn::parse2(tokens).expect("the expansion is valid Rust syntax");
    prettyplease::unparse(&file)
}

/// The messages of the `compile_error!`s of an expansion, in order.
fn errors(args: TokenStream, item: TokenStream) -> Vec<String> {
    let file: syn::File = syn::parse2(attention_layer(args, item)).expect("valid syntax");
    file.items
        .iter()
        .filter_map(|item| match item {
            syn::Item::Macro(m) if m.mac.path.segments.last().unwrap().ident == "compile_error" => {
                Some(m.mac.parse_body::<syn::LitStr>().unwrap().value())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn minimal_layer() {
    insta::assert_snapshot!(pretty(
        quote!(embed_dim = 16, num_heads = 4),
        quote! {
            /// An encoder's self-attention.
            #[derive(Debug, Clone)]
            pub struct Encoder;
        },
    ));
}

#[test]
fn every_argument() {
    insta::assert_snapshot!(pretty(
        quote!(
            embed_dim = 12,
            num_heads = 3,
            dropout = 0.1,
            bias = false,
            add_bias_kv = true,
            add_zero_attn = true,
            kdim = 5,
            vdim = None,
            batch_first = true,
        ),
        quote!(
            pub(crate) struct CrossAttention {}
        ),
    ));
}

#[test]
fn renamed_facade_crate() {
    let text = pretty(
        quote!(embed_dim = 8, num_heads = 2, crate = ::attention::mha),
        quote!(
            struct L;
        ),
    );
    let renamed = text.matches("::attention::mha::__private::").count();
    assert!(renamed > 10, "{text}");
    assert_eq!(
        text.matches("::mha::__private::").count(),
        renamed,
        "{text}"
    );
}

#[test]
fn cfg_on_the_struct_applies_to_the_impls() {
    let text = pretty(
        quote!(embed_dim = 8, num_heads = 2),
        quote!(
            #[cfg(feature = "attention")]
            struct L;
        ),
    );
    assert_eq!(
        text.matches("#[cfg(feature = \"attention\")]").count(),
        5, // the struct and its four impls
        "{text}"
    );
}

#[test]
fn crate_path_as_a_string_and_bad_crate_values() {
    let text = pretty(
        quote!(embed_dim = 8, num_heads = 2, crate = "::attention::mha"),
        quote!(
            struct L;
        ),
    );
    assert!(
        text.contains("::attention::mha::__private::MultiheadAttention"),
        "{text}"
    );
    assert_eq!(
        errors(
            quote!(embed_dim = 8, num_heads = 2, crate = 3),
            quote!(
                struct L;
            )
        ),
        ["`crate` must be the path of the `mha` crate, e.g. `crate = ::mha`"]
    );
}

#[test]
fn stub_beside_an_error() {
    insta::assert_snapshot!(pretty(
        quote!(embed_dim = 10, num_heads = 4),
        quote!(
            struct Encoder;
        )
    ));
}

#[test]
fn unknown_argument_suggests_the_closest_name() {
    assert_eq!(
        errors(
            quote!(embed_dim = 8, num_heads = 2, batchfirst = true),
            quote!(
                struct L;
            )
        ),
        ["unknown argument `batchfirst` (did you mean `batch_first`?)"]
    );
    let listed = errors(
        quote!(embed_dim = 8, num_heads = 2, colour = 1),
        quote!(
            struct L;
        ),
    );
    assert_eq!(
        listed,
        ["unknown argument `colour`; the arguments of MultiheadAttention are `embed_dim`, \
          `num_heads`, `dropout`, `bias`, `add_bias_kv`, `add_zero_attn`, `kdim`, `vdim`, `batch_first`"]
    );
}

#[test]
fn all_errors_at_once() {
    let found = errors(
        quote!(
            embed_dim = "512",
            num_heads = 0,
            dropout = 1.0,
            bias = 1,
            bias = true
        ),
        quote!(
            enum E {
                A,
            }
        ),
    );
    assert_eq!(
        found,
        [
            "`embed_dim` expects an integer, found a string `\"512\"`: write e.g. `embed_dim = 512`",
            "`bias` expects `true` or `false`, found an integer `1`: write e.g. `bias = true`",
            "`bias` is given more than once",
            "`#[attention_layer]` applies to a struct without fields, not to an enum; declare the layer as `struct E;`",
            "MultiheadAttention: `num_heads` must be positive, got 0",
            "MultiheadAttention: `dropout` must be below 1.0, got 1.0",
        ]
    );
}

#[test]
fn divisibility_gives_both_numbers_and_the_nearest_head_counts() {
    assert_eq!(
        errors(quote!(embed_dim = 10, num_heads = 4), quote!(struct L;)),
        ["MultiheadAttention: `num_heads` must divide `embed_dim` (10), got 4; the nearest valid `num_heads` are 2 and 5"]
    );
    assert_eq!(
        errors(quote!(embed_dim = 6, num_heads = 8), quote!(struct L;)),
        ["MultiheadAttention: `num_heads` must divide `embed_dim` (6), got 8; the nearest valid `num_heads` is 6"]
    );
}

#[test]
fn an_invalid_size_does_not_also_fail_divisibility() {
    assert_eq!(
        errors(
            quote!(embed_dim = -12, num_heads = 5),
            quote!(
                struct L;
            )
        ),
        ["MultiheadAttention: `embed_dim` must be positive, got -12"]
    );
}

#[test]
fn missing_required_arguments() {
    assert_eq!(
        errors(quote!(dropout = 0.1), quote!(struct L;)),
        [
            "missing argument `embed_dim` (Total dimension of the model (the query's feature size and the output's)); \
             e.g. `#[attention_layer(embed_dim = 512, num_heads = 8)]`",
            "missing argument `num_heads` (Number of parallel attention heads; each head has embed_dim // num_heads features); \
             e.g. `#[attention_layer(embed_dim = 512, num_heads = 8)]`",
        ]
    );
}

#[test]
fn malformed_arguments_are_reported_each() {
    assert_eq!(
        errors(
            quote!(embed_dim, num_heads = 2 3, kdim = -3),
            quote!(
                struct L;
            )
        ),
        [
            "`embed_dim` needs a value: write `embed_dim = <value>`",
            "expected `,` after the value",
            "MultiheadAttention: `kdim` must be positive, got -3",
        ]
    );
}

#[test]
fn struct_with_fields_and_generics() {
    assert_eq!(
        errors(
            quote!(embed_dim = 8, num_heads = 2),
            quote!(struct L<T> { x: T })
        ),
        [
            "`#[attention_layer]` generates the fields of `L` itself; declare the layer as `struct L;`",
            "an attention layer type cannot be generic: its sizes are fixed by the attribute; declare the layer as `struct L;`",
        ]
    );
}

#[test]
fn not_a_struct_at_all() {
    assert_eq!(
        errors(
            quote!(embed_dim = 8, num_heads = 2),
            quote!(
                fn f() {}
            )
        ),
        ["`#[attention_layer]` applies to a struct without fields, e.g. `struct Encoder;`"]
    );
}

#[test]
fn integers_are_accepted_for_floats_and_none_for_optional_sizes() {
    let text = pretty(
        quote!(embed_dim = 8, num_heads = 2, dropout = 0, kdim = None),
        quote!(
            struct L;
        ),
    );
    assert!(text.contains("pub const DROPOUT: f64 = 0.0;"), "{text}");
    assert!(text.contains("pub const KDIM: usize = 8;"), "{text}");
    assert!(
        text.contains("kdim: ::mha::__private::Option::None"),
        "{text}"
    );
}

#[test]
fn every_spec_parameter_is_accepted_and_becomes_a_constant() {
    let spec = mha_macros_core::spec().expect("the bundled spec loads");
    let mut args = Vec::new();
    for param in &spec.signature {
        let name = syn::Ident::new(&param.name, proc_macro2::Span::call_site());
        let value = match (&param.default, param.name.as_str()) {
            (None, "num_heads") => quote!(2),
            (None, _) => quote!(8),
            (Some(mha_spec::Literal::Null(())), _) => quote!(None),
            (Some(mha_spec::Literal::Bool(b)), _) => quote!(#b),
            (Some(mha_spec::Literal::Int(i)), _) => quote!(#i),
            (Some(mha_spec::Literal::Float(f)), _) => quote!(#f),
        };
        args.push(quote!(#name = #value));
    }
    let text = pretty(
        quote!(#(#args),*),
        quote!(
            struct L;
        ),
    );
    assert!(!text.contains("compile_error"), "{text}");
    let names = spec
        .signature
        .iter()
        .map(|p| &p.name)
        .chain(spec.derived.iter().map(|d| &d.name));
    for name in names {
        let declared = format!("pub const {}: ", name.to_uppercase());
        assert!(text.contains(&declared), "no `{declared}` in\n{text}");
    }
}

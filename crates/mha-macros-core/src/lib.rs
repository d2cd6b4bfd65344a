//! The expansion logic of `#[attention_layer(...)]`, as a normal library so that it can be tested
//! and snapshotted; the proc-macro crate `mha-macros` is a thin shell over [`attention_layer`].
//!
//! The steps, as in serde_derive: [`ast`] parses the arguments and the item, [`attr`] types each
//! argument against the op spec's signature, [`valid`] checks the spec's constraints, [`model`]
//! computes the layer's constants from the spec, and [`expand`] writes the code (or [`fallback`]
//! writes a stub beside the errors). Errors are collected in a [`Ctxt`] and reported
//! all at once, each at the span of the argument it concerns.
//!
//! The accepted names, their types, defaults and constraints are those of the bundled spec
//! (`specs/multihead_attention.yaml`, through `mha-spec`); nothing here lists them.
//!
//! ```
//! use quote::quote;
//!
//! let tokens = mha_macros_core::attention_layer(
//!     quote!(embed_dim = 16, num_heads = 4),
//!     quote!(struct Encoder;),
//! );
//! let text = tokens.to_string();
//! assert!(text.contains("pub const HEAD_DIM : usize = 4"));
//! assert!(!text.contains("compile_error"));
//! ```

pub mod ast;
pub mod attr;
pub mod ctxt;
pub mod expand;
pub mod fallback;
pub mod model;
pub mod valid;

use std::sync::OnceLock;

use mha_spec::Spec;
use proc_macro2::TokenStream;
use quote::quote;

use crate::attr::Arguments;
use crate::ctxt::Ctxt;
use crate::model::Layer;

/// The op the macro generates layers of.
pub const OP: &str = "MultiheadAttention";

/// The bundled spec of [`OP`], loaded once per compiler process.
pub fn spec() -> Result<&'static Spec, String> {
    static SPEC: OnceLock<Result<Spec, String>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let specs = mha_spec::bundled().map_err(|e| e.to_string())?;
        specs
            .into_iter()
            .find(|s| s.op == OP)
            .ok_or_else(|| format!("the bundled specs have no `{OP}` op"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Expands `#[attention_layer(args)] item`: the layer, or every error plus a stub.
pub fn attention_layer(args: TokenStream, item: TokenStream) -> TokenStream {
    let spec = match spec() {
        Ok(spec) => spec,
        Err(message) => {
            let message = format!("mha's bundled op spec does not load: {message}");
            return quote!(::core::compile_error!(#message); #item);
        }
    };
    let mut input = match ast::parse_item(item.clone()) {
        Ok(input) => input,
        Err(error) => {
            let error = error.to_compile_error();
            return quote!(#error #item);
        }
    };
    let cx = Ctxt::new();
    valid::check_single_use(&mut input, &cx);
    let parsed = ast::parse_args(args, &cx);
    let arguments = Arguments::from_ast(spec, &parsed, &cx);
    valid::check_item(&input, &cx);
    let values = valid::check_values(spec, &arguments, &cx);
    valid::check_sizes(spec, &arguments, &values, &cx);
    let layer = Layer::new(spec, &input, &arguments, &values);
    match cx.check() {
        Ok(()) => expand::layer(&layer),
        Err(errors) => {
            let errors = errors.to_compile_error();
            let stub = fallback::stub(&layer);
            quote!(#errors #stub)
        }
    }
}

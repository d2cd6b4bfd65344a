//! `#[attention_layer(...)]`, re-exported by the facade crate `mha` (use it as
//! `mha::attention_layer`). The expansion logic lives in `mha-macros-core`.

use proc_macro::TokenStream;

/// Turns a field-less struct into a multi-head attention layer whose sizes are compile-time
/// constants.
///
/// The arguments are the constructor parameters of the op spec (`specs/multihead_attention.yaml`),
/// by name: `embed_dim` and `num_heads` are required; `dropout`, `bias`, `add_bias_kv`,
/// `add_zero_attn`, `kdim`, `vdim` and `batch_first` take the spec's defaults. Unknown names,
/// wrong literal types and values that break the spec's constraints are compile errors at the
/// argument. `crate = path` says where the `mha` crate is when it is renamed.
///
/// See the `mha` crate for the generated API and an example.
#[proc_macro_attribute]
pub fn attention_layer(args: TokenStream, item: TokenStream) -> TokenStream {
    mha_macros_core::attention_layer(args.into(), item.into()).into()
}

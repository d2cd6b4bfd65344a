//! The stub emitted beside errors (thiserror's fallback): the item as written plus the layer's API
//! with `unreachable!()` bodies, so that code using the layer raises no second error.

use proc_macro2::TokenStream;
use quote::quote;

use crate::expand::{api, Bodies};
use crate::model::Layer;

/// The item unchanged and the stub API.
pub fn stub(layer: &Layer) -> TokenStream {
    let item = layer.item;
    let api = api(layer, Bodies::Stub);
    quote! {
        #item
        #api
    }
}

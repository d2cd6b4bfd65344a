//! The macro's input as written: `name = value` arguments and the annotated item.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{DeriveInput, Ident, Lit, Token};

use crate::ctxt::Ctxt;

/// One `name = value` argument of the attribute.
pub struct Arg {
    /// The argument's name (`crate` included, hence parsed with `parse_any`).
    pub name: Ident,
    /// What follows the `=`.
    pub value: ArgValue,
}

/// The value of an argument.
pub enum ArgValue {
    /// A literal, possibly negated: `512`, `-1`, `0.1`, `true`, `"x"`.
    Lit {
        /// The leading `-`, if any.
        minus: Option<Token![-]>,
        /// The literal.
        lit: Lit,
    },
    /// A path: `None`, or the facade crate's path for `crate = ...`.
    Path(syn::Path),
}

/// The value's tokens: errors spanned by them cover the whole value, `-` included.
impl ToTokens for ArgValue {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        match self {
            ArgValue::Lit { minus, lit } => {
                minus.to_tokens(tokens);
                lit.to_tokens(tokens);
            }
            ArgValue::Path(path) => path.to_tokens(tokens),
        }
    }
}

impl Parse for Arg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let name = input.call(Ident::parse_any)?;
        if input.is_empty() {
            return Err(syn::Error::new(
                name.span(),
                format!("`{name}` needs a value: write `{name} = <value>`"),
            ));
        }
        input.parse::<Token![=]>()?;
        let value = if input.peek(Token![-]) {
            let minus = input.parse()?;
            ArgValue::Lit {
                minus: Some(minus),
                lit: input.parse()?,
            }
        } else if input.peek(Lit) {
            ArgValue::Lit {
                minus: None,
                lit: input.parse()?,
            }
        } else {
            ArgValue::Path(input.call(syn::Path::parse_mod_style)?)
        };
        if !input.is_empty() {
            return Err(input.error("expected `,` after the value"));
        }
        Ok(Arg { name, value })
    }
}

/// The attribute's arguments: those that parse, and the names of those that do not.
#[derive(Default)]
pub struct Args {
    /// Well-formed `name = value` arguments, in order.
    pub parsed: Vec<Arg>,
    /// Names of malformed arguments (already reported), so they are not also called missing.
    pub malformed: Vec<Ident>,
}

/// Parses the attribute's arguments. Each comma-separated argument is parsed on its own, so one
/// malformed argument does not hide the errors of the others.
pub fn parse_args(tokens: TokenStream, cx: &Ctxt) -> Args {
    let mut chunks: Vec<Vec<TokenTree>> = vec![Vec::new()];
    for tree in tokens {
        match &tree {
            TokenTree::Punct(p) if p.as_char() == ',' => chunks.push(Vec::new()),
            _ => chunks.last_mut().expect("starts with one chunk").push(tree),
        }
    }
    if chunks.last().is_some_and(Vec::is_empty) {
        chunks.pop(); // trailing comma, or no arguments at all
    }
    let mut args = Args::default();
    for chunk in chunks {
        let Some(first) = chunk.first() else {
            cx.error_spanned(Span::call_site(), "expected an argument between the commas");
            continue;
        };
        let name = match first {
            TokenTree::Ident(ident) => Some(ident.clone()),
            _ => None,
        };
        match syn::parse2::<Arg>(chunk.into_iter().collect()) {
            Ok(arg) => args.parsed.push(arg),
            Err(error) => {
                cx.syn_error(error);
                args.malformed.extend(name);
            }
        }
    }
    args
}

/// Parses the annotated item (a struct, or anything else `DeriveInput` accepts, which is then
/// rejected with a clear error by validation).
pub fn parse_item(tokens: TokenStream) -> syn::Result<DeriveInput> {
    syn::parse2(tokens).map_err(|e| {
        syn::Error::new(
            e.span(),
            "`#[attention_layer]` applies to a struct without fields, e.g. `struct Encoder;`",
        )
    })
}

//! The layer to generate, derived from the spec and the checked arguments: its constants, its
//! config and its state_dict shapes.

use std::collections::HashMap;

use mha_spec::{ExprType, ExprValue, Literal, ParamType, Spec};
use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::{DeriveInput, Ident};

use crate::attr::Arguments;

/// Everything the expansion needs, computed from the spec; no spec parameter is named here.
pub struct Layer<'a> {
    /// The op's name in the spec (`MultiheadAttention`), for messages.
    pub op: String,
    /// The annotated item.
    pub item: &'a DeriveInput,
    /// The path of the facade's `__private` module, through which every generated path goes.
    pub private: TokenStream,
    /// Associated constants: every parameter (optional sizes resolved) then every derived value.
    pub consts: Vec<Const>,
    /// The fields of the config literal, one per parameter, as given or defaulted.
    pub config_fields: Vec<(Ident, TokenStream)>,
    /// The state_dict tensors the layer has, with their shapes, in the spec's order.
    pub parameter_shapes: Vec<(String, Vec<usize>)>,
}

/// One associated constant.
pub struct Const {
    /// Its name, the parameter's in upper case.
    pub name: Ident,
    /// Its Rust type.
    pub ty: TokenStream,
    /// Its value.
    pub value: TokenStream,
    /// Its documentation, from the spec.
    pub doc: String,
}

impl<'a> Layer<'a> {
    /// The layer for `item` with the `valid` given values. Where a required value is missing or
    /// invalid (only then is the result used for a stub), `1` stands in.
    pub fn new(
        spec: &Spec,
        item: &'a DeriveInput,
        args: &Arguments,
        valid: &HashMap<String, Literal>,
    ) -> Self {
        let mut given = valid.clone();
        for param in spec.signature.iter().filter(|p| p.is_required()) {
            given.entry(param.name.clone()).or_insert(Literal::Int(1));
        }
        let resolved = spec.resolve(&given);

        let private = match &args.krate {
            Some(path) => quote!(#path::__private),
            None => quote!(::mha::__private),
        };

        let mut consts = Vec::new();
        let mut config_fields = Vec::new();
        for param in &spec.signature {
            let Some(value) = resolved.get(&param.name) else {
                continue;
            };
            let doc = match &param.when_null {
                Some(other) => format!(" {} Resolved: `{other}` when not given.", param.doc),
                None => format!(" {}", param.doc),
            };
            let ty = match param.ty {
                ParamType::Int | ParamType::OptionalInt => quote!(usize),
                ParamType::Float => quote!(f64),
                ParamType::Bool => quote!(bool),
            };
            consts.push(Const {
                name: upper(&param.name),
                ty,
                value: literal_tokens(value),
                doc,
            });
            let field_value = match (param.ty, given.get(&param.name).or(param.default.as_ref())) {
                (ParamType::OptionalInt, Some(Literal::Null(()))) => {
                    quote!(#private::Option::None)
                }
                (ParamType::OptionalInt, Some(v)) => {
                    let v = literal_tokens(v);
                    quote!(#private::Option::Some(#v))
                }
                (_, Some(v)) => literal_tokens(v),
                (_, None) => continue,
            };
            config_fields.push((Ident::new(&param.name, Span::call_site()), field_value));
        }
        for derived in &spec.derived {
            let value = spec.eval(&derived.expr, &resolved);
            let (ty, value) = match (spec.expr_type(&derived.name), value) {
                (Some(ExprType::Int), Ok(v)) => (quote!(usize), int_tokens(as_int(v))),
                (Some(ExprType::Bool), Ok(ExprValue::Bool(b))) => (quote!(bool), quote!(#b)),
                _ => continue,
            };
            consts.push(Const {
                name: upper(&derived.name),
                ty,
                value,
                doc: format!(
                    " {}: `{}`.",
                    derived.doc.trim_end_matches('.'),
                    derived.expr
                ),
            });
        }

        let parameter_shapes = spec
            .weights
            .tensors
            .iter()
            .filter(|t| match &t.when {
                Some(cond) => matches!(spec.eval(cond, &resolved), Ok(ExprValue::Bool(true))),
                None => true,
            })
            .map(|t| {
                let shape = t
                    .shape
                    .iter()
                    .map(|d| spec.eval(d, &resolved).map(as_int).unwrap_or(0).max(0) as usize)
                    .collect();
                (t.name.clone(), shape)
            })
            .collect();

        Layer {
            op: spec.op.clone(),
            item,
            private,
            consts,
            config_fields,
            parameter_shapes,
        }
    }
}

fn upper(name: &str) -> Ident {
    Ident::new(&name.to_uppercase(), Span::call_site())
}

fn as_int(value: ExprValue) -> i64 {
    match value {
        ExprValue::Int(i) => i,
        ExprValue::Bool(b) => i64::from(b),
    }
}

/// A non-negative size as an unsuffixed literal (negatives, only possible in a stub, become 1).
fn int_tokens(value: i64) -> TokenStream {
    let lit = proc_macro2::Literal::u64_unsuffixed(u64::try_from(value).unwrap_or(1));
    quote!(#lit)
}

fn literal_tokens(value: &Literal) -> TokenStream {
    match value {
        Literal::Bool(b) => quote!(#b),
        Literal::Int(i) => int_tokens(*i),
        Literal::Float(f) => {
            let lit = proc_macro2::Literal::f64_unsuffixed(if f.is_finite() { *f } else { 0.0 });
            quote!(#lit)
        }
        Literal::Null(()) => quote!(0),
    }
}

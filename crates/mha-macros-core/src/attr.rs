//! The arguments as typed values: each name looked up in the spec's signature, each literal checked
//! against the parameter's type.

use mha_spec::{did_you_mean, Literal, Param, ParamType, Spec};
use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::Lit;

use crate::ast::{ArgValue, Args};
use crate::ctxt::Ctxt;

/// The name of the argument that gives the path of the facade crate (not a spec parameter).
pub const CRATE_ARG: &str = "crate";

/// The arguments that passed the name and type checks.
#[derive(Default)]
pub struct Arguments {
    /// Spec parameters given, in the order written.
    pub given: Vec<Given>,
    /// Every spec parameter name written, including those whose value was rejected.
    pub written: Vec<String>,
    /// `crate = path`: where the facade crate `mha` is, when it is not `::mha`.
    pub krate: Option<syn::Path>,
}

/// One spec parameter's value as given.
pub struct Given {
    /// The parameter's name.
    pub name: String,
    /// Its value, typed as the spec's literals.
    pub value: Literal,
    /// The value's tokens, to span errors about it.
    pub tokens: TokenStream,
}

impl Arguments {
    /// Checks names and literal types; errors go to `cx`, and the arguments they concern are left out.
    pub fn from_ast(spec: &Spec, args: &Args, cx: &Ctxt) -> Self {
        let mut out = Arguments::default();
        let malformed = args.malformed.iter().map(|name| name.unraw().to_string());
        out.written
            .extend(malformed.filter(|name| spec.param(name).is_some()));
        let mut seen: Vec<String> = Vec::new();
        for arg in &args.parsed {
            let name = arg.name.unraw().to_string();
            if seen.contains(&name) {
                cx.error_spanned(arg.name.span(), format!("`{name}` is given more than once"));
                continue;
            }
            seen.push(name.clone());
            if spec.param(&name).is_some() {
                out.written.push(name.clone());
            }
            if name == CRATE_ARG {
                match crate_path(&arg.value) {
                    Ok(path) => out.krate = Some(path),
                    Err(message) => cx.error_spanned_by(&arg.value, message),
                }
                continue;
            }
            let Some(param) = spec.param(&name) else {
                cx.error_spanned(arg.name.span(), unknown_argument(spec, &name));
                continue;
            };
            match typed_value(param, &arg.value) {
                Ok(value) => out.given.push(Given {
                    name,
                    value,
                    tokens: arg.value.to_token_stream(),
                }),
                Err(message) => cx.error_spanned_by(&arg.value, message),
            }
        }
        out
    }

    /// The value given for `name`.
    pub fn get(&self, name: &str) -> Option<&Given> {
        self.given.iter().find(|g| g.name == name)
    }
}

/// "unknown argument", with the closest parameter name or else the list of them.
fn unknown_argument(spec: &Spec, name: &str) -> String {
    let names = spec.signature.iter().map(|p| p.name.as_str());
    let hint = did_you_mean(name, names.clone().chain([CRATE_ARG]));
    if hint.is_empty() {
        let list: Vec<String> = names.map(|n| format!("`{n}`")).collect();
        format!(
            "unknown argument `{name}`; the arguments of {} are {}",
            spec.op,
            list.join(", ")
        )
    } else {
        format!("unknown argument `{name}`{hint}")
    }
}

/// `crate = some::path` or `crate = "some::path"`.
fn crate_path(value: &ArgValue) -> Result<syn::Path, String> {
    match value {
        ArgValue::Path(path) => Ok(path.clone()),
        ArgValue::Lit {
            minus: None,
            lit: Lit::Str(s),
        } => s
            .parse_with(syn::Path::parse_mod_style)
            .map_err(|e| format!("`crate` must be a path: {e}")),
        _ => Err("`crate` must be the path of the `mha` crate, e.g. `crate = ::mha`".into()),
    }
}

/// The value as the spec's literal type for `param`, or why it has the wrong type.
fn typed_value(param: &Param, value: &ArgValue) -> Result<Literal, String> {
    let name = &param.name;
    let expected = match param.ty {
        ParamType::Int => "an integer",
        ParamType::OptionalInt => "an integer or `None`",
        ParamType::Float => "a number",
        ParamType::Bool => "`true` or `false`",
    };
    let example = example_value(param);
    let mismatch = || {
        format!(
            "`{name}` expects {expected}, found {}: write e.g. `{name} = {example}`",
            describe(value)
        )
    };
    let (negative, lit) = match value {
        ArgValue::Path(path) if param.ty == ParamType::OptionalInt && path.is_ident("None") => {
            return Ok(Literal::Null(()));
        }
        ArgValue::Path(_) => return Err(mismatch()),
        ArgValue::Lit { minus, lit } => (minus.is_some(), lit),
    };
    // The literal as written, sign included: parsed whole (so that the most negative integer
    // parses) and quoted whole in errors.
    let sign = if negative { "-" } else { "" };
    let parse_error =
        |digits: &str, e: &dyn std::fmt::Display| format!("`{name}` = {sign}{digits}: {e}");
    match (param.ty, lit) {
        (ParamType::Int | ParamType::OptionalInt, Lit::Int(int)) => {
            let written = format!("{sign}{}", int.base10_digits());
            written
                .parse::<i64>()
                .map(Literal::Int)
                .map_err(|e| parse_error(int.base10_digits(), &e))
        }
        (ParamType::Float, Lit::Float(float)) => format!("{sign}{}", float.base10_digits())
            .parse::<f64>()
            .map(Literal::Float)
            .map_err(|e| parse_error(float.base10_digits(), &e)),
        (ParamType::Float, Lit::Int(int)) => format!("{sign}{}", int.base10_digits())
            .parse::<f64>()
            .map(Literal::Float)
            .map_err(|e| parse_error(int.base10_digits(), &e)),
        (ParamType::Bool, Lit::Bool(b)) if !negative => Ok(Literal::Bool(b.value)),
        _ => Err(mismatch()),
    }
}

/// A plausible value of a parameter, for the examples in error messages.
pub fn example_value(param: &Param) -> &'static str {
    match (param.ty, param.name.as_str()) {
        (ParamType::Int, "num_heads") => "8",
        (ParamType::Int, _) => "512",
        (ParamType::OptionalInt, _) => "64",
        (ParamType::Float, _) => "0.1",
        (ParamType::Bool, _) => "true",
    }
}

/// What kind of value was written, for type mismatch messages.
fn describe(value: &ArgValue) -> String {
    let (minus, lit) = match value {
        ArgValue::Path(path) => return format!("the path `{}`", path.to_token_stream()),
        ArgValue::Lit { minus, lit } => (minus.is_some(), lit),
    };
    let kind = match lit {
        Lit::Str(_) => "a string",
        Lit::ByteStr(_) => "a byte string",
        Lit::CStr(_) => "a C string",
        Lit::Byte(_) => "a byte",
        Lit::Char(_) => "a character",
        Lit::Int(_) => "an integer",
        Lit::Float(_) => "a float",
        Lit::Bool(_) => "a bool",
        _ => "a literal",
    };
    let sign = if minus { "-" } else { "" };
    format!("{kind} `{sign}{}`", lit.to_token_stream())
}

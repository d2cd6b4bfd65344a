//! Template filters: every value from a spec reaches generated code through one of these, each
//! correct for its target context.
//!
//! - Python: `py` (a literal: any Unicode, escaped to ASCII), `py_ident`, `py_dotted`, `py_expr`,
//!   and the block filter `py_docstring` (a whole `"""docstring"""`, escaped).
//! - Rust: `rust_str`, `rust_ident`, `rust_f64`, `rust_default` (literals and identifiers built
//!   by proc-macro2 / syn), `rust_expr` / `rust_checked` (checked arithmetic), the block filter
//!   `rust_doc` (a `#[doc = "..."]` attribute), `rust_violation` (a constraint's message as a
//!   `format!` string literal, worded by `mha_spec::violation_format`).
//! - reStructuredText: `rst` (prose that cannot start a directive or inline markup),
//!   `rst_literal` (inside ``` `` ```), `rst_path` (a document name in a toctree or `:doc:`), `url`.
//! - HTML: `html` (text and double-quoted attributes), `js_str` (inside a quoted JavaScript string
//!   in a double-quoted HTML attribute).
//! - TOML: `toml_str` (a basic string, escaped to ASCII), `pip_name` (a package or extra name as
//!   PEP 508 allows it, as a TOML string).
//!
//! Filters do not trust the spec's validation: each refuses or escapes what its context cannot hold.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use mha_spec::{CallArgType, Constraint, Expr, ExprType, ParamType, Spec};
use tera::{Error, Result, Value};

type Args = HashMap<String, Value>;

/// Registers every filter, bound to `spec` where a filter needs it.
pub(crate) fn register(tera: &mut tera::Tera, spec: &Arc<Spec>) {
    tera.register_filter("py", |v: &Value, _: &Args| {
        Ok(Value::String(python_literal(v)))
    });
    tera.register_filter("py_ident", |v: &Value, _: &Args| {
        let name = text(v, "py_ident")?;
        match mha_spec::check_identifier(name) {
            None => Ok(Value::String(name.to_string())),
            Some(problem) => Err(Error::msg(format!("not a Python identifier: {problem}"))),
        }
    });
    tera.register_filter("py_dotted", |v: &Value, _: &Args| {
        let path = text(v, "py_dotted")?;
        match mha_spec::check_dotted(path, false) {
            None => Ok(Value::String(path.to_string())),
            Some(problem) => Err(Error::msg(format!("not a dotted Python path: {problem}"))),
        }
    });
    tera.register_filter("py_expr", |v: &Value, _: &Args| {
        let e = expr(v)?;
        if let Some(k) = e
            .identifiers()
            .into_iter()
            .find(|n| mha_spec::PYTHON_KEYWORDS.contains(n))
        {
            return Err(Error::msg(format!("`{k}` is a Python keyword")));
        }
        Ok(Value::String(e.to_python()))
    });
    tera.register_filter("py_docstring", |v: &Value, _: &Args| {
        Ok(Value::String(python_docstring(text(v, "py_docstring")?)))
    });
    let s = Arc::clone(spec);
    tera.register_filter("rust_expr", move |v: &Value, _: &Args| {
        let e = expr(v)?;
        check_rust_names(&e)?;
        Ok(Value::String(
            e.to_rust(&|n| s.expr_type(n), &|n| rust_accessor(&s, n)),
        ))
    });
    let s = Arc::clone(spec);
    tera.register_filter("rust_checked", move |v: &Value, _: &Args| {
        let e = expr(v)?;
        check_rust_names(&e)?;
        Ok(Value::String(
            e.to_rust_checked(&|n| s.expr_type(n), &|n| rust_accessor(&s, n)),
        ))
    });
    tera.register_filter("rust_str", |v: &Value, _: &Args| {
        let s = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        Ok(Value::String(proc_macro2::Literal::string(&s).to_string()))
    });
    tera.register_filter("rust_ident", |v: &Value, _: &Args| {
        rust_ident(text(v, "rust_ident")?).map(Value::String)
    });
    tera.register_filter("rust_type", |v: &Value, _: &Args| {
        Ok(Value::String(rust_type(param_type(v)?).to_string()))
    });
    tera.register_filter("rust_default", |v: &Value, _: &Args| {
        let ty = param_type(v.get("type").unwrap_or(&Value::Null))?;
        rust_literal(v.get("default").unwrap_or(&Value::Null), ty).map(Value::String)
    });
    tera.register_filter("rust_call_type", |v: &Value, _: &Args| {
        rust_call_type(call_arg_type(v)?).map(|t| Value::String(t.to_string()))
    });
    tera.register_filter("rust_call_default", |v: &Value, _: &Args| {
        let ty = call_arg_type(v.get("type").unwrap_or(&Value::Null))?;
        rust_call_literal(v.get("default").unwrap_or(&Value::Null), ty).map(Value::String)
    });
    tera.register_filter("rust_f64", |v: &Value, _: &Args| {
        let f = v
            .as_f64()
            .ok_or_else(|| Error::msg(format!("expected a number, got {v}")))?;
        rust_f64(f).map(Value::String)
    });
    tera.register_filter("rust_doc", |v: &Value, _: &Args| {
        let doc = visible(text(v, "rust_doc")?);
        Ok(Value::String(format!(
            "#[doc = {}]",
            proc_macro2::Literal::string(&doc)
        )))
    });
    let s = Arc::clone(spec);
    tera.register_filter("rust_violation", move |v: &Value, args: &Args| {
        let constraint: Constraint = serde_json::from_value(v.clone())
            .map_err(|e| Error::msg(format!("expected a constraint, got {v}: {e}")))?;
        let param = args
            .get("param")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::msg("`rust_violation` needs `param`, the parameter's name"))?;
        let format = mha_spec::violation_format(&s.op, param, &constraint);
        Ok(Value::String(
            proc_macro2::Literal::string(&format).to_string(),
        ))
    });
    tera.register_filter("rst", |v: &Value, _: &Args| {
        Ok(Value::String(rst(&plain(v))))
    });
    tera.register_filter("rst_literal", |v: &Value, _: &Args| {
        let s = plain(v);
        if s.is_empty() || s.contains('`') || s.contains('\\') || s.chars().any(mha_spec::is_hidden) {
            return Err(Error::msg(format!(
                "`{}` cannot be an RST inline literal (empty, or holds a backtick, a backslash or a hidden character)",
                visible(&s)
            )));
        }
        Ok(Value::String(s))
    });
    tera.register_filter("rst_path", |v: &Value, _: &Args| {
        let name = text(v, "rst_path")?;
        match is_doc_name(name) {
            true => Ok(Value::String(name.to_string())),
            false => Err(Error::msg(format!(
                "`{}` cannot be a Sphinx document name (ASCII letters, digits, `_` and `-` only)",
                visible(name)
            ))),
        }
    });
    tera.register_filter("url", |v: &Value, _: &Args| {
        let url = text(v, "url")?;
        match mha_spec::check_url(url) {
            None => Ok(Value::String(url.to_string())),
            Some(problem) => Err(Error::msg(format!("not a safe link: {problem}"))),
        }
    });
    tera.register_filter("html", |v: &Value, _: &Args| {
        Ok(Value::String(html(&plain(v))))
    });
    tera.register_filter("js_str", |v: &Value, _: &Args| {
        Ok(Value::String(js_str(&plain(v))))
    });
    tera.register_filter("toml_str", |v: &Value, _: &Args| {
        Ok(Value::String(toml_string(&plain(v))))
    });
    tera.register_filter("pip_name", |v: &Value, _: &Args| {
        let name = text(v, "pip_name")?;
        if !is_pep508_name(name) {
            return Err(Error::msg(format!(
                "`{}` is not a Python package or extra name (PEP 508: letters, digits, `._-`, starting and ending with a letter or digit)",
                visible(name)
            )));
        }
        Ok(Value::String(toml_string(name)))
    });
    tera.register_filter("underline", |v: &Value, args: &Args| {
        let text = text(v, "underline")?;
        let ch = args.get("char").and_then(Value::as_str).unwrap_or("=");
        Ok(Value::String(ch.repeat(text.chars().count())))
    });
}

fn text<'v>(v: &'v Value, filter: &str) -> Result<&'v str> {
    v.as_str()
        .ok_or_else(|| Error::msg(format!("`{filter}` needs a string, got {v}")))
}

/// A string, or a number or bool as text.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn expr(v: &Value) -> Result<Expr> {
    let source = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => return Err(Error::msg(format!("expected an expression, got {other}"))),
    };
    Expr::parse(&source).map_err(Error::msg)
}

fn param_type(v: &Value) -> Result<ParamType> {
    serde_json::from_value(v.clone())
        .map_err(|e| Error::msg(format!("expected a parameter type, got {v}: {e}")))
}

fn call_arg_type(v: &Value) -> Result<CallArgType> {
    serde_json::from_value(v.clone())
        .map_err(|e| Error::msg(format!("expected a call argument type, got {v}: {e}")))
}

/// The Rust type of a call option (a tensor or mask is no option).
pub(crate) fn rust_call_type(ty: CallArgType) -> Result<&'static str> {
    match ty {
        CallArgType::Bool => Ok("bool"),
        CallArgType::Float => Ok("f64"),
        CallArgType::OptionalFloat => Ok("Option<f64>"),
        CallArgType::Tensor | CallArgType::OptionalMask => Err(Error::msg(format!(
            "a {ty:?} argument is a tensor, not a call option"
        ))),
    }
}

/// A Rust literal of call-option type `ty` for a JSON value; values the type cannot hold are refused.
fn rust_call_literal(v: &Value, ty: CallArgType) -> Result<String> {
    match (v, ty) {
        (Value::Null, CallArgType::OptionalFloat) => Ok("None".into()),
        (Value::Number(n), CallArgType::OptionalFloat) => Ok(format!(
            "Some({})",
            rust_f64(n.as_f64().unwrap_or(f64::NAN))?
        )),
        (Value::Number(n), CallArgType::Float) => rust_f64(n.as_f64().unwrap_or(f64::NAN)),
        (Value::Bool(b), CallArgType::Bool) => Ok(b.to_string()),
        (other, ty) => Err(Error::msg(format!(
            "{other} is not a value of type {}",
            rust_call_type(ty)?
        ))),
    }
}

/// A Python literal for a JSON value. Strings come out as pure ASCII: anything else, and every
/// control character, is a `\x`, `\u` or `\U` escape, so no character can end the literal,
/// the line or the statement, whatever the text.
pub(crate) fn python_literal(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) if f.is_finite() => format!("{f:?}"),
            _ => "float('nan')".into(),
        },
        Value::String(s) => python_string(s),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(python_literal).collect();
            if items.len() == 1 {
                format!("({},)", inner[0])
            } else {
                format!("({})", inner.join(", "))
            }
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", python_string(k), python_literal(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

/// A double-quoted Python string literal holding exactly `s`.
pub(crate) fn python_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => push_python_char(&mut out, c),
        }
    }
    out.push('"');
    out
}

/// `c` itself when it is printable ASCII, else its Python escape.
fn push_python_char(out: &mut String, c: char) {
    let u = u32::from(c);
    let _ = match u {
        0x20..=0x7E => {
            out.push(c);
            Ok(())
        }
        0..=0xFF => write!(out, "\\x{u:02x}"),
        0x100..=0xFFFF => write!(out, "\\u{u:04x}"),
        _ => write!(out, "\\U{u:08x}"),
    };
}

/// A `"""docstring"""` literal holding `text` (line breaks kept as line breaks; quotes,
/// backslashes and every other non-printable or non-ASCII character escaped).
pub(crate) fn python_docstring(text: &str) -> String {
    let mut out = String::from("\"\"\"");
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push('\n'),
            c => push_python_char(&mut out, c),
        }
    }
    out.push_str("\"\"\"");
    out
}

/// A Rust identifier (no keyword, no raw identifier), as syn parses it.
fn rust_ident(name: &str) -> Result<String> {
    match syn::parse_str::<syn::Ident>(name) {
        Ok(ident) if !name.starts_with("r#") => Ok(ident.to_string()),
        _ => Err(Error::msg(format!(
            "`{}` is not a Rust identifier (or is a keyword)",
            visible(name)
        ))),
    }
}

/// Every identifier of `e` must be a Rust identifier (keywords would change the code).
fn check_rust_names(e: &Expr) -> Result<()> {
    e.identifiers()
        .into_iter()
        .try_for_each(|n| rust_ident(n).map(drop))
}

/// An f64 literal; NaN and infinities have no literal and are refused.
fn rust_f64(f: f64) -> Result<String> {
    if !f.is_finite() {
        return Err(Error::msg(format!("{f} has no Rust literal")));
    }
    Ok(proc_macro2::Literal::f64_unsuffixed(f).to_string())
}

/// The Rust type of a config field.
pub(crate) fn rust_type(ty: ParamType) -> &'static str {
    match ty {
        ParamType::Int => "usize",
        ParamType::Float => "f64",
        ParamType::Bool => "bool",
        ParamType::OptionalInt => "Option<usize>",
    }
}

/// A Rust literal of type `ty` for a JSON value; values the type cannot hold are refused.
pub(crate) fn rust_literal(v: &Value, ty: ParamType) -> Result<String> {
    let size = |v: &Value| {
        v.as_u64()
            .map(|n| proc_macro2::Literal::u64_unsuffixed(n).to_string())
            .ok_or_else(|| Error::msg(format!("{v} is not a size (an integer, 0 or more)")))
    };
    match (v, ty) {
        (Value::Null, ParamType::OptionalInt) => Ok("None".into()),
        (Value::Number(_), ParamType::OptionalInt) => Ok(format!("Some({})", size(v)?)),
        (Value::Number(_), ParamType::Int) => size(v),
        (Value::Number(n), ParamType::Float) => rust_f64(n.as_f64().unwrap_or(f64::NAN)),
        (Value::Bool(b), ParamType::Bool) => Ok(b.to_string()),
        (other, ty) => Err(Error::msg(format!(
            "{other} is not a value of type {}",
            rust_type(ty)
        ))),
    }
}

/// How the generated config reads `name`: a field (optional ones resolved through `when_null`)
/// or a derived value's method.
fn rust_accessor(spec: &Spec, name: &str) -> String {
    match spec.param(name) {
        Some(p) => match (&p.ty, &p.when_null) {
            (ParamType::OptionalInt, Some(fallback)) => {
                format!("self.{name}.unwrap_or(self.{fallback})")
            }
            _ => format!("self.{name}"),
        },
        None => format!("self.{name}()"),
    }
}

/// The type of a derived value, as Rust.
pub(crate) fn derived_rust_type(spec: &Spec, name: &str) -> &'static str {
    match spec.expr_type(name) {
        Some(ExprType::Bool) => "bool",
        _ => "usize",
    }
}

/// Hidden characters (line breaks, controls, invisible format characters) as `\u{..}` text.
fn visible(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if mha_spec::is_hidden(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// Prose for reStructuredText: on one line, and starting so that it cannot begin a directive,
/// comment, list, enumeration, table or title wherever the template puts it; every character
/// that could open or close inline markup, a role, a substitution or a reference is escaped.
/// A name that is safe as one segment of a Sphinx document path (a toctree entry, a `:doc:`
/// target): no separator, dot, space, angle bracket or backtick.
fn is_doc_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub(crate) fn rst(s: &str) -> String {
    let chars: Vec<char> = s
        .chars()
        .map(|c| if mha_spec::is_hidden(c) { ' ' } else { c })
        .collect();
    let space = |i: Option<usize>| {
        i.and_then(|i| chars.get(i))
            .is_none_or(|c| c.is_whitespace())
    };
    let mut out = String::with_capacity(s.len() + 2);
    for (i, &c) in chars.iter().enumerate() {
        let escape = match c {
            '\\' => true,
            // Inline markup needs a start-string before, or an end-string after, non-space.
            '`' | '*' | '|' => !(space(i.checked_sub(1)) && space(Some(i + 1))),
            // A reference or footnote ends in `_` at a word's end.
            '_' => chars.get(i + 1).is_none_or(|n| !n.is_alphanumeric()),
            _ => i == 0 && (!c.is_alphanumeric() || enumerator(&chars)),
        };
        if escape {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether text starts like an enumerated list item (`1. `, `a) `, `#. `).
fn enumerator(chars: &[char]) -> bool {
    let label = chars
        .iter()
        .take_while(|c| c.is_alphanumeric() || **c == '#')
        .count();
    (1..=8).contains(&label)
        && matches!(chars.get(label), Some('.' | ')'))
        && chars.get(label + 1).is_none_or(|c| c.is_whitespace())
}

/// Text for HTML content or a double-quoted attribute value.
pub(crate) fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if mha_spec::is_hidden(c) => {
                let _ = write!(out, "&#x{:x};", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// The inside of a JavaScript string literal (either quote), safe inside a double-quoted HTML
/// attribute too: only letters, digits, spaces and `_-.,:` pass; everything else is a `\u` escape.
pub(crate) fn js_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || " _-.,:".contains(c) {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    out
}

/// A TOML basic string holding exactly `s`, in ASCII: quotes, backslashes, controls and every
/// non-ASCII character are `\\`, `\\uXXXX` or `\\UXXXXXXXX` escapes, so nothing can end the string,
/// the line or the table.
pub(crate) fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        let u = u32::from(c);
        let _ = match c {
            '\\' => write!(out, "\\\\"),
            '"' => write!(out, "\\\""),
            ' '..='~' => write!(out, "{c}"),
            _ if u <= 0xFFFF => write!(out, "\\u{u:04X}"),
            _ => write!(out, "\\U{u:08X}"),
        };
    }
    out.push('"');
    out
}

/// A distribution or extra name as PEP 508 writes it: ASCII letters and digits, with `.`, `_`
/// and `-` inside.
fn is_pep508_name(name: &str) -> bool {
    let inner = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    let bytes = name.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(a), Some(z)) => {
            a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric() && name.chars().all(inner)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_strings_are_ascii_and_exact() {
        assert_eq!(python_string("a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(
            python_string("\u{a0}\u{ad}\u{200b}\u{2028}\u{7f}\u{1f600}"),
            r#""\xa0\xad\u200b\u2028\x7f\U0001f600""#
        );
        assert_eq!(
            python_docstring("x\"\"\"; import os"),
            r#""""x\"\"\"; import os""""#
        );
        assert_eq!(
            python_docstring(r"C:\Users \N{x}"),
            r#""""C:\\Users \\N{x}""""#
        );
    }

    #[test]
    fn rst_prose_cannot_start_markup() {
        assert_eq!(rst("Total features (E)."), "Total features (E).");
        assert_eq!(rst(".. raw:: html"), r"\.. raw:: html");
        assert_eq!(rst("x\n.. raw:: html"), r"x .. raw:: html");
        assert_eq!(rst("`a <javascript:x>`_"), r"\`a <javascript:x>\`\_");
        assert_eq!(rst("1. x"), r"\1. x");
        assert_eq!(rst("2-D inputs, N * H"), "2-D inputs, N * H");
        assert_eq!(rst("*x* |s|"), r"\*x\* \|s\|");
        assert_eq!(rst("embed_dim"), "embed_dim");
    }

    #[test]
    fn html_and_js() {
        assert_eq!(
            html(r#"<b onclick="x">'"#),
            "&lt;b onclick=&quot;x&quot;&gt;&#39;"
        );
        assert_eq!(js_str("Apple MLX"), "Apple MLX");
        assert_eq!(
            js_str(r#"');alert(1)//""#),
            r"\u0027\u0029\u003balert\u00281\u0029\u002f\u002f\u0022"
        );
    }

    #[test]
    fn toml_strings_are_ascii_and_exact() {
        assert_eq!(toml_string("jax"), r#""jax""#);
        assert_eq!(
            toml_string("a\"b\\c\n[x]\u{7f}\u{e9}\u{1f600}"),
            r#""a\"b\\c\u000A[x]\u007F\u00E9\U0001F600""#
        );
        assert!(is_pep508_name("flax_nnx") && is_pep508_name("a.b-c") && is_pep508_name("x"));
        for bad in [
            "",
            "_torch",
            "torch_",
            "torch; os_name",
            "t\u{f6}rch",
            "a b",
        ] {
            assert!(!is_pep508_name(bad), "{bad}");
        }
    }

    #[test]
    fn rust_values() {
        assert!(rust_ident("type").is_err());
        assert!(rust_ident("a b").is_err());
        assert_eq!(rust_ident("embed_dim").unwrap(), "embed_dim");
        assert!(rust_f64(f64::NAN).is_err());
        assert!(rust_literal(&serde_json::json!(-1), ParamType::Int).is_err());
        assert!(rust_literal(&serde_json::json!(true), ParamType::Int).is_err());
        assert_eq!(
            rust_literal(&serde_json::json!(3), ParamType::OptionalInt).unwrap(),
            "Some(3)"
        );
        assert_eq!(
            rust_literal(&serde_json::json!(1), ParamType::Float).unwrap(),
            "1.0"
        );
    }
}

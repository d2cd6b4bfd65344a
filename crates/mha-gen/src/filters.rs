//! Template filters: Python and Rust renderings of spec values and expressions.

use std::collections::HashMap;
use std::sync::Arc;

use mha_spec::{Expr, ExprType, ParamType, Spec};
use tera::{Error, Result, Value};

/// Registers every filter, bound to `spec` where a filter needs it.
pub(crate) fn register(tera: &mut tera::Tera, spec: &Arc<Spec>) {
    tera.register_filter("py", |v: &Value, _: &HashMap<String, Value>| {
        Ok(Value::String(python_literal(v)))
    });
    tera.register_filter("py_expr", |v: &Value, _: &HashMap<String, Value>| {
        Ok(Value::String(expr(v)?.to_python()))
    });
    let s = Arc::clone(spec);
    tera.register_filter("rust_expr", move |v: &Value, _: &HashMap<String, Value>| {
        Ok(Value::String(rust_expr(&s, &expr(v)?)))
    });
    tera.register_filter("rust_type", |v: &Value, _: &HashMap<String, Value>| {
        Ok(Value::String(rust_type(param_type(v)?).to_string()))
    });
    tera.register_filter("rust_default", |v: &Value, _: &HashMap<String, Value>| {
        let ty = param_type(v.get("type").unwrap_or(&Value::Null))?;
        Ok(Value::String(rust_literal(
            v.get("default").unwrap_or(&Value::Null),
            ty,
        )))
    });
    tera.register_filter("rust_f64", |v: &Value, _: &HashMap<String, Value>| {
        let f = v
            .as_f64()
            .ok_or_else(|| Error::msg(format!("expected a number, got {v}")))?;
        Ok(Value::String(format!("{f:?}")))
    });
    tera.register_filter("underline", |v: &Value, args: &HashMap<String, Value>| {
        let text = v
            .as_str()
            .ok_or_else(|| Error::msg("underline needs a string"))?;
        let ch = args.get("char").and_then(Value::as_str).unwrap_or("=");
        Ok(Value::String(ch.repeat(text.chars().count())))
    });
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

/// A Python literal for a JSON value.
pub(crate) fn python_literal(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{:?}", s),
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
                .map(|(k, v)| format!("{k:?}: {}", python_literal(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
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

/// A Rust literal of type `ty` for a JSON value.
pub(crate) fn rust_literal(v: &Value, ty: ParamType) -> String {
    match (v, ty) {
        (Value::Null, _) => "None".into(),
        (Value::Number(n), ParamType::Float) => {
            let f = n.as_f64().unwrap_or_default();
            format!("{f:?}")
        }
        (Value::Number(n), ParamType::OptionalInt) => format!("Some({n})"),
        (other, _) => other.to_string(),
    }
}

/// Rust source for `expr` inside an `impl` of the config type: parameters become field reads
/// (optional ones resolved through `when_null`), derived values become method calls.
pub(crate) fn rust_expr(spec: &Spec, expr: &Expr) -> String {
    let lookup = |n: &str| spec.expr_type(n);
    let name = |n: &str| rust_accessor(spec, n);
    expr.to_rust(&lookup, &name)
}

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

//! Validation: the item must be a field-less struct, required parameters must be given, and every
//! value must satisfy the spec's constraints.

use std::collections::{HashMap, HashSet};

use mha_spec::{Constraint, Literal, Param, ParamType, Spec};
use proc_macro2::Span;
use syn::{Data, DeriveInput};

use crate::attr::{example_value, Arguments};
use crate::ctxt::Ctxt;

/// Checks that the attribute sits on a non-generic struct without fields.
pub fn check_item(item: &DeriveInput, cx: &Ctxt) {
    let ident = &item.ident;
    let fix = format!("declare the layer as `struct {ident};`");
    match &item.data {
        Data::Struct(data) if !data.fields.is_empty() => cx.error_spanned_by(
            &data.fields,
            format!("`#[attention_layer]` generates the fields of `{ident}` itself; {fix}"),
        ),
        Data::Struct(_) => {}
        Data::Enum(data) => cx.error_spanned(
            data.enum_token.span,
            format!(
                "`#[attention_layer]` applies to a struct without fields, not to an enum; {fix}"
            ),
        ),
        Data::Union(data) => cx.error_spanned(
            data.union_token.span,
            format!(
                "`#[attention_layer]` applies to a struct without fields, not to a union; {fix}"
            ),
        ),
    }
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        cx.error_spanned_by(
            &item.generics,
            format!("an attention layer type cannot be generic: its sizes are fixed by the attribute; {fix}"),
        );
    }
}

/// One `#[attention_layer]` per item: a second one on the same item (still among its
/// attributes when the first expands) is one error at that attribute, and is removed so that it
/// neither expands again nor generates the layer twice.
pub fn check_single_use(item: &mut DeriveInput, cx: &Ctxt) {
    let ident = item.ident.clone();
    item.attrs.retain(|attr| {
        let again = attr
            .path()
            .segments
            .last()
            .is_some_and(|s| s.ident == "attention_layer");
        if again {
            cx.error_spanned_by(
                attr,
                format!("`#[attention_layer]` is applied more than once to `{ident}`; keep one: one attribute gives all the layer's arguments"),
            );
        }
        !again
    });
}

/// Checks the given values against the spec: required parameters present, each constraint
/// satisfied. Returns the given values that passed, by name.
pub fn check_values(spec: &Spec, args: &Arguments, cx: &Ctxt) -> HashMap<String, Literal> {
    for param in spec.signature.iter().filter(|p| p.is_required()) {
        if !args.written.contains(&param.name) {
            cx.error_spanned(Span::call_site(), missing(spec, param));
        }
    }
    let mut given: HashMap<String, Literal> = args
        .given
        .iter()
        .map(|g| (g.name.clone(), g.value.clone()))
        .collect();
    let values = spec.resolve(&given);
    let mut invalid: HashSet<&str> = HashSet::new();
    // Constraints on the value alone first, then those relating two values, only where both are
    // known and valid (a default counts as valid).
    for relational in [false, true] {
        for g in &args.given {
            let Some(param) = spec.param(&g.name) else {
                continue;
            };
            if invalid.contains(g.name.as_str()) {
                continue;
            }
            let mut messages = Vec::new();
            for constraint in &param.constraints {
                let other = match constraint {
                    Constraint::Divides(other) => Some(other),
                    _ => None,
                };
                let other_unusable = other.is_some_and(|o| {
                    invalid.contains(o.as_str()) || !values.contains_key(o.as_str())
                });
                if other.is_some() != relational || other_unusable {
                    continue;
                }
                let single = Param {
                    constraints: vec![constraint.clone()],
                    ..param.clone()
                };
                for message in spec.check_param(&single, &values) {
                    let hint = other
                        .and_then(|o| nearest_divisors_hint(&param.name, values.get(o), &g.value))
                        .unwrap_or_default();
                    messages.push(format!("{message}{hint}"));
                }
            }
            if !relational && messages.is_empty() {
                messages.extend(negative_size(param, &g.value));
            }
            if !messages.is_empty() {
                invalid.insert(&g.name);
                cx.error_spanned_by(&g.tokens, messages.join("; "));
            }
        }
    }
    given.retain(|name, _| !invalid.contains(name.as_str()));
    given
}

/// The most bytes one tensor may take: what one allocation can address (`isize::MAX`), the
/// bound `mha_runtime::MAX_TENSOR_BYTES` applies at run time.
pub const MAX_TENSOR_BYTES: u128 = isize::MAX as u128;

/// Checks that every weight tensor the values call for fits one allocation; an error goes to
/// the argument that makes it too large (the largest given size its shape reads).
pub fn check_sizes(spec: &Spec, args: &Arguments, valid: &HashMap<String, Literal>, cx: &Ctxt) {
    if spec
        .signature
        .iter()
        .any(|p| p.is_required() && !valid.contains_key(&p.name))
    {
        return;
    }
    let values = spec.resolve(valid);
    for tensor in &spec.weights.tensors {
        if let Some(when) = &tensor.when {
            if !matches!(
                spec.eval(when, &values),
                Ok(mha_spec::ExprValue::Bool(true))
            ) {
                continue;
            }
        }
        let dims: Vec<Result<i64, String>> = tensor
            .shape
            .iter()
            .map(|d| match spec.eval(d, &values) {
                Ok(mha_spec::ExprValue::Int(v)) => Ok(v),
                Ok(mha_spec::ExprValue::Bool(b)) => Ok(i64::from(b)),
                Err(e) => Err(e),
            })
            .collect();
        let bytes = dims.iter().try_fold(4u128, |acc, d| match d {
            Ok(v) if *v >= 0 => acc.checked_mul(*v as u128),
            _ => None,
        });
        if bytes.is_some_and(|b| b <= MAX_TENSOR_BYTES) {
            continue;
        }
        let shape: Vec<String> = tensor.shape.iter().map(ToString::to_string).collect();
        let needs = match bytes {
            Some(b) => format!("would need {b} bytes"),
            None => "has a dimension past 64-bit integers".into(),
        };
        let message = format!(
            "`{}` ({}) {needs}, more than one allocation can hold ({MAX_TENSOR_BYTES} bytes)",
            tensor.name,
            shape.join(", ")
        );
        let mut read: Vec<&str> = Vec::new();
        for dim in &tensor.shape {
            read.extend(dim.identifiers());
            for d in spec
                .derived
                .iter()
                .filter(|d| dim.identifiers().contains(d.name.as_str()))
            {
                read.extend(d.expr.identifiers());
            }
            for p in &spec.signature {
                if let Some(fallback) = &p.when_null {
                    if read.contains(&p.name.as_str()) {
                        read.push(fallback);
                    }
                }
            }
        }
        let culprit = args
            .given
            .iter()
            .filter(|g| read.contains(&g.name.as_str()))
            .max_by_key(|g| match g.value {
                Literal::Int(v) => v,
                _ => 0,
            });
        match culprit {
            Some(g) => {
                cx.error_spanned_by(&g.tokens, format!("`{}` is too large: {message}", g.name))
            }
            None => cx.error_spanned(Span::call_site(), message),
        }
        return;
    }
}

/// "missing `embed_dim`", with the parameter's documentation and an example.
fn missing(spec: &Spec, param: &Param) -> String {
    let example: Vec<String> = spec
        .signature
        .iter()
        .filter(|p| p.is_required())
        .map(|p| format!("{} = {}", p.name, example_value(p)))
        .collect();
    format!(
        "missing argument `{}` ({}); e.g. `#[attention_layer({})]`",
        param.name,
        param.doc.trim_end_matches('.'),
        example.join(", ")
    )
}

/// Sizes are unsigned even where the spec states no constraint.
fn negative_size(param: &Param, value: &Literal) -> Option<String> {
    match (param.ty, value) {
        (ParamType::Int | ParamType::OptionalInt, Literal::Int(v)) if *v < 0 => Some(format!(
            "`{}` is a size and cannot be negative, got {v}",
            param.name
        )),
        _ => None,
    }
}

/// "; the nearest valid `num_heads` are 2 and 5": the divisors of `total` closest to `part`.
fn nearest_divisors_hint(name: &str, total: Option<&Literal>, part: &Literal) -> Option<String> {
    let (Some(Literal::Int(total)), Literal::Int(part)) = (total, part) else {
        return None;
    };
    let (below, above) = nearest_divisors(*total, *part)?;
    Some(match (below, above) {
        (Some(b), Some(a)) => format!("; the nearest valid `{name}` are {b} and {a}"),
        (Some(d), None) | (None, Some(d)) => format!("; the nearest valid `{name}` is {d}"),
        (None, None) => return None,
    })
}

/// The largest divisor of `total` below `part` and the smallest above it (`None` for sizes too
/// large to factor quickly at compile time).
fn nearest_divisors(total: i64, part: i64) -> Option<(Option<i64>, Option<i64>)> {
    if total <= 0 || total > 1 << 40 {
        return None;
    }
    let mut divisors = Vec::new();
    let mut d = 1;
    while d * d <= total {
        if total % d == 0 {
            divisors.push(d);
            divisors.push(total / d);
        }
        d += 1;
    }
    let below = divisors.iter().copied().filter(|&d| d < part).max();
    let above = divisors.iter().copied().filter(|&d| d > part).min();
    Some((below, above))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_divisors_on_both_sides() {
        assert_eq!(nearest_divisors(10, 4), Some((Some(2), Some(5))));
        assert_eq!(nearest_divisors(512, 12), Some((Some(8), Some(16))));
        assert_eq!(nearest_divisors(6, 8), Some((Some(6), None)));
        assert_eq!(nearest_divisors(7, 3), Some((Some(1), Some(7))));
    }
}

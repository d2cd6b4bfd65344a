//! The one wording of a violated parameter constraint, used by the spec validator (a default
//! that breaks its own constraint), the Rust config that mha-gen generates (through the
//! `rust_violation` template filter) and the `#[attention_layer]` macro:
//!
//! ```text
//! {Op}: `{name}` must {requirement}, got {value}
//! ```
//!
//! with the requirement `be positive`, ``divide `{other}` ({other_value})``, `be at least {bound}`
//! or `be below {bound}`. Numbers are written as Rust's `{:?}` writes them (`1.0`, `-0.1`, `64`).
//!
//! ```
//! use mha_spec::{violation, Constraint};
//!
//! let divides = Constraint::Divides("embed_dim".into());
//! assert_eq!(
//!     violation("MultiheadAttention", "num_heads", &divides.requirement(64), 7),
//!     "MultiheadAttention: `num_heads` must divide `embed_dim` (64), got 7"
//! );
//! assert_eq!(
//!     mha_spec::violation_format("MultiheadAttention", "dropout", &Constraint::Below(1.0)),
//!     "MultiheadAttention: `dropout` must be below 1.0, got {:?}"
//! );
//! ```

use std::collections::HashMap;
use std::fmt::Display;

use crate::model::{Constraint, Literal, Param, Spec};

impl Constraint {
    /// What the constraint requires, in words; `other_value` is the value of the parameter that a
    /// `divides` constraint names (unused by the others).
    pub fn requirement(&self, other_value: impl Display) -> String {
        match self {
            Constraint::Positive => "be positive".to_string(),
            Constraint::Divides(other) => format!("divide `{other}` ({other_value})"),
            Constraint::AtLeast(bound) => format!("be at least {bound:?}"),
            Constraint::Below(bound) => format!("be below {bound:?}"),
        }
    }
}

/// `{op}: `{name}` must {requirement}, got {value}`.
pub fn violation(op: &str, name: &str, requirement: &str, value: impl Display) -> String {
    format!("{op}: `{name}` must {requirement}, got {value}")
}

/// [`violation`] as a `format!` string for generated code: a `{:?}` hole for the value of the
/// parameter a `divides` constraint names (first, only for `divides`), then one for the value;
/// every other brace escaped.
pub fn violation_format(op: &str, name: &str, constraint: &Constraint) -> String {
    // Placeholders no spec name or number can contain, swapped for holes after escaping.
    const OTHER: char = '\u{1}';
    const VALUE: char = '\u{2}';
    violation(op, name, &constraint.requirement(OTHER), VALUE)
        .replace('{', "{{")
        .replace('}', "}}")
        .replace([OTHER, VALUE], "{:?}")
}

impl Spec {
    /// The messages (in the [`violation`] wording) of every constraint of `param` that its value
    /// in `values` violates. Constraints that need a value `values` lacks are skipped.
    pub fn check_param(&self, param: &Param, values: &HashMap<String, Literal>) -> Vec<String> {
        let Some(value) = values.get(&param.name) else {
            return Vec::new();
        };
        let number = match value {
            Literal::Int(i) => *i as f64,
            Literal::Float(f) => *f,
            Literal::Bool(_) | Literal::Null(()) => return Vec::new(),
        };
        let shown = crate::validate::show(value);
        let broken = |c: &Constraint, other_value: &dyn Display| {
            Some(violation(
                &self.op,
                &param.name,
                &c.requirement(other_value),
                &shown,
            ))
        };
        param
            .constraints
            .iter()
            .filter_map(|c| match c {
                Constraint::Positive if number <= 0.0 => broken(c, &""),
                Constraint::AtLeast(bound) if number < *bound => broken(c, &""),
                Constraint::Below(bound) if number >= *bound => broken(c, &""),
                Constraint::Divides(other) => match (values.get(other), value) {
                    (Some(Literal::Int(total)), Literal::Int(part))
                        if *part > 0 && total % part != 0 =>
                    {
                        broken(c, total)
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_requirement() {
        let message = |c: Constraint, other: &str, value: &str| {
            violation("Op", "x", &c.requirement(other), value)
        };
        assert_eq!(
            message(Constraint::Positive, "", "0"),
            "Op: `x` must be positive, got 0"
        );
        assert_eq!(
            message(Constraint::Divides("n".into()), "10", "4"),
            "Op: `x` must divide `n` (10), got 4"
        );
        assert_eq!(
            message(Constraint::AtLeast(0.0), "", "-0.1"),
            "Op: `x` must be at least 0.0, got -0.1"
        );
        assert_eq!(
            message(Constraint::Below(1.0), "", "1.5"),
            "Op: `x` must be below 1.0, got 1.5"
        );
    }

    #[test]
    fn format_strings_fill_like_the_message() {
        let c = Constraint::Divides("embed_dim".into());
        let format = violation_format("MultiheadAttention", "num_heads", &c);
        assert_eq!(
            format,
            "MultiheadAttention: `num_heads` must divide `embed_dim` ({:?}), got {:?}"
        );
        let filled = format.replacen("{:?}", "64", 1).replacen("{:?}", "7", 1);
        assert_eq!(
            filled,
            violation("MultiheadAttention", "num_heads", &c.requirement(64), 7)
        );
        assert_eq!(
            violation_format("A{b}", "c", &Constraint::Positive),
            "A{{b}}: `c` must be positive, got {:?}"
        );
    }
}

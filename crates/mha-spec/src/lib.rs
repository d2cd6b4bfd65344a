//! The op spec model of `mha`: serde types for YAML op specs, their loading and validation.
//!
//! A spec describes one ML operator: its constructor signature, forward call and conventions, its
//! canonical weight layout, and how it maps onto each framework. Both generators (`mha-gen` and the
//! `#[attention_layer]` macro) read specs through this crate.
//!
//! ```
//! let specs = mha_spec::bundled().expect("the bundled specs are valid");
//! let mha = &specs[0];
//! assert_eq!(mha.op, "MultiheadAttention");
//! assert_eq!(mha.param("num_heads").map(|p| p.is_required()), Some(true));
//! ```

#![deny(missing_docs)]

mod constraint_text;
mod error;
mod expr;
mod load;
mod locate;
mod model;
mod names;
mod validate;

use std::collections::HashMap;

pub use constraint_text::{violation, violation_format};
pub use error::{did_you_mean, suggest, SpecError, SpecErrors};
pub use expr::{Expr, ExprType, ExprValue, MAX_EXPR_DEPTH, MAX_EXPR_LEN};
pub use load::{load_dir, load_file, load_str, MAX_EXTENDED_NODES, MAX_SPEC_BYTES, MAX_YAML_DEPTH};
pub use locate::{Locator, Position};
pub use model::*;
pub use names::{
    check_dotted, check_identifier, check_line, check_op_name, check_snake_name, check_url,
    is_hidden, MAX_NAME_LEN, MAX_TEXT_LEN, PYTHON_KEYWORDS, RUST_KEYWORDS,
};
pub use validate::KNOWN_PLUGINS;

/// The specs shipped in the repository's `specs/` folder, as (file name, text).
pub const BUNDLED: &[(&str, &str)] = &[
    (
        "specs/multihead_attention.yaml",
        include_str!("../../../specs/multihead_attention.yaml"),
    ),
    (
        "specs/scaled_dot_product_attention.yaml",
        include_str!("../../../specs/scaled_dot_product_attention.yaml"),
    ),
];

/// Checks a spec that did not come through the loader (one built or changed in code) with the
/// loader's rules. Errors have no position (line 1, column 1); the file is `<spec>`.
pub fn check(spec: &Spec) -> Result<(), SpecErrors> {
    let findings = validate::validate(spec, &std::collections::BTreeSet::new());
    if findings.is_empty() {
        return Ok(());
    }
    Err(SpecErrors(
        findings
            .into_iter()
            .map(|(path, message)| SpecError {
                file: "<spec>".into(),
                line: 1,
                column: 1,
                path,
                message,
            })
            .collect(),
    ))
}

/// Loads the bundled specs.
pub fn bundled() -> Result<Vec<Spec>, SpecErrors> {
    BUNDLED
        .iter()
        .map(|(file, text)| load_str(file, text))
        .collect()
}

impl Spec {
    /// The constructor parameter called `name`.
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.signature.iter().find(|p| p.name == name)
    }

    /// The expression type of a parameter (optional ints resolve to ints).
    pub fn param_type(&self, name: &str) -> Option<ExprType> {
        self.param(name).and_then(|p| match p.ty {
            ParamType::Int | ParamType::OptionalInt => Some(ExprType::Int),
            ParamType::Bool => Some(ExprType::Bool),
            ParamType::Float => None,
        })
    }

    /// The expression type of a parameter or derived value.
    pub fn expr_type(&self, name: &str) -> Option<ExprType> {
        self.param_type(name).or_else(|| {
            let d = self.derived.iter().find(|d| d.name == name)?;
            d.expr.type_of(&|n| self.param_type(n)).ok()
        })
    }

    /// Names usable in expressions: parameters and derived values.
    pub fn scope_names(&self) -> Vec<String> {
        self.signature
            .iter()
            .map(|p| p.name.clone())
            .chain(self.derived.iter().map(|d| d.name.clone()))
            .collect()
    }

    /// Every parameter's default, by name (required parameters are absent).
    pub fn defaults(&self) -> HashMap<String, Literal> {
        self.signature
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.default.clone()?)))
            .collect()
    }

    /// Resolves a full set of parameter values: the given ones, defaults for the rest, and
    /// `null` optional ints replaced by their `when_null` parameter. Missing required ones are absent.
    pub fn resolve(&self, given: &HashMap<String, Literal>) -> HashMap<String, Literal> {
        let mut values = self.defaults();
        values.extend(given.iter().map(|(k, v)| (k.clone(), v.clone())));
        for p in &self.signature {
            if let (Some(Literal::Null(())), Some(target)) = (values.get(&p.name), &p.when_null) {
                if let Some(v) = values.get(target).cloned() {
                    values.insert(p.name.clone(), v);
                }
            }
        }
        values
    }

    /// Evaluates an expression over resolved parameter values (derived values computed on demand).
    pub fn eval(
        &self,
        expr: &Expr,
        values: &HashMap<String, Literal>,
    ) -> Result<ExprValue, String> {
        self.eval_depth(expr, values, 0)
    }

    fn eval_depth(
        &self,
        expr: &Expr,
        values: &HashMap<String, Literal>,
        depth: usize,
    ) -> Result<ExprValue, String> {
        if depth > 16 {
            return Err(format!("`{expr}` refers to itself"));
        }
        let lookup = |name: &str| match values.get(name) {
            Some(Literal::Int(i)) => Some(ExprValue::Int(*i)),
            Some(Literal::Bool(b)) => Some(ExprValue::Bool(*b)),
            Some(_) => None,
            None => self
                .derived
                .iter()
                .find(|d| d.name == name)
                .and_then(|d| self.eval_depth(&d.expr, values, depth + 1).ok()),
        };
        expr.eval(&lookup)
    }
}

//! The spec's data model: what a YAML op spec says, as serde types.
//!
//! Every struct rejects unknown fields. The model serializes back to plain data, which is the
//! context the generators' templates read.

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer, Serialize};

use crate::expr::Expr;

/// One operator: its signature, call, weight layout and per-framework mapping.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The op's name, e.g. `MultiheadAttention`.
    pub op: String,
    /// A layer (constructed, with weights) or a function (called, no state).
    #[serde(default)]
    pub kind: OpKind,
    /// One-line description.
    pub summary: String,
    /// The framework whose semantics are the reference (a key of `frameworks`).
    pub reference: String,
    /// Constructor parameters, in order (none for a function).
    #[serde(default)]
    pub signature: Vec<Param>,
    /// Named tensor dimensions that call arguments' and returns' shapes use.
    #[serde(default)]
    pub dimensions: Vec<Dimension>,
    /// Named values computed from the parameters, usable in expressions.
    #[serde(default)]
    pub derived: Vec<Derived>,
    /// The forward call.
    pub call: Call,
    /// Call conventions of the reference framework.
    pub conventions: Conventions,
    /// The canonical weight layout (none for a function).
    #[serde(default)]
    pub weights: Weights,
    /// Call or constructor features a target may not express natively.
    #[serde(default)]
    pub features: Vec<Feature>,
    /// Per framework key (`pytorch`, `keras`, ...), how the op maps onto it.
    pub frameworks: IndexMap<String, Framework>,
}

/// What kind of op a spec describes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// A layer: constructed from `signature`, holding `weights`, run by `call`.
    #[default]
    Layer,
    /// A function: no constructor and no weights; `call` is the whole op.
    Function,
}

/// A named tensor dimension, e.g. `L` (target length).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Dimension {
    /// Its name as shapes use it: an ASCII identifier (`Hq`, `L`), or `...` for any number of
    /// leading (batch) dimensions.
    pub name: String,
    /// One-line documentation.
    pub doc: String,
}

/// The name that stands for any number of leading dimensions in a shape.
pub const LEADING_DIMS: &str = "...";

/// A constructor parameter.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    /// The parameter's name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub ty: ParamType,
    /// The default value; absent means the parameter is required.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub default: Option<Literal>,
    /// For an `optional_int`: the parameter whose value `null` stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_null: Option<String>,
    /// Constraints every value must satisfy.
    #[serde(default)]
    pub constraints: Vec<Constraint>,
    /// One-line documentation.
    pub doc: String,
}

impl Param {
    /// Whether the caller must give this parameter.
    pub fn is_required(&self) -> bool {
        self.default.is_none()
    }
}

/// A parameter's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    /// A non-negative integer.
    Int,
    /// A floating-point number.
    Float,
    /// A boolean.
    Bool,
    /// An integer or null.
    OptionalInt,
}

/// A literal value in the spec (a default).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Literal {
    /// `true` or `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// `null`.
    Null(()),
}

impl<'de> Deserialize<'de> for Literal {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LiteralVisitor;

        impl serde::de::Visitor<'_> for LiteralVisitor {
            type Value = Literal;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a literal: true, false, an integer, a float or null")
            }

            fn visit_bool<E>(self, v: bool) -> Result<Literal, E> {
                Ok(Literal::Bool(v))
            }

            fn visit_i64<E>(self, v: i64) -> Result<Literal, E> {
                Ok(Literal::Int(v))
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Literal, E> {
                i64::try_from(v)
                    .map(Literal::Int)
                    .map_err(|_| E::custom(format!("integer {v} is too large")))
            }

            fn visit_f64<E>(self, v: f64) -> Result<Literal, E> {
                Ok(Literal::Float(v))
            }

            fn visit_unit<E>(self) -> Result<Literal, E> {
                Ok(Literal::Null(()))
            }

            fn visit_none<E>(self) -> Result<Literal, E> {
                Ok(Literal::Null(()))
            }
        }

        deserializer.deserialize_any(LiteralVisitor)
    }
}

/// A constraint on a parameter's value.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Constraint {
    /// Greater than zero.
    Positive,
    /// The value divides the named parameter.
    Divides(String),
    /// Greater than or equal to the bound.
    AtLeast(f64),
    /// Strictly less than the bound.
    Below(f64),
}

/// A named value computed from the parameters.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Derived {
    /// Its name, usable in expressions.
    pub name: String,
    /// How it is computed.
    pub expr: Expr,
    /// One-line documentation.
    pub doc: String,
}

/// The op's forward call.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    /// The method's name.
    pub name: String,
    /// Arguments, in order.
    pub args: Vec<CallArg>,
    /// Returned values, in order.
    pub returns: Vec<Return>,
}

/// A forward argument.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CallArg {
    /// The argument's name.
    pub name: String,
    /// Its kind.
    #[serde(rename = "type")]
    pub ty: CallArgType,
    /// The default; absent means required.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub default: Option<Literal>,
    /// For a tensor or mask: its dimensions in the reference's order, by name (see
    /// [`Spec::dimensions`]); a mask's shape is the one it broadcasts to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<Vec<String>>,
    /// One-line documentation.
    pub doc: String,
}

/// The kind of a forward argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallArgType {
    /// An input tensor.
    Tensor,
    /// A boolean or float mask, or null.
    OptionalMask,
    /// A flag.
    Bool,
    /// A floating-point number.
    Float,
    /// A floating-point number or null.
    OptionalFloat,
}

impl CallArgType {
    /// Whether values of this kind are tensors (and may have a shape and a layout).
    pub fn is_tensor(self) -> bool {
        matches!(self, CallArgType::Tensor | CallArgType::OptionalMask)
    }
}

/// A returned value.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Return {
    /// Its name.
    pub name: String,
    /// Its dimensions in the reference's order, by name (see [`Spec::dimensions`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<Vec<String>>,
    /// One-line documentation.
    pub doc: String,
}

/// Where the batch dimension sits in inputs and outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Chosen by the `batch_first` parameter.
    Configurable,
    /// Always (batch, seq, feature).
    BatchFirst,
    /// Always (seq, batch, feature).
    SeqFirst,
}

/// What a boolean mask's `True` means, or that masks are additive only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskPolarity {
    /// True = the position may NOT be attended (torch).
    TrueIsMasked,
    /// True = the position may be attended (Keras, Flax).
    TrueAttends,
    /// Masks are added to the scores.
    Additive,
}

/// The reference framework's call conventions.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Conventions {
    /// Input/output layout of a layer; a function's inputs give theirs as shapes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<Layout>,
    /// Meaning of boolean masks.
    pub mask_polarity: MaskPolarity,
    /// How float masks act.
    pub float_masks: String,
    /// How scores are formed.
    pub scaling: String,
    /// How masks combine, where there are several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_merging: Option<String>,
    /// How grouped-query attention is spelled and which key/value head serves which query head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grouped_query: Option<String>,
    /// Where the causal mask sits, also when the query and key lengths differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causal: Option<String>,
    /// What a fully masked query row gives.
    pub fully_masked_rows: String,
}

/// The canonical weight layout.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    /// Tensors under the reference framework's state_dict names.
    #[serde(default)]
    pub tensors: Vec<WeightTensor>,
    /// Per-projection views of those tensors that framework mappings start from.
    #[serde(default)]
    pub logical: Vec<LogicalTensor>,
}

/// A tensor of the canonical state_dict.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WeightTensor {
    /// Its state_dict name.
    pub name: String,
    /// Its shape, one expression per dimension.
    pub shape: Vec<Expr>,
    /// The condition under which it exists; absent means always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Expr>,
    /// One-line documentation.
    pub doc: String,
}

/// A per-projection view of the canonical tensors.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogicalTensor {
    /// Its name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<Expr>,
    /// Where it comes from; the first source whose condition holds applies.
    pub sources: Vec<LogicalSource>,
}

/// One way to obtain a logical tensor from a canonical one.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogicalSource {
    /// The canonical tensor's name.
    pub tensor: String,
    /// Take the `chunk`-th of `of` equal parts along the first dimension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<usize>,
    /// The number of equal parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<usize>,
    /// The condition under which this source applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Expr>,
}

/// A feature a target may not express natively.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    /// Its name.
    pub name: String,
    /// What it is.
    pub doc: String,
}

/// How the op maps onto one framework.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Framework {
    /// The framework entry this one was written as a change of (`tensorflow` extends `keras`):
    /// the loader merged that entry's fields under this one's (see [`crate::load_str`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    /// Name shown to people, e.g. `Apple MLX`.
    pub display_name: String,
    /// The native API's dotted path.
    pub api: String,
    /// The native API's documentation page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docs_url: Option<String>,
    /// Direct mapping, or a named plugin that repacks arguments and weights.
    pub strategy: Strategy,
    /// The Python package to import.
    pub package: String,
    /// The backend the package runs on, where it has several (Keras).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// A layer's native input layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<Layout>,
    /// A function's native layout per tensor argument or return: its dimensions in the native
    /// order, by name; unlisted tensors have the reference's layout.
    #[serde(default)]
    pub layouts: IndexMap<String, Vec<String>>,
    /// The native mask polarity.
    pub mask_polarity: MaskPolarity,
    /// Argument map: a layer's constructor parameters, a function's call arguments.
    #[serde(default)]
    pub args: Vec<ArgMapping>,
    /// Weight mapping from the canonical layout (none for a function).
    #[serde(default)]
    pub weights: Vec<WeightMapping>,
    /// Features the target does not express natively; unlisted features are native.
    #[serde(default)]
    pub support: IndexMap<String, Support>,
}

/// A framework's strategy, as on the op page.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", into = "StrategyView")]
pub enum Strategy {
    /// Arguments and weights map one to one.
    Direct,
    /// A named plugin repacks arguments and weights.
    Plugin(String),
}

impl Strategy {
    /// The label the op page shows: `Direct Mapping` or `Plugin (name)`.
    pub fn label(&self) -> String {
        match self {
            Strategy::Direct => "Direct Mapping".to_string(),
            Strategy::Plugin(name) => format!("Plugin ({name})"),
        }
    }
}

/// How a strategy appears to templates.
#[derive(Serialize)]
struct StrategyView {
    kind: &'static str,
    plugin: Option<String>,
    label: String,
}

impl From<Strategy> for StrategyView {
    fn from(s: Strategy) -> Self {
        let label = s.label();
        match s {
            Strategy::Direct => StrategyView {
                kind: "direct",
                plugin: None,
                label,
            },
            Strategy::Plugin(name) => StrategyView {
                kind: "plugin",
                plugin: Some(name),
                label,
            },
        }
    }
}

/// One entry of a framework's constructor argument map.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "RawArgMapping", tag = "kind", rename_all = "snake_case")]
pub enum ArgMapping {
    /// `native` takes the value of parameter `from`.
    Rename {
        /// The native keyword.
        native: String,
        /// The signature parameter.
        from: String,
    },
    /// `native` takes a value computed from the parameters.
    Computed {
        /// The native keyword.
        native: String,
        /// The computation.
        expr: Expr,
    },
    /// `native` takes a constant.
    Constant {
        /// The native keyword.
        native: String,
        /// The value.
        value: Literal,
    },
    /// The parameter has no native keyword; `reason` says where it goes instead.
    Dropped {
        /// The signature parameter.
        param: String,
        /// Why, and how the glue handles it.
        reason: String,
    },
}

impl ArgMapping {
    /// The native keyword this entry sets, if any.
    pub fn native(&self) -> Option<&str> {
        match self {
            ArgMapping::Rename { native, .. }
            | ArgMapping::Computed { native, .. }
            | ArgMapping::Constant { native, .. } => Some(native),
            ArgMapping::Dropped { .. } => None,
        }
    }
}

/// The YAML form of an argument map entry: `{native, from}`, `{native, expr}`, `{native, value}` or `{drop, reason}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArgMapping {
    native: Option<String>,
    from: Option<String>,
    expr: Option<Expr>,
    #[serde(default, deserialize_with = "present")]
    value: Option<Literal>,
    drop: Option<String>,
    reason: Option<String>,
}

impl TryFrom<RawArgMapping> for ArgMapping {
    type Error = String;

    fn try_from(raw: RawArgMapping) -> Result<Self, String> {
        match raw {
            RawArgMapping { native: Some(native), from: Some(from), expr: None, value: None, drop: None, reason: None } => {
                Ok(ArgMapping::Rename { native, from })
            }
            RawArgMapping { native: Some(native), from: None, expr: Some(expr), value: None, drop: None, reason: None } => {
                Ok(ArgMapping::Computed { native, expr })
            }
            RawArgMapping { native: Some(native), from: None, expr: None, value: Some(value), drop: None, reason: None } => {
                Ok(ArgMapping::Constant { native, value })
            }
            RawArgMapping { native: None, from: None, expr: None, value: None, drop: Some(param), reason: Some(reason) } => {
                Ok(ArgMapping::Dropped { param, reason })
            }
            RawArgMapping { drop: Some(_), reason: None, .. } => Err("`drop` needs a `reason`".into()),
            _ => Err("an argument entry is one of {native, from}, {native, expr}, {native, value} or {drop, reason}".into()),
        }
    }
}

/// How one native weight is made from the canonical layout.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WeightMapping {
    /// The native weight's name (dotted path in the native layer).
    pub native: String,
    /// The canonical or logical tensor it starts from.
    pub from: String,
    /// Steps applied in order to get the native layout (and undone in reverse to come back).
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// A layout step of a weight mapping.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Reverse the two axes of a matrix.
    Transpose,
    /// Reshape to the given dimensions.
    Reshape(Vec<Expr>),
}

/// How a framework supports one feature.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Support {
    /// Native, emulated by the glue, or unsupported.
    pub status: SupportStatus,
    /// Why, and how.
    pub note: String,
}

/// Support level of a feature on a framework.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SupportStatus {
    /// The native API expresses it.
    Native,
    /// The generated glue reproduces it exactly.
    Emulated,
    /// Neither: the glue raises `UnsupportedFeature`.
    Unsupported,
}

/// Deserializes a field that may be `null` yet must be told apart from an absent one.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

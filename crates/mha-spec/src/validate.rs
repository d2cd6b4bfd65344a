//! Semantic checks on a structurally valid spec. Each finding is a (field path, message) pair.

use std::collections::{BTreeSet, HashMap};

use crate::error::did_you_mean;
use crate::expr::{Expr, ExprType};
use crate::model::{
    ArgMapping, CallArgType, Constraint, Literal, OpKind, ParamType, Spec, Step, LEADING_DIMS,
};
use crate::names;

/// Plugins the generators implement; a framework's `strategy: {plugin: NAME}` must name one.
pub const KNOWN_PLUGINS: &[&str] = &["repack_attn_keras", "repack_attn_flax", "transpose_heads"];

/// Every semantic problem of `spec`. Names in `pruned` belong to items already reported and
/// removed, so references to them are not reported again.
pub fn validate(spec: &Spec, pruned: &BTreeSet<String>) -> Vec<(String, String)> {
    let mut v = Validator {
        spec,
        pruned: pruned.clone(),
        findings: Vec::new(),
    };
    v.names();
    v.kind();
    v.signature();
    v.derived();
    v.call();
    v.weights();
    v.frameworks();
    v.findings
}

struct Validator<'a> {
    spec: &'a Spec,
    /// Names already reported (pruned by the loader, or derived values whose expression is
    /// broken): references to them are not reported again.
    pruned: BTreeSet<String>,
    findings: Vec<(String, String)>,
}

impl Validator<'_> {
    fn report(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.findings.push((path.into(), message.into()));
    }

    fn unique<'n>(&mut self, what: &str, items: impl IntoIterator<Item = (String, &'n str)>) {
        let mut seen = BTreeSet::new();
        for (path, name) in items {
            if !seen.insert(name) {
                self.report(path, format!("duplicate {what} `{name}`"));
            }
        }
    }

    /// Reports `name` unless it is one of `known` (or was pruned); `what` says what kind of name.
    fn known(&mut self, path: String, what: &str, name: &str, known: &[&str]) -> bool {
        if known.contains(&name) {
            return true;
        }
        if !self.pruned.contains(name) {
            self.report(
                path,
                format!(
                    "unknown {what} `{name}`{}",
                    did_you_mean(name, known.iter().copied())
                ),
            );
        }
        false
    }

    fn check_expr(
        &mut self,
        path: String,
        expr: &Expr,
        want: ExprType,
        scope: &dyn Fn(&str) -> Option<ExprType>,
    ) {
        if expr.identifiers().iter().any(|n| self.pruned.contains(*n)) {
            return;
        }
        match expr.type_of(scope) {
            Ok(got) if got == want => {
                if let Some(problem) = constant_problem(expr) {
                    self.report(path, problem);
                }
            }
            Ok(got) => self.report(path, format!("`{expr}` is {got}, expected {want}")),
            Err(message) => {
                let names = self.spec.scope_names();
                let hint = expr
                    .identifiers()
                    .into_iter()
                    .find(|n| scope(n).is_none())
                    .map(|n| did_you_mean(n, names.iter().map(String::as_str)))
                    .unwrap_or_default();
                self.report(path, format!("in `{expr}`: {message}{hint}"));
            }
        }
    }

    /// Reports `problem` (from a [`names`] rule) at `path`.
    fn rule(&mut self, path: String, problem: Option<String>) {
        if let Some(message) = problem {
            self.report(path, message);
        }
    }

    /// Every name and line of text, checked for every language and path it reaches.
    fn names(&mut self) {
        let spec = self.spec;
        self.rule("op".into(), names::check_op_name(&spec.op));
        self.rule("summary".into(), names::check_line(&spec.summary));
        for (i, p) in spec.signature.iter().enumerate() {
            self.rule(
                format!("signature[{i}].name"),
                names::check_snake_name(&p.name),
            );
            self.rule(format!("signature[{i}].doc"), names::check_line(&p.doc));
        }
        for (i, d) in spec.derived.iter().enumerate() {
            self.rule(
                format!("derived[{i}].name"),
                names::check_snake_name(&d.name),
            );
            self.rule(format!("derived[{i}].doc"), names::check_line(&d.doc));
        }
        self.rule("call.name".into(), names::check_snake_name(&spec.call.name));
        for (i, a) in spec.call.args.iter().enumerate() {
            self.rule(
                format!("call.args[{i}].name"),
                names::check_snake_name(&a.name),
            );
            self.rule(format!("call.args[{i}].doc"), names::check_line(&a.doc));
        }
        for (i, r) in spec.call.returns.iter().enumerate() {
            self.rule(
                format!("call.returns[{i}].name"),
                names::check_snake_name(&r.name),
            );
            self.rule(format!("call.returns[{i}].doc"), names::check_line(&r.doc));
        }
        let c = &spec.conventions;
        for (field, text) in [
            ("float_masks", Some(&c.float_masks)),
            ("scaling", Some(&c.scaling)),
            ("mask_merging", c.mask_merging.as_ref()),
            ("grouped_query", c.grouped_query.as_ref()),
            ("causal", c.causal.as_ref()),
            ("fully_masked_rows", Some(&c.fully_masked_rows)),
        ] {
            if let Some(text) = text {
                self.rule(format!("conventions.{field}"), names::check_line(text));
            }
        }
        for (i, d) in spec.dimensions.iter().enumerate() {
            if d.name != LEADING_DIMS {
                self.rule(
                    format!("dimensions[{i}].name"),
                    names::check_identifier(&d.name),
                );
            }
            self.rule(format!("dimensions[{i}].doc"), names::check_line(&d.doc));
        }
        for (i, t) in spec.weights.tensors.iter().enumerate() {
            self.rule(
                format!("weights.tensors[{i}].name"),
                names::check_dotted(&t.name, true),
            );
            self.rule(
                format!("weights.tensors[{i}].doc"),
                names::check_line(&t.doc),
            );
        }
        for (i, l) in spec.weights.logical.iter().enumerate() {
            self.rule(
                format!("weights.logical[{i}].name"),
                names::check_dotted(&l.name, true),
            );
        }
        for (i, f) in spec.features.iter().enumerate() {
            self.rule(
                format!("features[{i}].name"),
                names::check_snake_name(&f.name),
            );
            self.rule(format!("features[{i}].doc"), names::check_line(&f.doc));
        }
        for (key, fw) in &spec.frameworks {
            let base = format!("frameworks.{key}");
            if let Some(problem) = names::check_snake_name(key) {
                self.report(base.clone(), format!("framework key: {problem}"));
            }
            self.rule(
                format!("{base}.display_name"),
                names::check_line(&fw.display_name),
            );
            self.rule(format!("{base}.api"), names::check_dotted(&fw.api, false));
            self.rule(
                format!("{base}.package"),
                names::check_dotted(&fw.package, false),
            );
            if let Some(url) = &fw.docs_url {
                self.rule(format!("{base}.docs_url"), names::check_url(url));
            }
            if let Some(backend) = &fw.backend {
                self.rule(format!("{base}.backend"), names::check_identifier(backend));
            }
            for (i, arg) in fw.args.iter().enumerate() {
                match arg {
                    ArgMapping::Dropped { reason, .. } => self.rule(
                        format!("{base}.args[{i}].reason"),
                        names::check_line(reason),
                    ),
                    other => {
                        let native = other.native().unwrap_or_default();
                        self.rule(
                            format!("{base}.args[{i}].native"),
                            names::check_identifier(native),
                        );
                    }
                }
            }
            for (i, w) in fw.weights.iter().enumerate() {
                self.rule(
                    format!("{base}.weights[{i}].native"),
                    names::check_dotted(&w.native, true),
                );
            }
            for (feature, support) in &fw.support {
                self.rule(
                    format!("{base}.support.{feature}.note"),
                    names::check_line(&support.note),
                );
            }
        }
    }

    fn signature(&mut self) {
        let spec = self.spec;
        self.unique(
            "parameter",
            spec.signature
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("signature[{i}].name"), p.name.as_str())),
        );
        let names: Vec<&str> = spec.signature.iter().map(|p| p.name.as_str()).collect();
        for (i, param) in spec.signature.iter().enumerate() {
            let path = format!("signature[{i}]");
            if let Some(default) = &param.default {
                if let Some(problem) = literal_problem(default, param.ty) {
                    self.report(format!("{path}.default"), problem);
                }
            }
            let int_param = |name: &str| spec.param(name).is_none_or(|p| p.ty == ParamType::Int);
            if let Some(target) = &param.when_null {
                if param.ty != ParamType::OptionalInt {
                    self.report(
                        format!("{path}.when_null"),
                        "`when_null` applies to optional_int parameters only",
                    );
                }
                if self.known(format!("{path}.when_null"), "parameter", target, &names)
                    && !int_param(target)
                {
                    self.report(
                        format!("{path}.when_null"),
                        format!("`{target}` stands for null, so it must be an int parameter"),
                    );
                }
            }
            for (j, constraint) in param.constraints.iter().enumerate() {
                let at = format!("{path}.constraints[{j}]");
                let applies = match constraint {
                    Constraint::Positive => param.ty != ParamType::Bool,
                    Constraint::Divides(_) => {
                        matches!(param.ty, ParamType::Int | ParamType::OptionalInt)
                    }
                    Constraint::AtLeast(_) | Constraint::Below(_) => param.ty == ParamType::Float,
                };
                if !applies {
                    self.report(
                        at.clone(),
                        format!(
                            "{} does not apply to a {} parameter ({})",
                            constraint_name(constraint),
                            type_name(param.ty),
                            constraint_rule(constraint)
                        ),
                    );
                }
                match constraint {
                    Constraint::Divides(other) => {
                        let at = format!("{at}.divides");
                        if self.known(at.clone(), "parameter", other, &names) {
                            if !int_param(other) {
                                self.report(at, format!("`{other}` must be an int parameter"));
                            } else if *other == param.name {
                                self.report(at, "a parameter always divides itself");
                            }
                        }
                    }
                    Constraint::AtLeast(bound) | Constraint::Below(bound) if !bound.is_finite() => {
                        self.report(
                            at,
                            format!("the bound must be a finite number, got {bound}"),
                        );
                    }
                    _ => {}
                }
            }
            // A default must satisfy its own constraints (checked where every name it needs has a default).
            let defaults = spec.defaults();
            if param.default.is_some() {
                for message in spec.check_param(param, &defaults) {
                    self.report(
                        format!("{path}.default"),
                        format!("default violates its constraint: {message}"),
                    );
                }
            }
        }
    }

    fn derived(&mut self) {
        let spec = self.spec;
        let all = spec
            .signature
            .iter()
            .map(|p| p.name.as_str())
            .chain(spec.derived.iter().map(|d| d.name.as_str()));
        let items: Vec<_> = all
            .enumerate()
            .map(|(i, n)| {
                let path = match i.checked_sub(spec.signature.len()) {
                    None => format!("signature[{i}].name"),
                    Some(d) => format!("derived[{d}].name"),
                };
                (path, n)
            })
            .collect();
        // Parameter against parameter is reported by `signature`; here only derived names.
        let mut seen = BTreeSet::new();
        for (path, name) in items {
            if !seen.insert(name) && path.starts_with("derived") {
                self.report(path, format!("duplicate name `{name}`"));
            }
        }
        for (i, derived) in spec.derived.iter().enumerate() {
            // Only parameters and earlier derived values are in scope.
            let earlier: HashMap<&str, ExprType> = spec.derived[..i]
                .iter()
                .filter_map(|d| {
                    Some((
                        d.name.as_str(),
                        d.expr.type_of(&|n| spec.param_type(n)).ok()?,
                    ))
                })
                .collect();
            let scope = |n: &str| spec.param_type(n).or_else(|| earlier.get(n).copied());
            let typed = derived.expr.type_of(&scope);
            if let Some(problem) = typed
                .as_ref()
                .ok()
                .and_then(|_| constant_problem(&derived.expr))
            {
                self.report(format!("derived[{i}].expr"), problem);
            }
            if let Err(message) = typed {
                if !derived
                    .expr
                    .identifiers()
                    .iter()
                    .any(|n| self.pruned.contains(*n))
                {
                    let names = spec.scope_names();
                    let hint = derived
                        .expr
                        .identifiers()
                        .into_iter()
                        .find(|n| scope(n).is_none())
                        .map(|n| did_you_mean(n, names.iter().map(String::as_str)))
                        .unwrap_or_default();
                    self.report(
                        format!("derived[{i}].expr"),
                        format!("in `{}`: {message}{hint}", derived.expr),
                    );
                }
                // Reported once here; uses of this name elsewhere are not reported again.
                self.pruned.insert(derived.name.clone());
            }
        }
    }

    fn call(&mut self) {
        let args = &self.spec.call.args;
        self.unique(
            "argument",
            args.iter()
                .enumerate()
                .map(|(i, a)| (format!("call.args[{i}].name"), a.name.as_str())),
        );
        let returns = &self.spec.call.returns;
        self.unique(
            "return",
            returns
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("call.returns[{i}].name"), r.name.as_str())),
        );
        let dims = &self.spec.dimensions;
        self.unique(
            "dimension",
            dims.iter()
                .enumerate()
                .map(|(i, d)| (format!("dimensions[{i}].name"), d.name.as_str())),
        );
        for (i, arg) in args.iter().enumerate() {
            let path = format!("call.args[{i}]");
            if let Some(default) = &arg.default {
                if let Some(problem) = call_default_problem(default, arg.ty) {
                    self.report(format!("{path}.default"), problem);
                }
            }
            if let Some(shape) = &arg.shape {
                if !arg.ty.is_tensor() {
                    self.report(
                        format!("{path}.shape"),
                        "only a tensor or a mask has a shape",
                    );
                }
                self.shape(&format!("{path}.shape"), shape);
            }
        }
        for (i, ret) in returns.iter().enumerate() {
            if let Some(shape) = &ret.shape {
                self.shape(&format!("call.returns[{i}].shape"), shape);
            }
        }
    }

    /// A shape names declared dimensions, each once; `...` only first.
    fn shape(&mut self, path: &str, shape: &[String]) {
        let known: Vec<&str> = self
            .spec
            .dimensions
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        let mut seen = BTreeSet::new();
        for (d, name) in shape.iter().enumerate() {
            let at = format!("{path}[{d}]");
            if !self.known(at.clone(), "dimension", name, &known) {
                continue;
            }
            if !seen.insert(name.as_str()) {
                self.report(at, format!("dimension `{name}` appears twice"));
            } else if name == LEADING_DIMS && d != 0 {
                self.report(at, "`...` (the leading dimensions) comes first");
            }
        }
    }

    /// A layer has a constructor and weights; a function has neither, and its frameworks map
    /// call arguments rather than constructor parameters.
    fn kind(&mut self) {
        let spec = self.spec;
        match spec.kind {
            OpKind::Layer => {
                if spec.signature.is_empty() {
                    self.report("signature", "a layer needs constructor parameters (an op without them is `kind: function`)");
                }
                if spec.conventions.layout.is_none() {
                    self.report("conventions", "a layer's conventions need `layout`");
                }
                for (key, fw) in &spec.frameworks {
                    if fw.layout.is_none() {
                        self.report(
                            format!("frameworks.{key}"),
                            "a layer's framework entry needs `layout`",
                        );
                    }
                    if !fw.layouts.is_empty() {
                        self.report(
                            format!("frameworks.{key}.layouts"),
                            "per-tensor `layouts` are for functions; a layer has `layout`",
                        );
                    }
                }
            }
            OpKind::Function => {
                for (field, present) in [
                    ("signature", !spec.signature.is_empty()),
                    ("derived", !spec.derived.is_empty()),
                    (
                        "weights",
                        !spec.weights.tensors.is_empty() || !spec.weights.logical.is_empty(),
                    ),
                    ("conventions.layout", spec.conventions.layout.is_some()),
                ] {
                    if present {
                        self.report(
                            field,
                            format!("a function has no `{field}` (it is a layer's); its tensors' `shape`s give the layout"),
                        );
                    }
                }
                for (key, fw) in &spec.frameworks {
                    let base = format!("frameworks.{key}");
                    if fw.layout.is_some() {
                        self.report(
                            format!("{base}.layout"),
                            "a function gives per-tensor `layouts`, not one `layout`",
                        );
                    }
                    if !fw.weights.is_empty() {
                        self.report(format!("{base}.weights"), "a function has no weights");
                    }
                    self.layouts(&base, fw);
                }
            }
        }
    }

    /// Each native layout names a tensor argument or return with a shape, and orders the same
    /// dimensions.
    fn layouts(&mut self, base: &str, fw: &crate::model::Framework) {
        let call = &self.spec.call;
        let shapes: Vec<(&str, &Vec<String>)> = call
            .args
            .iter()
            .filter_map(|a| Some((a.name.as_str(), a.shape.as_ref()?)))
            .chain(
                call.returns
                    .iter()
                    .filter_map(|r| Some((r.name.as_str(), r.shape.as_ref()?))),
            )
            .collect();
        let names: Vec<&str> = shapes.iter().map(|(n, _)| *n).collect();
        for (tensor, dims) in &fw.layouts {
            let path = format!("{base}.layouts.{tensor}");
            if !self.known(path.clone(), "tensor with a shape", tensor, &names) {
                continue;
            }
            let Some((_, reference)) = shapes.iter().find(|(n, _)| n == tensor) else {
                continue;
            };
            let mut want: Vec<&str> = reference.iter().map(String::as_str).collect();
            let mut got: Vec<&str> = dims.iter().map(String::as_str).collect();
            want.sort_unstable();
            got.sort_unstable();
            if want != got {
                self.report(
                    path,
                    format!(
                        "[{}] must order the dimensions of `{tensor}`'s shape [{}]",
                        dims.join(", "),
                        reference.join(", ")
                    ),
                );
            } else if dims
                .iter()
                .position(|d| d == LEADING_DIMS)
                .is_some_and(|p| p != 0)
            {
                self.report(path, "`...` (the leading dimensions) stays first");
            }
        }
    }

    fn weights(&mut self) {
        let spec = self.spec;
        let scope = |n: &str| spec.expr_type(n);
        let tensors = &spec.weights.tensors;
        self.unique(
            "weight",
            tensors
                .iter()
                .enumerate()
                .map(|(i, t)| (format!("weights.tensors[{i}].name"), t.name.as_str())),
        );
        for (i, t) in tensors.iter().enumerate() {
            for (d, dim) in t.shape.iter().enumerate() {
                self.check_expr(
                    format!("weights.tensors[{i}].shape[{d}]"),
                    dim,
                    ExprType::Int,
                    &scope,
                );
            }
            if let Some(when) = &t.when {
                self.check_expr(
                    format!("weights.tensors[{i}].when"),
                    when,
                    ExprType::Bool,
                    &scope,
                );
            }
        }
        let tensor_names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        let logical = &spec.weights.logical;
        self.unique(
            "logical weight",
            logical
                .iter()
                .enumerate()
                .map(|(i, t)| (format!("weights.logical[{i}].name"), t.name.as_str())),
        );
        for (i, l) in logical.iter().enumerate() {
            for (d, dim) in l.shape.iter().enumerate() {
                self.check_expr(
                    format!("weights.logical[{i}].shape[{d}]"),
                    dim,
                    ExprType::Int,
                    &scope,
                );
            }
            for (j, source) in l.sources.iter().enumerate() {
                let path = format!("weights.logical[{i}].sources[{j}]");
                self.known(
                    format!("{path}.tensor"),
                    "weight",
                    &source.tensor,
                    &tensor_names,
                );
                match (source.chunk, source.of) {
                    (Some(c), Some(n)) if c >= n => self.report(
                        format!("{path}.chunk"),
                        format!("chunk {c} is out of range for {n} parts"),
                    ),
                    (Some(_), None) | (None, Some(_)) => {
                        self.report(path.clone(), "`chunk` and `of` go together")
                    }
                    _ => {}
                }
                if let Some(when) = &source.when {
                    self.check_expr(format!("{path}.when"), when, ExprType::Bool, &scope);
                }
            }
        }
    }

    fn frameworks(&mut self) {
        let spec = self.spec;
        let keys: Vec<&str> = spec.frameworks.keys().map(String::as_str).collect();
        self.known("reference".into(), "framework", &spec.reference, &keys);
        let features: Vec<&str> = spec.features.iter().map(|f| f.name.as_str()).collect();
        self.unique(
            "feature",
            spec.features
                .iter()
                .enumerate()
                .map(|(i, f)| (format!("features[{i}].name"), f.name.as_str())),
        );
        // A layer's frameworks map constructor parameters, a function's its call arguments.
        let params: Vec<&str> = match spec.kind {
            OpKind::Layer => spec.signature.iter().map(|p| p.name.as_str()).collect(),
            OpKind::Function => spec.call.args.iter().map(|a| a.name.as_str()).collect(),
        };
        let what = match spec.kind {
            OpKind::Layer => "parameter",
            OpKind::Function => "call argument",
        };
        let weight_sources: Vec<&str> = spec
            .weights
            .tensors
            .iter()
            .map(|t| t.name.as_str())
            .chain(spec.weights.logical.iter().map(|l| l.name.as_str()))
            .collect();
        let scope = |n: &str| spec.expr_type(n);

        for (key, fw) in &spec.frameworks {
            let base = format!("frameworks.{key}");
            if let Some(extends) = &fw.extends {
                if extends == key || !keys.contains(&extends.as_str()) {
                    self.known(format!("{base}.extends"), "framework", extends, &[]);
                }
            }
            if let crate::model::Strategy::Plugin(name) = &fw.strategy {
                self.known(
                    format!("{base}.strategy.plugin"),
                    "plugin",
                    name,
                    KNOWN_PLUGINS,
                );
            }
            let mut covered = BTreeSet::new();
            for (i, arg) in fw.args.iter().enumerate() {
                let path = format!("{base}.args[{i}]");
                match arg {
                    ArgMapping::Rename { from, .. } => {
                        self.known(format!("{path}.from"), what, from, &params);
                        // A misspelt name was reported above; count what it likely meant as mapped.
                        let meant = crate::error::suggest(from, params.iter().copied());
                        covered.insert(meant.unwrap_or(from.as_str()));
                    }
                    ArgMapping::Computed { expr, .. } => {
                        self.check_expr(format!("{path}.expr"), expr, ExprType::Int, &scope);
                        covered.extend(
                            expr.identifiers()
                                .into_iter()
                                .filter(|n| params.contains(n)),
                        );
                    }
                    ArgMapping::Constant { .. } => {}
                    ArgMapping::Dropped { param, .. } => {
                        self.known(format!("{path}.drop"), what, param, &params);
                        let meant = crate::error::suggest(param, params.iter().copied());
                        covered.insert(meant.unwrap_or(param.as_str()));
                    }
                }
            }
            let natives = fw
                .args
                .iter()
                .enumerate()
                .filter_map(|(i, a)| Some((format!("{base}.args[{i}].native"), a.native()?)));
            self.unique("native argument", natives);
            for param in &params {
                if !covered.contains(param) && !self.pruned.contains(*param) {
                    self.report(
                        format!("{base}.args"),
                        format!("{what} `{param}` is neither mapped nor dropped"),
                    );
                }
            }
            let natives = fw
                .weights
                .iter()
                .enumerate()
                .map(|(i, w)| (format!("{base}.weights[{i}].native"), w.native.as_str()));
            self.unique("native weight", natives);
            for (i, w) in fw.weights.iter().enumerate() {
                let path = format!("{base}.weights[{i}]");
                self.known(format!("{path}.from"), "weight", &w.from, &weight_sources);
                for (s, step) in w.steps.iter().enumerate() {
                    if let Step::Reshape(dims) = step {
                        for (d, dim) in dims.iter().enumerate() {
                            self.check_expr(
                                format!("{path}.steps[{s}].reshape[{d}]"),
                                dim,
                                ExprType::Int,
                                &scope,
                            );
                        }
                    }
                }
            }
            for feature in fw.support.keys() {
                self.known(
                    format!("{base}.support.{feature}"),
                    "feature",
                    feature,
                    &features,
                );
            }
        }
    }
}

/// Why a constant expression (one without names) cannot be a size: it overflows, divides by
/// zero or is negative. Expressions with names are checked per config by the generated code.
fn constant_problem(expr: &Expr) -> Option<String> {
    if !expr.identifiers().is_empty() {
        return None;
    }
    match expr.eval(&|_| None) {
        Err(message) => Some(format!("`{expr}`: {message}")),
        Ok(crate::expr::ExprValue::Int(v)) if v < 0 => {
            Some(format!("`{expr}` is {v}: a size cannot be negative"))
        }
        Ok(_) => None,
    }
}

/// Why `value` cannot be the default of a call argument of kind `ty`, if it cannot.
fn call_default_problem(value: &Literal, ty: CallArgType) -> Option<String> {
    let fits = matches!(
        (value, ty),
        (Literal::Bool(_), CallArgType::Bool)
            | (
                Literal::Null(()),
                CallArgType::OptionalMask | CallArgType::OptionalFloat
            )
            | (
                Literal::Float(_) | Literal::Int(_),
                CallArgType::Float | CallArgType::OptionalFloat
            )
    );
    match value {
        _ if !fits => Some(format!("default {} does not fit type {ty:?}", show(value))),
        Literal::Float(f) if !f.is_finite() => {
            Some(format!("default {} is not a finite number", show(value)))
        }
        _ => None,
    }
}

/// Why `value` cannot be a default of type `ty`, if it cannot.
fn literal_problem(value: &Literal, ty: ParamType) -> Option<String> {
    let fits = matches!(
        (value, ty),
        (
            Literal::Int(_),
            ParamType::Int | ParamType::OptionalInt | ParamType::Float
        ) | (Literal::Float(_), ParamType::Float)
            | (Literal::Bool(_), ParamType::Bool)
            | (Literal::Null(()), ParamType::OptionalInt)
    );
    match value {
        _ if !fits => Some(format!(
            "default {} does not fit type {:?}",
            show(value),
            ty
        )),
        Literal::Float(f) if !f.is_finite() => Some(format!(
            "default {} is not a finite number; a float parameter's default must be one",
            show(value)
        )),
        Literal::Int(i) if *i < 0 && ty != ParamType::Float => Some(format!(
            "default {i} is negative; an {} parameter is a size (0 or more)",
            type_name(ty)
        )),
        _ => None,
    }
}

fn type_name(ty: ParamType) -> &'static str {
    match ty {
        ParamType::Int => "int",
        ParamType::Float => "float",
        ParamType::Bool => "bool",
        ParamType::OptionalInt => "optional_int",
    }
}

fn constraint_name(c: &Constraint) -> &'static str {
    match c {
        Constraint::Positive => "`positive`",
        Constraint::Divides(_) => "`divides`",
        Constraint::AtLeast(_) => "`at_least`",
        Constraint::Below(_) => "`below`",
    }
}

fn constraint_rule(c: &Constraint) -> &'static str {
    match c {
        Constraint::Positive => "it applies to int, optional_int and float",
        Constraint::Divides(_) => "it applies to int and optional_int",
        Constraint::AtLeast(_) | Constraint::Below(_) => "it applies to float",
    }
}

pub(crate) fn show(value: &Literal) -> String {
    match value {
        Literal::Bool(b) => b.to_string(),
        Literal::Int(i) => i.to_string(),
        Literal::Float(f) => format!("{f:?}"),
        Literal::Null(()) => "null".into(),
    }
}

//! One layer being converted: its constructor parameters read from the tensors, and the spec's
//! weight mapping applied forwards (reference → native) or backwards.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mha_spec::{ExprValue, Framework, Literal, ParamType, Spec, Step};

use super::layout::{Entry, Exists, Layout};
use super::{ConvertError, RawTensor};

/// Where a logical or reference tensor comes from, for one config: a reference tensor, whole or
/// one of `of` parts along the first axis, viewed with `shape`.
struct Source<'s> {
    tensor: &'s str,
    chunk: Option<(usize, usize)>,
    shape: Vec<usize>,
}

pub(super) type Values = HashMap<String, Literal>;

/// A piece of a reference tensor: part `(index, of)` along the first axis, or `None` for all of it.
type Part = (Option<(usize, usize)>, RawTensor);

/// One layer being converted.
pub(super) struct Layer<'a> {
    pub(super) spec: &'a Spec,
    pub(super) prefix: &'a str,
}

impl<'a> Layer<'a> {
    fn error(&self, message: impl Into<String>) -> ConvertError {
        ConvertError::Layer {
            prefix: self.prefix.to_string(),
            message: message.into(),
        }
    }

    /// Evaluates a spec expression; a parameter nobody gave is an error that says how to give it.
    fn eval(&self, expr: &mha_spec::Expr, values: &Values) -> Result<ExprValue, ConvertError> {
        self.spec.eval(expr, values).map_err(|e| {
            let mut missing: Vec<String> = self
                .params_read(expr)
                .into_iter()
                .filter(|p| !values.contains_key(p))
                .collect();
            missing.sort();
            match missing.first() {
                Some(p) => ConvertError::NeedsSetting {
                    prefix: self.prefix.to_string(),
                    param: p.clone(),
                },
                None => self.error(format!("cannot evaluate `{expr}`: {e}")),
            }
        })
    }

    /// The constructor parameters an expression reads, through derived values.
    fn params_read(&self, expr: &mha_spec::Expr) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo: Vec<&mha_spec::Expr> = vec![expr];
        let mut seen = BTreeSet::new();
        while let Some(e) = todo.pop() {
            for name in e.identifiers() {
                if !seen.insert(name.to_string()) {
                    continue;
                }
                if let Some(d) = self.spec.derived.iter().find(|d| d.name == name) {
                    todo.push(&d.expr);
                } else {
                    out.insert(name.to_string());
                }
            }
        }
        out
    }

    fn eval_bool(
        &self,
        expr: Option<&mha_spec::Expr>,
        values: &Values,
    ) -> Result<bool, ConvertError> {
        match expr {
            None => Ok(true),
            Some(e) => match self.eval(e, values)? {
                ExprValue::Bool(b) => Ok(b),
                ExprValue::Int(i) => Ok(i != 0),
            },
        }
    }

    fn eval_dims(
        &self,
        dims: &[mha_spec::Expr],
        values: &Values,
    ) -> Result<Vec<usize>, ConvertError> {
        dims.iter()
            .map(|d| match self.eval(d, values)? {
                ExprValue::Int(i) => usize::try_from(i)
                    .map_err(|_| self.error(format!("dimension `{d}` is {i}, below zero"))),
                ExprValue::Bool(_) => Err(self.error(format!("dimension `{d}` is not a number"))),
            })
            .collect()
    }

    /// Where `name` (logical or reference) comes from for this config; `None` when it does not exist.
    fn source(&self, name: &'a str, values: &Values) -> Result<Option<Source<'a>>, ConvertError> {
        let weights = &self.spec.weights;
        if let Some(l) = weights.logical.iter().find(|l| l.name == name) {
            for s in &l.sources {
                if self.eval_bool(s.when.as_ref(), values)? {
                    return Ok(Some(Source {
                        tensor: &s.tensor,
                        chunk: s.chunk.zip(s.of),
                        shape: self.eval_dims(&l.shape, values)?,
                    }));
                }
            }
            return Ok(None);
        }
        match weights.tensors.iter().find(|t| t.name == name) {
            Some(t) if self.eval_bool(t.when.as_ref(), values)? => Ok(Some(Source {
                tensor: &t.name,
                chunk: None,
                shape: self.eval_dims(&t.shape, values)?,
            })),
            Some(_) => Ok(None),
            None => Err(self.error(format!(
                "the spec maps from `{name}`, which is neither a weight nor a logical view"
            ))),
        }
    }

    fn exists(&self, entry: &Entry<'a>, values: &Values) -> Result<bool, ConvertError> {
        match &entry.exists {
            Exists::When(when) => self.eval_bool(*when, values),
            Exists::Source(name) => Ok(self.source(name, values)?.is_some()),
        }
    }

    /// The constructor parameters of the layer: `given`, then what the tensors' shapes and presence
    /// say, then defaults; the booleans the tensors do not decide keep their given or default value.
    pub(super) fn fit(
        &self,
        layout: &Layout<'a>,
        present: &BTreeMap<&str, &RawTensor>,
        given: &Values,
    ) -> Result<Values, ConvertError> {
        let spec = self.spec;
        let mut bound = given.clone();
        for entry in &layout.entries {
            let Some(t) = present.get(entry.name) else {
                continue;
            };
            for (expr, &dim) in entry.shape.iter().zip(&t.shape) {
                let name = expr.source();
                if !bound.contains_key(name)
                    && spec
                        .param(name)
                        .is_some_and(|p| matches!(p.ty, ParamType::Int | ParamType::OptionalInt))
                {
                    bound.insert(name.to_string(), Literal::Int(dim as i64));
                }
            }
        }
        let free: Vec<&str> = spec
            .signature
            .iter()
            .filter(|p| p.ty == ParamType::Bool && !given.contains_key(&p.name))
            .map(|p| p.name.as_str())
            .take(16)
            .collect();
        let defaults = spec.defaults();
        // Fewest flips from the defaults first: a flag the tensors do not decide keeps its default.
        let mut combos: Vec<u32> = (0..1u32 << free.len()).collect();
        combos.sort_by_key(|c| c.count_ones());
        let mut best: Option<Vec<String>> = None;
        for combo in combos {
            let mut trial = bound.clone();
            for (i, name) in free.iter().enumerate() {
                let default = matches!(defaults.get(*name), Some(Literal::Bool(true)));
                trial.insert(
                    name.to_string(),
                    Literal::Bool(default ^ (combo >> i & 1 == 1)),
                );
            }
            let values = spec.resolve(&trial);
            let problems = self.problems(layout, present, &values)?;
            if problems.is_empty() {
                let broken: Vec<String> = spec
                    .signature
                    .iter()
                    .flat_map(|p| spec.check_param(p, &values))
                    .collect();
                if !broken.is_empty() {
                    return Err(self.error(broken.join("; ")));
                }
                return Ok(values);
            }
            if best.as_ref().is_none_or(|b| problems.len() < b.len()) {
                best = Some(problems);
            }
        }
        Err(self.error(format!(
            "its tensors fit no {}: {} (if this is not a {} layer, pass --keep {} to copy it \
             unchanged)",
            spec.op,
            best.unwrap_or_default().join("; "),
            spec.op,
            self.prefix
        )))
    }

    /// How the present tensors differ from what `values` calls for.
    fn problems(
        &self,
        layout: &Layout<'a>,
        present: &BTreeMap<&str, &RawTensor>,
        values: &Values,
    ) -> Result<Vec<String>, ConvertError> {
        let mut problems = Vec::new();
        for entry in &layout.entries {
            let exists = self.exists(entry, values)?;
            match (exists, present.get(entry.name)) {
                (true, None) => problems.push(format!("`{}` is missing", entry.name)),
                (false, Some(_)) => problems.push(format!("`{}` is not expected", entry.name)),
                (true, Some(t)) => {
                    let want = self.eval_dims(&entry.shape, values)?;
                    if t.shape != want {
                        problems.push(format!(
                            "`{}` has shape {:?}, expected {want:?} ({})",
                            entry.name,
                            t.shape,
                            entry
                                .shape
                                .iter()
                                .map(|e| e.source())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                }
                (false, None) => {}
            }
        }
        Ok(problems)
    }

    /// Reference tensors → the framework's native tensors.
    pub(super) fn native_from_reference(
        &self,
        fw: &'a Framework,
        present: &BTreeMap<&str, &RawTensor>,
        values: &Values,
    ) -> Result<Vec<(String, RawTensor)>, ConvertError> {
        let mut out = Vec::new();
        let mut used = BTreeSet::new();
        for m in &fw.weights {
            let Some(Source {
                tensor,
                chunk,
                shape,
            }) = self.source(&m.from, values)?
            else {
                continue;
            };
            let whole = present.get(tensor).ok_or_else(|| {
                self.error(format!("`{}` needs `{tensor}`, which is missing", m.native))
            })?;
            used.insert(tensor);
            let step_error =
                |e: String| self.error(format!("`{}` from `{}`: {e}", m.native, m.from));
            let mut t = match chunk {
                Some((i, of)) => whole.chunk(i, of).map_err(step_error)?,
                None => (*whole).clone(),
            }
            .reshape(&shape)
            .map_err(step_error)?;
            for step in &m.steps {
                t = match step {
                    Step::Transpose => t.transpose(),
                    Step::Reshape(dims) => t.reshape(&self.eval_dims(dims, values)?),
                }
                .map_err(step_error)?;
            }
            out.push((m.native.clone(), t));
        }
        if let Some(lost) = present.keys().find(|n| !used.contains(*n)) {
            return Err(self.error(format!(
                "the {} mapping has no place for `{lost}`: converting would drop it",
                fw.display_name
            )));
        }
        Ok(out)
    }

    /// The framework's native tensors → reference tensors (the steps undone in reverse).
    pub(super) fn reference_from_native(
        &self,
        fw: &'a Framework,
        present: &BTreeMap<&str, &RawTensor>,
        values: &Values,
    ) -> Result<Vec<(String, RawTensor)>, ConvertError> {
        // reference tensor -> parts (chunk index or None for the whole tensor)
        let mut parts: BTreeMap<&str, Vec<Part>> = BTreeMap::new();
        for m in &fw.weights {
            let Some(Source {
                tensor,
                chunk,
                shape,
            }) = self.source(&m.from, values)?
            else {
                continue;
            };
            let step_error = |e: String| self.error(format!("`{}` to `{}`: {e}", m.native, m.from));
            let mut shapes = vec![shape];
            for step in &m.steps {
                let next = match step {
                    Step::Transpose => shapes
                        .last()
                        .expect("a shape")
                        .iter()
                        .rev()
                        .copied()
                        .collect(),
                    Step::Reshape(dims) => self.eval_dims(dims, values)?,
                };
                shapes.push(next);
            }
            let native = present
                .get(m.native.as_str())
                .ok_or_else(|| self.error(format!("`{}` is missing", m.native)))?;
            let mut t = (*native).clone();
            for (i, step) in m.steps.iter().enumerate().rev() {
                t = match step {
                    Step::Transpose => t.transpose(),
                    Step::Reshape(_) => t.reshape(&shapes[i]),
                }
                .map_err(step_error)?;
            }
            parts.entry(tensor).or_default().push((chunk, t));
        }
        let mut out = Vec::new();
        for w in &self.spec.weights.tensors {
            if !self.eval_bool(w.when.as_ref(), values)? {
                continue;
            }
            let shape = self.eval_dims(&w.shape, values)?;
            let mut pieces = parts.remove(w.name.as_str()).unwrap_or_default();
            let joined = match pieces.iter().position(|(c, _)| c.is_none()) {
                Some(whole) => pieces.swap_remove(whole).1,
                None => {
                    pieces.sort_by_key(|(c, _)| c.map(|(i, _)| i));
                    let of = pieces.first().and_then(|(c, _)| *c).map(|(_, of)| of);
                    let complete = of.is_some_and(|of| {
                        pieces.len() == of
                            && pieces
                                .iter()
                                .enumerate()
                                .all(|(i, (c, _))| c.is_some_and(|(j, _)| j == i))
                    });
                    if !complete {
                        return Err(self.error(format!(
                            "the {} mapping does not give every part of `{}`",
                            fw.display_name, w.name
                        )));
                    }
                    let tensors: Vec<RawTensor> = pieces.into_iter().map(|(_, t)| t).collect();
                    RawTensor::concat(&tensors)
                        .map_err(|e| self.error(format!("`{}`: {e}", w.name)))?
                }
            };
            let t = joined
                .reshape(&shape)
                .map_err(|e| self.error(format!("`{}`: {e}", w.name)))?;
            out.push((w.name.clone(), t));
        }
        Ok(out)
    }

    /// `name=value` for every parameter the conversion read (shapes, conditions, steps).
    pub(super) fn shown(
        &self,
        values: &Values,
        layout: &Layout<'a>,
        fw: &Framework,
    ) -> Vec<String> {
        let mut read = BTreeSet::new();
        let mut exprs: Vec<&mha_spec::Expr> = Vec::new();
        for entry in &layout.entries {
            exprs.extend(&entry.shape);
            if let Exists::When(Some(when)) = entry.exists {
                exprs.push(when);
            }
        }
        let weights = &self.spec.weights;
        exprs.extend(
            weights
                .tensors
                .iter()
                .flat_map(|t| t.shape.iter().chain(&t.when)),
        );
        for l in &weights.logical {
            exprs.extend(&l.shape);
            exprs.extend(l.sources.iter().filter_map(|s| s.when.as_ref()));
        }
        for m in &fw.weights {
            for step in &m.steps {
                if let Step::Reshape(dims) = step {
                    exprs.extend(dims);
                }
            }
        }
        for e in exprs {
            read.extend(self.params_read(e));
        }
        self.spec
            .signature
            .iter()
            .filter(|p| read.contains(&p.name))
            .filter_map(|p| {
                let v = values.get(&p.name)?;
                Some(format!(
                    "{}={}",
                    p.name,
                    match v {
                        Literal::Bool(b) => b.to_string(),
                        Literal::Int(i) => i.to_string(),
                        Literal::Float(f) => format!("{f:?}"),
                        Literal::Null(()) => "null".into(),
                    }
                ))
            })
            .collect()
    }
}

//! The names a layer of the op has in a checkpoint, and the prefixes that hold them.

use std::collections::BTreeMap;

use mha_spec::{Framework, Spec, Step};

use super::{Checkpoint, Direction, RawTensor};

/// One name of the input layout: a reference tensor (`--to`) or a native weight (`--from`).
pub(super) struct Entry<'s> {
    /// The name under the layer's prefix.
    pub(super) name: &'s str,
    /// Its shape, one expression per dimension.
    pub(super) shape: Vec<mha_spec::Expr>,
    /// When it exists.
    pub(super) exists: Exists<'s>,
}

pub(super) enum Exists<'s> {
    /// A reference tensor's `when` (absent: always).
    When(Option<&'s mha_spec::Expr>),
    /// A native weight exists when the reference or logical tensor it comes from exists.
    Source(&'s str),
}

/// The names a layer of the op has in the input.
pub(super) struct Layout<'s> {
    pub(super) entries: Vec<Entry<'s>>,
}

impl<'s> Layout<'s> {
    pub(super) fn new(spec: &'s Spec, fw: &'s Framework, direction: Direction) -> Layout<'s> {
        let entries = match direction {
            Direction::To => spec
                .weights
                .tensors
                .iter()
                .map(|t| Entry {
                    name: &t.name,
                    shape: t.shape.clone(),
                    exists: Exists::When(t.when.as_ref()),
                })
                .collect(),
            Direction::From => fw
                .weights
                .iter()
                .map(|m| {
                    let mut shape = source_shape(spec, &m.from);
                    for step in &m.steps {
                        match step {
                            Step::Transpose => shape.reverse(),
                            Step::Reshape(dims) => shape = dims.clone(),
                        }
                    }
                    Entry {
                        name: &m.native,
                        shape,
                        exists: Exists::Source(&m.from),
                    }
                })
                .collect(),
        };
        Layout { entries }
    }
}

/// The declared shape of a logical or reference tensor.
pub(super) fn source_shape(spec: &Spec, name: &str) -> Vec<mha_spec::Expr> {
    spec.weights
        .logical
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.shape.clone())
        .or_else(|| {
            spec.weights
                .tensors
                .iter()
                .find(|t| t.name == name)
                .map(|t| t.shape.clone())
        })
        .unwrap_or_default()
}

/// Every prefix holding at least two of the layout's names (one name alone is too common: a
/// plain `out_proj.weight`), with the full names it holds, in file order.
pub(super) fn find_layers(
    input: &Checkpoint,
    layout: &Layout<'_>,
    keep: &[String],
) -> Vec<(String, Vec<String>)> {
    let mut layers: Vec<(String, Vec<String>)> = Vec::new();
    for (name, _) in &input.tensors {
        for entry in &layout.entries {
            let Some(prefix) = name.strip_suffix(entry.name) else {
                continue;
            };
            if !(prefix.is_empty() || prefix.ends_with('.')) || keep.iter().any(|k| k == prefix) {
                continue;
            }
            match layers.iter_mut().find(|(p, _)| p == prefix) {
                Some((_, names)) => names.push(name.clone()),
                None => layers.push((prefix.to_string(), vec![name.clone()])),
            }
            break;
        }
    }
    layers.retain(|(_, names)| names.len() >= 2);
    layers
}

/// A layer's tensors by their names under its prefix.
pub(super) fn present_under<'c>(
    input: &'c Checkpoint,
    prefix: &str,
    names: &'c [String],
) -> BTreeMap<&'c str, &'c RawTensor> {
    names
        .iter()
        .map(|n| {
            (
                &n[prefix.len()..],
                input.get(n).expect("a name of the file"),
            )
        })
        .collect()
}

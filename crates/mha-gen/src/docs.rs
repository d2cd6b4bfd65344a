//! The docs site around the op pages: what the glue does to each framework's weights (the
//! truthful strategy label of the details pages), and the site files rendered once for all ops.
//!
//! Templates under `docs_site/` decide the site: `docs_site/<name>.tera` → `docs/<name>`, rendered
//! once with `ops` (each op's `name` and `summary`) in the context; a plain `docs_site/<name>` is
//! copied to `docs/<name>` as it is (the Sphinx `conf.py`, the tab script and style under
//! `_static/`: no spec text reaches them).

use std::collections::BTreeSet;

use mha_spec::{Framework, Spec, Step};

/// What the glue does to move `fw`'s weights, read from its weight mapping: `Direct Mapping`
/// when every native tensor is a canonical one under its own name and shape, else the steps it
/// takes (`Repacks weights: split, renamed, transposed, reshaped`), after the plugin's name if it
/// has one.
///
/// The seed page's `strategy` label keeps the seed format's wording (its TensorFlow tab says
/// `Direct Mapping`); the details page shows this one beside it.
pub(crate) fn glue_strategy(spec: &Spec, fw: &Framework) -> String {
    if spec.kind == mha_spec::OpKind::Function {
        return call_strategy(fw);
    }
    let canonical = |name: &str| spec.weights.tensors.iter().find(|t| t.name == name);
    let mut done = BTreeSet::new();
    for w in &fw.weights {
        let source = canonical(&w.from);
        if source.is_none() {
            let chunked = spec
                .weights
                .logical
                .iter()
                .filter(|l| l.name == w.from)
                .flat_map(|l| &l.sources)
                .any(|s| s.chunk.is_some());
            done.insert(if chunked { 0 } else { 1 });
        }
        if w.native != w.from {
            done.insert(1);
        }
        for step in &w.steps {
            match step {
                Step::Transpose => {
                    done.insert(2);
                }
                // A reshape to the canonical tensor's own shape changes nothing.
                Step::Reshape(dims) => {
                    if source.is_none_or(|t| &t.shape != dims) {
                        done.insert(3);
                    }
                }
            }
        }
    }
    const WORDS: [&str; 4] = ["split", "renamed", "transposed", "reshaped"];
    let plugin = match &fw.strategy {
        mha_spec::Strategy::Direct => String::new(),
        mha_spec::Strategy::Plugin(name) => format!("Plugin ({name}), "),
    };
    if done.is_empty() {
        return format!("{plugin}Direct Mapping");
    }
    let steps: Vec<&str> = done.iter().map(|&i| WORDS[i]).collect();
    let repacks = format!("repacks weights: {}", steps.join(", "));
    match plugin.is_empty() {
        true => format!("R{}", &repacks[1..]),
        false => format!("{plugin}{repacks}"),
    }
}

/// What the glue does to a function's call on `fw`: `Direct Mapping` when every argument keeps
/// its name and every tensor its layout, else the tensors it permutes and the arguments it
/// renames or drops, after the plugin's name if it has one.
fn call_strategy(fw: &Framework) -> String {
    let mut done = Vec::new();
    if !fw.layouts.is_empty() {
        let tensors: Vec<&str> = fw.layouts.keys().map(String::as_str).collect();
        done.push(format!("permutes the axes of {}", tensors.join(", ")));
    }
    let renamed: Vec<String> = fw
        .args
        .iter()
        .filter_map(|a| match a {
            mha_spec::ArgMapping::Rename { native, from } if native != from => {
                Some(format!("{from} → {native}"))
            }
            _ => None,
        })
        .collect();
    if !renamed.is_empty() {
        done.push(format!("renames {}", renamed.join(", ")));
    }
    let dropped: Vec<&str> = fw
        .args
        .iter()
        .filter_map(|a| match a {
            mha_spec::ArgMapping::Dropped { param, .. } => Some(param.as_str()),
            _ => None,
        })
        .collect();
    if !dropped.is_empty() {
        done.push(format!("handles {} itself", dropped.join(", ")));
    }
    let plugin = match &fw.strategy {
        mha_spec::Strategy::Direct => String::new(),
        mha_spec::Strategy::Plugin(name) => format!("Plugin ({name}), "),
    };
    if done.is_empty() {
        return format!("{plugin}Direct Mapping");
    }
    let what = done.join("; ");
    if !plugin.is_empty() {
        return format!("{plugin}{what}");
    }
    let mut chars = what.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::glue_strategy;

    fn labels() -> Vec<(String, String, String)> {
        let spec = mha_spec::bundled().expect("bundled specs").remove(0);
        spec.frameworks
            .iter()
            .map(|(k, fw)| (k.clone(), fw.strategy.label(), glue_strategy(&spec, fw)))
            .collect()
    }

    fn label(key: &str) -> (String, String) {
        let (_, seed, glue) = labels().into_iter().find(|(k, ..)| k == key).expect(key);
        (seed, glue)
    }

    /// TensorFlow's seed label says `Direct Mapping`; its glue repacks weights as Keras's does.
    #[test]
    fn tensorflow_repacks_like_keras_whatever_the_seed_label_says() {
        let (seed, glue) = label("tensorflow");
        assert_eq!(seed, "Direct Mapping");
        assert_eq!(
            glue,
            "Repacks weights: split, renamed, transposed, reshaped"
        );
        let (_, keras) = label("keras");
        assert_eq!(
            keras,
            "Plugin (repack_attn_keras), repacks weights: split, renamed, transposed, reshaped"
        );
    }

    /// A reshape to the canonical shape (PyTorch's `bias_k`) is no repacking; MLX splits the
    /// packed projection and renames, without moving an axis.
    /// A function's label says which tensors the glue permutes and which arguments it renames.
    #[test]
    fn a_functions_label_names_its_permutations_and_renames() {
        let spec = mha_spec::bundled().expect("bundled specs").remove(1);
        let label = |key: &str| super::glue_strategy(&spec, &spec.frameworks[key]);
        assert_eq!(label("pytorch"), "Direct Mapping");
        assert_eq!(
            label("keras"),
            "Plugin (transpose_heads), permutes the axes of query, key, value, output; renames attn_mask → bias; handles dropout_p, enable_gqa itself"
        );
        assert_eq!(
            label("mlx"),
            "Renames query → q, key → k, value → v, attn_mask → mask; handles is_causal, dropout_p, enable_gqa itself"
        );
    }

    #[test]
    fn identity_reshapes_are_direct_and_splits_are_named() {
        assert_eq!(label("pytorch").1, "Direct Mapping");
        assert_eq!(label("mlx").1, "Repacks weights: split, renamed");
    }
}

//! The schema's function ops (`kind: function`: no constructor, no weights; tensors with named
//! dimensions and a per-framework layout) and `extends` between framework entries.

use mha_spec::{load_str, CallArgType, OpKind, SupportStatus};

const MHA: &str = include_str!("../../../specs/multihead_attention.yaml");
const SDPA: &str = include_str!("../../../specs/scaled_dot_product_attention.yaml");
const FILE: &str = "specs/scaled_dot_product_attention.yaml";

fn sdpa() -> mha_spec::Spec {
    load_str(FILE, SDPA).unwrap_or_else(|e| panic!("{e}"))
}

/// Every message of `base` with the first `find` replaced, one per line.
fn errors(base: &str, find: &str, replace: &str) -> String {
    assert!(base.contains(find), "test setup: `{find}`");
    match load_str(FILE, &base.replacen(find, replace, 1)) {
        Ok(_) => panic!("loaded"),
        Err(e) => e.to_string(),
    }
}

/// The line of `needle`'s first occurrence in `text`, from 1.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).expect(needle) + 1
}

#[test]
fn the_function_spec_states_the_call_its_dimensions_and_every_frameworks_support() {
    let spec = sdpa();
    assert_eq!(spec.kind, OpKind::Function);
    assert!(spec.signature.is_empty() && spec.weights.tensors.is_empty());
    let call: Vec<(&str, CallArgType)> = spec
        .call
        .args
        .iter()
        .map(|a| (a.name.as_str(), a.ty))
        .collect();
    assert_eq!(
        call,
        [
            ("query", CallArgType::Tensor),
            ("key", CallArgType::Tensor),
            ("value", CallArgType::Tensor),
            ("attn_mask", CallArgType::OptionalMask),
            ("dropout_p", CallArgType::Float),
            ("is_causal", CallArgType::Bool),
            ("scale", CallArgType::OptionalFloat),
            ("enable_gqa", CallArgType::Bool),
        ]
    );
    let keys: Vec<&str> = spec.frameworks.keys().map(String::as_str).collect();
    assert_eq!(keys, ["pytorch", "keras", "tensorflow", "mlx", "flax_nnx"]);
    let features = ["attn_mask", "is_causal", "scale", "enable_gqa", "dropout"];
    for (key, fw) in &spec.frameworks {
        let listed: Vec<&str> = fw.support.keys().map(String::as_str).collect();
        assert_eq!(listed, features, "{key}");
        // Random dropout is the one feature no framework but the reference reproduces.
        for (feature, support) in &fw.support {
            let unsupported = support.status == SupportStatus::Unsupported;
            assert_eq!(
                unsupported,
                feature == "dropout" && key != "pytorch",
                "{key}.{feature}"
            );
        }
    }
    // Keras and JAX put the heads after the length; torch and MLX before it.
    let keras = &spec.frameworks["keras"];
    assert_eq!(keras.layouts["query"], ["...", "L", "Hq", "E"]);
    assert!(spec.frameworks["mlx"].layouts.is_empty());
}

#[test]
fn an_extending_entry_is_its_base_with_its_own_fields_merged_over() {
    let spec = sdpa();
    let (keras, tf) = (&spec.frameworks["keras"], &spec.frameworks["tensorflow"]);
    assert_eq!(tf.extends.as_deref(), Some("keras"));
    assert_eq!(
        (tf.package.as_str(), tf.backend.as_deref()),
        ("tensorflow", Some("tensorflow"))
    );
    assert_eq!(tf.api, keras.api);
    assert_eq!(tf.args, keras.args);
    assert_eq!(tf.layouts, keras.layouts);

    // In the layer spec, one note of the support table changes; its status stays Keras's.
    let mha = load_str("specs/multihead_attention.yaml", MHA).unwrap_or_else(|e| panic!("{e}"));
    let (keras, tf) = (&mha.frameworks["keras"], &mha.frameworks["tensorflow"]);
    assert_eq!(tf.strategy, mha_spec::Strategy::Direct);
    assert_eq!(tf.weights.len(), keras.weights.len());
    assert_eq!(tf.support.len(), keras.support.len());
    let dropout = &tf.support["training_dropout"];
    assert_eq!(dropout.status, SupportStatus::Unsupported);
    assert!(
        dropout.note.contains("TensorFlow's random generator"),
        "{}",
        dropout.note
    );
    assert!(keras.support["training_dropout"].note.contains("Keras's"));
}

#[test]
fn errors_in_the_new_fields_name_file_line_column_and_field() {
    let shown = errors(
        SDPA,
        "shape: [\"...\", Hq, L, E]",
        "shape: [\"...\", Hq, L, F]",
    );
    let line = line_of(SDPA, "shape: [\"...\", Hq, L, E]");
    assert!(
        shown.contains(&format!(
            "{FILE}:{line}:29: call.args[0].shape[3]: unknown dimension `F`"
        )),
        "{shown}"
    );

    let shown = errors(
        SDPA,
        "value: [\"...\", S, Hkv, Ev]\n      output",
        "value: [\"...\", Hkv, Ev]\n      output",
    );
    let line = line_of(SDPA, "value: [\"...\", S, Hkv, Ev]");
    assert!(
        shown.starts_with(&format!("{FILE}:{line}:14: frameworks.keras.layouts.value: [..., Hkv, Ev] must order the dimensions of `value`'s shape [..., Hkv, S, Ev]")),
        "{shown}"
    );

    let shown = errors(MHA, "extends: keras", "extends: flax");
    let line = line_of(MHA, "extends: keras");
    assert_eq!(
        shown.lines().collect::<Vec<_>>(),
        [
            format!("{FILE}:{line}:14: frameworks.tensorflow.extends: unknown framework `flax`"),
            "1 error in spec".to_string()
        ],
        "a wrong base is one error, not one per field the entry meant to inherit"
    );
}

#[test]
fn a_function_has_no_constructor_weights_or_single_layout() {
    let shown = errors(
        SDPA,
        "    strategy: direct\n    package: mlx\n",
        "    strategy: direct\n    package: mlx\n    layout: batch_first\n    weights: [{native: w, from: w}]\n",
    );
    assert!(
        shown.contains("frameworks.mlx.layout: a function gives per-tensor `layouts`"),
        "{shown}"
    );
    assert!(
        shown.contains("frameworks.mlx.weights: a function has no weights"),
        "{shown}"
    );
    let shown = errors(SDPA, "kind: function\n", "");
    assert!(
        shown.contains("signature: a layer needs constructor parameters"),
        "{shown}"
    );
}

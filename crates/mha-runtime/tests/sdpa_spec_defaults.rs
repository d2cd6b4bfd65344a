//! `SdpaOptions`' defaults are the op spec's (specs/scaled_dot_product_attention.yaml): build.rs
//! generates the spec's call options type, and this test holds the hand-written options to it.
//! (`SdpaOptions` itself is not the generated type: it borrows the mask, whose type is the
//! runtime's, and carries the dropout seed, which the spec's call does not have.)

#[allow(dead_code)] // the builder methods: only the defaults are read here
mod spec {
    include!(concat!(
        env!("OUT_DIR"),
        "/rust/scaled_dot_product_attention_call.rs"
    ));
}
use spec::ScaledDotProductAttentionCallOptions;

#[test]
fn sdpa_options_default_to_the_specs_call_defaults() {
    let spec = ScaledDotProductAttentionCallOptions::default();
    let runtime = mha_runtime::SdpaOptions::default();
    assert_eq!(runtime.dropout_p, spec.dropout_p);
    assert_eq!(runtime.is_causal, spec.is_causal);
    assert_eq!(runtime.scale, spec.scale);
    assert_eq!(runtime.enable_gqa, spec.enable_gqa);
    assert!(
        runtime.attn_mask.is_none(),
        "the spec's attn_mask defaults to None"
    );
    assert_eq!(
        ScaledDotProductAttentionCallOptions::ARGUMENTS,
        [
            "query",
            "key",
            "value",
            "attn_mask",
            "dropout_p",
            "is_causal",
            "scale",
            "enable_gqa"
        ]
    );
}

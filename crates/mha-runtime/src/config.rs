// The op's config type and its weight layout, generated from specs/multihead_attention.yaml by
// build.rs (mha-gen).
include!(concat!(env!("OUT_DIR"), "/rust/multihead_attention.rs"));
include!(concat!(
    env!("OUT_DIR"),
    "/rust/multihead_attention_weights.rs"
));

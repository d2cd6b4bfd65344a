// The op's config type, generated from specs/multihead_attention.yaml by build.rs (mha-gen).
include!(concat!(env!("OUT_DIR"), "/rust/multihead_attention.rs"));

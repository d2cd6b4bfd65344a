//! Sizes the runtime cannot hold are errors, never a panic, an abort or a wrapped number
//! (issue 11's runtime cases, kept as regressions).

use mha_runtime::{ForwardOptions, MhaError, MultiheadAttention, MultiheadAttentionConfig};
use ndarray::{ArrayD, IxDyn};

fn too_large(result: Result<MultiheadAttention, MhaError>) -> String {
    match result {
        Err(e @ MhaError::TooLarge { .. }) => e.to_string(),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn weights_no_allocation_can_hold_are_refused() {
    // ndarray panicked on this ("Shape too large").
    let message = too_large(MultiheadAttention::random(
        MultiheadAttentionConfig::new(1 << 31, 1),
        0,
    ));
    assert!(
        message.contains("in_proj_weight") && message.contains("one allocation"),
        "{message}"
    );
}

#[test]
fn weights_past_the_machines_memory_are_refused_before_allocating() {
    // 3 * 2^40 * 4 bytes of in_proj_weight: 13 TB (1 << 16 aborted the process on 51 GB).
    let message = too_large(MultiheadAttention::random(
        MultiheadAttentionConfig::new(1 << 20, 1),
        0,
    ));
    assert!(message.contains("bytes"), "{message}");
}

#[test]
fn overflowing_shapes_fail_check() {
    for e in [usize::MAX, usize::MAX / 2, usize::MAX / 3 + 1] {
        let config = MultiheadAttentionConfig::new(e, 1);
        let err = config
            .check()
            .expect_err("an overflowing config must not check");
        assert!(
            matches!(err, MhaError::InvalidConfig(_) | MhaError::TooLarge { .. }),
            "{err}"
        );
        assert!(MultiheadAttention::random(config, 0).is_err());
    }
    let err = MultiheadAttentionConfig::new(usize::MAX, 1)
        .check()
        .unwrap_err();
    assert!(err.to_string().contains("weight shape overflows"), "{err}");
}

#[test]
fn a_broadcast_input_too_large_to_compute_is_refused() {
    let layer = MultiheadAttention::random(MultiheadAttentionConfig::new(8, 2), 0).unwrap();
    let small = ArrayD::<f32>::zeros(IxDyn(&[1, 1, 8]));
    let huge = small.broadcast(IxDyn(&[65536, 65536, 8])).unwrap();
    let err = layer
        .forward(huge.clone(), huge.clone(), huge, &ForwardOptions::default())
        .unwrap_err();
    assert!(matches!(err, MhaError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("N = 65536"), "{err}");
}

#[test]
fn a_source_length_at_the_limit_does_not_overflow() {
    let config = MultiheadAttentionConfig::new(2, 1)
        .with_add_bias_kv(true)
        .with_add_zero_attn(true);
    let layer = MultiheadAttention::random(config, 0).unwrap();
    let q = ArrayD::<f32>::zeros(IxDyn(&[1, 0, 2]));
    let kv = ArrayD::<f32>::zeros(IxDyn(&[0, 0, 2]));
    let kv = kv.broadcast(IxDyn(&[usize::MAX, 0, 2]));
    if let Some(kv) = kv {
        let _ = layer.forward(q.view(), kv.clone(), kv, &ForwardOptions::default());
    }
}

/// A safetensors file whose header claims tensors far larger than its data.
fn crafted(header: &str) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0u8; 16]);
    bytes
}

#[test]
fn safetensors_headers_claiming_huge_tensors_are_errors() {
    let config = MultiheadAttentionConfig::new(4, 2);
    for header in [
        r#"{"in_proj_weight":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}}"#,
        r#"{"in_proj_weight":{"dtype":"F32","shape":[18446744073709551615,2],"data_offsets":[0,16]}}"#,
        r#"{"in_proj_weight":{"dtype":"F32","shape":[12,4],"data_offsets":[0,18446744073709551615]}}"#,
        r#"{"in_proj_weight":{"dtype":"BF16","shape":[0,18446744073709551615],"data_offsets":[0,0]}}"#,
        r#"{"__metadata__":{"x":"y"},"in_proj_weight":{"dtype":"F32","shape":[12,4],"data_offsets":[16,0]}}"#,
    ] {
        assert!(
            MultiheadAttention::from_safetensors_bytes(config.clone(), &crafted(header), "")
                .is_err(),
            "{header}"
        );
    }
    let mut lying_length = crafted("{}");
    lying_length[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(MultiheadAttention::from_safetensors_bytes(config, &lying_length, "").is_err());
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Small, or one dimension far past any machine's memory (2^34 rows of 8 floats).
    fn dim() -> impl Strategy<Value = usize> {
        prop_oneof![1usize..3, Just(1usize << 34)]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn broadcast_inputs_of_any_size_never_panic(
            (l, n, s) in (dim(), dim(), dim()),
            need_weights in any::<bool>(),
            extras in any::<bool>(),
        ) {
            let config = MultiheadAttentionConfig::new(8, 2).with_add_bias_kv(extras).with_add_zero_attn(extras);
            let layer = MultiheadAttention::random(config, 0).unwrap();
            let base = ArrayD::<f32>::zeros(IxDyn(&[1, 1, 8]));
            let (Some(q), Some(kv)) = (base.broadcast(IxDyn(&[l, n, 8])), base.broadcast(IxDyn(&[s, n, 8]))) else {
                return Ok(());
            };
            let options = ForwardOptions::default().with_need_weights(need_weights);
            match layer.forward(q, kv.clone(), kv, &options) {
                Ok(out) => prop_assert_eq!(out.output.shape(), &[l, n, 8][..]),
                Err(e) => prop_assert!(matches!(e, MhaError::TooLarge { .. }), "{}", e),
            }
        }
    }
}

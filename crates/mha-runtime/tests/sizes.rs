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

//! Fuzz-style properties: corrupt or truncated safetensors bytes and arbitrary input shapes give
//! `Ok` or an `Err`, never a panic.

use mha_runtime::{ForwardOptions, Mask, MultiheadAttention, MultiheadAttentionConfig};
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;

fn valid_file() -> (MultiheadAttentionConfig, Vec<u8>) {
    let config = MultiheadAttentionConfig::new(4, 2).with_add_bias_kv(true);
    let bytes = MultiheadAttention::random(config.clone(), 1)
        .unwrap()
        .to_safetensors_bytes()
        .unwrap();
    (config, bytes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn truncated_safetensors_is_an_error(cut in 0usize..1000) {
        let (config, bytes) = valid_file();
        let cut = cut % bytes.len();
        prop_assert!(MultiheadAttention::from_safetensors_bytes(config, &bytes[..cut], "").is_err());
    }

    #[test]
    fn corrupted_safetensors_never_panics(edits in prop::collection::vec((0usize..1000, any::<u8>()), 1..6)) {
        let (config, mut bytes) = valid_file();
        let len = bytes.len();
        for (at, value) in edits {
            bytes[at % len] = value;
        }
        let _ = MultiheadAttention::from_safetensors_bytes(config, &bytes, "");
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let (config, _) = valid_file();
        let _ = MultiheadAttention::from_safetensors_bytes(config, &bytes, "");
    }

    #[test]
    fn arbitrary_shapes_never_panic(
        q in prop::collection::vec(0usize..4, 0..5),
        k in prop::collection::vec(0usize..4, 0..5),
        v in prop::collection::vec(0usize..4, 0..5),
        kpm in prop::option::of(prop::collection::vec(0usize..4, 0..4)),
        am in prop::option::of(prop::collection::vec(0usize..5, 0..5)),
        flags in any::<(bool, bool, bool, bool, bool)>(),
    ) {
        let (batch_first, need_weights, average, is_causal, extras) = flags;
        let config = MultiheadAttentionConfig::new(2, 2)
            .with_batch_first(batch_first)
            .with_add_bias_kv(extras)
            .with_add_zero_attn(extras);
        let layer = MultiheadAttention::random(config, 0).unwrap();
        let (q, k, v) = (ArrayD::<f32>::zeros(IxDyn(&q)), ArrayD::<f32>::zeros(IxDyn(&k)), ArrayD::<f32>::zeros(IxDyn(&v)));
        let kpm = kpm.map(|s| ArrayD::from_elem(IxDyn(&s), true));
        let am = am.map(|s| ArrayD::<f32>::zeros(IxDyn(&s)));
        let mut options = ForwardOptions::default()
            .with_need_weights(need_weights)
            .with_average_attn_weights(average)
            .with_is_causal(is_causal);
        options.key_padding_mask = kpm.as_ref().map(|m| Mask::Bool(m.view()));
        options.attn_mask = am.as_ref().map(|m| Mask::Float(m.view()));
        let _ = layer.forward(q.view(), k.view(), v.view(), &options);
    }

    #[test]
    fn well_shaped_inputs_always_succeed(n in 1usize..3, l in 1usize..4, s in 1usize..4, batch_first in any::<bool>()) {
        let config = MultiheadAttentionConfig::new(4, 2).with_batch_first(batch_first).with_kdim(Some(3));
        let layer = MultiheadAttention::random(config, 0).unwrap();
        let (qs, ks, vs) = if batch_first { ([n, l, 4], [n, s, 3], [n, s, 4]) } else { ([l, n, 4], [s, n, 3], [s, n, 4]) };
        let (q, k, v) = (ArrayD::<f32>::ones(IxDyn(&qs)), ArrayD::<f32>::ones(IxDyn(&ks)), ArrayD::<f32>::ones(IxDyn(&vs)));
        let out = layer.forward(q.view(), k.view(), v.view(), &ForwardOptions::default());
        prop_assert!(out.is_ok());
        let out = out.unwrap();
        prop_assert_eq!(out.output.shape(), &qs[..]);
        let weights = out.weights.unwrap();
        prop_assert_eq!(weights.shape(), &[n, l, s][..]);
    }
}

//! Training-mode dropout as real torch applies it (tests/fixtures/torch_dropout, made by
//! scripts/make_torch_fixtures.py). torch's random draws cannot be reproduced, so this pins the
//! semantics the layer implements: post-softmax probabilities are zeroed or scaled by
//! `1 / (1 - p)`, the returned weights are the dropped ones, and the output is computed from them.

use std::path::Path;

use mha_parity::{compare, Tolerance};
use mha_runtime::{Dropout, ForwardOptions, MultiheadAttention, MultiheadAttentionConfig};
use ndarray::{s, Array2, ArrayD, Axis, Ix2, IxDyn};
use safetensors::SafeTensors;

fn load() -> Vec<(String, ArrayD<f32>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/torch_dropout/dropout_train.safetensors");
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, t)| {
            let values: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (
                name,
                ArrayD::from_shape_vec(IxDyn(t.shape()), values).unwrap(),
            )
        })
        .collect()
}

fn get(tensors: &[(String, ArrayD<f32>)], name: &str) -> ArrayD<f32> {
    tensors.iter().find(|(n, _)| n == name).unwrap().1.clone()
}

const P: f32 = 0.3;

#[test]
fn torch_drops_post_softmax_probabilities_and_returns_them() {
    let tensors = load();
    let params: Vec<(String, ArrayD<f32>)> = [
        "in_proj_weight",
        "in_proj_bias",
        "out_proj.weight",
        "out_proj.bias",
    ]
    .iter()
    .map(|n| (n.to_string(), get(&tensors, n)))
    .collect();
    let config = MultiheadAttentionConfig::new(16, 4)
        .with_dropout(f64::from(P))
        .with_batch_first(true);
    let layer = MultiheadAttention::from_tensors(config, params).unwrap();
    let x = get(&tensors, "query");
    let per_head = ForwardOptions::default().with_average_attn_weights(false);
    let tol = Tolerance::default();

    // Eval mode: our weights are torch's.
    let eval = layer
        .forward(x.view(), x.view(), x.view(), &per_head)
        .unwrap()
        .weights
        .unwrap();
    assert!(
        compare(eval.view(), get(&tensors, "attn_weights_eval").view(), tol)
            .unwrap()
            .passed()
    );

    // torch in training mode: every probability is 0 or eval / (1 - p).
    let torch_train = get(&tensors, "attn_weights_train");
    let mut dropped = 0;
    for (t, e) in torch_train.iter().zip(eval.iter()) {
        if *t == 0.0 {
            dropped += 1;
        } else {
            assert!(
                (t - e / (1.0 - P)).abs() <= 1e-5 + 1e-4 * t.abs(),
                "{t} vs {e}"
            );
        }
    }
    assert!(
        (20..100).contains(&dropped),
        "{dropped} of {} dropped",
        torch_train.len()
    );

    // torch's training output is computed from the dropped weights: out_proj(concat_h(W_h V_h)).
    let w_in = get(&tensors, "in_proj_weight")
        .into_dimensionality::<Ix2>()
        .unwrap();
    let b_in = get(&tensors, "in_proj_bias");
    let w_out = get(&tensors, "out_proj.weight")
        .into_dimensionality::<Ix2>()
        .unwrap();
    let b_out = get(&tensors, "out_proj.bias");
    let want = get(&tensors, "attn_output_train");
    let torch_train4 = torch_train
        .clone()
        .into_dimensionality::<ndarray::Ix4>()
        .unwrap();
    for n in 0..2 {
        let xn = x
            .index_axis(Axis(0), n)
            .into_dimensionality::<Ix2>()
            .unwrap();
        let v: Array2<f32> = xn.dot(&w_in.slice(s![32..48, ..]).t()) + b_in.slice(s![32..48]);
        let mut heads = Array2::<f32>::zeros((5, 16));
        for h in 0..4 {
            let w: ndarray::ArrayView2<'_, f32> = torch_train4.slice(s![n, h, .., ..]);
            let vh: ndarray::ArrayView2<'_, f32> = v.slice(s![.., h * 4..(h + 1) * 4]);
            let head: Array2<f32> = w.dot(&vh);
            heads.slice_mut(s![.., h * 4..(h + 1) * 4]).assign(&head);
        }
        let out = heads.dot(&w_out.t()) + &b_out;
        let c = compare(out.into_dyn().view(), want.index_axis(Axis(0), n), tol).unwrap();
        assert!(c.passed(), "{c:?}");
    }

    // The layer in training mode has the same structure (with its own draws).
    let train = per_head.with_training(Some(Dropout { seed: 5 }));
    let ours = layer
        .forward(x.view(), x.view(), x.view(), &train)
        .unwrap()
        .weights
        .unwrap();
    for (t, e) in ours.iter().zip(eval.iter()) {
        assert!(*t == 0.0 || (t - e / (1.0 - P)).abs() <= 1e-5 + 1e-4 * t.abs());
    }
}

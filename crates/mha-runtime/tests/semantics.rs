//! Behaviours the torch fixtures cannot pin (training-mode dropout, seeded init) and identities
//! torch's semantics imply, checked on the public API.

use mha_runtime::dropout_keep_mask;
use mha_runtime::{
    generate_square_subsequent_mask, AttentionLayer, Dropout, ForwardOptions, Mask,
    MultiheadAttention, MultiheadAttentionConfig,
};
use ndarray::{Array, ArrayD, Axis, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn randn(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array::from_shape_simple_fn(IxDyn(shape), || rng.random::<f32>() * 2.0 - 1.0)
}

/// A layer with non-zero biases (torch's init zeroes them, which would hide bias bugs).
fn layer(config: MultiheadAttentionConfig, seed: u64) -> MultiheadAttention {
    let mut tensors = Vec::new();
    for (i, w) in config.weight_shapes().into_iter().enumerate() {
        tensors.push((w.name.to_string(), randn(&w.shape, seed * 100 + i as u64)));
    }
    MultiheadAttention::from_tensors(config, tensors).unwrap()
}

#[test]
fn dropout_zeroes_and_rescales_the_probabilities() {
    let config = MultiheadAttentionConfig::new(8, 2)
        .with_dropout(0.25)
        .with_batch_first(true);
    let l = layer(config, 1);
    let (q, k) = (randn(&[2, 6, 8], 2), randn(&[2, 9, 8], 3));
    let per_head = ForwardOptions::default().with_average_attn_weights(false);
    let eval = l.forward(q.view(), k.view(), k.view(), &per_head).unwrap();
    let train_opts = per_head.clone().with_training(Some(Dropout { seed: 11 }));
    let train = l
        .forward(q.view(), k.view(), k.view(), &train_opts)
        .unwrap();
    let (we, wt) = (eval.weights.unwrap(), train.weights.unwrap());
    let scale = 1.0f32 / (1.0 - 0.25);
    let mut dropped = 0;
    for b in 0..2 {
        for h in 0..2 {
            let keep = dropout_keep_mask(0.25, 11, b, h, 2, 6, 9);
            for ((i, j), &kept) in keep.indexed_iter() {
                let want = if kept { we[[b, h, i, j]] * scale } else { 0.0 };
                assert_eq!(wt[[b, h, i, j]], want);
                dropped += usize::from(!kept);
            }
        }
    }
    // 216 draws at p = 0.25: the count of dropped entries is far from 0 and from all.
    assert!((25..90).contains(&dropped), "{dropped} dropped");
    assert_ne!(train.output, eval.output);
    // Same seed, same result; another seed, another one.
    assert_eq!(
        l.forward(q.view(), k.view(), k.view(), &train_opts)
            .unwrap()
            .output,
        train.output
    );
    let other = per_head.with_training(Some(Dropout { seed: 12 }));
    assert_ne!(
        l.forward(q.view(), k.view(), k.view(), &other)
            .unwrap()
            .output,
        train.output
    );
}

#[test]
fn training_without_dropout_probability_equals_eval() {
    let l = layer(MultiheadAttentionConfig::new(8, 4), 2);
    let x = randn(&[5, 3, 8], 4);
    let eval = l
        .forward(x.view(), x.view(), x.view(), &ForwardOptions::default())
        .unwrap();
    let train = ForwardOptions::default().with_training(Some(Dropout { seed: 1 }));
    assert_eq!(
        l.forward(x.view(), x.view(), x.view(), &train).unwrap(),
        eval
    );
}

#[test]
fn is_causal_hint_follows_torch() {
    let l = layer(MultiheadAttentionConfig::new(8, 2), 3);
    let x = randn(&[5, 2, 8], 5);
    let causal = generate_square_subsequent_mask(5).into_dyn();
    let zeros = ArrayD::<f32>::zeros(IxDyn(&[5, 5]));
    let run = |o: &ForwardOptions<'_>| l.forward(x.view(), x.view(), x.view(), o).unwrap().output;
    let with_causal_mask = run(&ForwardOptions::default()
        .with_attn_mask(Mask::Float(causal.view()))
        .with_need_weights(false));
    let no_mask = run(&ForwardOptions::default().with_need_weights(false));
    // need_weights=False and no key_padding_mask: torch drops attn_mask and applies the causal hint.
    let hint = ForwardOptions::default()
        .with_attn_mask(Mask::Float(zeros.view()))
        .with_is_causal(true)
        .with_need_weights(false);
    assert_eq!(run(&hint), with_causal_mask);
    // need_weights=True: torch uses attn_mask as given.
    let hint_weights = ForwardOptions::default()
        .with_attn_mask(Mask::Float(zeros.view()))
        .with_is_causal(true);
    assert_eq!(run(&hint_weights), run(&ForwardOptions::default()));
    assert_ne!(no_mask, with_causal_mask);
}

#[test]
fn batch_first_and_unbatched_are_transposes_of_sequence_first() {
    let config = MultiheadAttentionConfig::new(12, 3)
        .with_kdim(Some(5))
        .with_vdim(Some(7))
        .with_add_bias_kv(true);
    let seq = layer(config.clone(), 4);
    let bf = MultiheadAttention::new(config.with_batch_first(true), seq.weights().clone()).unwrap();
    let (q, k, v) = (
        randn(&[4, 3, 12], 6),
        randn(&[6, 3, 5], 7),
        randn(&[6, 3, 7], 8),
    );
    let o = ForwardOptions::default().with_average_attn_weights(false);
    let a = seq.forward(q.view(), k.view(), v.view(), &o).unwrap();
    fn t(x: &ArrayD<f32>) -> ndarray::ArrayViewD<'_, f32> {
        x.view().permuted_axes(IxDyn(&[1, 0, 2]))
    }
    let b = bf.forward(t(&q), t(&k), t(&v), &o).unwrap();
    assert_eq!(b.output.view().permuted_axes(IxDyn(&[1, 0, 2])), a.output);
    assert_eq!(b.weights, a.weights);
    // unbatched (L, E) equals batch element 1 of the batched call, whatever batch_first is
    let pick = |x: &ArrayD<f32>| x.index_axis(Axis(1), 1).to_owned();
    let u = bf
        .forward(pick(&q).view(), pick(&k).view(), pick(&v).view(), &o)
        .unwrap();
    assert_eq!(u.output, a.output.index_axis(Axis(1), 1));
    assert_eq!(
        u.weights.unwrap(),
        a.weights.unwrap().index_axis(Axis(0), 1)
    );
}

#[test]
fn fully_masked_rows_as_torchs_composite_path() {
    let l = layer(
        MultiheadAttentionConfig::new(8, 2).with_batch_first(true),
        5,
    );
    let x = randn(&[2, 4, 8], 9);
    let mut kpm = ArrayD::from_elem(IxDyn(&[2, 4]), false);
    kpm.index_axis_mut(Axis(0), 1).fill(true);
    let o = ForwardOptions::default().with_key_padding_mask(Mask::Bool(kpm.view()));
    let with = l.forward(x.view(), x.view(), x.view(), &o).unwrap();
    assert!(with
        .output
        .index_axis(Axis(0), 1)
        .iter()
        .all(|v| v.is_nan()));
    assert!(with
        .output
        .index_axis(Axis(0), 0)
        .iter()
        .all(|v| v.is_finite()));
    assert!(with
        .weights
        .unwrap()
        .index_axis(Axis(0), 1)
        .iter()
        .all(|v| v.is_nan()));
    let without = l
        .forward(x.view(), x.view(), x.view(), &o.with_need_weights(false))
        .unwrap();
    let bias = l.weights().out_proj_bias.clone().unwrap();
    for row in without.output.index_axis(Axis(0), 1).rows() {
        assert_eq!(row, bias);
    }
}

#[test]
fn large_logits_do_not_overflow() {
    let l = layer(MultiheadAttentionConfig::new(8, 2), 6);
    let x = randn(&[5, 2, 8], 10).mapv(|v| v * 1e4);
    let out = l
        .forward(x.view(), x.view(), x.view(), &ForwardOptions::default())
        .unwrap();
    assert!(out.output.iter().all(|v| v.is_finite()));
    let w = out.weights.unwrap();
    for row in w.rows() {
        assert!((row.sum() - 1.0).abs() < 1e-5);
    }
}

#[test]
fn strided_views_and_trait_objects_work() {
    let l = layer(MultiheadAttentionConfig::new(8, 2), 7);
    let x = randn(&[8, 5], 11); // (E, L), viewed transposed as (L, E)
    let dynamic: &dyn AttentionLayer = &l;
    let a = dynamic
        .forward(x.t(), x.t(), x.t(), &ForwardOptions::default())
        .unwrap();
    let owned = x.t().to_owned();
    let b = l
        .forward(
            owned.view(),
            owned.view(),
            owned.view(),
            &ForwardOptions::default(),
        )
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(dynamic.config().embed_dim, 8);
}

#[test]
fn random_init_follows_torchs_scheme() {
    let e = 16;
    let config = MultiheadAttentionConfig::new(e, 4).with_add_bias_kv(true);
    let l = MultiheadAttention::random(config.clone(), 9).unwrap();
    let w = l.weights();
    let in_proj = match &w.in_proj {
        mha_runtime::InProjection::Packed(w) => w,
        other => panic!("expected packed in_proj, got {other:?}"),
    };
    let xavier = (6.0f32 / (3 * e + e) as f32).sqrt();
    assert!(in_proj.iter().all(|v| v.abs() <= xavier));
    assert!(in_proj.iter().any(|v| v.abs() > xavier * 0.9));
    let linear = 1.0 / (e as f32).sqrt();
    assert!(w.out_proj_weight.iter().all(|v| v.abs() <= linear));
    assert!(w.in_proj_bias.as_ref().unwrap().iter().all(|&v| v == 0.0));
    assert!(w.out_proj_bias.as_ref().unwrap().iter().all(|&v| v == 0.0));
    let bk = w.bias_k.as_ref().unwrap();
    let std = (bk.iter().map(|v| v * v).sum::<f32>() / e as f32).sqrt();
    assert!(
        (0.1..0.5).contains(&std),
        "bias_k std {std}, xavier_normal gives 0.25"
    );
    assert_ne!(MultiheadAttention::random(config, 10).unwrap(), l);
}

#[test]
fn safetensors_prefix_reads_one_layer_of_a_checkpoint() {
    let config = MultiheadAttentionConfig::new(8, 2).with_vdim(Some(3));
    let l = layer(config.clone(), 8);
    let mut named: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let prefix = "encoder.layers.0.self_attn.";
    let own = l.to_safetensors_bytes().unwrap();
    let st = safetensors::SafeTensors::deserialize(&own).unwrap();
    for (n, v) in st.tensors() {
        named.push((
            format!("{prefix}{n}"),
            v.shape().to_vec(),
            v.data().to_vec(),
        ));
    }
    named.push((
        "encoder.layers.0.linear1.weight".into(),
        vec![2],
        vec![0; 8],
    ));
    named.push((
        "encoder.layers.1.self_attn.in_proj_weight".into(),
        vec![2],
        vec![0; 8],
    ));
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = named
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                    .unwrap(),
            )
        })
        .collect();
    let path = std::env::temp_dir().join(format!("mha_prefix_{}.safetensors", std::process::id()));
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    assert_eq!(
        MultiheadAttention::from_safetensors(config.clone(), &path, prefix).unwrap(),
        l
    );
    let err = MultiheadAttention::from_safetensors(config, &path, "")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("unexpected weight `encoder.layers.0.linear1.weight`"),
        "{err}"
    );
    std::fs::remove_file(&path).ok();
}

#[test]
fn empty_batch_and_empty_target_keep_their_shapes() {
    let l = layer(
        MultiheadAttentionConfig::new(8, 2).with_add_zero_attn(true),
        9,
    );
    let (q, kv) = (
        ArrayD::<f32>::zeros(IxDyn(&[3, 0, 8])),
        ArrayD::<f32>::zeros(IxDyn(&[4, 0, 8])),
    );
    let out = l
        .forward(q.view(), kv.view(), kv.view(), &ForwardOptions::default())
        .unwrap();
    assert_eq!(out.output.shape(), &[3, 0, 8]);
    assert_eq!(out.weights.unwrap().shape(), &[0, 3, 5]);
    let (q, kv) = (
        ArrayD::<f32>::zeros(IxDyn(&[0, 8])),
        ArrayD::<f32>::zeros(IxDyn(&[4, 8])),
    );
    let per_head = ForwardOptions::default().with_average_attn_weights(false);
    let out = l
        .forward(q.view(), kv.view(), kv.view(), &per_head)
        .unwrap();
    assert_eq!(out.output.shape(), &[0, 8]);
    assert_eq!(out.weights.unwrap().shape(), &[2, 0, 5]);
}

/// Same values and NaN positions (NaN == NaN).
fn same(a: &ArrayD<f32>, b: &ArrayD<f32>) -> bool {
    a.shape() == b.shape()
        && a.iter()
            .zip(b.iter())
            .all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
}

fn mask_options<'a>(
    attn_mask: Mask<'a>,
    key_padding_mask: Option<Mask<'a>>,
    need_weights: bool,
) -> ForwardOptions<'a> {
    ForwardOptions {
        attn_mask: Some(attn_mask),
        key_padding_mask,
        need_weights,
        ..ForwardOptions::default()
    }
}

/// Strided mask views (transposed, reversed, stepped, broadcast; 2-D and 3-D; bool and float;
/// with and without weights) are accepted, as torch accepts them, and give the numbers of the
/// same call on a contiguous copy (which torch gives too).
#[test]
fn strided_masks_give_the_numbers_of_their_contiguous_copies() {
    let (n, h, l, s) = (2, 2, 5, 7);
    let l_ = layer(MultiheadAttentionConfig::new(8, h), 21);
    let (q, k) = (randn(&[l, n, 8], 22), randn(&[s, n, 8], 23));
    let floats = randn(&[s, l], 24).mapv(|x| if x > 0.6 { f32::NEG_INFINITY } else { x });
    let bools = floats.mapv(|x| x == f32::NEG_INFINITY);
    let floats_3d = randn(&[n * h, s, l], 25);
    let bools_3d = floats_3d.mapv(|x| x > 0.5);
    let wide = randn(&[l, 2 * s], 26);
    let row = randn(&[1, s], 27);
    let kpm_t = randn(&[s, n], 28).mapv(|x| x > 0.7);

    // (name, view) pairs of float and bool attn_mask views, all of shape (L, S) or (N·H, L, S).
    let float_views: Vec<(&str, ndarray::ArrayViewD<'_, f32>)> = vec![
        ("transposed", floats.t().into_dyn()),
        (
            "reversed",
            floats.t().slice_move(ndarray::s![..;-1, ..]).into_dyn(),
        ),
        ("stepped", wide.slice(ndarray::s![.., ..;2]).into_dyn()),
        ("broadcast", row.broadcast((l, s)).unwrap().into_dyn()),
        (
            "3-D permuted",
            floats_3d.view().permuted_axes(vec![0, 2, 1]),
        ),
    ];
    let bool_views: Vec<(&str, ndarray::ArrayViewD<'_, bool>)> = vec![
        ("transposed", bools.t().into_dyn()),
        (
            "reversed",
            bools.t().slice_move(ndarray::s![..;-1, ..]).into_dyn(),
        ),
        ("3-D permuted", bools_3d.view().permuted_axes(vec![0, 2, 1])),
    ];
    let masks: Vec<(String, Mask<'_>)> = float_views
        .iter()
        .map(|(name, v)| (format!("float {name}"), Mask::Float(v.clone())))
        .chain(
            bool_views
                .iter()
                .map(|(name, v)| (format!("bool {name}"), Mask::Bool(v.clone()))),
        )
        .collect();
    let kpm_view = kpm_t.t().into_dyn();
    let copies: Vec<(ArrayD<f32>, ArrayD<bool>)> = masks
        .iter()
        .map(|(_, mask)| match mask {
            Mask::Float(v) => (
                v.as_standard_layout().into_owned(),
                ArrayD::default(IxDyn(&[0])),
            ),
            Mask::Bool(v) => (
                ArrayD::zeros(IxDyn(&[0])),
                v.as_standard_layout().into_owned(),
            ),
        })
        .collect();
    for ((name, mask), (copy_f, copy_b)) in masks.iter().zip(&copies) {
        let contiguous = match mask {
            Mask::Float(_) => Mask::Float(copy_f.view()),
            Mask::Bool(_) => Mask::Bool(copy_b.view()),
        };
        for need_weights in [true, false] {
            for with_kpm in [false, true] {
                let kpm = with_kpm.then(|| Mask::Bool(kpm_view.clone()));
                let strided = mask_options(mask.clone(), kpm.clone(), need_weights);
                let copied = mask_options(contiguous.clone(), kpm, need_weights);
                let what = format!("{name} need_weights={need_weights} kpm={with_kpm}");
                let got = l_.forward(q.view(), k.view(), k.view(), &strided);
                let got = got.unwrap_or_else(|e| panic!("{what}: {e}"));
                let want = l_.forward(q.view(), k.view(), k.view(), &copied).unwrap();
                assert!(same(&got.output, &want.output), "{what}: output");
                assert_eq!(got.weights.is_some(), need_weights);
                if let (Some(g), Some(w)) = (&got.weights, &want.weights) {
                    assert!(same(g, w), "{what}: weights");
                }
                let reference = l_
                    .forward_reference(q.view(), k.view(), k.view(), &strided)
                    .unwrap();
                assert!(
                    same(
                        &reference.output,
                        &l_.forward_reference(q.view(), k.view(), k.view(), &copied)
                            .unwrap()
                            .output
                    ),
                    "{what}: reference"
                );
            }
        }
    }
}

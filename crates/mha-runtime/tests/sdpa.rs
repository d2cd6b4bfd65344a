//! `scaled_dot_product_attention`: torch's committed cases, torch's refusals, broadcasting,
//! grouped-query attention and dropout, and a property test against a direct f64 evaluation on
//! explicitly expanded inputs.

use std::path::Path;

use mha_parity::{sdpa, DispatchPath, Tolerance};
use mha_runtime::fast::Isa;
use mha_runtime::{
    scaled_dot_product_attention as sdpa_op, scaled_dot_product_attention_reference,
    scaled_dot_product_attention_with_isa, MhaError, SdpaMask, SdpaOptions,
};
use ndarray::{Array, ArrayD, Axis, IxDyn};
use proptest::prelude::*;

mod common;
use common::pool;

fn random(shape: &[usize], seed: u64) -> ArrayD<f32> {
    // A small LCG: deterministic values in [-2, 2).
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    Array::from_shape_simple_fn(IxDyn(shape), || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
    })
}

fn err(q: &ArrayD<f32>, k: &ArrayD<f32>, v: &ArrayD<f32>, options: &SdpaOptions<'_>) -> String {
    sdpa_op(q.view(), k.view(), v.view(), options)
        .unwrap_err()
        .to_string()
}

#[test]
fn every_committed_sdpa_case_matches_torch() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/sdpa");
    let index = sdpa::load_index(&dir).unwrap();
    assert!(index.cases.len() >= 60);
    let paths = [
        DispatchPath::Reference,
        DispatchPath::Fast(mha_runtime::fast::selected_isa()),
    ];
    let failed: Vec<String> = index
        .cases
        .iter()
        .map(|case| sdpa::run_case(&dir, case, Tolerance::default(), &paths))
        .filter(|r| !r.passed())
        .map(|r| format!("{}: {}", r.name, r.failures.join("; ")))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn torch_refusals_are_clear_errors() {
    let q = random(&[2, 4, 3, 8], 1);
    let k = random(&[2, 4, 5, 8], 2);
    let none = SdpaOptions::default();

    let one_d = random(&[8], 3);
    assert_eq!(
        err(&one_d, &k, &k, &none),
        "`query` must be at least 2-D (..., L, E), but got a 1-D tensor"
    );
    assert_eq!(
        err(&q, &random(&[2, 4, 5, 7], 4), &k, &none),
        "`key` has shape [2, 4, 5, 7], but expected (..., S, E) with the query's E = 8"
    );
    assert_eq!(
        err(&q, &k, &random(&[2, 4, 6, 8], 5), &none),
        "`value` has shape [2, 4, 6, 8], but expected (..., S, Ev) with the key's S = 5"
    );
    assert_eq!(
        err(
            &q,
            &random(&[3, 4, 5, 8], 6),
            &random(&[3, 4, 5, 8], 6),
            &none
        ),
        "`key` has shape [3, 4, 5, 8], but expected leading dimensions [3, 4] that broadcast with \
         the query's [2, 4] (set enable_gqa for grouped-query attention)"
    );

    let mask = ArrayD::from_elem(IxDyn(&[3, 5]), true);
    let causal_and_mask = SdpaOptions::default()
        .with_is_causal(true)
        .with_attn_mask(mask.view());
    assert_eq!(
        err(&q, &k, &k, &causal_and_mask),
        "`is_causal`: explicit attn_mask should not be set when is_causal=True (torch's refusal)"
    );

    let gqa = SdpaOptions::default().with_enable_gqa(true);
    let kv3 = random(&[2, 3, 5, 8], 7);
    assert_eq!(
        err(&q, &kv3, &kv3, &gqa),
        "`enable_gqa`: the number of heads in key (3) and value (3) must divide the number of \
         heads in query (4)"
    );
    let (q2, k2) = (random(&[3, 8], 8), random(&[5, 8], 9));
    assert_eq!(
        err(&q2, &k2, &k2, &gqa),
        "`enable_gqa`: grouped-query attention needs a heads dimension: query, key and value of \
         at least 3-D (..., H, L, E), got 2-D, 2-D and 2-D"
    );

    let wrong = ArrayD::<f32>::zeros(IxDyn(&[3, 4]));
    assert_eq!(
        err(
            &q,
            &k,
            &k,
            &SdpaOptions::default().with_attn_mask(wrong.view())
        ),
        "`attn_mask` has shape [3, 4], but expected a shape that broadcasts to (..., Hq, L, S) = \
         [2, 4, 3, 5]"
    );
    let too_many = ArrayD::<f32>::zeros(IxDyn(&[1, 1, 1, 3, 5]));
    assert!(err(
        &q,
        &k,
        &k,
        &SdpaOptions::default().with_attn_mask(too_many.view())
    )
    .starts_with("`attn_mask` has shape [1, 1, 1, 3, 5]"));
    let flat = ArrayD::from_elem(IxDyn(&[5]), true);
    assert_eq!(
        err(
            &q,
            &k,
            &k,
            &SdpaOptions::default().with_attn_mask(flat.view())
        ),
        "`attn_mask` must be at least 2-D (..., L, S), as torch requires, but got a 1-D tensor"
    );

    for p in [-0.5, 1.5, f64::NAN] {
        assert!(err(&q, &k, &k, &SdpaOptions::default().with_dropout(p, 0))
            .starts_with("`dropout_p`: dropout probability has to be between 0 and 1, but got"));
    }
    let unseeded = SdpaOptions {
        dropout_p: 0.1,
        ..SdpaOptions::default()
    };
    assert!(matches!(
        sdpa_op(q.view(), k.view(), k.view(), &unseeded),
        Err(MhaError::InvalidArgument {
            argument: "dropout_p",
            ..
        })
    ));
}

#[test]
fn leading_dimensions_broadcast_like_expanded_inputs() {
    let q = random(&[3, 4, 5, 8], 10);
    let k = random(&[1, 4, 7, 8], 11);
    let v = random(&[1, 1, 7, 6], 12);
    let got = sdpa_op(q.view(), k.view(), v.view(), &SdpaOptions::default()).unwrap();
    let k_full = k.broadcast(IxDyn(&[3, 4, 7, 8])).unwrap().to_owned();
    let v_full = v.broadcast(IxDyn(&[3, 4, 7, 6])).unwrap().to_owned();
    let want = sdpa_op(
        q.view(),
        k_full.view(),
        v_full.view(),
        &SdpaOptions::default(),
    )
    .unwrap();
    assert_eq!(got, want);

    // A query batch of 1 against keys of batch 3 gives 3 outputs.
    let q1 = random(&[1, 4, 5, 8], 13);
    let out = sdpa_op(
        q1.view(),
        k_full.view(),
        v_full.view(),
        &SdpaOptions::default(),
    )
    .unwrap();
    assert_eq!(out.shape(), &[3, 4, 5, 6]);

    // Rank 2 is rank 4 with two leading 1s.
    let (q2, k2) = (random(&[5, 8], 14), random(&[7, 8], 15));
    let flat = sdpa_op(q2.view(), k2.view(), k2.view(), &SdpaOptions::default()).unwrap();
    let lifted = sdpa_op(
        q2.view().insert_axis(Axis(0)).insert_axis(Axis(0)),
        k2.view().insert_axis(Axis(0)),
        k2.view(),
        &SdpaOptions::default(),
    )
    .unwrap();
    assert_eq!(lifted.shape(), &[1, 1, 5, 8]);
    assert_eq!(
        flat.into_shape_with_order(IxDyn(&[1, 1, 5, 8])).unwrap(),
        lifted
    );
}

#[test]
fn gqa_is_repeat_interleave_of_key_and_value_heads() {
    let q = random(&[2, 6, 4, 8], 20);
    let k = random(&[2, 2, 5, 8], 21);
    let v = random(&[2, 3, 5, 8], 22);
    let gqa = SdpaOptions::default().with_enable_gqa(true);
    let got = sdpa_op(q.view(), k.view(), v.view(), &gqa).unwrap();
    let repeat = |t: &ArrayD<f32>, times: usize| {
        let views: Vec<_> = t
            .axis_iter(Axis(1))
            .flat_map(|h| std::iter::repeat_n(h.insert_axis(Axis(1)), times))
            .collect();
        ndarray::concatenate(Axis(1), &views).unwrap()
    };
    let (k6, v6) = (repeat(&k, 3), repeat(&v, 2));
    let want = sdpa_op(q.view(), k6.view(), v6.view(), &SdpaOptions::default()).unwrap();
    assert_eq!(got, want);
}

#[test]
fn a_bool_mask_is_the_float_mask_of_0_and_minus_inf() {
    let q = random(&[2, 3, 4, 8], 30);
    let k = random(&[2, 3, 6, 8], 31);
    let keep = random(&[2, 1, 4, 6], 32).mapv(|x| x > -1.0);
    let additive = keep.mapv(|t| if t { 0.0 } else { f32::NEG_INFINITY });
    let by_bool = SdpaOptions::default().with_attn_mask(SdpaMask::Bool(keep.view()));
    let by_float = SdpaOptions::default().with_attn_mask(SdpaMask::Float(additive.view()));
    assert_eq!(
        sdpa_op(q.view(), k.view(), k.view(), &by_bool).unwrap(),
        sdpa_op(q.view(), k.view(), k.view(), &by_float).unwrap()
    );
    // A row where nothing takes part gives 0.
    let none = ArrayD::from_elem(IxDyn(&[4, 6]), false);
    let out = sdpa_op(
        q.view(),
        k.view(),
        k.view(),
        &SdpaOptions::default().with_attn_mask(none.view()),
    )
    .unwrap();
    assert!(out.iter().all(|&x| x == 0.0));
}

#[test]
fn dropout_zeroes_or_rescales_each_probability_reproducibly() {
    // With value = identity, the output rows are the probabilities.
    let (l, s) = (5, 7);
    let q = random(&[2, l, 4], 40);
    let k = random(&[2, s, 4], 41);
    let eye = ArrayD::from_shape_fn(IxDyn(&[2, s, s]), |i| f32::from(u8::from(i[1] == i[2])));
    let plain = sdpa_op(q.view(), k.view(), eye.view(), &SdpaOptions::default()).unwrap();
    let p = 0.4;
    let train = SdpaOptions::default().with_dropout(p, 9);
    let dropped = sdpa_op(q.view(), k.view(), eye.view(), &train).unwrap();
    assert_eq!(
        dropped,
        sdpa_op(q.view(), k.view(), eye.view(), &train).unwrap()
    );
    let (mut zeros, mut kept) = (0, 0);
    for (&d, &w) in dropped.iter().zip(&plain) {
        if d == 0.0 {
            zeros += 1;
        } else {
            kept += 1;
            assert!((d - w / (1.0 - p as f32)).abs() < 1e-6, "{d} vs {w}");
        }
    }
    assert!(zeros > 10 && kept > 30, "{zeros} dropped, {kept} kept");
    let all = sdpa_op(
        q.view(),
        k.view(),
        eye.view(),
        &SdpaOptions::default().with_dropout(1.0, 9),
    )
    .unwrap();
    assert!(all.iter().all(|&x| x == 0.0));
}

#[test]
fn empty_sizes_give_torch_shapes() {
    let opts = SdpaOptions::default();
    let no_keys = random(&[1, 2, 0, 8], 0);
    let q = random(&[1, 2, 3, 8], 50);
    let out = sdpa_op(q.view(), no_keys.view(), no_keys.view(), &opts).unwrap();
    assert_eq!(out.shape(), &[1, 2, 3, 8]);
    assert!(out.iter().all(|&x| x == 0.0));
    let no_queries = random(&[1, 2, 0, 8], 0);
    let kv = random(&[1, 2, 4, 8], 51);
    let out = sdpa_op(no_queries.view(), kv.view(), kv.view(), &opts).unwrap();
    assert_eq!(out.shape(), &[1, 2, 0, 8]);
    let no_batch = random(&[0, 2, 3, 8], 0);
    let out = sdpa_op(no_batch.view(), kv.view(), kv.view(), &opts).unwrap();
    assert_eq!(out.shape(), &[0, 2, 3, 8]);
}

/// A direct f64 evaluation on fully expanded `(B, L, E)`, `(B, S, E)`, `(B, S, Ev)` inputs.
fn direct(
    q: &ArrayD<f32>,
    k: &ArrayD<f32>,
    v: &ArrayD<f32>,
    mask: Option<&ArrayD<f32>>,
    causal: bool,
    scale: f64,
) -> Vec<f64> {
    let (l, e) = (q.shape()[q.ndim() - 2], q.shape()[q.ndim() - 1]);
    let (s, ev) = (v.shape()[v.ndim() - 2], v.shape()[v.ndim() - 1]);
    let b = q.len() / (l * e).max(1);
    let q = q
        .as_standard_layout()
        .into_owned()
        .into_raw_vec_and_offset()
        .0;
    let k = k
        .as_standard_layout()
        .into_owned()
        .into_raw_vec_and_offset()
        .0;
    let v = v
        .as_standard_layout()
        .into_owned()
        .into_raw_vec_and_offset()
        .0;
    let mask = mask.map(|m| {
        m.as_standard_layout()
            .into_owned()
            .into_raw_vec_and_offset()
            .0
    });
    let mut out = Vec::new();
    for bb in 0..b {
        for i in 0..l {
            let scores: Vec<f64> = (0..s)
                .map(|j| {
                    let dot: f64 = (0..e)
                        .map(|c| {
                            f64::from(q[(bb * l + i) * e + c]) * f64::from(k[(bb * s + j) * e + c])
                        })
                        .sum();
                    let m = mask
                        .as_ref()
                        .map_or(0.0, |m| f64::from(m[(bb * l + i) * s + j]));
                    if causal && j > i {
                        f64::NEG_INFINITY
                    } else {
                        dot * scale + m
                    }
                })
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let exps: Vec<f64> = scores
                .iter()
                .map(|&x| {
                    if max == f64::NEG_INFINITY {
                        0.0
                    } else {
                        (x - max).exp()
                    }
                })
                .collect();
            let sum: f64 = exps.iter().sum();
            for c in 0..ev {
                let acc: f64 = (0..s)
                    .map(|j| exps[j] * f64::from(v[(bb * s + j) * ev + c]))
                    .sum();
                out.push(if sum == 0.0 { 0.0 } else { acc / sum });
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random ranks, broadcast 1s, GQA groups, masks and causal flags against [`direct`], on the
    /// reference path and the fast kernels of every supported level.
    #[test]
    fn matches_a_direct_evaluation(
        lead in prop::collection::vec(1usize..4, 0..3),
        group in 1usize..4,
        kv_heads in 1usize..3,
        query_head_one in any::<bool>(),
        l in prop_oneof![1usize..7, 120usize..140],
        s in prop_oneof![0usize..9, 60usize..70],
        e in 1usize..6,
        ev_differs in any::<bool>(),
        key_batch_one in any::<bool>(),
        mask_kind in 0usize..3,
        causal in any::<bool>(),
        scale in prop::option::of(0.05f64..3.0),
        seed in 0u64..1000,
    ) {
        let hq = kv_heads * group;
        let ev = if ev_differs { e + 1 } else { e };
        // A query head of 1 broadcast over the key heads (no GQA then: torch needs Hq % Hk == 0).
        let (q_heads, kv_heads, gqa) = if query_head_one { (1, hq, false) } else { (hq, kv_heads, true) };
        let group = hq / kv_heads;
        let mut q_shape = lead.clone();
        q_shape.extend([q_heads, l, e]);
        let mut kv_lead: Vec<usize> = lead.iter().map(|&d| if key_batch_one { 1 } else { d }).collect();
        kv_lead.push(kv_heads);
        let k_shape: Vec<usize> = kv_lead.iter().copied().chain([s, e]).collect();
        let v_shape: Vec<usize> = kv_lead.iter().copied().chain([s, ev]).collect();
        let (q, k, v) = (random(&q_shape, seed), random(&k_shape, seed + 1), random(&v_shape, seed + 2));
        let mut scores_shape = lead.clone();
        scores_shape.extend([hq, l, s]);
        let mask_shape: Vec<usize> = match mask_kind {
            0 => vec![],
            1 => vec![l, s],
            _ => scores_shape.iter().enumerate().map(|(i, &d)| if i % 2 == 0 { d } else { 1 }).collect(),
        };
        let causal = causal && mask_kind == 0;
        let mask = (mask_kind > 0).then(|| random(&mask_shape, seed + 3).mapv(|x| if x < -1.5 { f32::NEG_INFINITY } else { x }));
        let mut options = SdpaOptions::default().with_enable_gqa(gqa).with_is_causal(causal).with_scale(scale);
        if let Some(m) = &mask {
            options = options.with_attn_mask(m.view());
        }
        let mut full_lead = lead.clone();
        full_lead.push(hq);
        let out_shape: Vec<usize> = full_lead.iter().copied().chain([l, ev]).collect();

        // Expand: key/value heads repeated (repeat_interleave), then everything broadcast.
        let expand = |t: &ArrayD<f32>, last: usize| -> ArrayD<f32> {
            let h = t.ndim() - 3;
            let views: Vec<_> = t.axis_iter(Axis(h)).flat_map(|x| std::iter::repeat_n(x.insert_axis(Axis(h)), group)).collect();
            let repeated = ndarray::concatenate(Axis(h), &views).unwrap();
            let shape: Vec<usize> = full_lead.iter().copied().chain([s, last]).collect();
            repeated.broadcast(IxDyn(&shape)).unwrap().to_owned()
        };
        let full_mask = mask.as_ref().map(|m| m.broadcast(IxDyn(&scores_shape)).unwrap().to_owned());
        let q_full = q.broadcast(IxDyn(&full_lead.iter().copied().chain([l, e]).collect::<Vec<_>>())).unwrap().to_owned();
        let scale = scale.unwrap_or(1.0 / (e as f64).sqrt());
        let want = direct(&q_full, &expand(&k, e), &expand(&v, ev), full_mask.as_ref(), causal, scale);
        let reference = scaled_dot_product_attention_reference(q.view(), k.view(), v.view(), &options);
        let fast = Isa::supported().into_iter().map(|isa| {
            (isa.to_string(), scaled_dot_product_attention_with_isa(q.view(), k.view(), v.view(), &options, isa))
        });
        for (path, got) in std::iter::once(("reference".to_string(), reference)).chain(fast) {
            let got = got.unwrap();
            prop_assert_eq!(got.shape(), &out_shape[..]);
            for (g, w) in got.iter().zip(&want) {
                prop_assert!((f64::from(*g) - w).abs() <= 1e-5 + 1e-4 * w.abs(), "{}: {} vs {}", path, g, w);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// NaN and ±inf in a query, key, value or mask (one element or a whole row), with GQA (folded
    /// and not), masks, the causal triangle, one query against many keys (the split-key kernel on
    /// 3 and 8 threads) and several query blocks: every fast path gives the reference's output,
    /// NaN for NaN.
    #[test]
    fn non_finite_inputs_give_the_reference_output(
        batch in 1usize..3,
        group in 1usize..4,
        kv_heads in 1usize..3,
        l in prop_oneof![1usize..4, 120usize..140, 250usize..262],
        s in prop_oneof![1usize..9, 60usize..70, 1030usize..1100],
        e in prop_oneof![1usize..6, Just(8usize), Just(16usize)],
        mask_kind in 0usize..3,
        causal in any::<bool>(),
        threads in prop::sample::select(vec![1usize, 3, 8]),
        // (tensor: query, key, value, mask; one element or a whole last-axis row; NaN, inf or
        // -inf; where)
        poisons in prop::collection::vec((0u8..4, 0u8..2, 0u8..3, any::<u64>()), 1..3),
        seed in 0u64..1000,
    ) {
        let hq = kv_heads * group;
        let mut q = random(&[batch, hq, l, e], seed);
        let mut k = random(&[batch, kv_heads, s, e], seed + 1);
        let mut v = random(&[batch, kv_heads, s, e], seed + 2);
        let causal = causal && mask_kind == 0;
        let mut mask = random(&[batch, hq, l, s], seed + 3)
            .mapv(|x| if x < -1.0 { f32::NEG_INFINITY } else { x });
        let bool_mask = mask.mapv(|x| x != f32::NEG_INFINITY);
        for &(which, whole_row, value, at) in &poisons {
            let x = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][usize::from(value)];
            let target = match which {
                0 => &mut q,
                1 => &mut k,
                2 => &mut v,
                _ => &mut mask,
            };
            let row = *target.shape().last().unwrap();
            let start = (at as usize % target.len()) / row * row;
            let slice = target.as_slice_mut().unwrap();
            if whole_row == 1 {
                slice[start..start + row].fill(x);
            } else {
                slice[start + (at >> 32) as usize % row] = x;
            }
        }
        let mut options = SdpaOptions::default().with_enable_gqa(group > 1).with_is_causal(causal);
        match mask_kind {
            1 => options = options.with_attn_mask(SdpaMask::Bool(bool_mask.view())),
            2 => options = options.with_attn_mask(mask.view()),
            _ => {}
        }
        let want = scaled_dot_product_attention_reference(q.view(), k.view(), v.view(), &options).unwrap();
        for isa in Isa::supported() {
            let got = pool(threads)
                .install(|| scaled_dot_product_attention_with_isa(q.view(), k.view(), v.view(), &options, isa))
                .unwrap();
            for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
                let same = (g.is_nan() && w.is_nan())
                    || g == w
                    || (g.is_finite() && w.is_finite() && (g - w).abs() <= 1e-5 + 1e-4 * w.abs());
                prop_assert!(same, "{} on {} threads, element {}: {} vs {}", isa, threads, i, g, w);
            }
        }
    }
}

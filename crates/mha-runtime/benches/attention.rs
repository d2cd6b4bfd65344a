//! Criterion benches of `MultiheadAttention::forward` (fast path) on the speed issue's shapes:
//! batch-first self-attention, eval mode, on rayon's global pool (`RAYON_NUM_THREADS` sets the
//! thread count). `MHA_FAST_ISA` picks the kernels' instruction set.
//!
//! ```text
//! cargo bench -p mha-runtime --bench attention
//! ```

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mha_runtime::{
    generate_square_subsequent_mask, ForwardOptions, Mask, MultiheadAttention,
    MultiheadAttentionConfig,
};
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// (B, L, E, H, mode): `none` = need_weights=False, `avg` = averaged weights, `causal`.
const SHAPES: [(usize, usize, usize, usize, &str); 7] = [
    (1, 128, 512, 8, "none"),
    (8, 128, 512, 8, "none"),
    (4, 512, 512, 8, "none"),
    (1, 2048, 512, 8, "none"),
    (2, 1024, 1024, 16, "none"),
    (4, 512, 512, 8, "avg"),
    (4, 512, 512, 8, "causal"),
];

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("mha_forward");
    group.sample_size(10);
    for (b, l, e, h, mode) in SHAPES {
        let layer = MultiheadAttention::random(
            MultiheadAttentionConfig::new(e, h).with_batch_first(true),
            0,
        )
        .expect("valid config");
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let x = ArrayD::from_shape_simple_fn(IxDyn(&[b, l, e]), || rng.random::<f32>() * 2.0 - 1.0);
        let causal = generate_square_subsequent_mask(l).into_dyn();
        let options = match mode {
            "avg" => ForwardOptions::default(),
            "causal" => ForwardOptions::default()
                .with_need_weights(false)
                .with_attn_mask(Mask::Float(causal.view()))
                .with_is_causal(true),
            _ => ForwardOptions::default().with_need_weights(false),
        };
        // Dense FLOPs: four projections and the two attention products.
        let flops = 2 * b * l * e * e * 4 + 4 * b * l * l * e;
        group.throughput(Throughput::Elements(flops as u64));
        group.bench_function(
            BenchmarkId::new(mode, format!("B{b}_L{l}_E{e}_H{h}")),
            |bench| {
                bench.iter(|| {
                    layer
                        .forward(x.view(), x.view(), x.view(), &options)
                        .expect("valid inputs")
                })
            },
        );
    }
    group.finish();
}

/// Calls people make beyond batch-first self-attention (the `calls` set of
/// `scripts/bench_vs_torch.py`, three of them): torch's default sequence-first layout with a
/// bool padding mask, one decode step against a long memory, kdim/vdim cross-attention.
fn calls(c: &mut Criterion) {
    let mut group = c.benchmark_group("mha_calls");
    group.sample_size(10);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut tensor = |shape: &[usize]| {
        ArrayD::from_shape_simple_fn(IxDyn(shape), || rng.random::<f32>() * 2.0 - 1.0)
    };

    // Sequence-first (L, N, E) self-attention, batch element i pads its last 16·i keys.
    let (n, l, e) = (8, 256, 512);
    let layer = MultiheadAttention::random(MultiheadAttentionConfig::new(e, 8), 0).expect("config");
    let x = tensor(&[l, n, e]);
    let padding = ArrayD::from_shape_fn(IxDyn(&[n, l]), |i| i[1] >= l - 16 * i[0]);
    let options = ForwardOptions::default()
        .with_need_weights(false)
        .with_key_padding_mask(Mask::Bool(padding.view()));
    group.bench_function("seq_first_padding_N8_L256_E512", |bench| {
        bench.iter(|| {
            layer
                .forward(x.view(), x.view(), x.view(), &options)
                .expect("valid")
        })
    });

    // One decode step: 8 queries of length 1 against a 2048-long memory (key = value).
    let layer = MultiheadAttention::random(
        MultiheadAttentionConfig::new(512, 8).with_batch_first(true),
        0,
    )
    .expect("config");
    let q = tensor(&[8, 1, 512]);
    let memory = tensor(&[8, 2048, 512]);
    let options = ForwardOptions::default().with_need_weights(false);
    group.bench_function("decode_step_B8_S2048_E512", |bench| {
        bench.iter(|| {
            layer
                .forward(q.view(), memory.view(), memory.view(), &options)
                .expect("valid")
        })
    });

    // kdim / vdim cross-attention.
    let layer = MultiheadAttention::random(
        MultiheadAttentionConfig::new(512, 8)
            .with_batch_first(true)
            .with_kdim(Some(256))
            .with_vdim(Some(128)),
        0,
    )
    .expect("config");
    let (q, k, v) = (
        tensor(&[4, 256, 512]),
        tensor(&[4, 384, 256]),
        tensor(&[4, 384, 128]),
    );
    group.bench_function("kdim256_vdim128_B4_L256_S384", |bench| {
        bench.iter(|| {
            layer
                .forward(q.view(), k.view(), v.view(), &options)
                .expect("valid")
        })
    });
    group.finish();
}

criterion_group!(benches, bench, calls);
criterion_main!(benches);

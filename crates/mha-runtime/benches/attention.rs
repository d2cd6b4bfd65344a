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

criterion_group!(benches, bench);
criterion_main!(benches);

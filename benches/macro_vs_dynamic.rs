//! The `#[attention_layer]` layer against the dynamic `MultiheadAttention` with the same weights and
//! inputs, both in one group so that the ratio is read within one run. The macro layer's kernels
//! are instantiated for its head size; the dynamic layer specialises only head size 64, so the
//! 64 group is the control (expected ratio 1).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mha::ndarray::ArrayD;
use mha::{attention_layer, AttentionLayer, ForwardOptions, MultiheadAttention};

#[attention_layer(embed_dim = 64, num_heads = 8, batch_first = true)]
struct HeadDim8;

#[attention_layer(embed_dim = 256, num_heads = 8, batch_first = true)]
struct HeadDim32;

#[attention_layer(embed_dim = 512, num_heads = 8, batch_first = true)]
struct HeadDim64;

/// Benchmarks `forward` of a static layer and of a dynamic layer with the same weights.
fn pair(
    c: &mut Criterion,
    name: &str,
    static_layer: &dyn AttentionLayer,
    dynamic: &MultiheadAttention,
    input: &ArrayD<f32>,
) {
    let options = ForwardOptions::default().with_need_weights(false);
    let mut group = c.benchmark_group(name);
    let layers: [(&str, &dyn AttentionLayer); 2] = [("macro", static_layer), ("dynamic", dynamic)];
    for (label, layer) in layers {
        group.bench_with_input(BenchmarkId::new(label, input.shape()[0]), input, |b, x| {
            b.iter(|| {
                layer
                    .forward(x.view(), x.view(), x.view(), &options)
                    .expect("valid input")
            })
        });
    }
    group.finish();
}

/// A deterministic (N, L, E) input.
fn input(n: usize, l: usize, e: usize) -> ArrayD<f32> {
    ArrayD::from_shape_fn(vec![n, l, e], |i| {
        ((i[0] * 7 + i[1] * 3 + i[2]) % 13) as f32 / 13.0 - 0.5
    })
}

fn bench(c: &mut Criterion) {
    let layer = HeadDim8::random(1);
    let x = input(4, 128, HeadDim8::EMBED_DIM);
    pair(c, "head_dim_8_e64_n4_l128", &layer, layer.as_dynamic(), &x);

    let layer = HeadDim32::random(2);
    let x = input(2, 256, HeadDim32::EMBED_DIM);
    pair(
        c,
        "head_dim_32_e256_n2_l256",
        &layer,
        layer.as_dynamic(),
        &x,
    );

    let layer = HeadDim64::random(3);
    let x = input(2, 256, HeadDim64::EMBED_DIM);
    pair(
        c,
        "head_dim_64_e512_n2_l256",
        &layer,
        layer.as_dynamic(),
        &x,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);

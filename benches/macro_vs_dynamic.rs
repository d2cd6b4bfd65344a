//! The `#[attention_layer]` layer against the dynamic `MultiheadAttention` with the same weights and
//! inputs, one pair of configurations per group so that the ratio is read within one run.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mha::ndarray::ArrayD;
use mha::{attention_layer, AttentionLayer, ForwardOptions, MultiheadAttention};

#[attention_layer(embed_dim = 64, num_heads = 8)]
struct Small;

#[attention_layer(embed_dim = 256, num_heads = 4, batch_first = true)]
struct Wide;

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

fn bench(c: &mut Criterion) {
    let small = Small::random(1);
    let x = ArrayD::<f32>::from_shape_fn(vec![32, 4, Small::EMBED_DIM], |i| {
        ((i[0] * 7 + i[1] * 3 + i[2]) % 13) as f32 / 13.0 - 0.5
    });
    pair(
        c,
        "small_e64_h8_l32_n4",
        &small,
        &small.as_dynamic().clone(),
        &x,
    );

    let wide = Wide::random(2);
    let x = ArrayD::<f32>::from_shape_fn(vec![2, 128, Wide::EMBED_DIM], |i| {
        ((i[0] * 5 + i[1] * 11 + i[2]) % 17) as f32 / 17.0 - 0.5
    });
    pair(
        c,
        "wide_e256_h4_l128_n2",
        &wide,
        &wide.as_dynamic().clone(),
        &x,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);

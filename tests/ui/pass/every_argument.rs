// Every parameter of the spec, by name, with separate key/value sizes.
use mha::ndarray::ArrayD;
use mha::{attention_layer, ForwardOptions, MultiheadAttention};

#[attention_layer(
    embed_dim = 12,
    num_heads = 3,
    dropout = 0.25,
    bias = false,
    add_bias_kv = true,
    add_zero_attn = true,
    kdim = 5,
    vdim = None,
    batch_first = true,
)]
struct Cross {}

fn main() {
    assert_eq!((Cross::HEAD_DIM, Cross::KDIM, Cross::VDIM), (4, 5, 12));
    assert_eq!(Cross::DROPOUT, 0.25);
    assert!(!Cross::PACKED_IN_PROJ);
    assert_eq!(Cross::EXTRA_KEYS, 2);
    let names: Vec<&str> = Cross::PARAMETER_SHAPES.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        ["q_proj_weight", "k_proj_weight", "v_proj_weight", "bias_k", "bias_v", "out_proj.weight"]
    );

    let layer = Cross::random(3);
    let q = ArrayD::<f32>::ones(vec![2, 4, 12]); // (N, L, E)
    let k = ArrayD::<f32>::ones(vec![2, 6, 5]); // (N, S, kdim)
    let v = ArrayD::<f32>::ones(vec![2, 6, 12]); // (N, S, vdim)
    let out = layer.forward(q.view(), k.view(), v.view(), &ForwardOptions::default()).unwrap();
    assert_eq!(out.weights.unwrap().shape(), &[2, 4, 6 + Cross::EXTRA_KEYS]);

    let dynamic: MultiheadAttention = layer.into();
    assert_eq!(dynamic.config(), &Cross::CONFIG);
}

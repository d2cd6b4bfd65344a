// The defaults of the spec, the constants usable at compile time, forward through the
// runtime trait.
use mha::ndarray::ArrayD;
use mha::{attention_layer, AttentionLayer, ForwardOptions, MultiheadAttentionConfig};

/// A documented, public layer with derives.
#[attention_layer(embed_dim = 16, num_heads = 4)]
#[derive(Debug, Clone, PartialEq)]
pub struct Encoder;

const PER_HEAD: [f32; Encoder::HEAD_DIM] = [0.0; Encoder::HEAD_DIM];

fn output_of(layer: &dyn AttentionLayer, x: &ArrayD<f32>) -> ArrayD<f32> {
    let options = ForwardOptions::default().with_need_weights(false);
    layer.forward(x.view(), x.view(), x.view(), &options).unwrap().output
}

fn main() {
    assert_eq!(PER_HEAD.len(), 4);
    assert_eq!((Encoder::EMBED_DIM, Encoder::NUM_HEADS, Encoder::HEAD_DIM), (16, 4, 4));
    assert_eq!((Encoder::KDIM, Encoder::VDIM), (16, 16));
    assert_eq!(Encoder::DROPOUT, 0.0);
    assert!(Encoder::BIAS && !Encoder::ADD_BIAS_KV && !Encoder::ADD_ZERO_ATTN && !Encoder::BATCH_FIRST);
    assert!(Encoder::PACKED_IN_PROJ);
    assert_eq!(Encoder::EXTRA_KEYS, 0);
    assert_eq!(Encoder::CONFIG, MultiheadAttentionConfig::new(16, 4));

    let layer = Encoder::random(7);
    assert_eq!(layer.clone(), layer);
    assert_eq!(AttentionLayer::config(&layer), &Encoder::CONFIG);
    let x = ArrayD::<f32>::ones(vec![5, 2, 16]); // (L, N, E)
    let out = layer.forward(x.view(), x.view(), x.view(), &ForwardOptions::default()).unwrap();
    assert_eq!(out.output.shape(), &[5, 2, 16]);
    let options = ForwardOptions::default().with_need_weights(false);
    let direct = layer.forward(x.view(), x.view(), x.view(), &options).unwrap();
    assert_eq!(output_of(&layer, &x), direct.output); // the trait and the inherent method agree
    assert!(format!("{layer:?}").contains("Encoder"));
}

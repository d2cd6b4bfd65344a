// The stub beside the error keeps every use of the layer type-checking: only the macro's error.
use mha::ndarray::ArrayD;
use mha::{attention_layer, AttentionLayer, ForwardOptions};

#[attention_layer(embed_dim = 64, num_heads = 7)]
struct Layer;

const PER_HEAD: [f32; Layer::HEAD_DIM] = [0.0; Layer::HEAD_DIM];

fn run(layer: &dyn AttentionLayer) -> usize {
    layer.config().embed_dim
}

fn main() {
    let layer = Layer::random(0);
    let x = ArrayD::<f32>::zeros(vec![2, Layer::EMBED_DIM]);
    let _ = layer.forward(x.view(), x.view(), x.view(), &ForwardOptions::default());
    let _ = Layer::from_safetensors("layer.safetensors");
    let _ = run(&layer) + PER_HEAD.len() + Layer::EMBED_DIM / Layer::NUM_HEADS;
}

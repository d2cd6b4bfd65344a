// A method that only the dynamic layer has: the compiler says the generated type lacks it and
// points at no private field (the layer inside is out of the user's reach); `as_dynamic()` is
// the documented way to it.
use mha::attention_layer;
use mha::fast::Isa;
use mha::ndarray::ArrayD;
use mha::ForwardOptions;

#[attention_layer(embed_dim = 8, num_heads = 2)]
struct Layer;

fn main() {
    let layer = Layer::random(0);
    let x = ArrayD::<f32>::zeros(vec![3, 8]);
    let options = ForwardOptions::default();
    let _ = layer.forward_with_isa(x.view(), x.view(), x.view(), &options, Isa::Portable);
    let _ = layer.as_dynamic().forward_with_isa(x.view(), x.view(), x.view(), &options, Isa::Portable);
}

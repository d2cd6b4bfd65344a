// The expansion names nothing from the user's scope: this crate shadows Result, Option, String,
// Path, Tensor, forward, and expands one layer in a module without the prelude.
#![allow(dead_code)]

extern crate mha as attention;

type Result<T> = ::std::result::Result<T, ()>;
struct Option;
struct String;
struct Path;
struct Tensor;
struct Weights;
fn forward() {}
mod __private {}

#[attention::attention_layer(embed_dim = 8, num_heads = 2, crate = ::attention)]
struct Renamed;

#[no_implicit_prelude]
mod bare {
    #[::mha::attention_layer(embed_dim = 8, num_heads = 2, kdim = 3)]
    pub struct Bare;
}

fn main() {
    forward();
    let layer = Renamed::random(0);
    let x = ::mha::ndarray::ArrayD::<f32>::zeros(vec![3, 8]); // unbatched (L, E)
    let options = ::mha::ForwardOptions::default();
    let out = layer.forward(x.view(), x.view(), x.view(), &options).unwrap();
    assert_eq!(out.output.shape(), &[3, 8]);
    let bare = bare::Bare::random(0);
    let k = ::mha::ndarray::ArrayD::<f32>::zeros(vec![4, 3]); // (S, kdim)
    let v = ::mha::ndarray::ArrayD::<f32>::zeros(vec![4, 8]); // (S, vdim)
    let out = bare.forward(x.view(), k.view(), v.view(), &options).unwrap();
    assert_eq!(out.weights.unwrap().shape(), &[3, 4]);
    assert!(bare.forward(x.view(), x.view(), x.view(), &options).is_err()); // key must be 3 wide
}

use mha::attention_layer;

#[attention_layer(embed_dim = 64, num_heads = 8)]
struct Layer {
    scale: f32,
}

fn main() {}

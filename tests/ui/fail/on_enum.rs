use mha::attention_layer;

#[attention_layer(embed_dim = 64, num_heads = 8)]
enum Layer {
    Small,
}

fn main() {}

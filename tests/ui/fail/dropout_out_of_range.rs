use mha::attention_layer;

#[attention_layer(embed_dim = 64, num_heads = 8, dropout = 1.0)]
struct AllDropped;

#[attention_layer(embed_dim = 64, num_heads = 8, dropout = -0.1)]
struct Negative;

fn main() {}

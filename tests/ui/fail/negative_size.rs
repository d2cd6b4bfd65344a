use mha::attention_layer;

#[attention_layer(embed_dim = 64, num_heads = -8)]
struct Layer;

#[attention_layer(embed_dim = 64, num_heads = 8, kdim = -1)]
struct KeyLayer;

fn main() {}

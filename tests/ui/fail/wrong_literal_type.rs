use mha::attention_layer;

#[attention_layer(embed_dim = "64", num_heads = 8.0, bias = 1, dropout = false, kdim = 'k')]
struct Layer;

fn main() {}

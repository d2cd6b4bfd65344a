use mha::attention_layer;

#[attention_layer(embed_dim = 64, dropout = 0.1)]
struct Layer;

fn main() {}

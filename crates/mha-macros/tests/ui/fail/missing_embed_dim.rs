use mha::attention_layer;

#[attention_layer(num_heads = 8)]
struct Layer;

fn main() {}

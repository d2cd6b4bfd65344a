use mha::attention_layer;

#[attention_layer(embed_dim = 10, num_heads = 4)]
struct Layer;

#[attention_layer(embed_dim = 512, num_heads = 12)]
struct Wide;

fn main() {}

use mha::attention_layer;

#[attention_layer(embed_dim = 0, num_heads = 8)]
struct NoFeatures;

#[attention_layer(embed_dim = 64, num_heads = 8, vdim = 0)]
struct NoValueFeatures;

fn main() {}

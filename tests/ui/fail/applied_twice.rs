use mha::attention_layer;

// One clear error, not a misleading message and three E0119 conflicting impls.
#[attention_layer(embed_dim = 16, num_heads = 4)]
#[attention_layer(embed_dim = 16, num_heads = 2)]
struct Twice;

fn main() {}

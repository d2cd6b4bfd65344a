use mha::attention_layer;

#[attention_layer(embed_dim = 64, num_heads = 8, batchfirst = true)]
struct Layer;

fn main() {}

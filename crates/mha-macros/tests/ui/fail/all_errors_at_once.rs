use mha::attention_layer;

#[attention_layer(embed_dim = 30, num_heads = 4, batchfirst = true, bias = "yes", dropout = 1.5)]
struct Layer;

fn main() {}

use mha::attention_layer;

// Quoted as written, sign included.
#[attention_layer(embed_dim = -9223372036854775808, num_heads = 1)]
struct MostNegative;

#[attention_layer(embed_dim = 8, num_heads = -99999999999999999999)]
struct TooNegative;

fn main() {}

use mha::attention_layer;

// The weights would need more bytes than one allocation can hold: an error at the argument,
// not a panic when the layer is built.
#[attention_layer(embed_dim = 9223372036854775807, num_heads = 1)]
struct Huge;

#[attention_layer(embed_dim = 8, num_heads = 2, kdim = 4611686018427387904)]
struct HugeKeys;

fn main() {}

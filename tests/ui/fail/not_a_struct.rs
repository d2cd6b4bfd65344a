use mha::attention_layer;

#[attention_layer(embed_dim = 64, num_heads = 8)]
fn layer() {}

fn main() {
    layer();
}

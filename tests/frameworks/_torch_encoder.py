"""Makes a torch TransformerEncoder checkpoint for the conversion tests; run with the torch venv's python.

    python _torch_encoder.py OUT_DIR

OUT_DIR/encoder.safetensors  the encoder's state_dict (safetensors.torch.save_file), three layers, the
                             middle one with 4 heads instead of 6 (so `mha-gen convert` needs a per-layer
                             --set), every parameter drawn at random (torch zeroes the attention biases)
OUT_DIR/expected.safetensors per layer `layers.N.self_attn.`: the input its self-attention sees in the
                             encoder's forward (`query`) and what torch's MultiheadAttention returns for it
                             (`attn_output`, per-head `attn_weights`)
OUT_DIR/encoder.json         the layers (prefix, embed_dim, num_heads) and torch's version
"""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

EMBED_DIM, FEEDFORWARD, HEADS = 24, 40, (6, 4, 6)


def main(out):
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(12)
    make = lambda heads: torch.nn.TransformerEncoderLayer(  # noqa: E731
        EMBED_DIM, heads, dim_feedforward=FEEDFORWARD, dropout=0.1, batch_first=True)
    encoder = torch.nn.TransformerEncoder(make(HEADS[0]), num_layers=len(HEADS), enable_nested_tensor=False)
    for i, heads in enumerate(HEADS):
        encoder.layers[i] = make(heads)
    with torch.no_grad():
        for p in encoder.parameters():
            p.normal_(0.0, 0.3)
    encoder.eval()
    x = torch.randn(2, 5, EMBED_DIM)
    expected, layers = {}, []
    with torch.no_grad():
        h = x
        for i, layer in enumerate(encoder.layers):
            prefix = f"layers.{i}.self_attn."
            attn, weights = layer.self_attn(h, h, h, need_weights=True, average_attn_weights=False)
            expected.update({prefix + "query": h.clone(), prefix + "attn_output": attn, prefix + "attn_weights": weights})
            layers.append({"prefix": prefix, "embed_dim": EMBED_DIM, "num_heads": HEADS[i]})
            h = layer(h)
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(out / "encoder.safetensors"))
    save_file({k: v.contiguous() for k, v in expected.items()}, str(out / "expected.safetensors"))
    (out / "encoder.json").write_text(json.dumps({"torch_version": torch.__version__, "layers": layers}, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))

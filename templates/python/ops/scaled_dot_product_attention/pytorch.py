"""PyTorch glue for scaled_dot_product_attention: `torch.nn.functional.scaled_dot_product_attention`.

The reference framework itself: the arguments go to torch unchanged (numpy in, numpy out; float inputs
are computed in float32, as the other frameworks' glue does). Before the call the glue checks it as
the other frameworks' glue does (`_sdpa.parse`), so a call torch refuses, or one torch runs although
its shapes disagree (a value whose length differs from the key's), gets the same clear error in every
framework. Dropout is torch's own, drawn from torch's global generator: the one framework whose random
dropout is the reference's.
"""
import numpy as np
import torch

from . import _sdpa

FRAMEWORK = "pytorch"
API, STRATEGY, SUPPORT = _sdpa.describe(FRAMEWORK)


@_sdpa.checked_keywords
def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    """torch's scaled dot-product attention on numpy arrays; returns a float32 numpy array."""
    args = _sdpa.parse(FRAMEWORK, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    mask = None if args.mask is None else torch.from_numpy(np.ascontiguousarray(args.mask))
    with torch.no_grad():
        out = torch.nn.functional.scaled_dot_product_attention(
            torch.from_numpy(args.query), torch.from_numpy(args.key), torch.from_numpy(args.value),
            attn_mask=mask, dropout_p=args.dropout_p, is_causal=args.is_causal, scale=args.scale,
            enable_gqa=args.enable_gqa,
        )
    return np.ascontiguousarray(out.numpy(), dtype=np.float32)

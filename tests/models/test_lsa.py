"""Locally-grouped attention on maps that need padding, against a direct computation: for each
window, an explicit softmax over the real tokens of that window only."""

import pytest
import torch

from twins.models.lsa import LocallyGroupedAttention


def reference_lsa(attention: LocallyGroupedAttention, x: torch.Tensor, size) -> torch.Tensor:
    height, width = size
    ws, heads = attention.window_size, attention.num_heads
    batch, _, dim = x.shape
    head_dim = dim // heads
    tokens = x.view(batch, height, width, dim)
    out = torch.zeros_like(tokens)
    for top in range(0, height, ws):
        for left in range(0, width, ws):
            window = tokens[:, top : top + ws, left : left + ws]  # only real tokens
            rows, cols = window.shape[1:3]
            qkv = attention.qkv(window.reshape(batch, rows * cols, dim))
            q, k, v = qkv.view(batch, rows * cols, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
            weights = torch.softmax(q @ k.transpose(-1, -2) * head_dim**-0.5, dim=-1)
            mixed = (weights @ v).transpose(1, 2).reshape(batch, rows, cols, dim)
            out[:, top : top + ws, left : left + ws] = mixed
    return attention.proj(out.view(batch, height * width, dim))


@pytest.mark.parametrize(
    "size",
    [(9, 14), (14, 9), (9, 10), (14, 14), (3, 5)],
    ids=["pad-bottom", "pad-right", "pad-both", "no-pad", "smaller-than-window"],
)
def test_masked_windows_equal_direct_computation(size):
    torch.manual_seed(0)
    attention = LocallyGroupedAttention(
        dim=32, num_heads=4, window_size=7, attn_drop=0, proj_drop=0
    )
    x = torch.randn(2, size[0] * size[1], 32)
    with torch.no_grad():
        torch.testing.assert_close(
            attention(x, size), reference_lsa(attention, x, size), rtol=1e-5, atol=1e-6
        )


def test_padding_without_mask_would_differ():
    # The check above can fail: attending to padded keys (timm's behaviour) changes the result.
    torch.manual_seed(0)
    attention = LocallyGroupedAttention(
        dim=32, num_heads=4, window_size=7, attn_drop=0, proj_drop=0
    )
    x = torch.randn(1, 9 * 10, 32)
    from timm.models.twins import LocallyGroupedAttn

    unmasked = LocallyGroupedAttn(32, num_heads=4, ws=7)
    unmasked.load_state_dict(attention.state_dict())
    with torch.no_grad():
        assert not torch.allclose(unmasked(x, (9, 10)), reference_lsa(attention, x, (9, 10)))

"""The attention-mask shortcut under CUDA-graph capture.

An all-real mask is dropped (``attn_bias`` returns None) so SDPA takes its unmasked kernel; deciding that
reads the mask on the host, which CUDA-graph capture forbids (the cuda-graphs variant failed on vilt-b32 with
cudaErrorStreamCaptureUnsupported on an H200).  Under capture the additive mask is always built.  Capture
itself needs a GPU; here it is simulated by patching the capture probe, and every interaction that takes the
shortcut must give the same output both ways.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vlpbench.layers as layers
from vlpbench.harness.variants import tensor_paths
from vlpbench.layers import attn_bias
from vlpbench.presets import load_all
from vlpbench.registry import ARCH

load_all()


def test_attn_bias_drops_an_all_real_mask_only_outside_capture(monkeypatch):
    mask = torch.ones(2, 5, dtype=torch.bool)
    assert attn_bias(mask, torch.float32) is None
    assert attn_bias(None, torch.float32) is None
    monkeypatch.setattr(layers, "_graph_capturing", lambda: True)
    bias = attn_bias(mask, torch.float32)
    assert bias is not None and bias.shape == (2, 1, 1, 5) and not bias.any()


def test_attn_bias_keeps_padding_either_way(monkeypatch):
    mask = torch.tensor([[True, True, False], [True, True, True]])
    outside = attn_bias(mask, torch.float32)
    monkeypatch.setattr(layers, "_graph_capturing", lambda: True)
    inside = attn_bias(mask, torch.float32)
    assert torch.equal(outside, inside)
    assert outside[0, 0, 0, 2] == torch.finfo(torch.float32).min and outside[1].eq(0).all()


def test_sdpa_same_with_and_without_the_zero_mask():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 6, 8, generator=g) for _ in range(3))
    zero = attn_bias(torch.ones(2, 6, dtype=torch.bool), torch.float32)
    assert zero is None
    built = layers.padding_to_attn_mask(torch.ones(2, 6, dtype=torch.bool), torch.float32)
    torch.testing.assert_close(
        F.scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(q, k, v, attn_mask=built)
    )


# one architecture per interaction that takes the shortcut: single-stream, dual encoder, cross-attention, MoME
@pytest.mark.parametrize("name", ["vilt-b32", "clip-vit-b32", "albef-base", "vlmo-base"])
def test_interactions_give_the_same_output_under_simulated_capture(name, monkeypatch):
    torch.manual_seed(0)
    model = ARCH.build(name, tiny=True).eval()
    inputs = model.make_inputs(2, generator=torch.Generator().manual_seed(1), device="cpu")
    built = []
    real = layers.padding_to_attn_mask
    monkeypatch.setattr(layers, "padding_to_attn_mask", lambda m, d: built.append(m) or real(m, d))
    with torch.inference_mode():
        eager = tensor_paths(model(**inputs))
        assert not built  # every token is real: no mask outside capture
        monkeypatch.setattr(layers, "_graph_capturing", lambda: True)
        captured = tensor_paths(model(**inputs))
    assert built  # the simulated capture took the masked path
    assert [p for p, _ in eager] == [p for p, _ in captured] and eager
    for (path, a), (_, b) in zip(eager, captured):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"{name}: {path}")

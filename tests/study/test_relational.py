"""Santoro et al.'s RN and CNN+MLP: the factorised g equals g over concatenated pairs, order invariance, errors."""

from __future__ import annotations

import pytest
import torch

from vlpbench.errors import VlpbenchError
from vlpbench.study.relational import RelationalConfig, RelationalQA

TINY = dict(channels=8, question_dim=16, embed_dim=8, g_dim=16, f_dim=16, vocab_size=20, num_answers=5)


def test_factorised_first_layer_equals_g_over_concatenated_pairs():
    torch.manual_seed(0)
    model = RelationalQA(RelationalConfig(**TINY)).eval()
    o, q = torch.randn(2, 16, 10), torch.randn(2, 16)  # channels 8 + 2 coordinates
    b, n, d = o.shape
    pairs = torch.cat(
        [o[:, :, None].expand(b, n, n, d), o[:, None].expand(b, n, n, d), q[:, None, None].expand(b, n, n, 16)], -1
    )
    torch.testing.assert_close(model.relate(o, q), model.g(pairs))


def test_relation_sum_ignores_object_order():
    torch.manual_seed(0)
    model = RelationalQA(RelationalConfig(**TINY)).eval()
    o, q = torch.randn(1, 16, 10), torch.randn(1, 16)
    perm = torch.randperm(16)
    torch.testing.assert_close(model.relate(o, q).sum((1, 2)), model.relate(o[:, perm], q).sum((1, 2)))


@pytest.mark.parametrize("kind", ["rn", "cnn-mlp"])
def test_forward_shapes_and_one_step(kind):
    torch.manual_seed(0)
    model = RelationalQA(RelationalConfig(kind=kind, image_size=(32, 32), conv_layers=3, **TINY))
    assert model.cfg.grid() == (4, 4)
    ids = torch.tensor([[1, 7, 8, 9, 2, 0], [1, 7, 2, 0, 0, 0]])
    logits = model(torch.rand(2, 3, 32, 32), ids, (ids > 0).long())
    assert logits.shape == (2, 5)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_bad_config_is_a_clear_error():
    with pytest.raises(VlpbenchError, match="invalid kind 'mlp'"):
        RelationalQA(RelationalConfig(kind="mlp"))
    with pytest.raises(VlpbenchError, match="invalid conv_layers"):
        RelationalQA(RelationalConfig(image_size=(8, 8), conv_layers=0, **TINY))

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


def test_frozen_cnn_gets_no_gradient_and_still_normalises_per_batch():
    torch.manual_seed(0)
    model = RelationalQA(RelationalConfig(image_size=(32, 32), conv_layers=3, freeze_cnn=True, **TINY))
    ids = torch.tensor([[1, 7, 8, 9, 2, 0], [1, 7, 2, 0, 0, 0]])
    model(torch.rand(2, 3, 32, 32), ids, (ids > 0).long()).sum().backward()
    assert all(p.grad is None for p in model.objects.parameters())
    assert all(p.grad is not None for n, p in model.named_parameters() if not n.startswith("objects."))
    bn = model.objects.net[1]
    assert bn.training and int(bn.num_batches_tracked) == 1  # batch statistics, running averages kept


@pytest.mark.parametrize("kind", ["rn", "cnn-mlp"])
def test_bag_of_words_question_is_the_multi_hot_of_the_words(kind):
    torch.manual_seed(0)
    model = RelationalQA(RelationalConfig(kind=kind, question="bow", image_size=(32, 32), conv_layers=3, **TINY))
    ids = torch.tensor([[1, 7, 7, 9, 0], [9, 1, 7, 0, 0]])
    code = model.question(ids, (ids > 0).long())
    assert code.shape == (2, 20) and torch.equal(code[0], code[1])  # word order and repeats do not matter
    assert code[0].nonzero().flatten().tolist() == [1, 7, 9]  # padding (id 0) is not a word
    assert model(torch.rand(2, 3, 32, 32), ids, (ids > 0).long()).shape == (2, 5)


def test_kernel_four_centres_each_cell_on_its_pixels():
    """With kernel 4 (padding 1) the receptive field of cell (i, j) is centred on pixels 16 i .. 16 i + 15; with
    the paper's kernel 3 (padding 1) on the corner 16 i (measured by the gradient of one cell's output)."""
    centres = {}
    for kernel in (3, 4):
        model = RelationalQA(RelationalConfig(kernel=kernel, image_size=(64, 64), **TINY)).objects.net
        for m in model:
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.constant_(m.weight, 1.0)
                torch.nn.init.zeros_(m.bias)
        model.eval()
        x = torch.ones(1, 3, 64, 64, requires_grad=True)
        model(x)[0, 0, 1, 1].backward()
        w = x.grad[0, 0].sum(1)
        centres[kernel] = float((w / w.sum() * torch.arange(64.0)).sum())
        assert RelationalConfig(kernel=kernel, image_size=(64, 64)).grid() == (4, 4)
    assert abs(centres[3] - 16.0) < 1e-3 and abs(centres[4] - 23.5) < 1e-3


def test_bad_config_is_a_clear_error():
    with pytest.raises(VlpbenchError, match="invalid kind 'mlp'"):
        RelationalQA(RelationalConfig(kind="mlp"))
    with pytest.raises(VlpbenchError, match="invalid conv_layers"):
        RelationalQA(RelationalConfig(image_size=(8, 8), conv_layers=0, **TINY))
    with pytest.raises(VlpbenchError, match="invalid question 'lstm'.*gru, bow"):
        RelationalQA(RelationalConfig(question="lstm", **TINY))
    with pytest.raises(VlpbenchError, match="invalid kernel 0"):
        RelationalQA(RelationalConfig(kernel=0, **TINY))
    with pytest.raises(VlpbenchError, match="invalid dropout"):
        RelationalQA(RelationalConfig(dropout=1.0, **TINY))

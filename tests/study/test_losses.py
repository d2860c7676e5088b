"""The study's losses against direct computations, and IPOT's transport plan against its marginals."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlpbench.study import losses


def test_contrastive_loss_is_symmetric_cross_entropy_without_same_image_pairs():
    torch.manual_seed(0)
    logits = torch.randn(4, 4)
    plain = (F.cross_entropy(logits, torch.arange(4)) + F.cross_entropy(logits.t(), torch.arange(4))) / 2
    assert torch.allclose(losses.contrastive_loss(logits), plain)
    index = torch.tensor([0, 0, 1, 2])  # pairs 0 and 1 show one image: not negatives of each other
    masked = logits.clone()
    masked[0, 1] = masked[1, 0] = float("-inf")
    want = (F.cross_entropy(masked, torch.arange(4)) + F.cross_entropy(masked.t(), torch.arange(4))) / 2
    assert torch.allclose(losses.contrastive_loss(logits, index), want)


def test_mlm_and_itm_losses():
    logits = torch.randn(2, 3, 5, requires_grad=True)
    none = torch.full((2, 3), -100)
    zero = losses.mlm_loss(logits, none)
    assert float(zero.detach()) == 0.0 and zero.requires_grad
    labels = none.clone()
    labels[1, 2] = 4
    assert torch.allclose(losses.mlm_loss(logits, labels), F.cross_entropy(logits[1, 2][None], torch.tensor([4])))
    s = torch.tensor([2.0, -1.0])
    # -log sigmoid(2) for the match, -log(1 - sigmoid(-1)) = softplus(-1) for the mismatch
    assert torch.allclose(losses.itm_loss(s, torch.tensor([1, 0])), F.softplus(torch.tensor([-2.0, -1.0])).mean())


def test_ipot_plan_has_uniform_marginals_and_ignores_padding():
    torch.manual_seed(0)
    cost = torch.rand(2, 4, 5)
    x_mask = torch.tensor([[True] * 4, [True, True, True, False]])
    y_mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    plan = losses.ipot(cost, x_mask, y_mask, beta=0.5, iterations=200)
    for b in range(2):
        n, m = int(x_mask[b].sum()), int(y_mask[b].sum())
        real = plan[b, :n, :m]
        torch.testing.assert_close(real.sum(1), torch.full((n,), 1 / n), atol=1e-3, rtol=0)
        torch.testing.assert_close(real.sum(0), torch.full((m,), 1 / m), atol=1e-3, rtol=0)
        assert float(plan[b, n:].abs().sum()) == 0 and float(plan[b, :, m:].abs().sum()) == 0


def test_ipot_finds_the_cheap_matching():
    """Cost 0 on a permutation, 1 elsewhere: the plan puts (nearly) all mass on the permutation."""
    perm = torch.tensor([2, 0, 3, 1])
    cost = torch.ones(1, 4, 4)
    cost[0, torch.arange(4), perm] = 0.0
    full = torch.ones(1, 4, dtype=torch.bool)
    plan = losses.ipot(cost, full, full, beta=0.5, iterations=50)
    assert float(plan[0, torch.arange(4), perm].sum()) > 0.95


def test_wpa_pulls_matched_pairs_together():
    torch.manual_seed(0)
    text = torch.randn(2, 3, 8)
    image = torch.cat([text[:1], torch.randn(1, 3, 8)])  # pair 0: image tokens equal the words
    mask = torch.ones(2, 3, dtype=torch.bool)
    matched = torch.tensor([True, False])
    text.requires_grad_(True)
    loss = losses.wpa_loss(text, mask, image, mask, matched)
    loss.backward()
    assert text.grad is not None and text.grad.abs().sum() > 0
    only_pos = losses.wpa_loss(text.detach()[:1], mask[:1], image[:1], mask[:1], matched[:1])
    assert abs(float(only_pos)) < 0.05  # identical tokens: transport cost ~0
    assert float(losses.wpa_loss(text.detach(), mask, image, mask, torch.tensor([False, True]))) > float(loss.detach())

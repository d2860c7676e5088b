"""The study's training losses, kept apart from the models (as TorchMultimodal's ``modules/losses``).

Every function takes tensors and returns a scalar; none holds parameters.

* :func:`contrastive_loss` -- symmetric InfoNCE over an image-text similarity matrix (CLIP; ALBEF's ITC);
* :func:`hinge_loss` -- VSE++'s triplet hinge (summed or hardest negative, VSE-infinity);
* :func:`itm_loss` -- image-text matching as a logistic loss on match scores;
* :func:`mlm_loss` -- masked language modelling cross-entropy over the masked positions;
* :func:`ipot` / :func:`wpa_loss` -- ViLT's word-patch alignment: the inexact proximal-point optimal
  transport distance between text and image tokens (Xie et al. 2018, IPOT; ViLT paper section 3.3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlpbench.architectures.vse import hinge_triplet_loss


def same_image_mask(image_index: torch.Tensor) -> torch.Tensor:
    """[B] image ids -> [B, B] True where i != j share an image (false negatives to exclude)."""
    same = image_index[:, None] == image_index[None, :]
    return same & ~torch.eye(len(image_index), dtype=torch.bool, device=image_index.device)


def contrastive_loss(logits_per_image: torch.Tensor, image_index: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE: [B, B] (already temperature-scaled) logits, positives on the diagonal -> scalar.
    Pairs of another caption of the same image (``image_index``) are not counted as negatives."""
    logits = logits_per_image
    if image_index is not None:
        logits = logits.masked_fill(same_image_mask(image_index), float("-inf"))
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def hinge_loss(
    similarity: torch.Tensor, image_index: torch.Tensor | None = None, hardest: bool = True, margin: float = 0.2
) -> torch.Tensor:
    """VSE++ hinge over [B, B] cosine similarities, averaged over the batch; same-image pairs excluded."""
    s = similarity
    if image_index is not None:
        s = s.masked_fill(same_image_mask(image_index), -1.0)
    return hinge_triplet_loss(s, margin=margin, hardest=hardest) / len(s)


def itm_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[N] match scores (logit of "matches") and [N] 0/1 labels -> binary cross-entropy."""
    return F.binary_cross_entropy_with_logits(scores, labels.float())


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B, L, V] logits, [B, L] labels (-100 where not masked) -> cross-entropy; 0 (with a graph) if none masked."""
    if not bool((labels >= 0).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)


@torch.no_grad()
def ipot(
    cost: torch.Tensor, x_mask: torch.Tensor, y_mask: torch.Tensor, beta: float = 0.5, iterations: int = 50, k: int = 1
) -> torch.Tensor:
    """Inexact proximal point OT plan (IPOT, Xie et al. 2018, Algorithm 1; ViLT's ``ipot``).

    cost [B, N, M] between the N tokens of x and M of y; masks [B, N] / [B, M] True for real tokens.
    Returns the transport plan T [B, N, M] (rows and columns of padded tokens are 0); uniform marginals
    over the real tokens.  No gradient flows through the plan (as in ViLT), only through the cost.
    """
    b, n, m = cost.shape
    x_len = x_mask.sum(1, keepdim=True).clamp(min=1).to(cost.dtype)  # [B, 1]
    y_len = y_mask.sum(1, keepdim=True).clamp(min=1).to(cost.dtype)
    valid = x_mask[:, :, None] & y_mask[:, None, :]  # [B, N, M]
    sigma = torch.ones(b, m, 1, dtype=cost.dtype, device=cost.device) / y_len[:, :, None]
    plan = torch.ones(b, n, m, dtype=cost.dtype, device=cost.device) * valid
    a_kernel = torch.exp(-cost / beta) * valid
    x_den = x_len[:, :, None]  # [B, 1, 1]
    y_den = y_len[:, :, None]
    for _ in range(iterations):
        q = a_kernel * plan  # [B, N, M]
        for _ in range(k):
            delta = 1 / (x_den * q.bmm(sigma)).masked_fill(~x_mask[:, :, None], 1.0)  # [B, N, 1]
            sigma = 1 / (y_den * q.transpose(1, 2).bmm(delta)).masked_fill(~y_mask[:, :, None], 1.0)  # [B, M, 1]
        plan = delta * q * sigma.transpose(1, 2)
    return plan * valid


def wpa_loss(
    text: torch.Tensor,
    text_mask: torch.Tensor,
    image: torch.Tensor,
    image_mask: torch.Tensor,
    matched: torch.Tensor,
    beta: float = 0.5,
    iterations: int = 50,
) -> torch.Tensor:
    """ViLT's word-patch alignment: OT distance (cost 1 - cosine) between word tokens [B, L, D] and patch
    tokens [B, N, D] of the fused output, pulled down for matched pairs and up for mismatched ones
    (``matched`` [B] bool): (sum over positives - sum over negatives) / B, as ViLT's ``compute_itm_wpa``."""
    cost = 1 - F.normalize(text, dim=-1) @ F.normalize(image, dim=-1).transpose(1, 2)  # [B, L, N]
    cost = cost.masked_fill(~(text_mask[:, :, None] & image_mask[:, None, :]), 0.0)
    plan = ipot(cost.detach(), text_mask, image_mask, beta=beta, iterations=iterations)
    distance = (plan * cost).sum((1, 2))  # [B]
    return (distance[matched].sum() - distance[~matched].sum()) / len(distance)

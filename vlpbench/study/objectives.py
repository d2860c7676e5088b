"""Training objectives by taxonomy family, around a registry-built architecture (no head).

:class:`TaskModel` wraps a :class:`~vlpbench.architectures.compose.VLPModel` and the heads its family
trains, and its ``forward`` takes one step's three batches (retrieval pairs, QA pairs, matching pairs)
and returns the summed loss, so DistributedDataParallel sees every parameter through one call.

* dual encoders (classes a and b, ``logits_per_image`` filled): retrieval pairs -> InfoNCE over
  ``logits_per_image`` (CLIP) or the VSE++ hardest-negative hinge (VSE); QA -> a VQA head on the
  shallow interaction ``[image; text; image * text]`` of the normalised pooled embeddings; matching
  statements (true, random, binding- and relation-swapped) -> a logistic loss on ``scale * (cos - bias)``,
  so dual encoders see the same hard negatives as the fusion models.
* fusion models (classes c and d): retrieval pairs -> MLM (15% of word tokens masked) on the positives
  plus ITM against an in-batch negative (each image with the next pair's caption); matching statements
  -> ITM with their true/false labels; QA -> the VQA head on ``pooler_output``.  The ITM positives are
  the MLM forward (masked text), as one pass per positive keeps the budget equal to the dual encoders';
  the negatives are masked the same way (the next pair's masked caption), so the presence of [MASK]
  tokens does not tell a positive from a negative.

Images: patch embedders read pixels as their family's image processor leaves them, so ``TaskModel``
normalises the [0, 1] images with that processor's mean / std (``pixel_processor``: "vilt" or "clip")
before the embedder; grid and region embedders normalise inside (ImageNet statistics).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from vlpbench.architectures.compose import VLPModel
from vlpbench.architectures.vse import hinge_triplet_loss
from vlpbench.embedders.patch import PROCESSOR_NORMALISATION, processor_normalise
from vlpbench.errors import bad_value
from vlpbench.layers import init_std, init_transformer_weights
from vlpbench.registry import HEAD
from vlpbench.types import InteractionOutput, VisualTokens

MASK_PROB = 0.15
FIRST_WORD_ID = 5          # ids below are [PAD] [CLS] [SEP] [MASK] [UNK]
MASK_ID = 3


def family_of(model: VLPModel) -> str:
    """"dual" for classes a/b (pooled embeddings + similarity), "fusion" for c/d."""
    return model.interaction.family  # declared by each interaction class (vlpbench.types.FAMILIES)


def resize_to(pixel_values: torch.Tensor, size) -> torch.Tensor:
    """[B, 3, h, w] -> [B, 3, H, W] bilinear (no-op at the right size)."""
    if tuple(pixel_values.shape[-2:]) == tuple(size):
        return pixel_values
    return F.interpolate(pixel_values, size=tuple(size), mode="bilinear", align_corners=False)


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, generator: torch.Generator):
    """BERT masking of word tokens -> (masked ids [B, L], labels [B, L] with -100 where not masked)."""
    words = (input_ids >= FIRST_WORD_ID) & attention_mask.bool()
    pick = (torch.rand(input_ids.shape, generator=generator) < MASK_PROB) & words
    labels = torch.where(pick, input_ids, torch.full_like(input_ids, -100))
    return torch.where(pick, torch.full_like(input_ids, MASK_ID), input_ids), labels


class TaskModel(nn.Module):
    """A VLPModel plus the heads of its family; ``forward(batches, generator) -> (loss, parts)``."""

    def __init__(self, model: VLPModel, *, num_answers: int, vocab_size: int, loss: str = "infonce",
                 pixel_processor: Optional[str] = None):
        super().__init__()
        if pixel_processor is not None and pixel_processor not in PROCESSOR_NORMALISATION:
            raise bad_value("pixel_processor", pixel_processor, (None, *PROCESSOR_NORMALISATION))
        self.model = model
        self.family = family_of(model)
        self.loss_kind = loss
        self.pixel_processor = pixel_processor
        self.image_size = tuple(model.visual.image_size) if not isinstance(model.visual.image_size, int) \
            else (model.visual.image_size,) * 2
        dim = model.interaction.output_dim
        if self.family == "dual":
            self.qa = HEAD.build("vqa", context={"in_dim": 3 * dim}, num_answers=num_answers)
            self.match_scale = nn.Parameter(torch.tensor(10.0))
            # bias at 0: the initial logits sit at the 50% base rate of the statements.  At 0.5 every logit
            # started near -5 (loss 2.5), whose gradient pulled every text embedding towards the (still
            # image-independent) image embedding: text embeddings collapsed (cosine 0.98) and InfoNCE stalled.
            self.match_bias = nn.Parameter(torch.tensor(0.0))
        else:
            text_dim = model.text.output_spec().dim
            self.qa = HEAD.build("vqa", context={"in_dim": dim}, num_answers=num_answers)
            self.itm = HEAD.build("itm", context={"in_dim": dim})
            self.mlm = HEAD.build("mlm", context={"in_dim": dim}, vocab_size=vocab_size, hidden_dim=text_dim)
            init_transformer_weights(self.itm, init_std(dim))     # ViLT / UNITER heads: N(0, 0.02) at width 768
            init_transformer_weights(self.mlm, init_std(text_dim))
        init_transformer_weights(self.qa, init_std(dim))
        self.visual_cache: Optional[Dict[str, Dict[str, torch.Tensor]]] = None  # split -> precomputed regions

    # ---- the pipeline pieces ---------------------------------------------------------------------------
    def visual(self, batch: Dict[str, Any], split: str = "train") -> VisualTokens:
        """Visual tokens of a batch: from the frozen-detector cache when set, else the embedder."""
        if self.visual_cache is not None:
            c, idx = self.visual_cache[split], batch["image_index"]
            return VisualTokens(features=c["features"][idx], mask=c["mask"][idx], boxes=c["boxes"][idx])
        pixels = resize_to(batch["pixel_values"], self.image_size)
        if self.pixel_processor is not None:
            pixels = processor_normalise(pixels, self.pixel_processor)
        return self.model.visual(pixel_values=pixels)

    def interact(self, visual: VisualTokens, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> InteractionOutput:
        text = self.model.text(input_ids=input_ids, attention_mask=attention_mask)
        return self.model.interaction(visual, text)

    def pooled_pair(self, out: InteractionOutput) -> torch.Tensor:
        """Dual encoders' shallow interaction [B, 3E] = [i; t; i * t] of normalised embeddings."""
        i, t = F.normalize(out.image_embeds, dim=-1), F.normalize(out.text_embeds, dim=-1)
        return torch.cat([i, t, i * t], dim=-1)

    def qa_logits(self, out: InteractionOutput) -> torch.Tensor:
        if self.family == "dual":
            return self.qa(InteractionOutput(pooler_output=self.pooled_pair(out)))["logits"]
        return self.qa(out)["logits"]

    def match_logits(self, out: InteractionOutput) -> torch.Tensor:
        """[B] score that the pair matches (fusion: ITM logit margin; dual: scaled cosine minus bias)."""
        if self.family == "dual":
            cos = (F.normalize(out.image_embeds, dim=-1) * F.normalize(out.text_embeds, dim=-1)).sum(-1)
            return self.match_scale * (cos - self.match_bias)
        logits = self.itm(out)["logits"]
        return logits[:, 1] - logits[:, 0]

    # ---- one training step ------------------------------------------------------------------------------
    def forward(self, retrieval: Dict[str, Any], qa: Dict[str, Any], matching: Dict[str, Any],
                generator: torch.Generator, align_only: bool = False) -> tuple:
        """-> (loss, {objective: value}).  ``align_only``: only the family's image-text alignment objective
        (contrastive / hinge for dual encoders, ITM on unmasked text for fusion models) -- the training
        schedule's first phase (see :class:`~vlpbench.study.training.TrainConfig` ``align_frac``)."""
        parts = {}
        if self.family == "dual":
            out = self.interact(self.visual(retrieval), retrieval["input_ids"], retrieval["attention_mask"])
            logits = out.logits_per_image  # [B, B]
            same = retrieval["image_index"][:, None] == retrieval["image_index"][None, :]
            off = same & ~torch.eye(len(same), dtype=torch.bool)
            if self.loss_kind == "hinge":
                # VSE-infinity's recipe: the summed violations while warming up (the alignment phase),
                # the hardest negative (VSE++ max violation) after it
                parts["hinge"] = hinge_triplet_loss(logits.masked_fill(off, -1.0), hardest=not align_only) / len(same)
            else:
                logits = logits.masked_fill(off, float("-inf"))
                target = torch.arange(len(same))
                parts["itc"] = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
        else:
            if align_only:
                ids, labels = retrieval["input_ids"], None
            else:
                ids, labels = mask_tokens(retrieval["input_ids"], retrieval["attention_mask"], generator)
            visual = self.visual(retrieval)
            pos = self.interact(visual, ids, retrieval["attention_mask"])
            if labels is not None:
                mlm = self.mlm(pos)["logits"]  # [B, L, V]
                parts["mlm"] = F.cross_entropy(mlm.flatten(0, 1), labels.flatten(), ignore_index=-100) \
                    if bool((labels >= 0).any()) else mlm.sum() * 0.0
            # in-batch negative: image k with caption k+1 (a positive when both come from one image)
            neg_ids = ids.roll(1, 0)
            neg_mask = retrieval["attention_mask"].roll(1, 0)
            neg = self.interact(visual, neg_ids, neg_mask)
            neg_label = (retrieval["image_index"] == retrieval["image_index"].roll(1, 0)).float()
            itm = torch.cat([self.match_logits(pos), self.match_logits(neg)])
            target = torch.cat([torch.ones(len(neg_label)), neg_label])
            parts["itm"] = F.binary_cross_entropy_with_logits(itm, target)
        if not align_only:
            out = self.interact(self.visual(matching), matching["input_ids"], matching["attention_mask"])
            parts["match"] = F.binary_cross_entropy_with_logits(self.match_logits(out), matching["label"].float())
            out = self.interact(self.visual(qa), qa["input_ids"], qa["attention_mask"])
            parts["qa"] = F.cross_entropy(self.qa_logits(out), qa["answer"])
        loss = sum(parts.values())
        return loss, {k: float(v.detach()) for k, v in parts.items()}

"""Task models: a registry-built architecture plus the heads and objectives of its family.

Two classes, one per interaction family (read from the interaction's registry tags, ``dual`` / ``fusion``):

* :class:`DualTaskModel` (classes a and b, ``logits_per_image`` filled): retrieval pairs -> InfoNCE over
  ``logits_per_image`` (CLIP) or the VSE++ hinge (VSE); QA -> a VQA head on the shallow interaction
  ``[image; text; image * text]`` of the pooled embeddings, each standardised over the batch (``qa_norm``)
  and normalised; matching statements (true, random,
  binding- and relation-swapped) -> a logistic loss on ``scale * (cos - bias)``, so dual encoders see the
  same hard negatives as the fusion models.
* :class:`FusionTaskModel` (classes c and d): retrieval pairs -> MLM on the positives plus ITM against a
  negative caption (by default the next pair's: image k with caption k+1; with ``hard_negatives`` one
  drawn from ALBEF's image-text contrastive similarities); matching statements -> ITM with their labels;
  QA -> the VQA head on ``pooler_output``.  Options from the seed papers, all off by default
  (:class:`ObjectiveConfig`): ViLT's word-patch alignment (WPA, added to ITM), BERT's 80/10/10 masking,
  ALBEF's image-text contrastive loss before fusion (ITC over the unimodal embeddings).
  The ITM positives are the MLM forward (masked text), so one pass per positive keeps the budget equal
  to the dual encoders'; negatives are masked the same way, so [MASK] tokens do not tell them apart.

``forward(retrieval, qa, matching, generator, align_only)`` takes one step's three batches and returns
(weighted summed loss, {objective: value}), so DistributedDataParallel sees every parameter through one call.
Losses live in :mod:`vlpbench.study.losses`.

Images: patch embedders read pixels as their family's image processor leaves them, so the task model
normalises the [0, 1] images with that processor's mean / std (``pixel_processor``: "vilt" or "clip")
before the embedder; grid and region embedders normalise inside (ImageNet statistics).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlpbench.architectures.compose import VLPModel
from vlpbench.embedders.patch import PROCESSOR_NORMALISATION, processor_normalise
from vlpbench.errors import bad_value
from vlpbench.layers import init_std, init_transformer_weights
from vlpbench.registry import HEAD
from vlpbench.study import losses
from vlpbench.types import InteractionOutput, VisualTokens

FIRST_WORD_ID = 5  # ids below are [PAD] [CLS] [SEP] [MASK] [UNK]
MASK_ID = 3
MASKINGS = ("mask", "bert")
QA_NORMS = ("batch", "none")
CONTRASTIVE = ("auto", "infonce", "hinge")


@dataclass(frozen=True)
class ObjectiveConfig:
    """Which objectives a task model trains and their weights (the summed loss is the weighted sum)."""

    contrastive: str = "auto"  # dual encoders: "infonce" or "hinge"; "auto" = hinge for vse-gpo, else infonce
    align: float = 1.0  # weight of the dual encoders' contrastive / hinge loss
    itm: float = 1.0  # fusion: image-text matching on retrieval pairs
    mlm: float = 1.0  # fusion: masked language modelling
    mask_prob: float = 0.15  # share of word tokens masked
    masking: str = "mask"  # "mask": every masked token -> [MASK]; "bert": 80% [MASK], 10% random, 10% kept
    wpa: float = 0.0  # fusion: ViLT word-patch alignment weight (ViLT: 0.1), IPOT beta 0.5, 50 iterations
    itc: float = 0.0  # fusion: ALBEF image-text contrastive loss on the unimodal embeddings
    hard_negatives: bool = False  # fusion: ITM negatives drawn from the ITC similarities (needs itc > 0)
    qa: float = 1.0
    match: float = 1.0

    def validate(self) -> ObjectiveConfig:
        if self.contrastive not in CONTRASTIVE:
            raise bad_value("contrastive", self.contrastive, CONTRASTIVE)
        if self.masking not in MASKINGS:
            raise bad_value("masking", self.masking, MASKINGS)
        for name in ("align", "itm", "mlm", "wpa", "itc", "qa", "match"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise bad_value(f"{name} weight", value, "a number >= 0")
        if not 0 < self.mask_prob < 1:
            raise bad_value("mask_prob", self.mask_prob, "a fraction in (0, 1)")
        if self.hard_negatives and self.itc <= 0:
            raise bad_value("hard_negatives", self.hard_negatives, "False, or True with an itc weight > 0")
        return self


def resize_to(pixel_values: torch.Tensor, size) -> torch.Tensor:
    """[B, 3, h, w] -> [B, 3, H, W] bilinear (no-op at the right size)."""
    if tuple(pixel_values.shape[-2:]) == tuple(size):
        return pixel_values
    return F.interpolate(pixel_values, size=tuple(size), mode="bilinear", align_corners=False)


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    generator: torch.Generator,
    mask_prob: float = 0.15,
    masking: str = "mask",
    vocab_size: int | None = None,
):
    """BERT masking of word tokens -> (masked ids [B, L], labels [B, L] with -100 where not masked).

    ``masking="bert"``: of the picked tokens 80% become [MASK], 10% a random word, 10% stay (BERT, section
    3.1).  The study's tokenizer is word-level (one token per word), so this is whole-word masking as ViLT
    uses it: no word is ever split between masked and unmasked pieces.
    """
    words = (input_ids >= FIRST_WORD_ID) & attention_mask.bool()
    dev = input_ids.device  # draws come from the CPU generator (the same on every device)
    pick = (torch.rand(input_ids.shape, generator=generator).to(dev) < mask_prob) & words
    labels = torch.where(pick, input_ids, torch.full_like(input_ids, -100))
    if masking == "mask":
        return torch.where(pick, torch.full_like(input_ids, MASK_ID), input_ids), labels
    if vocab_size is None:
        raise bad_value("vocab_size", vocab_size, "the vocabulary size (random replacement words)")
    u = torch.rand(input_ids.shape, generator=generator).to(dev)
    random_words = torch.randint(FIRST_WORD_ID, vocab_size, input_ids.shape, generator=generator).to(dev)
    out = torch.where(pick & (u < 0.8), torch.full_like(input_ids, MASK_ID), input_ids)
    out = torch.where(pick & (u >= 0.8) & (u < 0.9), random_words, out)
    return out, labels


class TaskModel(nn.Module, metaclass=abc.ABCMeta):
    """What both families share: the architecture, the QA head, image normalisation, the region cache.

    Subclasses set ``family`` and implement ``match_logits``, ``qa_logits`` and ``alignment``.
    """

    family = ""

    def __init__(
        self, model: VLPModel, *, num_answers: int, objectives: ObjectiveConfig, pixel_processor: str | None = None
    ):
        super().__init__()
        if pixel_processor is not None and pixel_processor not in PROCESSOR_NORMALISATION:
            raise bad_value("pixel_processor", pixel_processor, (None, *PROCESSOR_NORMALISATION))
        self.model = model
        self.objectives = objectives.validate()
        self.pixel_processor = pixel_processor
        size = model.visual.image_size
        self.image_size = tuple(size) if not isinstance(size, int) else (size, size)
        self.visual_cache: dict[str, dict[str, torch.Tensor]] | None = None  # split -> precomputed regions
        self.region = False  # the visual embedder is a (frozen) detector: set by the builder

    def visual(self, batch: dict[str, Any], split: str = "train") -> VisualTokens:
        """Visual tokens of a batch: from the frozen-detector cache when set, else the embedder."""
        if self.visual_cache is not None:
            c, idx = self.visual_cache[split], batch["image_index"]
            return VisualTokens(features=c["features"][idx], mask=c["mask"][idx], boxes=c["boxes"][idx])
        pixels = resize_to(batch["pixel_values"], self.image_size)
        if self.pixel_processor is not None:
            pixels = processor_normalise(pixels, self.pixel_processor)
        return self.model.visual(pixel_values=pixels)

    def interact(
        self, visual: VisualTokens, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> InteractionOutput:
        text = self.model.text(input_ids=input_ids, attention_mask=attention_mask)
        return self.model.interaction(visual, text)

    def run(self, batch: dict[str, Any]) -> InteractionOutput:
        return self.interact(self.visual(batch), batch["input_ids"], batch["attention_mask"])

    @abc.abstractmethod
    def qa_logits(self, out: InteractionOutput) -> torch.Tensor:
        """Defined by each family's task model."""

    def qa_logits_of(self, batch: dict[str, Any], split: str = "train") -> torch.Tensor:
        """[B, A] answer logits of a QA batch (images from ``split``'s region cache when there is one)."""
        return self.qa_logits(self.interact(self.visual(batch, split), batch["input_ids"], batch["attention_mask"]))

    @abc.abstractmethod
    def match_logits(self, out: InteractionOutput) -> torch.Tensor:
        """Defined by each family's task model."""

    @abc.abstractmethod
    def alignment(
        self, retrieval: dict[str, Any], generator: torch.Generator, align_only: bool
    ) -> dict[str, torch.Tensor]:
        """Defined by each family's task model: the family's alignment losses on a retrieval batch."""

    def forward(
        self,
        retrieval: dict[str, Any],
        qa: dict[str, Any],
        matching: dict[str, Any],
        generator: torch.Generator,
        align_only: bool = False,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """-> (loss, {objective: value}).  ``align_only``: only the family's image-text alignment objectives
        -- the training schedule's first phase (see :class:`~vlpbench.study.training.TrainConfig` ``align_frac``)."""
        parts, weights = self.alignment(retrieval, generator, align_only)
        if not align_only:
            parts["match"] = losses.itm_loss(self.match_logits(self.run(matching)), matching["label"])
            parts["qa"] = F.cross_entropy(self.qa_logits_of(qa), qa["answer"])
            weights.update(match=self.objectives.match, qa=self.objectives.qa)
        loss = sum(weights[k] * v for k, v in parts.items())
        return loss, {k: float(v.detach()) for k, v in parts.items()}


class DualTaskModel(TaskModel):
    """Classes a and b: pooled image and text embeddings compared by cosine similarity."""

    family = "dual"

    def __init__(
        self,
        model: VLPModel,
        *,
        num_answers: int,
        objectives: ObjectiveConfig,
        loss: str = "infonce",
        pixel_processor: str | None = None,
        qa_norm: str = "batch",
    ):
        super().__init__(model, num_answers=num_answers, objectives=objectives, pixel_processor=pixel_processor)
        if loss not in ("infonce", "hinge"):
            raise bad_value("loss", loss, ("infonce", "hinge"))
        if qa_norm not in QA_NORMS:
            raise bad_value("qa_norm", qa_norm, QA_NORMS)
        self.loss_kind = loss
        dim = model.interaction.output_dim
        # The QA head standardises each pooled embedding over the batch first (BatchNorm without affine, as MAE's
        # linear probe, He et al. 2022).  Without it clip-small's image embeddings of different images differed by
        # 0.5% of their norm at init (the class token's own embedding dominates); its QA head answered from the priors.
        self.qa_norm = qa_norm
        self.qa_image_norm = nn.BatchNorm1d(dim, affine=False) if qa_norm == "batch" else nn.Identity()
        self.qa_text_norm = nn.BatchNorm1d(dim, affine=False) if qa_norm == "batch" else nn.Identity()
        self.qa = HEAD.build("vqa", context={"in_dim": 3 * dim}, num_answers=num_answers)
        self.match_scale = nn.Parameter(torch.tensor(10.0))
        # bias at 0: the initial logits sit at the 50% base rate of the statements.  At 0.5 every logit
        # started near -5 (loss 2.5), whose gradient pulled every text embedding towards the (still
        # image-independent) image embedding: text embeddings collapsed (cosine 0.98) and InfoNCE stalled.
        self.match_bias = nn.Parameter(torch.tensor(0.0))
        init_transformer_weights(self.qa, init_std(dim))

    @staticmethod
    def cosine(out: InteractionOutput) -> torch.Tensor:
        return (F.normalize(out.image_embeds, dim=-1) * F.normalize(out.text_embeds, dim=-1)).sum(-1)

    def pooled_pair(self, out: InteractionOutput) -> torch.Tensor:
        """The shallow interaction [B, 3E] = [i; t; i * t] of the (batch-standardised, ``qa_norm``) embeddings,
        each normalised to unit length."""
        i = F.normalize(self.qa_image_norm(out.image_embeds), dim=-1)
        t = F.normalize(self.qa_text_norm(out.text_embeds), dim=-1)
        return torch.cat([i, t, i * t], dim=-1)

    def qa_logits(self, out: InteractionOutput) -> torch.Tensor:
        return self.qa(InteractionOutput(pooler_output=self.pooled_pair(out)))["logits"]

    def match_logits(self, out: InteractionOutput) -> torch.Tensor:
        """[B] scaled cosine minus bias."""
        return self.match_scale * (self.cosine(out) - self.match_bias)

    def alignment(self, retrieval, generator, align_only):
        out = self.run(retrieval)
        logits, index = out.logits_per_image, retrieval["image_index"]  # [B, B]
        if self.loss_kind == "hinge":
            # VSE-infinity's recipe: the summed violations while warming up (the alignment phase),
            # the hardest negative (VSE++ max violation) after it
            return {"hinge": losses.hinge_loss(logits, index, hardest=not align_only)}, {"hinge": self.objectives.align}
        return {"itc": losses.contrastive_loss(logits, index)}, {"itc": self.objectives.align}


class FusionTaskModel(TaskModel):
    """Classes c and d: one deep interaction reads image and text together; ITM / MLM / QA heads on it."""

    family = "fusion"

    def __init__(
        self,
        model: VLPModel,
        *,
        num_answers: int,
        vocab_size: int,
        objectives: ObjectiveConfig,
        pixel_processor: str | None = None,
    ):
        super().__init__(model, num_answers=num_answers, objectives=objectives, pixel_processor=pixel_processor)
        dim = model.interaction.output_dim
        text_dim = model.text.output_spec().dim
        self.vocab_size = vocab_size
        self.qa = HEAD.build("vqa", context={"in_dim": dim}, num_answers=num_answers)
        self.itm = HEAD.build("itm", context={"in_dim": dim})
        self.mlm = HEAD.build("mlm", context={"in_dim": dim}, vocab_size=vocab_size, hidden_dim=text_dim)
        init_transformer_weights(self.itm, init_std(dim))  # ViLT / UNITER heads: N(0, 0.02) at width 768
        init_transformer_weights(self.mlm, init_std(text_dim))
        init_transformer_weights(self.qa, init_std(dim))
        if self.objectives.itc > 0:
            # ALBEF's ITC: projections of the unimodal [CLS] text token and mean visual token, temperature 0.07
            embed = dim
            self.itc_image = nn.Linear(model.visual.output_spec().dim, embed)
            self.itc_text = nn.Linear(text_dim, embed)
            self.itc_logit_scale = nn.Parameter(torch.tensor(1 / 0.07).log())

    def qa_logits(self, out: InteractionOutput) -> torch.Tensor:
        return self.qa(out)["logits"]

    def match_logits(self, out: InteractionOutput) -> torch.Tensor:
        """[B] ITM logit margin (matches minus does not)."""
        logits = self.itm(out)["logits"]
        return logits[:, 1] - logits[:, 0]

    def itc_similarity(self, visual: VisualTokens, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """[B, B] scaled cosine similarities of the unimodal embeddings (before fusion)."""
        text = self.model.text(input_ids=input_ids, attention_mask=attention_mask).features[:, 0]
        m = visual.mask.to(visual.features.dtype)[..., None]
        image = (visual.features * m).sum(1) / m.sum(1).clamp(min=1)
        i = F.normalize(self.itc_image(image), dim=-1)
        t = F.normalize(self.itc_text(text), dim=-1)
        return self.itc_logit_scale.exp().clamp(max=100) * i @ t.t()

    def negative_texts(
        self, index: torch.Tensor, similarity: torch.Tensor | None, generator: torch.Generator
    ) -> torch.Tensor:
        """[B] which caption each image is paired with as its ITM negative: the next one (roll), or one
        drawn with probability softmax(similarity) among captions of other images (ALBEF's hard negatives)."""
        n, dev = len(index), index.device
        if similarity is None:
            return torch.arange(n, device=dev).roll(1)
        index = index.cpu()  # drawn with the CPU generator
        other = index[:, None] != index[None, :]
        weights = F.softmax(similarity.detach().float().cpu(), dim=1) * other
        weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, other.float())
        if not bool((weights.sum(1) > 0).all()):
            return torch.arange(n, device=dev).roll(1)  # every caption of one image: no other to draw
        return torch.multinomial(weights + 1e-12 * other, 1, generator=generator)[:, 0].to(dev)

    def alignment(self, retrieval, generator, align_only):
        o = self.objectives
        parts, weights = {}, {}
        ids, mask, index = retrieval["input_ids"], retrieval["attention_mask"], retrieval["image_index"]
        labels = None
        if not align_only:
            ids, labels = mask_tokens(ids, mask, generator, o.mask_prob, o.masking, self.vocab_size)
        visual = self.visual(retrieval)
        similarity = None
        if o.itc > 0:
            similarity = self.itc_similarity(visual, retrieval["input_ids"], mask)
            parts["itc"], weights["itc"] = losses.contrastive_loss(similarity, index), o.itc
        pos = self.interact(visual, ids, mask)
        if labels is not None:
            parts["mlm"], weights["mlm"] = losses.mlm_loss(self.mlm(pos)["logits"], labels), o.mlm
        neg_text = self.negative_texts(index, similarity if o.hard_negatives else None, generator)
        neg = self.interact(visual, ids[neg_text], mask[neg_text])
        neg_label = (index == index[neg_text]).float()  # a positive when both share an image
        scores = torch.cat([self.match_logits(pos), self.match_logits(neg)])
        parts["itm"] = losses.itm_loss(scores, torch.cat([torch.ones_like(neg_label), neg_label]))
        weights["itm"] = o.itm
        if o.wpa > 0:
            parts["wpa"], weights["wpa"] = self.wpa(pos, neg, ids, mask, neg_text, visual, neg_label), o.wpa
        return parts, weights

    def wpa(
        self,
        pos: InteractionOutput,
        neg: InteractionOutput,
        ids,
        mask,
        neg_text,
        visual: VisualTokens,
        neg_label: torch.Tensor,
    ) -> torch.Tensor:
        """ViLT's word-patch alignment over the fused text tokens (words only, no [CLS] / [SEP]) and
        visual tokens of the positive and the negative pairs."""
        words = (ids >= FIRST_WORD_ID) | (ids == MASK_ID)
        text = torch.cat([self._text_states(pos), self._text_states(neg)])
        (image_pos, mask_pos), (image_neg, mask_neg) = self._image_states(pos, visual), self._image_states(neg, visual)
        image, image_mask = torch.cat([image_pos, image_neg]), torch.cat([mask_pos, mask_neg]).bool()
        text_mask = torch.cat([words & mask.bool(), (words & mask.bool())[neg_text]])
        matched = torch.cat([torch.ones_like(neg_label), neg_label]).bool()
        return losses.wpa_loss(text, text_mask, image, image_mask, matched)

    @staticmethod
    def _text_states(out: InteractionOutput) -> torch.Tensor:
        return out.last_hidden_state[:, : out.text_len]

    @staticmethod
    def _image_states(out: InteractionOutput, visual: VisualTokens) -> tuple[torch.Tensor, torch.Tensor]:
        """(visual token states [B, N, D], their mask [B, N])."""
        if "visual_hidden_state" in out.extras:  # two-stream models keep the visual stream apart
            return out.extras["visual_hidden_state"], out.extras["visual_mask"]
        return out.last_hidden_state[:, out.text_len :], visual.mask

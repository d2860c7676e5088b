"""The study's calibration references: Santoro et al.'s CNN+MLP and Relation Network (arXiv 1706.01427).

Both read the image with the same small CNN (``conv_layers`` 3x3 stride-2 convolutions, BatchNorm, ReLU:
on Sort-of-CLEVR four layers of 24 channels turn 75x75 pixels into 5x5 "objects") and the question with a
GRU over word embeddings (``question="gru"``; the paper's LSTM for CLEVR) or as the multi-hot bag of its
words (``question="bow"``: Sort-of-CLEVR gave a binary question code, and for the generator's templates the
bag is one).  With ``freeze_cnn`` the CNN stays at its random initialisation.  They differ only in how
image and question meet:

* CNN+MLP: the flattened feature map, concatenated with the question, through an MLP (``f``);
* RN: ``g`` (an MLP) over every ordered pair of feature-map cells, each cell tagged with its (x, y)
  coordinates in [-1, 1], concatenated with the question; the pair outputs are summed and ``f`` reads the sum:
  ``a = f(sum_ij g(o_i, o_j, q))`` (section 2 of the paper).

The paper's sizes: g 4 x 256, f 256-256-(dropout 0.5)-answers, Adam lr 2.5e-4.  The study's presets (in
``vlpbench.presets.small``) shrink the widths so both train on two CPU cores; they are QA models only
(no retrieval or matching head), trained beside the VLP classes on the same data and budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vlpbench.errors import bad_value

KINDS = ("rn", "cnn-mlp")
QUESTIONS = ("gru", "bow")


@dataclass(frozen=True)
class RelationalConfig:
    kind: str = "rn"  # "rn" (relation network) or "cnn-mlp"
    image_size: tuple[int, int] = (64, 64)
    channels: int = 24  # conv channels (the paper's 24)
    conv_layers: int = 4  # stride-2 convolutions: 64 px -> 4 x 4 cells
    kernel: int = 3  # conv kernel side (padding (kernel - 1) // 2); 4 centres each cell on 2**conv_layers px
    vocab_size: int = 64
    embed_dim: int = 32  # word embedding
    question_dim: int = 64  # GRU hidden = question code
    g_dim: int = 128  # RN pair MLP width (paper 256)
    g_layers: int = 3  # RN pair MLP depth (paper 4)
    f_dim: int = 256  # answer MLP width (paper 256)
    dropout: float = 0.5  # before the last layer of f (paper)
    num_answers: int = 2
    question: str = "gru"  # "gru" (GRU over word embeddings) or "bow" (the multi-hot bag of words, no parameters)
    freeze_cnn: bool = False  # keep the CNN at its random initialisation (BatchNorm still normalises per batch)

    def validate(self) -> RelationalConfig:
        if self.kind not in KINDS:
            raise bad_value("kind", self.kind, KINDS)
        if self.question not in QUESTIONS:
            raise bad_value("question", self.question, QUESTIONS)
        if not isinstance(self.freeze_cnn, bool):
            raise bad_value("freeze_cnn", self.freeze_cnn, "true or false")
        if not 0.0 <= self.dropout < 1.0:
            raise bad_value("dropout", self.dropout, "a probability in [0, 1)")
        for name in (
            "channels",
            "conv_layers",
            "kernel",
            "vocab_size",
            "embed_dim",
            "question_dim",
            "g_dim",
            "g_layers",
            "f_dim",
            "num_answers",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise bad_value(name, value, "an integer >= 1")
        return self

    def grid(self) -> tuple[int, int]:
        """Feature-map cells (h, w) after the stride-2 convolutions (kernel ``kernel``, padding (kernel - 1) // 2)."""
        h, w = self.image_size
        k, pad = self.kernel, (self.kernel - 1) // 2
        for _ in range(self.conv_layers):
            h, w = (h + 2 * pad - k) // 2 + 1, (w + 2 * pad - k) // 2 + 1
        return h, w


class ConvObjects(nn.Module):
    """[B, 3, H, W] -> [B, h * w, C] feature-map cells (the paper's "objects")."""

    def __init__(self, cfg: RelationalConfig):
        super().__init__()
        layers, c_in = [], 3
        for _ in range(cfg.conv_layers):
            conv = nn.Conv2d(c_in, cfg.channels, cfg.kernel, stride=2, padding=(cfg.kernel - 1) // 2)
            layers += [conv, nn.BatchNorm2d(cfg.channels), nn.ReLU()]
            c_in = cfg.channels
        self.net = nn.Sequential(*layers)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values).flatten(2).transpose(1, 2)  # [B, C, h, w] -> [B, h*w, C]


class QuestionEncoder(nn.Module):
    """Word ids [B, L] (mask [B, L]) -> [B, question_dim]: the GRU's outputs averaged over the real tokens.

    The mean, not the last state: at initialisation the last state of "is the red object on the left or
    right ?" varied by 0.9% of its norm across the six colour words (the colour is six tokens before the
    end), the mean by 22% (measured); with the last state neither reference left chance on the
    non-relational questions in 750 steps.  Sort-of-CLEVR itself hands the model a one-hot question code.
    """

    def __init__(self, cfg: RelationalConfig):
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=0)
        self.gru = nn.GRU(cfg.embed_dim, cfg.question_dim, batch_first=True)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.embed(input_ids))  # [B, L, D]; padding follows the text
        m = attention_mask[..., None].to(out.dtype)
        return (out * m).sum(1) / m.sum(1).clamp(min=1)


class BagOfWords(nn.Module):
    """Word ids [B, L] (mask [B, L]) -> the multi-hot vector of the words present [B, vocab_size]; no parameters.

    Every question template of the generator names its type by its words and at most one colour, so this code
    identifies the question exactly, as Sort-of-CLEVR's binary question code does (Santoro et al., section 5.3).
    """

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(input_ids), self.vocab_size, device=input_ids.device)
        return out.scatter_add_(1, input_ids, attention_mask.to(out.dtype)).clamp_(max=1)


def _mlp(dims, dropout: float = 0.0, last_relu: bool = False) -> nn.Sequential:
    layers = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        if dropout and i == len(dims) - 2:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2 or last_relu:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RelationalQA(nn.Module):
    """CNN + question encoder + (RN | MLP) -> answer logits; ``forward(pixels, ids, mask) -> [B, A]``."""

    def __init__(self, cfg: RelationalConfig):
        super().__init__()
        self.cfg = cfg.validate()
        self.image_size = tuple(cfg.image_size)
        self.objects = ConvObjects(cfg)
        if cfg.freeze_cnn:
            self.objects.requires_grad_(False)
        self.question: nn.Module = QuestionEncoder(cfg) if cfg.question == "gru" else BagOfWords(cfg.vocab_size)
        question_dim = cfg.question_dim if cfg.question == "gru" else cfg.vocab_size
        h, w = cfg.grid()
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        self.register_buffer("coords", torch.stack([xs.flatten(), ys.flatten()], -1), persistent=False)  # [h*w, 2]
        obj_dim = cfg.channels + 2
        if cfg.kind == "rn":
            self.g = _mlp([2 * obj_dim + question_dim] + [cfg.g_dim] * cfg.g_layers, last_relu=True)
            self.f = _mlp([cfg.g_dim, cfg.f_dim, cfg.f_dim, cfg.num_answers], dropout=cfg.dropout)
        else:
            self.f = _mlp(
                [h * w * obj_dim + question_dim, cfg.f_dim, cfg.f_dim, cfg.f_dim, cfg.num_answers],
                dropout=cfg.dropout,
            )

    @classmethod
    def from_config(cls, cfg: RelationalConfig) -> RelationalQA:
        return cls(cfg)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        o = self.objects(pixel_values)  # [B, N, C]
        o = torch.cat([o, self.coords.expand(len(o), -1, -1)], -1)  # [B, N, C + 2]
        q = self.question(input_ids, attention_mask)  # [B, Q]
        if self.cfg.kind == "cnn-mlp":
            return self.f(torch.cat([o.flatten(1), q], -1))
        return self.f(self.relate(o, q).sum((1, 2)))

    def relate(self, o: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """g over every ordered pair: objects [B, N, D], question [B, Q] -> [B, N, N, G].

        g's first layer is linear in the concatenation [o_i; o_j; q], so it is computed once per object and
        broadcast over the pairs (W [o_i; o_j; q] = W_i o_i + W_j o_j + W_q q): the same function as
        concatenating N^2 rows, at N rows' cost.
        """
        first, rest = self.g[0], self.g[1:]
        d, qd = o.shape[-1], q.shape[-1]
        w_i, w_j, w_q = first.weight.split([d, d, qd], dim=1)
        h = (o @ w_i.t())[:, :, None, :] + (o @ w_j.t())[:, None, :, :] + (q @ w_q.t() + first.bias)[:, None, None, :]
        return rest(h)


class RelationalTaskModel(nn.Module):
    """The trainer's view of a reference model: QA only (no retrieval or matching head).

    ``forward`` has the task models' signature and trains on the QA batch at every step (there is no
    alignment phase to wait for); the retrieval and matching batches are not used.  Pixels in [0, 1] are
    centred to [-1, 1] (the CNN starts with BatchNorm after its first convolution, so scale matters little).
    """

    family = "reference"

    def __init__(self, model: RelationalQA):
        super().__init__()
        self.model = model
        self.region = False
        self.visual_cache = None

    def qa_logits_of(self, batch, split: str = "train") -> torch.Tensor:
        return self.model(batch["pixel_values"] * 2 - 1, batch["input_ids"], batch["attention_mask"])

    def forward(self, retrieval, qa, matching, generator: torch.Generator, align_only: bool = False):
        loss = nn.functional.cross_entropy(self.qa_logits_of(qa), qa["answer"])
        return loss, {"qa": float(loss.detach())}

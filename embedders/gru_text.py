"""Bidirectional GRU text encoder as in VSE++ / VSE-infinity (woodfrog/vse_infty ``EncoderText``).

word embedding (dim 300) -> packed BiGRU (hidden 1024) -> forward and backward halves averaged.
Stages: ``embed``, ``gru``.  Padding is excluded with ``pack_padded_sequence`` using the lengths
of ``attention_mask``; padded output positions are zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from vlpbench.errors import VlpbenchError, bad_value
from vlpbench.stages import StageFn, null_stage
from vlpbench.types import TextTokens, TokenSpec


@dataclass(frozen=True)
class GRUTextConfig:
    vocab_size: int = 30522  # word-embedding rows (bert-base-uncased size unless set)
    embed_dim: int = 300  # word-embedding width
    hidden: int = 1024  # GRU hidden size per direction = output width
    num_layers: int = 1  # stacked GRU layers
    text_len: int = 40  # tokens per caption made by make_inputs


def lengths_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, L] mask with real tokens first -> [B] int64 lengths on CPU; VlpbenchError on holes or empty rows."""
    mask = attention_mask.bool()
    lengths = mask.sum(dim=1)
    positions = torch.arange(mask.shape[1], device=mask.device)
    if not torch.equal(mask, positions[None, :] < lengths[:, None]):
        raise VlpbenchError("invalid attention_mask: padding must follow the real tokens (right padding)")
    lengths = lengths.cpu()
    if int(lengths.min()) < 1:
        raise bad_value("attention_mask", "a row with no real token", "at least one real token per row")
    return lengths


class GRUTextEmbedder(nn.Module):
    """input_ids [B, L], attention_mask [B, L] -> TextTokens(features [B, L, hidden], mask [B, L])."""

    def __init__(
        self,
        *,
        vocab_size: int = 30522,
        embed_dim: int = 300,
        hidden: int = 1024,
        num_layers: int = 1,
        text_len: int = 40,
    ):
        super().__init__()
        for name, value in (
            ("vocab_size", vocab_size),
            ("embed_dim", embed_dim),
            ("hidden", hidden),
            ("num_layers", num_layers),
            ("text_len", text_len),
        ):
            if value < 1:
                raise bad_value(name, value, "a positive integer")
        self.vocab_size = vocab_size
        self.hidden = hidden
        self.text_len = text_len
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.gru = nn.GRU(embed_dim, hidden, num_layers, batch_first=True, bidirectional=True)

    @classmethod
    def from_config(cls, cfg: GRUTextConfig) -> GRUTextEmbedder:
        return cls(
            vocab_size=cfg.vocab_size,
            embed_dim=cfg.embed_dim,
            hidden=cfg.hidden,
            num_layers=cfg.num_layers,
            text_len=cfg.text_len,
        )

    # -- Benchmarkable -------------------------------------------------------------------------
    def make_inputs(
        self, batch_size: int, *, generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> dict[str, torch.Tensor]:
        """Full-length captions of ``text_len`` random ids (every token real)."""
        ids = torch.randint(
            1, self.vocab_size, (batch_size, self.text_len), generator=generator, device=generator.device
        )
        return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids, device=device)}

    def output_spec(self) -> TokenSpec:
        return TokenSpec(dim=self.hidden, num_tokens=self.text_len, has_cls=False, modality="text", schema="text")

    def workload(self) -> dict[str, Any]:
        return {"text_len": self.text_len}

    # -- forward -------------------------------------------------------------------------------
    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, stage: StageFn = null_stage
    ) -> TextTokens:
        if input_ids.dim() != 2:
            raise bad_value("input_ids shape", tuple(input_ids.shape), "[B, L]")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise bad_value(
                "attention_mask shape", tuple(attention_mask.shape), f"{tuple(input_ids.shape)} like input_ids"
            )
        if input_ids.numel() and not 0 <= int(input_ids.min()) <= int(input_ids.max()) < self.vocab_size:
            raise bad_value("token id range", [int(input_ids.min()), int(input_ids.max())], f"0..{self.vocab_size - 1}")
        lengths = lengths_from_mask(attention_mask)
        b, length = input_ids.shape
        with stage("embed"):
            x = self.embed(input_ids)  # [B, L, E]
        with stage("gru"):
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.gru(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=length)  # [B, L, 2*H]
            out = (out[..., : self.hidden] + out[..., self.hidden :]) / 2  # [B, L, 2*H] -> [B, L, H]
        return TextTokens(features=out, mask=attention_mask.bool())

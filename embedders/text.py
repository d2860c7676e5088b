"""Transformer-family text embedders.

* :class:`BertEmbedder` -- BERT's word + position + token-type embeddings and LayerNorm (the text side of
  ViLT, ViLBERT, UNITER: their transformer layers are the interaction).  One stage, ``embed``.
* :class:`ClipTextEmbedder` -- CLIP's whole text tower: token + position embedding, pre-norm causal
  transformer, ``ln_final``, pooling at the end-of-text token, ``text_projection``.  Stages ``embed``,
  ``encoder``, ``pool``.

The other text embedder (VSE's BiGRU) lives in :mod:`embedders.gru_text`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vlpbench.errors import VlpbenchError, bad_value
from vlpbench.layers import Encoder
from vlpbench.stages import StageFn, null_stage
from vlpbench.types import TextTokens, TokenSpec

CLIP_POOL = ("argmax", "eot")


def load_tokenizer(directory: str | os.PathLike) -> Any:
    """A transformers tokenizer from a local checkpoint directory (never the network)."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise VlpbenchError(
            f"tokenizer directory {directory!r} does not exist; accepted: a local directory "
            "with tokenizer files (tokenizer.json / vocab.txt / vocab.json + merges.txt)"
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise VlpbenchError(
            f"no usable tokenizer in {directory!r} ({err.__class__.__name__}: {err}); accepted: a "
            "directory written by a transformers tokenizer's save_pretrained"
        ) from err


def _check_ids(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, max_len: int, vocab: int) -> None:
    if not torch.is_tensor(input_ids) or input_ids.dim() != 2 or input_ids.is_floating_point():
        got = tuple(input_ids.shape) if torch.is_tensor(input_ids) else type(input_ids).__name__
        raise bad_value("input_ids", got, "an integer tensor [B, L]")
    if input_ids.shape[1] > max_len or input_ids.shape[1] == 0:
        raise bad_value("text length", input_ids.shape[1], f"1 to {max_len} tokens (the model's context)")
    if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise bad_value("attention_mask shape", tuple(attention_mask.shape), f"{tuple(input_ids.shape)} like input_ids")
    in_vocab = ((input_ids >= 0) & (input_ids < vocab)).all()
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or input_ids.device.type != "cpu":
        # no host read here: it would break a compiled graph (a .item()) or synchronise a GPU stream
        # inside the timed forward; the check runs on the device and fails at the next synchronisation
        torch._assert_async(in_vocab, f"token ids outside the vocabulary [0, {vocab})")
        return
    if not bool(in_vocab):
        lo, hi = torch.aminmax(input_ids)
        raise bad_value("token id", int(lo) if int(lo) < 0 else int(hi), f"ids in [0, {vocab}) (the vocabulary)")


def _random_ids(
    batch_size: int, length: int, low: int, high: int, generator: torch.Generator, device: torch.device | str
) -> torch.Tensor:
    return torch.randint(low, high, (batch_size, length), generator=generator, device=generator.device).to(device)


# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BertEmbedConfig:
    vocab_size: int = 30522  # bert-base-uncased word pieces
    dim: int = 768  # hidden width
    max_len: int = 40  # position embeddings (ViLT 40, BERT 512)
    text_len: int = 40  # tokens in latency inputs (make_inputs)
    type_vocab_size: int = 2  # BERT segment ids
    pad_token_id: int = 0  # padding row of the word table
    eps: float = 1e-12  # LayerNorm eps
    dropout: float = 0.0  # embedding dropout (training only)


class BertEmbedder(nn.Module):
    """input_ids [B, L], attention_mask [B, L] -> TextTokens(features [B, L, D], mask [B, L])."""

    def __init__(
        self,
        vocab_size: int = 30522,
        dim: int = 768,
        max_len: int = 40,
        *,
        text_len: int | None = None,
        type_vocab_size: int = 2,
        pad_token_id: int = 0,
        eps: float = 1e-12,
        dropout: float = 0.0,
    ):
        super().__init__()
        text_len = max_len if text_len is None else text_len
        if not 0 < text_len <= max_len:
            raise bad_value("text_len", text_len, f"1 to max_len={max_len}")
        self.vocab_size, self.dim, self.max_len, self.text_len = vocab_size, dim, max_len, text_len
        self.word_embeddings = nn.Embedding(vocab_size, dim, padding_idx=pad_token_id)
        self.position_embeddings = nn.Embedding(max_len, dim)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("position_ids", torch.arange(max_len)[None], persistent=False)  # [1, max_len]

    @classmethod
    def from_config(cls, cfg: BertEmbedConfig) -> BertEmbedder:
        return cls(
            cfg.vocab_size,
            cfg.dim,
            cfg.max_len,
            text_len=cfg.text_len,
            type_vocab_size=cfg.type_vocab_size,
            pad_token_id=cfg.pad_token_id,
            eps=cfg.eps,
            dropout=cfg.dropout,
        )

    def output_spec(self) -> TokenSpec:
        return TokenSpec(dim=self.dim, num_tokens=self.text_len, has_cls=True, modality="text", schema="text")

    def workload(self) -> dict[str, Any]:
        return {"text_len": self.text_len}

    def make_inputs(
        self, batch_size: int, *, generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> dict[str, torch.Tensor]:
        ids = (
            _random_ids(batch_size, self.text_len, 1000, self.vocab_size, generator, device)
            if self.vocab_size > 1000
            else _random_ids(batch_size, self.text_len, 1, self.vocab_size, generator, device)
        )
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids, dtype=torch.bool)}

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        stage: StageFn = null_stage,
    ) -> TextTokens:
        """input_ids [B, L] -> TextTokens(features [B, L, D], mask [B, L] bool)."""
        _check_ids(input_ids, attention_mask, self.max_len, self.vocab_size)
        length = input_ids.shape[1]
        with stage("embed"):
            x = self.word_embeddings(input_ids) + self.position_embeddings(self.position_ids[:, :length])
            if token_type_ids is None:
                x = x + self.token_type_embeddings.weight[0]
            else:
                x = x + self.token_type_embeddings(token_type_ids)
            x = self.dropout(self.norm(x))
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        return TextTokens(features=x, mask=mask)


# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipTextConfig:
    vocab_size: int = 49408  # CLIP BPE vocabulary
    dim: int = 512  # transformer width
    depth: int = 12  # layers
    heads: int = 8  # attention heads
    mlp_dim: int = 2048  # MLP hidden width
    act: str = "quick_gelu"  # activation (OpenAI CLIP: QuickGELU)
    context_len: int = 77  # position embeddings / maximum text length
    text_len: int = 77  # tokens in latency inputs (make_inputs)
    eps: float = 1e-5  # LayerNorm eps
    proj_dim: int | None = 512  # text_projection output width; None = no projection
    eot_token_id: int = 49407  # end-of-text id (the highest id in CLIP's vocabulary)
    pool: str = "argmax"  # "argmax" of input_ids (OpenAI CLIP) or first "eot" id (transformers >= 4.31)


class ClipTextEmbedder(nn.Module):
    """input_ids [B, L] -> TextTokens(features [B, L, D] after ln_final, mask, pooled [B, E] projected)."""

    def __init__(
        self,
        vocab_size: int = 49408,
        dim: int = 512,
        depth: int = 12,
        heads: int = 8,
        mlp_dim: int = 2048,
        *,
        act: str = "quick_gelu",
        context_len: int = 77,
        text_len: int | None = None,
        eps: float = 1e-5,
        proj_dim: int | None = 512,
        eot_token_id: int = 49407,
        pool: str = "argmax",
    ):
        super().__init__()
        text_len = context_len if text_len is None else text_len
        if not 0 < text_len <= context_len:
            raise bad_value("text_len", text_len, f"1 to context_len={context_len}")
        if pool not in CLIP_POOL:
            raise bad_value("pool", pool, CLIP_POOL)
        if not 0 <= eot_token_id < vocab_size:
            raise bad_value("eot_token_id", eot_token_id, f"an id below vocab_size={vocab_size}")
        self.vocab_size, self.dim, self.context_len, self.text_len = vocab_size, dim, context_len, text_len
        self.eot_token_id, self.pool_mode = eot_token_id, pool
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.position_embedding = nn.Parameter(torch.empty(context_len, dim))
        self.encoder = Encoder(dim, depth, heads, mlp_dim, norm_first=True, act=act, eps=eps)
        self.ln_final = nn.LayerNorm(dim, eps=eps)
        self.text_projection = nn.Linear(dim, proj_dim, bias=False) if proj_dim is not None else None
        self.out_dim = proj_dim if proj_dim is not None else dim
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding, std=0.01)
        if self.text_projection is not None:  # OpenAI CLIP: N(0, width ** -0.5)
            nn.init.normal_(self.text_projection.weight, std=dim**-0.5)

    @classmethod
    def from_config(cls, cfg: ClipTextConfig) -> ClipTextEmbedder:
        return cls(
            cfg.vocab_size,
            cfg.dim,
            cfg.depth,
            cfg.heads,
            cfg.mlp_dim,
            act=cfg.act,
            context_len=cfg.context_len,
            text_len=cfg.text_len,
            eps=cfg.eps,
            proj_dim=cfg.proj_dim,
            eot_token_id=cfg.eot_token_id,
            pool=cfg.pool,
        )

    def output_spec(self) -> TokenSpec:
        return TokenSpec(
            dim=self.dim,
            num_tokens=self.text_len,
            has_cls=False,
            modality="text",
            pooled=True,
            pooled_dim=self.out_dim,
            schema="text",
        )

    def workload(self) -> dict[str, Any]:
        return {"text_len": self.text_len}

    def make_inputs(
        self, batch_size: int, *, generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> dict[str, torch.Tensor]:
        """Seeded ids below the EOT id, with EOT at the last position (so argmax pooling reads the last token)."""
        ids = _random_ids(batch_size, self.text_len, 1, max(2, self.eot_token_id), generator, device)
        ids[:, -1] = self.eot_token_id
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids, dtype=torch.bool)}

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, stage: StageFn = null_stage
    ) -> TextTokens:
        """input_ids [B, L] -> TextTokens(features [B, L, D], mask [B, L], pooled [B, E]).

        Like OpenAI CLIP, attention is causal only: the padding after the end-of-text token cannot reach the
        tokens at or before it, so the pooled output does not depend on padding; ``mask`` is passed on.
        """
        _check_ids(input_ids, attention_mask, self.context_len, self.vocab_size)
        b, length = input_ids.shape
        with stage("embed"):
            x = self.token_embedding(input_ids) + self.position_embedding[:length]
        with stage("encoder"):
            x = self.ln_final(self.encoder(x, is_causal=True))
        with stage("pool"):
            if self.pool_mode == "argmax":
                eot = input_ids.argmax(dim=-1)
            else:
                eot = (input_ids == self.eot_token_id).int().argmax(dim=-1)
            pooled = x[torch.arange(b, device=x.device), eot]  # [B, D]
            if self.text_projection is not None:
                pooled = self.text_projection(pooled)
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        return TextTokens(features=x, mask=mask, pooled=pooled)

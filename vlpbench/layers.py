"""Shared transformer layers used by embedders and architectures.

All attention goes through ``torch.nn.functional.scaled_dot_product_attention`` with a fused
QKV projection for self-attention.  Weight layouts are documented so that loaders can map
transformers / open_clip checkpoints (which keep separate q, k, v) by concatenation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Pixel statistics of the image processors the embedders follow, for [0, 1] RGB inputs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision ResNets / Faster R-CNN
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIPImageProcessor / OpenAI CLIP
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class QuickGELU(nn.Module):
    """CLIP's activation: x * sigmoid(1.702 x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def make_act(name: str) -> nn.Module:
    acts = {"gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh"), "quick_gelu": QuickGELU, "relu": nn.ReLU}
    if name not in acts:
        raise ValueError(f"invalid activation {name!r}; accepted: {', '.join(acts)}")
    return acts[name]()


def padding_to_attn_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """[B, T] bool (True = real token) -> additive [B, 1, 1, T] mask for SDPA, or None if all real."""
    if mask is None:
        return None
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    bias = bias.masked_fill(~mask.bool(), torch.finfo(dtype).min)
    return bias[:, None, None, :]


def _graph_capturing() -> bool:
    """True inside ``torch.cuda.graph`` capture, where reading a tensor on the host is forbidden."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def attn_bias(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Like :func:`padding_to_attn_mask`, but None when every token is real, so SDPA takes its unmasked kernel.

    Deciding that reads the mask on the host.  Under CUDA-graph capture, which forbids such a read, the
    additive mask is always built: an all-real mask adds zeros, so the output is the same, through the
    masked kernel.
    """
    if mask is None or (not _graph_capturing() and bool(mask.all())):
        return None
    return padding_to_attn_mask(mask, dtype)


class Attention(nn.Module):
    """Multi-head attention.

    Self-attention uses one fused ``qkv`` Linear(dim, 3*dim) laid out [q; k; v].  Cross-attention
    (``kv_dim`` given) uses ``q`` Linear(dim, inner) and a fused ``kv`` Linear(kv_dim, 2*inner).
    ``inner`` defaults to ``dim`` (ViLBERT's co-attention uses a separate bi-hidden width).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        kv_dim: int | None = None,
        inner_dim: int | None = None,
        out_dim: int | None = None,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        inner = inner_dim or dim
        if inner % num_heads:
            raise ValueError(f"attention width {inner} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = inner // num_heads
        self.cross = kv_dim is not None
        if self.cross:
            self.q = nn.Linear(dim, inner, bias=qkv_bias)
            self.kv = nn.Linear(kv_dim, 2 * inner, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.proj = nn.Linear(inner, out_dim or dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        # (B, T, H*Dh) -> (B, H, T, Dh)
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """x [B, T, D], context [B, S, kv_dim] (cross only), attn_mask additive [B, 1, T|1, S] -> [B, T, out]."""
        if self.cross:
            if context is None:
                raise ValueError("cross-attention needs a context tensor")
            q = self._heads(self.q(x))
            k, v = self.kv(context).chunk(2, dim=-1)
            k, v = self._heads(k), self._heads(v)
        else:
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            q, k, v = self._heads(q), self._heads(k), self._heads(v)
        if attn_mask is not None and attn_mask.dtype != q.dtype and attn_mask.dtype != torch.bool:
            attn_mask = attn_mask.to(q.dtype)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.attn_drop if self.training else 0.0,
            is_causal=is_causal and attn_mask is None,
        )
        b, h, t, d = out.shape
        out = out.transpose(1, 2).reshape(b, t, h * d)  # (B, H, T, Dh) -> (B, T, H*Dh)
        return self.proj_drop(self.proj(out))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str = "gelu", drop: float = 0.0, out_dim: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = make_act(act)
        self.fc2 = nn.Linear(hidden, out_dim or dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """A transformer layer: attention + MLP, each residual.

    ``norm_first=True`` is the ViT / CLIP (pre-norm) layout: x + attn(ln1(x)); x + mlp(ln2(x)).
    ``norm_first=False`` is the BERT (post-norm) layout: ln1(x + attn(x)); ln2(x + mlp(x)).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        *,
        norm_first: bool = True,
        act: str = "gelu",
        eps: float = 1e-6,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
    ):
        super().__init__()
        self.norm_first = norm_first
        self.ln1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.ln2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim, act=act, drop=drop)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        if self.norm_first:
            x = x + self.attn(self.ln1(x), attn_mask=attn_mask, is_causal=is_causal)
            return x + self.mlp(self.ln2(x))
        x = self.ln1(x + self.attn(x, attn_mask=attn_mask, is_causal=is_causal))
        return self.ln2(x + self.mlp(x))


def sincos_2d(rows: torch.Tensor, cols: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """2-D sine-cosine codes of positions (as MAE's ``get_2d_sincos_pos_embed``): rows, cols [...] (grid units,
    fractional allowed) -> [..., dim].  The first half of the channels encodes the row, the second the column,
    each as sin / cos of the position at dim / 4 frequencies ``temperature ** (-k / (dim / 4))``; a low
    frequency is close to linear in the position, so "left or right" is one direction of the code."""
    if dim % 4:
        raise ValueError(f"dim {dim}: a multiple of 4 (sin and cos of rows and columns)")
    quarter = dim // 4
    omega = temperature ** (-torch.arange(quarter, dtype=torch.float64, device=rows.device) / quarter)  # [D/4]
    parts = []
    for index in (rows, cols):
        angle = index.to(torch.float64)[..., None] * omega  # [..., D/4]
        parts += [angle.sin(), angle.cos()]
    return torch.cat(parts, dim=-1).to(rows.dtype if rows.is_floating_point() else torch.float32)


REFERENCE_WIDTH = 768  # BERT-base / ViT-B: the width the 0.02 initialisation was chosen for


def init_std(width: int, std: float = 0.02) -> float:
    """The initialisation std of a transformer of ``width``: ``std`` (0.02) at BERT-base width and above,
    scaled by sqrt(768 / width) below it.

    With weights N(0, s) a Linear of fan-in ``width`` multiplies a unit-scale input by s * sqrt(width);
    0.02 gives BERT-base's gain of 0.55 per projection, so an attention or MLP branch adds about 30% to
    the residual stream.  At width 64 the same 0.02 gives a gain of 0.16 per projection and a branch of
    about 2.6%: the class token, the first text token and the pooled outputs then carry almost nothing of
    the other tokens (pooled image embeddings of different images at cosine 1.000), and contrastive
    training stalls.  Keeping the gain (s = 0.02 * sqrt(768 / width)) keeps the small presets in the
    regime the reference models start from; full-size models (width >= 768) get exactly 0.02.
    """
    return std * max(1.0, (REFERENCE_WIDTH / width) ** 0.5)


def init_transformer_weights(module: nn.Module, std: float = 0.02) -> nn.Module:
    """BERT / ViT / CLIP initialisation: Linear weights N(0, std) truncated at 2 std, biases 0, Embedding
    rows N(0, std) (the padding row 0), LayerNorm 1 and 0.  ``std``: see :func:`init_std`.

    PyTorch's default Linear init (uniform, biases up to 1/sqrt(fan_in)) gives a randomly initialised
    transformer large constant bias paths, and its default Embedding init (N(0, 1)) makes a
    modality-type embedding as large as the tokens it is added to; every reference implementation
    re-initialises like this (ViLT ``objectives.init_weights``, BERT ``init_bert_weights``).
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


class Encoder(nn.Module):
    """A stack of :class:`Block` layers (initialised with :func:`init_transformer_weights` at
    :func:`init_std` of ``dim``)."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_dim: int, **block_kwargs):
        super().__init__()
        self.layers = nn.ModuleList(Block(dim, num_heads, mlp_dim, **block_kwargs) for _ in range(depth))
        init_transformer_weights(self, init_std(dim))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, attn_mask=attn_mask, is_causal=is_causal)
        return x

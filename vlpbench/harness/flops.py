"""FLOP counting: a pass separate from timing.

Counts are **FLOPs, 2 per multiply-add** (torch.utils.flop_counter's convention; fvcore and many
papers count MACs, half of this).  ``torch.utils.flop_counter.FlopCounterMode`` counts matrix
multiplies, convolutions and the CUDA attention kernels.  It leaves at zero, and we add formulas for:

* CPU ``scaled_dot_product_attention`` (``_scaled_dot_product_flash_attention_for_cpu``):
  torch's own SDPA formula, 2*B*H*Lq*Lk*(Dqk + Dv);
* ``torchvision::roi_align``: per output element, S*S bilinear samples of 8 FLOPs plus one divide,
  with S the sampling ratio (2 assumed when adaptive, ``sampling_ratio <= 0``);
* ``torchvision::nms``: an **upper bound** of N(N-1)/2 IoU evaluations at 12 FLOPs each, plus 3 per box
  for the areas (the real count depends on how many boxes survive);

A GRU on the CPU decomposes into ``mm``/``addmm`` and is counted through them (gate matmuls only);
cuDNN's fused RNN kernel on CUDA is not counted and shows in ``not_counted``.

Everything else (element-wise ops, activations, normalisation, softmax outside SDPA, pooling,
interpolation, sorting, indexing) is not counted; the ops seen in the pass that carry no formula and
added no FLOPs through what they decompose into are listed in ``not_counted`` with how often they ran.
The PyTorch fast path for ``nn.TransformerEncoderLayer`` / ``nn.MultiheadAttention`` is disabled during
counting, since its fused kernel counts 0.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

CONVENTION = "FLOPs (2 per multiply-add)"


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _roi_align_flop(
    input_shape, rois_shape, spatial_scale, pooled_h, pooled_w, sampling_ratio, *args, out_shape=None, **kwargs
) -> int:
    s = int(sampling_ratio) if int(sampling_ratio) > 0 else 2
    n_out = (
        _prod(out_shape) if out_shape is not None else int(rois_shape[0]) * int(input_shape[1]) * pooled_h * pooled_w
    )
    return n_out * (8 * s * s + 1)


def _nms_flop(boxes_shape, scores_shape, iou_threshold, *args, out_shape=None, **kwargs) -> int:
    n = int(boxes_shape[0])
    return 12 * n * (n - 1) // 2 + 3 * n


def _custom_mapping() -> dict[Any, Callable[..., int]]:
    mapping: dict[Any, Callable[..., int]] = {
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flop,
    }
    try:
        import torchvision  # noqa: F401  (registers torch.ops.torchvision)

        mapping[torch.ops.torchvision.roi_align] = _roi_align_flop
        mapping[torch.ops.torchvision.nms] = _nms_flop
    except (ImportError, AttributeError, RuntimeError):
        pass
    return mapping


ADDED_FORMULAS = {
    "aten._scaled_dot_product_flash_attention_for_cpu": "2*B*H*Lq*Lk*(Dqk+Dv) (torch's SDPA formula)",
    "torchvision.roi_align": "(8*S*S+1) per output element, S=sampling ratio (2 if adaptive)",
    "torchvision.nms": "upper bound 12*N*(N-1)/2 + 3*N",
}

# Ops that are bookkeeping rather than arithmetic; not worth listing as "not counted".
_FREE = {
    "view",
    "_unsafe_view",
    "reshape",
    "permute",
    "transpose",
    "t",
    "expand",
    "unsqueeze",
    "squeeze",
    "slice",
    "select",
    "detach",
    "alias",
    "as_strided",
    "contiguous",
    "clone",
    "copy_",
    "_to_copy",
    "empty",
    "empty_like",
    "empty_strided",
    "zeros",
    "zeros_like",
    "ones",
    "ones_like",
    "full",
    "fill_",
    "zero_",
    "split",
    "split_with_sizes",
    "chunk",
    "unbind",
    "cat",
    "stack",
    "arange",
    "lift_fresh",
    "new_empty",
    "new_zeros",
    "new_full",
    "new_ones",
    "_reshape_alias",
    "unfold",
    "lift_fresh_copy",
    "scalar_tensor",
    "item",
    "_local_scalar_dense",
    "index_select",
    "index",
    "gather",
    "repeat",
    "flatten",
    "narrow",
    "to",
    "type_as",
    "is_nonzero",
    "sym_size",
    "sym_stride",
    "sym_numel",
    "dim",
    "size",
    "stride",
    "numel",
    "resize_",
    "set_",
    "randperm",
    "rand",
    "randn",
    "randint",
    "random_",
    "uniform_",
    "normal_",
    "bernoulli_",
    "masked_fill",
    "masked_fill_",
    "where",
    "nonzero",
    "_pack_padded_sequence",
    "_pad_packed_sequence",
    "constant_pad_nd",
    "pad",
}


class _OpRecorder(TorchDispatchMode):
    """Lists the ops of the pass that no formula counted.

    An op is *counted* when it has a formula, or when running it raised the counter's total: composite
    ops such as ``aten.linear``, ``aten.conv2d`` or scaled-dot-product attention reach this mode before
    they decompose into ``addmm`` / ``convolution`` / the SDPA kernel, whose FLOPs are counted, so they
    must not be listed as uncounted.
    """

    def __init__(self, counted: set, counter: FlopCounterMode) -> None:
        super().__init__()
        self.counted = counted
        self.counter = counter
        self.seen: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func.overloadpacket
        name = packet.__name__
        if packet in self.counted or name in _FREE or name.endswith("_copy"):
            return func(*args, **(kwargs or {}))
        before = self.counter.get_total_flops()
        out = func(*args, **(kwargs or {}))
        if self.counter.get_total_flops() == before:
            self.seen[f"{func.namespace}.{name}"] += 1
        return out


@contextlib.contextmanager
def _fastpath_disabled() -> Iterator[None]:
    prev = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(prev)


class _StageFlops:
    """A stage function for the counting pass: attributes FLOPs to stages by reading the counter."""

    def __init__(self, counter: FlopCounterMode) -> None:
        self.counter = counter
        self.by_stage: dict[str, int] = {}
        self.groups: dict[str, str] = {}
        self.parents: set = set()
        self._stack: list[str] = []

    @contextlib.contextmanager
    def __call__(self, name: str, group: str | None = None) -> Iterator[None]:
        if self._stack:
            self.parents.add(self._stack[-1])
        self._stack.append(name)
        self.groups.setdefault(name, group or "other")
        before = self.counter.get_total_flops()
        try:
            yield
        finally:
            self._stack.pop()
            self.by_stage[name] = self.by_stage.get(name, 0) + self.counter.get_total_flops() - before


def count_flops(fn: Callable[..., Any]) -> dict[str, Any]:
    """Run ``fn(stage)`` once under the counter; return total, per-stage and per-group FLOPs."""
    mapping = _custom_mapping()
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    counted = set(counter.flop_registry)
    recorder = _OpRecorder(counted, counter)
    stage = _StageFlops(counter)
    with _fastpath_disabled(), torch.no_grad(), counter, recorder:
        fn(stage)
    per_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    leaves = [n for n in stage.by_stage if n not in stage.parents]
    groups: dict[str, int] = {}
    for n in leaves:
        groups[stage.groups[n]] = groups.get(stage.groups[n], 0) + stage.by_stage[n]
    return {
        "total": int(counter.get_total_flops()),
        "unit": "FLOPs",
        "convention": CONVENTION,
        "by_stage": stage.by_stage,
        "by_group": groups,
        "by_op": per_op,
        "formulas_added": ADDED_FORMULAS,
        "not_counted": dict(recorder.seen.most_common()),
    }

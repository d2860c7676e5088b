"""detectron2-format checkpoints for the region embedder's torchvision backend, and the way back.

Three layouts are read (detectron2 need not be installed):

* **torchvision names** (``backbone.body.layer1...``, ``roi_heads.box_predictor...``): a ``torch.save``d
  state dict, as before (:func:`vlpbench.embedders.region.load_torchvision_weights`);
* **detectron2 names** (``backbone.res2.0.conv1.norm.weight``, ``proposal_generator.rpn_head...``,
  ``roi_heads.res5...``): a ``.pth`` holding ``{"model": state_dict}`` or a ``.pkl`` pickle of numpy arrays
  as detectron2's ``DetectionCheckpointer`` reads it.  Includes the layout of bottom-up-attention's detectron2
  port (bottom-up-attention.pytorch: caffe class order, a class-specific background box, a two-way softmax
  RPN objectness, ``roi_heads.attribute_predictor.{cls_embed, attr_linear1, attr_linear2}``);
* **caffe2 / Detectron names** (``conv1_w``, ``res_conv1_bn_s``, ``res2_0_branch2a_w``, ``rpn_conv/3x3_w``,
  ``cls_score_w``), the caffe-converted ``.pkl`` files of the Detectron model zoo, with bottom-up-attention's
  attribute layers under their test.prototxt names (``cls_embedding_w``, ``fc_attr_w``, ``attr_score_w``).

Conversions that load "successfully" yet compute something else, each handled here or named:

* class order: detectron2 puts background **last** (``cls_score`` row K), torchvision and caffe **first**;
  detectron2 predicts no background box (``bbox_pred`` 4K rows), torchvision and caffe do (4(K+1)).  The
  row count of ``bbox_pred`` says which layout a file has;
* anchor order: detectron2 lists a location's anchors **size-major**, torchvision **ratio-major**: the RPN's
  output channels are permuted;
* stride placement (detectron2's ``STRIDE_IN_1X1``) is invisible in the weights: a checkpoint trained with the
  stride in the 1x1 conv must be loaded into a model built with ``stride_in_1x1=True`` (otherwise res4 is
  almost entirely different and nothing complains).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Callable, Mapping
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor

from vlpbench.errors import VlpbenchError, bad_value

Source = Union[str, os.PathLike, Mapping[str, Any]]
BN_FIELDS = ("weight", "bias", "running_mean", "running_var")

# ---- reading files -------------------------------------------------------------------------------------

_SAFE_GLOBALS = {
    ("collections", "OrderedDict"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts of numpy arrays and nothing else (a pickle can otherwise run any code)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays and dicts are accepted")


def read_pkl(path: str) -> dict[str, Any]:
    """A detectron2 / Detectron ``.pkl`` -> its dict, through the restricted unpickler (latin1, as detectron2)."""
    with open(path, "rb") as f:
        try:
            data = _NumpyOnlyUnpickler(f, encoding="latin1").load()
        except Exception as e:  # any malformed or unsafe pickle
            raise VlpbenchError(f"invalid checkpoint {path!r}: not a pickle of numpy arrays ({e})") from e
    if not isinstance(data, Mapping):
        raise VlpbenchError(f"invalid checkpoint {path!r}: holds {type(data).__name__}, not a dict")
    return dict(data)


def read_checkpoint(source: Source) -> dict[str, Tensor]:
    """A mapping or a ``.pth`` / ``.pt`` / ``.pkl`` file -> flat {name: tensor} (a ``model`` key is unwrapped)."""
    if isinstance(source, Mapping):
        data: Mapping[str, Any] = source
        where = "state dict"
    else:
        where = os.fspath(source)
        if not os.path.isfile(where):
            raise bad_value("weights file", where, "an existing .pth / .pt (torch.save) or .pkl (detectron2) file")
        data = read_pkl(where) if where.endswith(".pkl") else _read_torch(where)
    if "model" in data and isinstance(data["model"], Mapping):  # detectron2 checkpoints: {"model": ..., ...}
        data = data["model"]
    elif "blobs" in data and isinstance(data["blobs"], Mapping):  # Detectron (caffe2) files, as detectron2 reads them
        data = {k: v for k, v in data["blobs"].items() if not str(k).endswith("_momentum")}
    out = {}
    for key, value in data.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if isinstance(value, Tensor):
            out[str(key)] = value
    if not out:
        raise VlpbenchError(f"invalid checkpoint {where!r}: no tensors or arrays in it")
    return out


def _read_torch(path: str) -> Mapping[str, Any]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a file that is not a state dict
        raise VlpbenchError(f"invalid weights file {path!r}: cannot be read as a state dict ({e})") from e
    if not isinstance(data, Mapping):
        raise VlpbenchError(f"invalid weights file {path!r}: holds {type(data).__name__}, not a state dict")
    return data


# ---- naming ----------------------------------------------------------------------------------------------


def layout_of(state: Mapping[str, Tensor]) -> str:
    """ "torchvision", "detectron2" or "caffe2", from the key names (never from what loaded them)."""
    if any(
        k.startswith(("proposal_generator.", "roi_heads.res5.", "backbone.stem.", "backbone.bottom_up.")) for k in state
    ):
        return "detectron2"
    if any(k in state for k in ("conv1_w", "res_conv1_bn_s")) or any(k.startswith("res2_") for k in state):
        return "caffe2"
    return "torchvision"


def _d2_block(name: str) -> str:
    """detectron2 block names -> torchvision's: conv1.norm -> bn1, shortcut -> downsample.0/1."""
    name = re.sub(r"\bconv(\d)\.norm\.", r"bn\1.", name)
    name = name.replace("shortcut.norm.", "downsample.1.").replace("shortcut.weight", "downsample.0.weight")
    return name


_D2_RULES: list[tuple[str, Callable[[re.Match], str]]] = [
    (r"backbone\.(?:bottom_up\.)?stem\.conv1\.norm\.(.+)", lambda m: f"backbone.body.bn1.{m[1]}"),
    (r"backbone\.(?:bottom_up\.)?stem\.conv1\.weight", lambda m: "backbone.body.conv1.weight"),
    (r"backbone\.(?:bottom_up\.)?res([2-5])\.(.+)", lambda m: f"backbone.body.layer{int(m[1]) - 1}.{_d2_block(m[2])}"),
    (r"backbone\.fpn_lateral([2-5])\.(.+)", lambda m: f"backbone.fpn.inner_blocks.{int(m[1]) - 2}.0.{m[2]}"),
    (r"backbone\.fpn_output([2-5])\.(.+)", lambda m: f"backbone.fpn.layer_blocks.{int(m[1]) - 2}.0.{m[2]}"),
    (r"proposal_generator\.rpn_head\.conv\.(weight|bias)", lambda m: f"rpn.head.conv.0.0.{m[1]}"),
    (r"proposal_generator\.rpn_head\.objectness_logits\.(.+)", lambda m: f"rpn.head.cls_logits.{m[1]}"),
    (r"proposal_generator\.rpn_head\.anchor_deltas\.(.+)", lambda m: f"rpn.head.bbox_pred.{m[1]}"),
    (r"roi_heads\.res5\.(.+)", lambda m: f"box_head.res5.{_d2_block(m[1])}"),
    (r"roi_heads\.box_head\.fc1\.(.+)", lambda m: f"box_head.fc6.{m[1]}"),
    (r"roi_heads\.box_head\.fc2\.(.+)", lambda m: f"box_head.fc7.{m[1]}"),
    (r"roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(.+)", lambda m: f"box_predictor.{m[1]}.{m[2]}"),
    (r"roi_heads\.attribute_predictor\.cls_embed\.(.+)", lambda m: f"attribute_head.cls_embed.{m[1]}"),
    (r"roi_heads\.attribute_predictor\.attr_linear1\.(.+)", lambda m: f"attribute_head.fc.{m[1]}"),
    (r"roi_heads\.attribute_predictor\.attr_linear2\.(.+)", lambda m: f"attribute_head.attr_score.{m[1]}"),
]


def _caffe2_name(key: str) -> str:
    """caffe2 / Detectron names -> detectron2's (what detectron2's convert_c2_detectron_names does)."""
    key = {
        "conv1_w": "backbone.stem.conv1.weight",
        "rpn_conv/3x3_w": "proposal_generator.rpn_head.conv.weight",
        "rpn_conv/3x3_b": "proposal_generator.rpn_head.conv.bias",
        "cls_embedding_w": "roi_heads.attribute_predictor.cls_embed.weight",
    }.get(key, key)
    key = re.sub(
        r"^res_conv1_bn_([sb])$", lambda m: f"backbone.stem.conv1.norm.{'weight' if m[1] == 's' else 'bias'}", key
    )
    key = re.sub(r"^res5_(\d+)_(.+)$", r"roi_heads.res5.\1.\2", key)
    key = re.sub(r"^res([2-4])_(\d+)_(.+)$", r"backbone.res\1.\2.\3", key)
    key = re.sub(r"branch1_bn_([sb])$", lambda m: f"shortcut.norm.{'weight' if m[1] == 's' else 'bias'}", key)
    key = re.sub(r"branch1_w$", "shortcut.weight", key)
    key = re.sub(
        r"branch2([abc])_bn_([sb])$",
        lambda m: f"conv{'abc'.index(m[1]) + 1}.norm.{'weight' if m[2] == 's' else 'bias'}",
        key,
    )
    key = re.sub(r"branch2([abc])_w$", lambda m: f"conv{'abc'.index(m[1]) + 1}.weight", key)
    for c2, d2 in (
        ("rpn_cls_logits", "proposal_generator.rpn_head.objectness_logits"),
        ("rpn_bbox_pred", "proposal_generator.rpn_head.anchor_deltas"),
        ("cls_score", "roi_heads.box_predictor.cls_score"),
        ("bbox_pred", "roi_heads.box_predictor.bbox_pred"),
        ("fc_attr", "roi_heads.attribute_predictor.attr_linear1"),
        ("attr_score", "roi_heads.attribute_predictor.attr_linear2"),
    ):
        key = re.sub(rf"^{re.escape(c2)}_([wb])$", lambda m, d2=d2: f"{d2}.{'weight' if m[1] == 'w' else 'bias'}", key)
    return key


def _rename(key: str) -> str:
    for pattern, target in _D2_RULES:
        m = re.fullmatch(pattern, key)
        if m:
            return target(m)
    return key  # unknown: reported as unexpected by the caller


# ---- values -------------------------------------------------------------------------------------------------


def anchor_permutation(num_sizes: int, num_ratios: int) -> Tensor:
    """Index p with torchvision_anchor[i] = detectron2_anchor[p[i]] for one location.

    torchvision (ratio-major) i = r * S + s; detectron2 (size-major) j = s * R + r.
    """
    r, s = torch.meshgrid(torch.arange(num_ratios), torch.arange(num_sizes), indexing="ij")  # [R, S]
    return (s * num_ratios + r).reshape(-1)


def _fix_values(out: dict[str, Tensor], own: Mapping[str, Tensor], anchors: tuple[int, int]) -> None:
    """Class order, background box, two-way RPN objectness, anchor order: d2/caffe values -> ours, in place."""
    cls_w, box_w = "box_predictor.cls_score.weight", "box_predictor.bbox_pred.weight"
    if box_w in out and cls_w in out and box_w in own and out[box_w].shape[0] == own[box_w].shape[0] - 4:
        # detectron2: no background box, background class last -> torchvision: both first
        for name in ("weight", "bias"):
            box, cls = out[f"box_predictor.bbox_pred.{name}"], out[f"box_predictor.cls_score.{name}"]
            out[f"box_predictor.bbox_pred.{name}"] = torch.cat([box.new_zeros((4,) + box.shape[1:]), box])
            out[f"box_predictor.cls_score.{name}"] = torch.cat([cls[-1:], cls[:-1]])
    num_anchors = anchors[0] * anchors[1]
    obj = out.get("rpn.head.cls_logits.weight")
    if obj is not None and obj.shape[0] == 2 * num_anchors:  # caffe softmax(bg, fg) == sigmoid(fg - bg)
        for name in ("weight", "bias"):
            w = out[f"rpn.head.cls_logits.{name}"]
            out[f"rpn.head.cls_logits.{name}"] = w[num_anchors:] - w[:num_anchors]
    if anchors[0] > 1 and anchors[1] > 1 and "rpn.head.cls_logits.weight" in out:
        perm = anchor_permutation(*anchors)
        for name in ("weight", "bias"):
            out[f"rpn.head.cls_logits.{name}"] = out[f"rpn.head.cls_logits.{name}"][perm]
            deltas = out[f"rpn.head.bbox_pred.{name}"]
            out[f"rpn.head.bbox_pred.{name}"] = deltas.view(num_anchors, 4, *deltas.shape[1:])[perm].flatten(0, 1)


def _fill_bn_stats(out: dict[str, Tensor]) -> None:
    """Affine-only BN (caffe2 files fold the statistics into scale and bias): mean 0, variance 1."""
    for key in [k for k in out if k.endswith(".weight") and re.search(r"\.(bn\d|downsample\.1)\.weight$", k)]:
        base = key[: -len("weight")]
        out.setdefault(base + "running_mean", torch.zeros_like(out[key]))
        out.setdefault(base + "running_var", torch.ones_like(out[key]))


def to_torchvision_names(
    state: Mapping[str, Tensor], own: Mapping[str, Tensor], anchors: tuple[int, int]
) -> dict[str, Tensor]:
    """A detectron2 / caffe2-layout state -> the region embedder's names and value layout.

    ``own``: the target model's state dict (for the background-box row count); ``anchors``: (sizes, ratios)
    per RPN location of the target model.
    """
    layout = layout_of(state)
    if layout == "torchvision":
        return dict(state)
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        out[_rename(_caffe2_name(key) if layout == "caffe2" else key)] = value
    _fix_values(out, own, anchors)
    if layout == "caffe2":
        _fill_bn_stats(out)
    return out


def to_detectron2_names(own: Mapping[str, Tensor], *, arch: str, anchors: tuple[int, int]) -> dict[str, Tensor]:
    """The region embedder's state dict -> detectron2's GeneralizedRCNN names and layout (the inverse)."""
    inverse = {}
    for d2_key in _detectron2_keys(own, arch):
        inverse[_rename(d2_key)] = d2_key
    out = {inverse[k]: v for k, v in own.items() if k in inverse}
    num_anchors = anchors[0] * anchors[1]
    if anchors[0] > 1 and anchors[1] > 1:
        back = torch.argsort(anchor_permutation(*anchors))
        head = "proposal_generator.rpn_head"
        for name in ("weight", "bias"):
            out[f"{head}.objectness_logits.{name}"] = out[f"{head}.objectness_logits.{name}"][back]
            deltas = out[f"{head}.anchor_deltas.{name}"]
            out[f"{head}.anchor_deltas.{name}"] = deltas.view(num_anchors, 4, *deltas.shape[1:])[back].flatten(0, 1)
    for name in ("weight", "bias"):
        cls, box = f"roi_heads.box_predictor.cls_score.{name}", f"roi_heads.box_predictor.bbox_pred.{name}"
        out[cls] = torch.cat([out[cls][1:], out[cls][:1]])  # background first -> last
        out[box] = out[box][4:]  # detectron2 predicts no background box
    return out


def _detectron2_keys(own: Mapping[str, Tensor], arch: str) -> list[str]:
    """Every detectron2 name that maps onto one of ``own``'s keys (found by renaming candidates forward)."""
    prefix = "backbone.bottom_up." if arch == "fpn" else "backbone."
    keys = []
    for k in own:
        cand = _candidate_d2_name(k, prefix)
        if cand is not None and _rename(cand) == k:
            keys.append(cand)
    return keys


def _candidate_d2_name(key: str, prefix: str) -> Union[str, None]:
    def block(rest: str) -> str:
        rest = re.sub(r"\bbn(\d)\.", r"conv\1.norm.", rest)
        return rest.replace("downsample.0.weight", "shortcut.weight").replace("downsample.1.", "shortcut.norm.")

    rules = [
        (r"backbone\.body\.conv1\.weight", lambda m: f"{prefix}stem.conv1.weight"),
        (r"backbone\.body\.bn1\.(.+)", lambda m: f"{prefix}stem.conv1.norm.{m[1]}"),
        (r"backbone\.body\.layer(\d)\.(.+)", lambda m: f"{prefix}res{int(m[1]) + 1}.{block(m[2])}"),
        (r"backbone\.fpn\.inner_blocks\.(\d)\.0\.(.+)", lambda m: f"backbone.fpn_lateral{int(m[1]) + 2}.{m[2]}"),
        (r"backbone\.fpn\.layer_blocks\.(\d)\.0\.(.+)", lambda m: f"backbone.fpn_output{int(m[1]) + 2}.{m[2]}"),
        (r"rpn\.head\.conv\.0\.0\.(.+)", lambda m: f"proposal_generator.rpn_head.conv.{m[1]}"),
        (r"rpn\.head\.cls_logits\.(.+)", lambda m: f"proposal_generator.rpn_head.objectness_logits.{m[1]}"),
        (r"rpn\.head\.bbox_pred\.(.+)", lambda m: f"proposal_generator.rpn_head.anchor_deltas.{m[1]}"),
        (r"box_head\.res5\.(.+)", lambda m: f"roi_heads.res5.{block(m[1])}"),
        (r"box_head\.fc6\.(.+)", lambda m: f"roi_heads.box_head.fc1.{m[1]}"),
        (r"box_head\.fc7\.(.+)", lambda m: f"roi_heads.box_head.fc2.{m[1]}"),
        (r"box_predictor\.(.+)", lambda m: f"roi_heads.box_predictor.{m[1]}"),
        (r"attribute_head\.cls_embed\.(.+)", lambda m: f"roi_heads.attribute_predictor.cls_embed.{m[1]}"),
        (r"attribute_head\.fc\.(.+)", lambda m: f"roi_heads.attribute_predictor.attr_linear1.{m[1]}"),
        (r"attribute_head\.attr_score\.(.+)", lambda m: f"roi_heads.attribute_predictor.attr_linear2.{m[1]}"),
    ]
    for pattern, target in rules:
        m = re.fullmatch(pattern, key)
        if m:
            return target(m)
    return None


def load_region_checkpoint(model: Any, source: Source) -> str:
    """Load a checkpoint of any of the three layouts into a torchvision-backend region embedder.

    Returns the layout read.  Raises VlpbenchError naming missing / unexpected keys and shape mismatches.
    """
    from vlpbench.embedders.region import load_torchvision_weights

    state = read_checkpoint(source)
    layout = layout_of(state)
    own = model.state_dict()
    mapped = to_torchvision_names(state, own, model.anchor_layout())
    if model.proj is not None:  # the projection is ours, never in a detector checkpoint
        mapped.update({k: v for k, v in own.items() if k.startswith("proj.") and k not in mapped})
    load_torchvision_weights(model, mapped)
    return layout

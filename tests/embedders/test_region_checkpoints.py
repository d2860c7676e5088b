"""detectron2-format checkpoints (.pth with a model key, .pkl of numpy arrays, caffe2 names, bottom-up-attention's
detectron2-port layout) loaded into the torchvision backend; tiny files made here.  detectron2 is not needed."""

from __future__ import annotations

import os
import pickle
import re

import numpy as np
import pytest
import torch

import vlpbench.presets.region  # noqa: F401  (registers the presets)
from vlpbench.embedders.region_checkpoints import (
    anchor_permutation,
    layout_of,
    load_region_checkpoint,
    read_pkl,
    to_detectron2_names,
)
from vlpbench.errors import VlpbenchError
from vlpbench.registry import VISUAL


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def butd():
    """A tiny BUTD-structured model (12 anchors per location, attribute head) with calibrated random weights."""
    torch.manual_seed(0)
    return VISUAL.build("butd-r101-c4", tiny=True)


def _same_state(model, expected, background_box=False):
    """Equal state dicts; detectron2 files carry no background box, so its 4 rows load as zeros."""
    got = model.state_dict()
    assert set(got) == set(expected)
    for k in expected:
        if k.startswith("box_predictor.bbox_pred.") and not background_box:
            assert got[k][:4].abs().sum() == 0
            torch.testing.assert_close(got[k][4:], expected[k][4:], msg=k)
        else:
            torch.testing.assert_close(got[k], expected[k], msg=k)


def _fresh(**kw):
    return VISUAL.build("butd-r101-c4", tiny=True, calibrate_bn=False, **kw)


def _d2_state(model):
    return to_detectron2_names(model.state_dict(), arch="c4", anchors=model.anchor_layout())


def test_detectron2_pth_with_model_key_loads(butd, tmp_path):
    state = _d2_state(butd)
    assert layout_of(state) == "detectron2" and "roi_heads.res5.0.conv1.norm.weight" in state
    assert state["roi_heads.box_predictor.bbox_pred.weight"].shape[0] == 4 * 80  # no background box
    path = tmp_path / "model_final.pth"
    torch.save({"model": state, "iteration": 7}, path)
    model = _fresh()
    assert load_region_checkpoint(model, str(path)) == "detectron2"
    _same_state(model, butd.state_dict())
    assert not model.bn_calibrated
    loaded = VISUAL.build("butd-r101-c4", tiny=True, weights=str(path))
    x = butd.make_inputs(1, generator=torch.Generator().manual_seed(4), device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**x).features, butd(**x).features)


def test_detectron2_pkl_of_numpy_arrays_loads(butd, tmp_path):
    arrays = {k: v.numpy() for k, v in _d2_state(butd).items()}
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": arrays, "__author__": "vlpbench test"}, f)
    model = _fresh()
    assert load_region_checkpoint(model, str(path)) == "detectron2"
    _same_state(model, butd.state_dict())


def test_background_last_and_anchor_order_are_converted(butd):
    """detectron2 rows: classes 1..K then background; RPN anchors size-major.  Ours: background first, ratio-major."""
    ours, d2 = butd.state_dict(), _d2_state(butd)
    cls = d2["roi_heads.box_predictor.cls_score.weight"]
    torch.testing.assert_close(cls[-1], ours["box_predictor.cls_score.weight"][0])
    torch.testing.assert_close(cls[0], ours["box_predictor.cls_score.weight"][1])
    sizes, ratios = butd.anchor_layout()
    assert (sizes, ratios) == (4, 3)
    perm = anchor_permutation(sizes, ratios)
    # our anchor i = ratio i // S, size i % S; detectron2 anchor j = size j // R, ratio j % R
    for i in range(sizes * ratios):
        j = int(perm[i])
        assert (i // sizes, i % sizes) == (j % ratios, j // ratios)
        torch.testing.assert_close(
            ours["rpn.head.cls_logits.weight"][i], d2["proposal_generator.rpn_head.objectness_logits.weight"][j]
        )
        torch.testing.assert_close(
            ours["rpn.head.bbox_pred.weight"][4 * i : 4 * i + 4],
            d2["proposal_generator.rpn_head.anchor_deltas.weight"][4 * j : 4 * j + 4],
        )


def _bua_port(model):
    """bottom-up-attention's detectron2 port: detectron2 names, caffe class order, a background box,
    two-way softmax objectness (background channels first), attribute_predictor names."""
    ours, state = model.state_dict(), _d2_state(model)
    for name in ("weight", "bias"):
        state[f"roi_heads.box_predictor.cls_score.{name}"] = ours[f"box_predictor.cls_score.{name}"]
        state[f"roi_heads.box_predictor.bbox_pred.{name}"] = ours[f"box_predictor.bbox_pred.{name}"]
        fg = state[f"proposal_generator.rpn_head.objectness_logits.{name}"]
        bg = torch.full_like(fg, 0.25)
        state[f"proposal_generator.rpn_head.objectness_logits.{name}"] = torch.cat([bg, fg + 0.25])
    return state


def test_bottom_up_attention_detectron2_port_layout_loads(butd, tmp_path):
    state = _bua_port(butd)
    assert "roi_heads.attribute_predictor.attr_linear2.weight" in state
    path = tmp_path / "bua-caffe-frcn-r101.pth"
    torch.save({"model": state}, path)
    model = _fresh()
    load_region_checkpoint(model, str(path))
    _same_state(model, butd.state_dict(), background_box=True)  # fg - bg = the one logit; caffe class order


def _caffe2_names(d2_state):
    """detectron2 names -> Detectron / caffe2 names (``res2_0_branch2a_w``, ``_bn_s``), written out here."""
    out = {}
    for key, value in d2_state.items():
        if "running_" in key:
            continue  # caffe2 files keep only the affine scale and bias of each BN
        k = (
            key.replace("backbone.stem.conv1.norm.weight", "res_conv1_bn_s")
            .replace("backbone.stem.conv1.norm.bias", "res_conv1_bn_b")
            .replace("backbone.stem.conv1.weight", "conv1_w")
        )
        m = re.fullmatch(r"(?:backbone\.res(\d)|roi_heads\.res(5))\.(\d+)\.(.+)", k)
        if m:
            stage, block, rest = m[1] or m[2], m[3], m[4]
            rest = re.sub(
                r"conv(\d)\.norm\.(weight|bias)",
                lambda n: f"branch2{'abc'[int(n[1]) - 1]}_bn_{'s' if n[2] == 'weight' else 'b'}",
                rest,
            )
            rest = re.sub(r"conv(\d)\.weight", lambda n: f"branch2{'abc'[int(n[1]) - 1]}_w", rest)
            rest = (
                rest.replace("shortcut.norm.weight", "branch1_bn_s")
                .replace("shortcut.norm.bias", "branch1_bn_b")
                .replace("shortcut.weight", "branch1_w")
            )
            k = f"res{stage}_{block}_{rest}"
        for d2, c2 in (
            ("proposal_generator.rpn_head.conv", "rpn_conv/3x3"),
            ("proposal_generator.rpn_head.objectness_logits", "rpn_cls_logits"),
            ("proposal_generator.rpn_head.anchor_deltas", "rpn_bbox_pred"),
            ("roi_heads.box_predictor.cls_score", "cls_score"),
            ("roi_heads.box_predictor.bbox_pred", "bbox_pred"),
            ("roi_heads.attribute_predictor.attr_linear1", "fc_attr"),
            ("roi_heads.attribute_predictor.attr_linear2", "attr_score"),
        ):
            k = re.sub(rf"^{re.escape(d2)}\.(weight|bias)$", lambda n, c2=c2: f"{c2}_{n[1][0]}", k)
        k = k.replace("roi_heads.attribute_predictor.cls_embed.weight", "cls_embedding_w")
        out[k] = value.numpy()
    return out


def test_caffe2_names_pkl_loads(tmp_path):
    """Detectron's caffe-converted files: affine-only BN (statistics folded in), so mean 0 and variance 1."""
    torch.manual_seed(1)
    model = _fresh()  # uncalibrated: every BN has mean 0, variance 1, so folding changes nothing
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith(("bn1.weight", "bn2.weight", "downsample.1.bias")):
                buf.uniform_(0.5, 1.5)
    state = _bua_port(model)
    c2 = _caffe2_names(state)
    assert {
        "conv1_w",
        "res_conv1_bn_s",
        "res2_0_branch2a_w",
        "res4_1_branch2b_bn_b",
        "res5_0_branch1_w",
        "rpn_conv/3x3_w",
        "cls_embedding_w",
        "attr_score_b",
    } <= set(c2)
    path = tmp_path / "R-101.pkl"
    with open(path, "wb") as f:
        pickle.dump({"blobs": {**c2, "conv1_w_momentum": c2["conv1_w"]}}, f)  # Detectron's file layout
    target = _fresh()
    assert load_region_checkpoint(target, str(path)) == "caffe2"
    _same_state(target, model.state_dict(), background_box=True)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_code(tmp_path):
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"conv1_w": np.zeros(3)}, "x": _Evil()}, f)
    with pytest.raises(VlpbenchError, match=r"not a pickle of numpy arrays.*refusing to load posix\.system"):
        read_pkl(str(path))
    with pytest.raises(VlpbenchError, match="refusing"):
        VISUAL.build("butd-r101-c4", tiny=True, weights=str(path))


def test_checkpoint_that_does_not_fit_names_keys(butd, tmp_path):
    state = _d2_state(butd)
    del state["roi_heads.res5.0.conv1.weight"]
    path = tmp_path / "partial.pth"
    torch.save({"model": state}, path)
    with pytest.raises(VlpbenchError, match=r"missing keys: box_head\.res5\.0\.conv1\.weight"):
        load_region_checkpoint(_fresh(), str(path))
    with pytest.raises(VlpbenchError, match=r"weights file .*nope\.pkl.*\.pkl \(detectron2\)"):
        load_region_checkpoint(_fresh(), str(tmp_path / "nope.pkl"))

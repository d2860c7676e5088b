"""The region interactions' box code (``box_code``), frozen visual projection (``freeze_visual_proj``) and the
single-stream's visual projection gain (``visual_proj_gain``)."""

from __future__ import annotations

import pytest
import torch

from vlpbench.architectures.co_attention import CoAttentionConfig, CoAttentionInteraction
from vlpbench.architectures.common import box_sincos
from vlpbench.architectures.single_stream import SingleStreamInteraction
from vlpbench.embedders.patch import sincos_position_embedding
from vlpbench.errors import VlpbenchError
from vlpbench.types import TextTokens, TokenSpec, VisualTokens

VSPEC = TokenSpec(dim=40, num_tokens=4, has_boxes=True)
TSPEC = TokenSpec(dim=32, num_tokens=5, has_cls=True, modality="text")


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(2, 4, 2, generator=g) * 0.6
    boxes = torch.cat([xy, xy + 0.2 + 0.2 * torch.rand(2, 4, 2, generator=g)], -1)
    visual = VisualTokens(torch.randn(2, 4, 40, generator=g), torch.ones(2, 4, dtype=torch.bool), boxes=boxes)
    text = TextTokens(torch.randn(2, 5, 32, generator=g), torch.ones(2, 5, dtype=torch.bool))
    return visual, text


def single(**kw):
    torch.manual_seed(0)
    return SingleStreamInteraction(VSPEC, TSPEC, width=32, depth=1, heads=2, mlp_dim=64, **kw).eval()


def coattn(**kw):
    torch.manual_seed(0)
    cfg = CoAttentionConfig(
        text_hidden=32,
        text_layers=2,
        text_heads=2,
        text_mlp=64,
        visual_hidden=32,
        visual_layers=1,
        visual_heads=2,
        visual_mlp=64,
        bi_hidden=32,
        bi_heads=2,
        visual_co_ids=(0,),
        text_co_ids=(1,),
        **kw,
    )
    return CoAttentionInteraction(VSPEC, TSPEC, cfg).eval()


def test_box_centred_on_a_patch_gets_that_patch_position_embedding():
    grid = 8
    table = sincos_position_embedding((grid, grid), 32)[0, 1:]  # [64, 32] patches in raster order
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    x1, y1 = cols.flatten() / grid, rows.flatten() / grid  # the patch boxes
    boxes = torch.stack([x1, y1, x1 + 1 / grid, y1 + 1 / grid], -1)[None].double()
    torch.testing.assert_close(box_sincos(boxes, 32, grid)[0].float(), table, rtol=0, atol=1e-6)
    # a box of another size with the same centre has the same code: only the centre is encoded
    wide = torch.stack([x1 - 0.05, y1 - 0.05, x1 + 1 / grid + 0.05, y1 + 1 / grid + 0.05], -1)[None].double()
    torch.testing.assert_close(box_sincos(wide, 32, grid), box_sincos(boxes, 32, grid), rtol=0, atol=1e-6)


def test_single_stream_sincos_adds_the_centre_code_to_each_region_token():
    visual, text = inputs()
    plain, coded = single(), single(box_code="linear+sincos", box_grid=4)
    assert torch.equal(plain.visual_proj.weight, coded.visual_proj.weight)  # the same weights
    with torch.no_grad():
        x0, _ = plain.fuse(visual, text)
        x1, _ = coded.fuse(visual, text)
    torch.testing.assert_close(x1[:, :5], x0[:, :5])  # text tokens untouched
    torch.testing.assert_close(x1[:, 5:] - x0[:, 5:], box_sincos(visual.boxes, 32, 4), rtol=1e-5, atol=1e-5)


def test_coattention_sincos_reaches_the_visual_stream():
    visual, text = inputs(1)
    plain, coded = coattn(), coattn(box_code="linear+sincos")
    with torch.no_grad():
        a, _ = plain.embed_visual(visual)
        b, _ = coded.embed_visual(visual)
        # the code is added before the visual LayerNorm: undo nothing, recompute the expected sum
        full = torch.cat([visual.boxes.new_tensor([0.0, 0.0, 1.0, 1.0]).expand(2, 1, 4), visual.boxes], 1)
        feats = torch.cat([visual.features.mean(1, keepdim=True), visual.features], 1)
        area = (full[..., 2] - full[..., 0]) * (full[..., 3] - full[..., 1])
        pre = coded.v_proj(feats) + coded.v_loc(torch.cat([full, area[..., None]], -1))
        expected = coded.v_norm(pre + box_sincos(full, 32, 8.0))
    torch.testing.assert_close(b, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("build", [single, coattn])
def test_frozen_visual_projection_gets_no_gradient(build):
    m = build(freeze_visual_proj=True).train()
    proj = m.visual_proj if build is single else m.v_proj
    visual, text = inputs(2)
    m(visual, text).pooler_output.sum().backward()
    assert not proj.weight.requires_grad and proj.weight.grad is None
    trained = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is not None]
    assert trained and all("visual_proj" not in n and "v_proj" not in n for n in trained)


def test_bad_box_code_options_are_clear_errors():
    for kw, match in (
        (dict(box_code="fourier"), "box_code"),
        (dict(box_code="linear+sincos", box_grid=0), "box_grid"),
        (dict(freeze_visual_proj="yes"), "freeze_visual_proj"),
    ):
        with pytest.raises(VlpbenchError, match=match):
            single(**kw)
        with pytest.raises(VlpbenchError, match=match):
            coattn(**kw)
    with pytest.raises(VlpbenchError, match="multiple of 4"):
        SingleStreamInteraction(VSPEC, TSPEC, width=30, depth=1, heads=2, mlp_dim=8, box_code="linear+sincos")
    same_width = TokenSpec(dim=32, num_tokens=4, has_boxes=True)
    with pytest.raises(VlpbenchError, match="not projected"):
        SingleStreamInteraction(same_width, TSPEC, width=32, depth=1, heads=2, mlp_dim=8, freeze_visual_proj=True)


def test_visual_proj_gain_scales_only_the_projected_visual_content():
    visual, text = inputs(3)
    plain, quiet = single(box_code="linear+sincos"), single(box_code="linear+sincos", visual_proj_gain=0.3)
    torch.testing.assert_close(quiet.visual_proj.weight, 0.3 * plain.visual_proj.weight)
    torch.testing.assert_close(quiet.visual_proj.bias, plain.visual_proj.bias)  # zero at init
    assert torch.equal(quiet.box_proj.weight, plain.box_proj.weight)  # the same draws after the projection
    with torch.no_grad():
        x0, _ = plain.fuse(visual, text)
        x1, _ = quiet.fuse(visual, text)
    torch.testing.assert_close(x1[:, :5], x0[:, :5])  # text tokens untouched
    content = plain.visual_proj(visual.features).detach()
    torch.testing.assert_close(x0[:, 5:] - x1[:, 5:], 0.7 * content, rtol=1e-5, atol=1e-5)  # the box code stays
    for bad in (0, -1.0, True, "0.3"):
        with pytest.raises(VlpbenchError, match="visual_proj_gain"):
            single(visual_proj_gain=bad)
    same_width = TokenSpec(dim=32, num_tokens=4, has_boxes=True)
    with pytest.raises(VlpbenchError, match="not projected"):
        SingleStreamInteraction(same_width, TSPEC, width=32, depth=1, heads=2, mlp_dim=8, visual_proj_gain=0.5)


def vse(**kw):
    from vlpbench.architectures.vse import VSEConfig, VSEInteraction

    torch.manual_seed(0)
    return VSEInteraction.from_config(
        VSEConfig(embed_dim=32, visual_proj="mlp", **kw), visual_spec=VSPEC, text_spec=TSPEC
    )


def test_vse_sincos_appends_the_centre_code_before_the_projection():
    """box_code="sincos": the projection reads [region feature; box-centre code], so moving a box changes the
    image embedding; "none" (VSE-infinity) ignores boxes entirely."""
    m = vse(box_code="sincos").eval()
    assert m.image_proj.fc.in_features == 40 + 32
    visual, text = inputs()
    seen = {}
    m.image_proj.register_forward_hook(lambda mod, args, out: seen.update(x=args[0]))
    with torch.no_grad():
        image = m(visual, text).image_embeds
        code = box_sincos(visual.boxes, 32, 8.0)
        torch.testing.assert_close(seen["x"], torch.cat([visual.features, code], dim=-1))
        moved = VisualTokens(visual.features, visual.mask, boxes=visual.boxes.flip(-1))
        assert float((m(moved, text).image_embeds - image).abs().max()) > 1e-3
        plain = vse().eval()
        assert plain.image_proj.fc.in_features == 40
        torch.testing.assert_close(plain(moved, text).image_embeds, plain(visual, text).image_embeds)
    assert m.make_inputs(2, generator=torch.Generator().manual_seed(0))["visual"].boxes.shape == (2, 4, 4)


def test_vse_box_code_errors():
    for kw, match in ((dict(box_code="linear"), "box_code"), (dict(box_code="sincos", box_grid=-1), "box_grid")):
        with pytest.raises(VlpbenchError, match=match):
            vse(**kw)
    from vlpbench.architectures.vse import VSEConfig, VSEInteraction

    no_boxes = TokenSpec(dim=40, num_tokens=4)
    with pytest.raises(VlpbenchError, match="without boxes"):
        VSEInteraction.from_config(VSEConfig(embed_dim=32, box_code="sincos"), visual_spec=no_boxes, text_spec=TSPEC)
    visual, text = inputs()
    with pytest.raises(VlpbenchError, match="VisualTokens.boxes"):
        vse(box_code="sincos")(VisualTokens(visual.features, visual.mask), text)

"""Grid / CLIP-RN50 / BiGRU embedders, VSE-infinity GPO and ViLBERT co-attention, at tiny size."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from doubles import StageRecorder
from vlpbench.architectures.co_attention import CoAttentionInteraction, _schedule
from vlpbench.architectures.compose import ArchConfig, VLPModel
from vlpbench.architectures.vse import GPO, hinge_triplet_loss, positional_encoding_1d
from vlpbench.embedders.grid import grid_shape
from vlpbench.errors import VlpbenchError
from vlpbench.presets import load_all
from vlpbench.registry import INTERACTION, TEXT, VISUAL
from vlpbench.stages import stage_names
from vlpbench.types import TextTokens, TokenSpec, VisualTokens

load_all()

VISUAL_PRESETS = ["pixelbert-r50-grid", "grid-r50", "grid-r101", "clip-rn50-visual"]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def tiny_visual():
    return {name: VISUAL.build(name, tiny=True).eval() for name in VISUAL_PRESETS}


# -- visual embedders ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", VISUAL_PRESETS)
def test_visual_tiny_matches_spec_and_stages(tiny_visual, name):
    m = tiny_visual[name]
    rec = StageRecorder()
    with torch.no_grad():
        out = m(**m.make_inputs(2, generator=gen()), stage=rec)
    spec = m.output_spec()
    assert out.features.shape == (2, spec.num_tokens, spec.dim)
    assert out.mask.shape == (2, spec.num_tokens) and out.mask.all()
    assert out.boxes is None and not spec.has_boxes
    assert rec.names == stage_names(m)
    assert torch.isfinite(out.features).all()
    if spec.pooled:
        assert out.pooled.shape == (2, spec.pooled_dim)
    w = m.workload()
    assert w["image_size"] == list(m.make_inputs(1, generator=gen())["pixel_values"].shape[-2:])


def test_grid_shape_follows_conv_arithmetic(tiny_visual):
    assert grid_shape((800, 1333)) == (25, 42)
    assert grid_shape((224, 224)) == (7, 7)
    cfg = VISUAL.config("grid-r50", tiny=True, image_size=(65, 97))
    m = VISUAL.build("grid-r50", tiny=True, image_size=(65, 97)).eval()
    with torch.no_grad():
        fmap = m.trunk(torch.zeros(1, 3, *cfg.image_size))
    assert tuple(fmap.shape[-2:]) == grid_shape((65, 97)) == (3, 4)
    assert m.output_spec().num_tokens == 12


def test_grid_errors():
    with pytest.raises(VlpbenchError, match="image_size"):
        VISUAL.build("grid-r50", tiny=True, image_size=(31, 64))
    with pytest.raises(VlpbenchError, match="sample_tokens"):
        VISUAL.build("grid-r50", tiny=True, sample_tokens=7)  # 64x96 -> 2x3 = 6 positions
    with pytest.raises(VlpbenchError, match="depth"):
        VISUAL.build("grid-r50", depth=34)
    m = VISUAL.build("grid-r50", tiny=True)
    with pytest.raises(VlpbenchError, match="image size"):
        m(torch.zeros(1, 3, 64, 64))


def test_grid_sampling_and_projection(tiny_visual):
    full = tiny_visual["grid-r50"]
    sampled = VISUAL.build("grid-r50", tiny=True, sample_tokens=4, out_dim=16).eval()
    sampled.trunk.load_state_dict(full.trunk.state_dict())
    x = full.make_inputs(3, generator=gen())["pixel_values"]
    rec = StageRecorder()
    with torch.no_grad():
        all_tokens = full(x).features  # [3, 6, 2048]
        out = sampled(x, stage=rec)
        again = sampled(x)
    assert rec.names == ["preprocess", "backbone", "flatten", "sample", "project"] == stage_names(sampled)
    assert out.features.shape == (3, 4, 16) == (3, sampled.output_spec().num_tokens, sampled.output_spec().dim)
    torch.testing.assert_close(out.features, again.features)  # seeded: same positions each call
    idx = sampled._sample_index(3, 6, torch.device("cpu"))
    assert all(len(set(row.tolist())) == 4 for row in idx)  # distinct positions per image
    expected = sampled.proj(all_tokens.gather(1, idx[..., None].expand(-1, -1, 2048)))
    torch.testing.assert_close(out.features, expected)


def test_grid_channels_last_is_numerically_equivalent(tiny_visual):
    plain = tiny_visual["grid-r50"]
    cl = VISUAL.build("grid-r50", tiny=True, channels_last=True).eval()
    cl.load_state_dict(plain.state_dict())
    x = plain.make_inputs(2, generator=gen(1))["pixel_values"]
    with torch.no_grad():
        torch.testing.assert_close(cl(x).features, plain(x).features, rtol=1e-4, atol=1e-4)


def test_full_size_parameter_counts_on_meta_device():
    """Golden counts built on the meta device (no memory, no compute)."""
    with torch.device("meta"):
        r50 = VISUAL.build("grid-r50")
        r101 = VISUAL.build("grid-r101")
        clip = VISUAL.build("clip-rn50-visual")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(r50) == 25_557_032 - (2048 * 1000 + 1000)  # torchvision resnet50 without its fc
    assert count(r101) == 44_549_160 - (2048 * 1000 + 1000)

    def bottleneck(inp, planes, down):
        n = inp * planes + 9 * planes * planes + planes * 4 * planes + 2 * (planes + planes + 4 * planes)
        return n + (inp * 4 * planes + 2 * 4 * planes if down else 0)

    n, inp = 3 * 32 * 9 + 32 * 32 * 9 + 32 * 64 * 9 + 2 * (32 + 32 + 64), 64  # 3-conv stem + BNs
    for i, blocks in enumerate((3, 4, 6, 3)):
        planes = 64 * 2**i
        n += bottleneck(inp, planes, True) + (blocks - 1) * bottleneck(4 * planes, planes, False)
        inp = 4 * planes
    n += 50 * 2048 + 3 * (2048 * 2048 + 2048) + 2048 * 1024 + 1024  # attention pool
    assert count(clip) == n == 38_316_896  # CLIP RN50 visual tower


def test_clip_attnpool_matches_clip_formulation(tiny_visual):
    """Our SDPA attention pool equals CLIP's F.multi_head_attention_forward call with the same weights."""
    m = tiny_visual["clip-rn50-visual"]
    pool = m.attnpool
    tokens = torch.randn(2, 4, m.feature_dim, generator=gen(2))
    x = torch.cat([tokens.mean(1, keepdim=True), tokens], 1) + pool.positional_embedding
    x = x.permute(1, 0, 2)  # CLIP works in [T, B, C]
    k_w, v_w = pool.attn.kv.weight.chunk(2)
    k_b, v_b = pool.attn.kv.bias.chunk(2)
    ref, _ = F.multi_head_attention_forward(
        query=x[:1],
        key=x,
        value=x,
        embed_dim_to_check=x.shape[-1],
        num_heads=pool.attn.num_heads,
        q_proj_weight=pool.attn.q.weight,
        k_proj_weight=k_w,
        v_proj_weight=v_w,
        in_proj_weight=None,
        in_proj_bias=torch.cat([pool.attn.q.bias, k_b, v_b]),
        bias_k=None,
        bias_v=None,
        add_zero_attn=False,
        dropout_p=0.0,
        out_proj_weight=pool.attn.proj.weight,
        out_proj_bias=pool.attn.proj.bias,
        use_separate_proj_weight=True,
        training=False,
        need_weights=False,
    )
    with torch.no_grad():
        torch.testing.assert_close(pool(tokens), ref[0], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_clip_rn50_full_size_forward():
    m = VISUAL.build("clip-rn50-visual").eval()
    with torch.no_grad():
        out = m(**m.make_inputs(1, generator=gen()))
    assert out.features.shape == (1, 49, 2048) and out.pooled.shape == (1, 1024)


# -- BiGRU text ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gru():
    return TEXT.build("bigru-text", tiny=True).eval()


def test_bigru_shapes_stages_and_padding(gru):
    spec = gru.output_spec()
    inputs = gru.make_inputs(3, generator=gen())
    rec = StageRecorder()
    with torch.no_grad():
        out = gru(**inputs, stage=rec)
    assert rec.names == stage_names(gru) == ["embed", "gru"]
    assert out.features.shape == (3, spec.num_tokens, spec.dim) and out.mask.all()
    # Row 1 keeps 5 real tokens; whatever sits in its padding must not matter.
    ids, mask = inputs["input_ids"].clone(), inputs["attention_mask"].clone()
    mask[1, 5:] = 0
    ids2 = ids.clone()
    ids2[1, 5:] = torch.randint(1, 1000, (ids.shape[1] - 5,), generator=gen(3))
    with torch.no_grad():
        a, b = gru(ids, mask), gru(ids2, mask)
        alone = gru(ids[1:2, :5], mask[1:2, :5])  # the same caption unpadded
    torch.testing.assert_close(a.features, b.features)
    assert (a.features[1, 5:] == 0).all()
    torch.testing.assert_close(a.features[1:2, :5], alone.features, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.features[0], gru(ids[:1], mask[:1]).features[0], rtol=1e-5, atol=1e-6)


def test_bigru_equals_manual_bidirectional_average(gru):
    ids = torch.randint(1, 1000, (1, 7), generator=gen(4))
    with torch.no_grad():
        out = gru(ids, torch.ones_like(ids)).features
        full, _ = gru.gru(gru.embed(ids))  # [1, 7, 2H]
    h = gru.hidden
    torch.testing.assert_close(out, (full[..., :h] + full[..., h:]) / 2, rtol=1e-5, atol=1e-6)


def test_bigru_errors(gru):
    ids = torch.randint(1, 1000, (2, 6), generator=gen())
    holes = torch.tensor([[1, 0, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    with pytest.raises(VlpbenchError, match="padding"):
        gru(ids, holes)
    with pytest.raises(VlpbenchError, match="real token"):
        gru(ids, torch.tensor([[0] * 6, [1] * 6]))
    with pytest.raises(VlpbenchError, match="token id"):
        gru(ids + 1000, torch.ones_like(ids))


# -- VSE / GPO -----------------------------------------------------------------------------------
def reference_gpo(gpo: GPO, feats: torch.Tensor, n_valid: int) -> torch.Tensor:
    """VSE-infinity's GPO for one sample with its valid tokens only, written out directly: [n, D] -> [D]."""
    x = feats[:n_valid]
    pe = positional_encoding_1d(gpo.pe_dim, n_valid)[None]
    out, _ = gpo.gru(pe)
    half = out.shape[-1] // 2
    scores = gpo.linear((out[..., :half] + out[..., half:]) / 2)[0, :, 0]
    w = torch.softmax(scores / gpo.temperature, 0)
    return (x.sort(dim=0, descending=True).values * w[:, None]).sum(0)


@pytest.fixture(scope="module")
def vse_specs():
    return TokenSpec(dim=24, num_tokens=6), TokenSpec(dim=20, num_tokens=5, modality="text")


def test_gpo_weights_sum_to_one_and_match_reference():
    gpo = GPO(32, 32, 0.1).eval()
    feats = torch.randn(3, 7, 10, generator=gen(5))
    mask = torch.zeros(3, 7, dtype=torch.bool)
    mask[0, :7], mask[1, :3], mask[2, :1] = True, True, True
    with torch.no_grad():
        pooled, w = gpo(feats, mask)
        for i, n in enumerate((7, 3, 1)):
            torch.testing.assert_close(w[i, :n].sum(), torch.tensor(1.0))
            assert (w[i, n:] == 0).all()
            torch.testing.assert_close(pooled[i], reference_gpo(gpo, feats[i], n), rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in gpo.parameters()) == 2 * 3 * (32 * 32 + 32 * 32 + 2 * 32) + 32


def test_vse_shapes_stages_groups(vse_specs):
    vspec, tspec = vse_specs
    m = INTERACTION.build("vse-gpo", tiny=True, context={"visual_spec": vspec, "text_spec": tspec}).eval()
    rec = StageRecorder()
    inputs = m.make_inputs(4, generator=gen())
    with torch.no_grad():
        out = m(**inputs, stage=rec)
    assert rec.calls == [("image_pool", "VE"), ("text_pool", "TE"), ("similarity", None)]
    assert rec.names == stage_names(m)
    e = m.output_dim
    assert out.image_embeds.shape == (4, e) and out.text_embeds.shape == (4, e)
    assert out.logits_per_image.shape == (4, 4)
    torch.testing.assert_close(out.image_embeds.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(
        out.logits_per_image, F.cosine_similarity(out.image_embeds[:, None], out.text_embeds[None], -1)
    )


def test_vse_respects_masks_and_is_order_invariant(vse_specs):
    vspec, tspec = vse_specs
    m = INTERACTION.build(
        "vse-gpo", tiny=True, visual_proj="mlp", context={"visual_spec": vspec, "text_spec": tspec}
    ).eval()
    inputs = m.make_inputs(2, generator=gen(6))
    v, t = inputs["visual"], inputs["text"]
    with torch.no_grad():
        base = m(v, t)
        # Padding: 3 extra garbage visual tokens and 4 garbage text tokens, masked out.
        v_pad = VisualTokens(
            torch.cat([v.features, 100 * torch.randn(2, 3, 24, generator=gen(7))], 1),
            torch.cat([v.mask, torch.zeros(2, 3, dtype=torch.bool)], 1),
        )
        t_pad = TextTokens(
            torch.cat([t.features, -50 * torch.ones(2, 4, 20)], 1),
            torch.cat([t.mask, torch.zeros(2, 4, dtype=torch.bool)], 1),
        )
        padded = m(v_pad, t_pad)
        # Order: GPO sorts per dimension, so a token permutation (mask permuted along) changes nothing.
        perm = torch.randperm(9, generator=gen(8))
        shuffled = m(VisualTokens(v_pad.features[:, perm], v_pad.mask[:, perm]), t_pad)
    for other in (padded, shuffled):
        torch.testing.assert_close(other.image_embeds, base.image_embeds, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(other.text_embeds, base.text_embeds, rtol=1e-5, atol=1e-6)


def test_vse_errors(vse_specs):
    vspec, tspec = vse_specs
    with pytest.raises(VlpbenchError, match="visual_proj"):
        INTERACTION.build("vse-gpo", tiny=True, visual_proj="conv", context={"visual_spec": vspec, "text_spec": tspec})
    m = INTERACTION.build("vse-gpo", tiny=True, context={"visual_spec": vspec, "text_spec": tspec})
    inputs = m.make_inputs(2, generator=gen())
    with pytest.raises(VlpbenchError, match="visual token width"):
        m(VisualTokens(torch.zeros(2, 6, 25), torch.ones(2, 6, dtype=torch.bool)), inputs["text"])
    with pytest.raises(VlpbenchError, match="real token"):
        m(VisualTokens(inputs["visual"].features, torch.zeros(2, 6, dtype=torch.bool)), inputs["text"])


def test_hinge_triplet_loss():
    good = torch.tensor([[0.9, 0.1, 0.2], [0.0, 0.8, 0.3], [0.1, 0.2, 0.7]])
    assert hinge_triplet_loss(good, margin=0.2).item() == 0.0
    assert hinge_triplet_loss(good, margin=0.2, hardest=False).item() == 0.0
    bad = torch.tensor([[0.5, 0.6], [0.1, 0.4]])
    # image 0: text 1 violates by 0.2 + 0.6 - 0.5 = 0.3; image 1: text 0 by 0.2 + 0.1 - 0.4 < 0 -> 0
    # text 0: image 1 by 0.2 + 0.1 - 0.5 < 0 -> 0; text 1: image 0 by 0.2 + 0.6 - 0.4 = 0.4
    torch.testing.assert_close(hinge_triplet_loss(bad, margin=0.2), torch.tensor(0.7))
    assert hinge_triplet_loss(good, margin=0.7).item() > 0
    sims = torch.randn(4, 4, generator=gen(), requires_grad=True)
    hinge_triplet_loss(sims).backward()
    assert sims.grad.abs().sum() > 0
    with pytest.raises(VlpbenchError, match="square"):
        hinge_triplet_loss(torch.zeros(2, 3))


def test_vse_architecture_end_to_end_grid_bigru():
    model = VLPModel.from_config(
        ArchConfig(visual="grid-r50", text="bigru-text", interaction="vse-gpo", tiny=True)
    ).eval()
    rec = StageRecorder()
    with torch.no_grad():
        out = model(**model.make_inputs(2, generator=gen()), stage=rec)
    assert out.interaction.logits_per_image.shape == (2, 2)
    assert rec.names == stage_names(model)


# -- ViLBERT co-attention ------------------------------------------------------------------------
def test_vilbert_schedule():
    steps = _schedule((0, 1, 2, 3, 4, 5), (6, 7, 8, 9, 10, 11), 6, 12)
    expected = [("c", 0)]
    for k in range(1, 6):
        expected += [("v", k - 1), ("t", 5 + k), ("c", k)]
    assert steps == expected + [("v", 5), ("t", 11)]


def region_inputs(b, n, dim, seed=0):
    g = gen(seed)
    xy = torch.rand(b, n, 2, generator=g) * 0.5
    boxes = torch.cat([xy, xy + 0.1 + 0.4 * torch.rand(b, n, 2, generator=g)], -1)
    return VisualTokens(torch.randn(b, n, dim, generator=g), torch.ones(b, n, dtype=torch.bool), boxes=boxes)


@pytest.fixture(scope="module")
def coattn_region():
    vspec = TokenSpec(dim=40, num_tokens=5, has_boxes=True)
    tspec = TokenSpec(dim=32, num_tokens=6, has_cls=True, modality="text")
    return INTERACTION.build("co-attention", tiny=True, context={"visual_spec": vspec, "text_spec": tspec}).eval()


def test_coattention_with_regions(coattn_region):
    m = coattn_region
    cfg = m.cfg
    v = region_inputs(2, 5, 40)
    t = TextTokens(torch.randn(2, 6, 32, generator=gen(1)), torch.ones(2, 6, dtype=torch.bool))
    rec = StageRecorder()
    with torch.no_grad():
        out = m(v, t, stage=rec)
        moved = m(VisualTokens(v.features, v.mask, boxes=v.boxes.flip(-1).clamp(0, 1)), t)
    assert rec.names == stage_names(m) == ["text_only", "visual_embed", "co_layers", "pool"]
    assert out.pooler_output.shape == (2, m.output_dim) == (2, cfg.bi_hidden)
    assert out.last_hidden_state.shape == (2, 6, cfg.text_hidden) and out.text_len == 6
    assert out.extras["visual_hidden_state"].shape == (2, 1 + 5, cfg.visual_hidden)  # whole-image token first
    assert not torch.allclose(moved.pooler_output, out.pooler_output)  # boxes feed the location encoding
    # The whole-image token: mean feature with the full-image box and area 1.
    with torch.no_grad():
        emb, mask = m.embed_visual(v)
        loc0 = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0])
        expected0 = m.v_norm(m.v_proj(v.features.mean(1)) + m.v_loc(loc0))
    torch.testing.assert_close(emb[:, 0], expected0, rtol=1e-5, atol=1e-5)
    assert mask.shape == (2, 6) and mask.all()


def test_coattention_respects_padding(coattn_region):
    m = coattn_region
    v = region_inputs(2, 5, 40, seed=3)
    t = TextTokens(torch.randn(2, 6, 32, generator=gen(4)), torch.ones(2, 6, dtype=torch.bool))
    v_pad = VisualTokens(
        torch.cat([v.features, 30 * torch.randn(2, 2, 40, generator=gen(5))], 1),
        torch.cat([v.mask, torch.zeros(2, 2, dtype=torch.bool)], 1),
        boxes=torch.cat([v.boxes, torch.rand(2, 2, 4, generator=gen(6))], 1),
    )
    t_pad = TextTokens(
        torch.cat([t.features, 30 * torch.randn(2, 3, 32, generator=gen(7))], 1),
        torch.cat([t.mask, torch.zeros(2, 3, dtype=torch.bool)], 1),
    )
    with torch.no_grad():
        base, padded = m(v, t), m(v_pad, t_pad)
    torch.testing.assert_close(padded.pooler_output, base.pooler_output, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(padded.last_hidden_state[:, :6], base.last_hidden_state, rtol=1e-4, atol=1e-5)


def test_coattention_layer_matches_vilbert_formulas(coattn_region):
    """BertBiAttention + BertBiOutput + the two feed-forwards, written out with explicit matmuls."""
    layer = coattn_region.co_layers[0]
    v, t = torch.randn(2, 4, 48, generator=gen(8)), torch.randn(2, 3, 32, generator=gen(9))
    heads = layer.v_attn.num_heads

    def attend(q_lin, kv_lin, q_in, kv_in):
        q = q_lin(q_in)
        k, val = kv_lin(kv_in).chunk(2, -1)
        split = lambda x: x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
        q, k, val = split(q), split(k), split(val)
        p = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -1)
        return (p @ val).transpose(1, 2).reshape(q_in.shape[0], q_in.shape[1], -1)

    with torch.no_grad():
        ctx_v = layer.v_attn.proj(attend(layer.v_attn.q, layer.v_attn.kv, v, t))  # vision queries, text keys
        ctx_t = layer.t_attn.proj(attend(layer.t_attn.q, layer.t_attn.kv, t, v))
        v1, t1 = layer.v_ln1(v + ctx_v), layer.t_ln1(t + ctx_t)
        ref_v = layer.v_ln2(v1 + layer.v_mlp.fc2(F.gelu(layer.v_mlp.fc1(v1))))
        ref_t = layer.t_ln2(t1 + layer.t_mlp.fc2(F.gelu(layer.t_mlp.fc1(t1))))
        got_v, got_t = layer(v, t, None, None)
    torch.testing.assert_close(got_v, ref_v, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_t, ref_t, rtol=1e-5, atol=1e-5)


def test_coattention_fusion_sum_and_mul():
    """vilbert_beta's two fusion_method values: the pooled text and image joined by product (default) or sum."""
    vspec = TokenSpec(dim=40, num_tokens=5, has_boxes=True)
    tspec = TokenSpec(dim=32, num_tokens=6, has_cls=True, modality="text")
    ctx = {"visual_spec": vspec, "text_spec": tspec}
    torch.manual_seed(0)
    mul = INTERACTION.build("co-attention", tiny=True, context=ctx).eval()
    torch.manual_seed(0)
    add = INTERACTION.build("co-attention", tiny=True, fusion="sum", context=ctx).eval()
    assert mul.cfg.fusion == "mul" and add.cfg.fusion == "sum"
    v = region_inputs(2, 5, 40, seed=11)
    t = TextTokens(torch.randn(2, 6, 32, generator=gen(12)), torch.ones(2, 6, dtype=torch.bool))
    with torch.no_grad():
        a, b = mul(v, t), add(v, t)
        t_p = torch.relu(add.t_pool(b.last_hidden_state[:, 0]))
        v_p = torch.relu(add.v_pool(b.extras["visual_hidden_state"][:, 0]))
    torch.testing.assert_close(b.last_hidden_state, a.last_hidden_state)  # same weights: only the join differs
    torch.testing.assert_close(a.pooler_output, t_p * v_p)
    torch.testing.assert_close(b.pooler_output, t_p + v_p)
    with pytest.raises(VlpbenchError, match="invalid fusion 'concat'.*mul.*sum"):
        INTERACTION.build("co-attention", tiny=True, fusion="concat", context=ctx)


def test_coattention_image_token_choices():
    """The visual stream's first token: ViLBERT's mean feature, a learned one, or none (pooler reads the mean)."""
    vspec = TokenSpec(dim=40, num_tokens=5, has_boxes=True)
    tspec = TokenSpec(dim=32, num_tokens=6, has_cls=True, modality="text")
    ctx = {"visual_spec": vspec, "text_spec": tspec}
    models = {}
    for mode in ("mean", "learned", "none"):
        torch.manual_seed(0)
        models[mode] = INTERACTION.build("co-attention", tiny=True, image_token=mode, context=ctx).eval()
    mean, learned, none = models["mean"], models["learned"], models["none"]
    n_mean = sum(p.numel() for p in mean.parameters())
    assert sum(p.numel() for p in learned.parameters()) == n_mean + mean.cfg.visual_hidden
    assert sum(p.numel() for p in none.parameters()) == n_mean
    assert [m.workload()["visual_tokens"] for m in models.values()] == [6, 6, 5]
    v, other = region_inputs(2, 5, 40, seed=13), region_inputs(2, 5, 40, seed=14)
    t = TextTokens(torch.randn(2, 6, 32, generator=gen(15)), torch.ones(2, 6, dtype=torch.bool))
    loc0 = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0])
    with torch.no_grad():
        emb, mask = learned.embed_visual(v)
        emb_other, _ = learned.embed_visual(other)
        expected0 = learned.v_norm(learned.image_embed[0, 0] + learned.v_loc(loc0))
        out = none(v, t)
        emb_none, mask_none = none.embed_visual(v)
    # learned: the first token is the embedding at the full-image box, whatever the features; the rest as "mean"
    assert mask.shape == (2, 6) and mask.all()
    torch.testing.assert_close(emb[:, 0], expected0.expand(2, -1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(emb_other[:, 0], emb[:, 0])
    torch.testing.assert_close(emb[:, 1:], mean.embed_visual(v)[0][:, 1:], rtol=1e-5, atol=1e-5)
    # none: the regions alone, and the visual pooler reads their mean over the stream's output
    assert emb_none.shape == (2, 5, none.cfg.visual_hidden) and mask_none.all()
    vis = out.extras["visual_hidden_state"]
    assert vis.shape == (2, 5, none.cfg.visual_hidden)
    with torch.no_grad():
        t_p = torch.relu(none.t_pool(out.last_hidden_state[:, 0]))
        v_p = torch.relu(none.v_pool(vis.mean(1)))
    torch.testing.assert_close(out.pooler_output, t_p * v_p)
    # none with padded regions: the mean covers only the real ones
    v_pad = VisualTokens(
        torch.cat([v.features, 30 * torch.randn(2, 2, 40, generator=gen(16))], 1),
        torch.cat([v.mask, torch.zeros(2, 2, dtype=torch.bool)], 1),
        boxes=torch.cat([v.boxes, torch.rand(2, 2, 4, generator=gen(17))], 1),
    )
    with torch.no_grad():
        padded = none(v_pad, t)
    torch.testing.assert_close(padded.pooler_output, out.pooler_output, rtol=1e-4, atol=1e-5)
    # switching after construction (the study diagnostic's --image-token) builds or drops the embedding
    mean.use_image_token("learned")
    assert mean.image_token == "learned" and mean.image_embed.shape == (1, 1, mean.cfg.visual_hidden)
    mean.use_image_token("none")
    assert mean.image_embed is None and "image_embed" not in dict(mean.named_parameters())
    # a visual spec with its own summary token (ViLT patches) never gets another
    cls_ctx = {"visual_spec": TokenSpec(dim=40, num_tokens=5, has_cls=True), "text_spec": tspec}
    with_cls = INTERACTION.build("co-attention", tiny=True, image_token="learned", context=cls_ctx)
    assert with_cls.image_token == "cls" and with_cls.image_embed is None and with_cls.workload()["visual_tokens"] == 5
    with pytest.raises(VlpbenchError, match="invalid image_token 'first'.*mean.*learned.*none"):
        INTERACTION.build("co-attention", tiny=True, image_token="first", context=ctx)


def test_coattention_with_grid_tokens_end_to_end():
    model = VLPModel.from_config(
        ArchConfig(visual="grid-r50", text="bigru-text", interaction="co-attention", head="itm", tiny=True)
    ).eval()
    assert model.interaction.v_loc is None  # no boxes -> no location encoding
    rec = StageRecorder()
    with torch.no_grad():
        out = model(**model.make_inputs(2, generator=gen()), stage=rec)
    assert rec.names == stage_names(model)
    n = model.visual.output_spec().num_tokens
    assert out.interaction.extras["visual_hidden_state"].shape[1] == n + 1
    assert out.interaction.pooler_output.shape == (2, model.interaction.output_dim)
    assert out.head["logits"].shape == (2, 2)


def test_coattention_errors(coattn_region):
    m = coattn_region
    v = region_inputs(2, 5, 40)
    t = TextTokens(torch.randn(2, 6, 32), torch.ones(2, 6, dtype=torch.bool))
    with pytest.raises(VlpbenchError, match="batch"):
        m(region_inputs(3, 5, 40), t)
    with pytest.raises(VlpbenchError, match="text length"):
        m(v, TextTokens(torch.zeros(2, 513, 32), torch.ones(2, 513, dtype=torch.bool)))
    with pytest.raises(VlpbenchError, match="boxes"):
        m(VisualTokens(v.features, v.mask), t)
    with pytest.raises(VlpbenchError, match="visual features"):
        m(region_inputs(2, 5, 41), t)
    with pytest.raises(VlpbenchError, match="text length"):
        INTERACTION.build(
            "co-attention",
            tiny=True,
            context={"visual_spec": TokenSpec(dim=40), "text_spec": TokenSpec(dim=32, num_tokens=600, modality="text")},
        )
    with pytest.raises(VlpbenchError, match="co-attention ids"):
        INTERACTION.build(
            "co-attention",
            tiny=True,
            text_co_ids=(3,),
            context={"visual_spec": TokenSpec(dim=40), "text_spec": TokenSpec(dim=32, modality="text")},
        )


def test_coattention_full_size_parameter_count_on_meta_device():
    with torch.device("meta"):
        m = INTERACTION.build(
            "co-attention",
            context={
                "visual_spec": TokenSpec(dim=2048, num_tokens=36, has_boxes=True),
                "text_spec": TokenSpec(dim=768, num_tokens=36, has_cls=True, modality="text"),
            },
        )
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    bert_layer = 4 * (768 * 768 + 768) + 2 * 768 * 3072 + 3072 + 768 + 4 * 768
    assert count(m.text_layers) == 12 * bert_layer
    assert count(m.visual_layers) == 6 * (4 * (1024 * 1024 + 1024) + 2 * 1024 * 1024 + 1024 + 1024 + 4 * 1024)
    assert len(m.co_layers) == 6 and m.output_dim == 1024
    assert isinstance(m, CoAttentionInteraction)


def test_grid_pool_max_pools_the_c5_map_and_checks_its_size():
    import torch.nn.functional as F

    from vlpbench.embedders.grid import GridConfig, GridEmbedder
    from vlpbench.errors import VlpbenchError

    torch.manual_seed(0)
    cfg = GridConfig(depth=50, image_size=(160, 224), blocks=(1, 1, 1, 1), width_per_group=8)
    plain = GridEmbedder.from_config(cfg).eval()
    pooled = GridEmbedder.from_config(dataclasses.replace(cfg, pool=2)).eval()
    pooled.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 160, 224)
    with torch.no_grad():
        a, b = plain(x), pooled(x)
    assert plain.grid == (5, 7) and pooled.grid == (2, 3) and pooled.output_spec().num_tokens == 6
    fmap = a.features.transpose(1, 2).reshape(2, -1, 5, 7)  # [B, 35, C] -> [B, C, 5, 7]
    ref = F.max_pool2d(fmap, 2).flatten(2).transpose(1, 2)
    torch.testing.assert_close(b.features, ref)
    assert "pool" in stage_names(pooled) and "pool" not in stage_names(plain)
    with pytest.raises(VlpbenchError, match="invalid pool 9"):
        GridEmbedder.from_config(dataclasses.replace(cfg, pool=9))


def test_grid_cell_boxes_name_each_tokens_cell_through_pool_and_sampling():
    from vlpbench.embedders.grid import GridConfig, GridEmbedder

    torch.manual_seed(0)
    cfg = GridConfig(depth=50, image_size=(160, 224), blocks=(1, 1, 1, 1), width_per_group=8, pool=2)
    plain = GridEmbedder.from_config(cfg).eval()
    boxed = GridEmbedder.from_config(dataclasses.replace(cfg, cell_boxes=True)).eval()
    boxed.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 160, 224)
    with torch.no_grad():
        a, b = plain(x), boxed(x)
    torch.testing.assert_close(b.features, a.features)  # the option adds boxes, nothing else
    assert a.boxes is None and not plain.output_spec().has_boxes and boxed.output_spec().has_boxes
    # the 2 x 3 pooled grid, row-major: token 4 is row 1, column 1 -> x in [1/3, 2/3], y in [1/2, 1]
    assert b.boxes.shape == (2, 6, 4)
    torch.testing.assert_close(b.boxes[1, 4], torch.tensor([1 / 3, 0.5, 2 / 3, 1.0]))
    torch.testing.assert_close(b.boxes[0, 0], torch.tensor([0.0, 0.0, 1 / 3, 0.5]))
    # each token's box is the cell its feature came from: the max-pooled map cell (r, c) is token r * 3 + c
    with torch.no_grad():
        fmap = plain.trunk((x - plain.mean) / plain.std)
    cell = F.max_pool2d(fmap, 2)[:, :, 1, 2]  # row 1, column 2 -> box x [2/3, 1], y [1/2, 1]
    k = int(((b.boxes[0] - torch.tensor([2 / 3, 0.5, 1.0, 1.0])).abs().sum(-1) < 1e-6).nonzero())
    torch.testing.assert_close(b.features[:, k], cell)
    # sampled tokens keep their own cells
    sampled = GridEmbedder.from_config(dataclasses.replace(cfg, cell_boxes=True, sample_tokens=4)).eval()
    sampled.load_state_dict(plain.state_dict())
    with torch.no_grad():
        s = sampled(x)
    idx = sampled._sample_index(2, 6, torch.device("cpu"))
    torch.testing.assert_close(s.boxes, b.boxes.gather(1, idx[..., None].expand(-1, -1, 4)))
    torch.testing.assert_close(s.features, b.features.gather(1, idx[..., None].expand(-1, -1, 2048)))
    with pytest.raises(VlpbenchError, match="cell_boxes"):
        GridEmbedder.from_config(dataclasses.replace(cfg, cell_boxes="yes"))


def test_single_stream_reads_grid_cell_boxes_with_the_box_code():
    """A grid with cell boxes feeds a single-stream with uniter-small's box code: swapping two tokens' cells
    changes the output: the position is in the tokens."""
    cfg = ArchConfig(
        visual="grid-r50",
        text="bert-base-embed",
        interaction="single-stream",
        visual_overrides=dict(image_size=(64, 64), blocks=(1, 1, 1, 1), width_per_group=8, cell_boxes=True),
        text_overrides=dict(vocab_size=30, dim=32, max_len=8, text_len=8),
        interaction_overrides=dict(width=32, depth=1, heads=2, mlp_dim=64, box_code="linear+sincos"),
    )
    torch.manual_seed(0)
    model = VLPModel.from_config(cfg).eval()
    inter = model.interaction
    assert inter.box_proj is not None
    with torch.no_grad():
        v = model.visual(pixel_values=torch.rand(1, 3, 64, 64))
        text = model.text(input_ids=torch.randint(3, 30, (1, 8)), attention_mask=torch.ones(1, 8, dtype=torch.long))
        out = inter(v, text).last_hidden_state[:, 0]
        swapped = VisualTokens(features=v.features, mask=v.mask, boxes=v.boxes[:, [1, 0, 2, 3]])
        out_swapped = inter(swapped, text).last_hidden_state[:, 0]
    assert not torch.allclose(out, out_swapped, atol=1e-5)


def test_grid_c4_is_the_trunk_without_layer4():
    """out_stage=4 reads layer3's map (stride 16, 1024-d), out_stage=3 layer2's (stride 8, 512-d): the same weights
    as the C5 trunk's first stages."""
    from vlpbench.embedders.grid import GridConfig, GridEmbedder

    torch.manual_seed(0)
    cfg = GridConfig(depth=50, image_size=(64, 96), blocks=(1, 1, 1, 1), width_per_group=8)
    c5 = GridEmbedder.from_config(cfg).eval()
    c4 = GridEmbedder.from_config(dataclasses.replace(cfg, out_stage=4, cell_boxes=True)).eval()
    assert len(c4.trunk) == len(c5.trunk) - 1
    c4.trunk.load_state_dict(c5.trunk[:-1].state_dict())
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        out = c4(x)
        ref = c5.trunk[:-1]((x - c5.mean) / c5.std)  # [2, 1024, 4, 6]
    assert grid_shape((64, 96), 4) == (4, 6) == c4.grid and grid_shape((64, 96)) == (2, 3) == c5.grid
    spec = c4.output_spec()
    assert out.features.shape == (2, 24, 1024) == (2, spec.num_tokens, spec.dim)
    torch.testing.assert_close(out.features, ref.flatten(2).transpose(1, 2))
    torch.testing.assert_close(out.boxes[0, 7], torch.tensor([1 / 6, 0.25, 2 / 6, 0.5]))  # row 1, column 1
    assert c4.workload()["feature_map"] == "C4" and c5.workload()["feature_map"] == "C5"
    c3 = GridEmbedder.from_config(dataclasses.replace(cfg, out_stage=3)).eval()  # layer2: stride 8, 512-d
    c3.trunk.load_state_dict(c5.trunk[:-2].state_dict())
    with torch.no_grad():
        out3 = c3(x)
    assert c3.grid == grid_shape((64, 96), 3) == (8, 12) and out3.features.shape == (2, 96, 512)
    torch.testing.assert_close(out3.features, c5.trunk[:-2]((x - c5.mean) / c5.std).flatten(2).transpose(1, 2))
    with pytest.raises(VlpbenchError, match="out_stage"):
        GridEmbedder.from_config(dataclasses.replace(cfg, out_stage=2))


def test_grid_freeze_trunk_leaves_only_the_projection_trainable():
    from vlpbench.embedders.grid import GridConfig, GridEmbedder

    cfg = GridConfig(depth=50, image_size=(64, 64), blocks=(1, 1, 1, 1), width_per_group=8, out_dim=16)
    frozen = GridEmbedder.from_config(dataclasses.replace(cfg, freeze_trunk=True))
    assert not any(p.requires_grad for p in frozen.trunk.parameters())
    assert all(p.requires_grad for p in frozen.proj.parameters())
    before = {
        k: v.clone() for k, v in frozen.trunk.state_dict().items() if "running" not in k and "num_batches" not in k
    }
    opt = torch.optim.SGD([p for p in frozen.parameters() if p.requires_grad], lr=0.1)
    frozen(torch.rand(2, 3, 64, 64)).features.sum().backward()
    opt.step()
    after = frozen.trunk.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # weights and BatchNorm affine unchanged
    assert all(p.requires_grad for p in GridEmbedder.from_config(cfg).trunk.parameters())
    with pytest.raises(VlpbenchError, match="freeze_trunk"):
        GridEmbedder.from_config(dataclasses.replace(cfg, freeze_trunk=1))

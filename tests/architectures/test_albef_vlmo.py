"""ALBEF's cross-attention interaction and VLMo's MoME transformer.

Against references built here with random weights (no downloads): each of our layers equals the reference
layer at the same weights (transformers ``BertLayer`` with and without ``add_cross_attention``, timm's ViT
``Block`` with layer scale), and the published-size parameter counts equal the matching reference parts
(transformers ``ViTModel`` + ``BertModel`` + ``BertLayer`` x 6 for ALBEF-base; timm ``vit_base_patch16_224``
plus one more FFN expert per block and the VL experts, and transformers ``BertEmbeddings``, for VLMo-base).
Full-size models are built on the meta device, so the counts cost no memory or time.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from doubles import StageRecorder
from vlpbench.architectures.compose import VLPModel
from vlpbench.architectures.cross_attention import CrossAttentionBlock, CrossAttentionConfig, CrossAttentionInteraction
from vlpbench.architectures.vlmo import MoMEBlock, MoMEConfig, MoMEInteraction
from vlpbench.errors import VlpbenchError
from vlpbench.harness.flops import count_flops
from vlpbench.layers import Block
from vlpbench.presets import load_all
from vlpbench.registry import ARCH, INTERACTION
from vlpbench.stages import stage_names
from vlpbench.types import TextTokens, TokenSpec, VisualTokens

load_all()
W, H, M = 32, 4, 64


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def tokens(b=2, n=5, length=7, dim=W, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = VisualTokens(torch.randn(b, n, dim, generator=g), torch.ones(b, n, dtype=torch.bool))
    t = TextTokens(torch.randn(b, length, dim, generator=g), torch.ones(b, length, dtype=torch.bool))
    return v, t


def specs(n=5, length=7, dim=W):
    return (
        TokenSpec(dim=dim, num_tokens=n, has_cls=True, modality="vision"),
        TokenSpec(dim=dim, num_tokens=length, has_cls=True, modality="text"),
    )


# -- reference layers -----------------------------------------------------------------------------------------
def bert_config(width=W, heads=H, mlp=M, layers=1, cross=False, **kw):
    from transformers import BertConfig

    cfg = BertConfig(
        hidden_size=width,
        num_attention_heads=heads,
        intermediate_size=mlp,
        num_hidden_layers=layers,
        hidden_act="gelu",
        is_decoder=cross,
        add_cross_attention=cross,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **kw,
    )
    cfg._attn_implementation = "eager"
    return cfg


def copy_attention(ours, theirs_self, theirs_out_dense):
    """transformers' separate query / key / value -> our fused qkv ([q; k; v]) or q + kv (cross)."""
    q, k, v = theirs_self.query, theirs_self.key, theirs_self.value
    with torch.no_grad():
        if ours.cross:
            ours.q.weight.copy_(q.weight), ours.q.bias.copy_(q.bias)
            ours.kv.weight.copy_(torch.cat([k.weight, v.weight])), ours.kv.bias.copy_(torch.cat([k.bias, v.bias]))
        else:
            ours.qkv.weight.copy_(torch.cat([q.weight, k.weight, v.weight]))
            ours.qkv.bias.copy_(torch.cat([q.bias, k.bias, v.bias]))
        ours.proj.load_state_dict(theirs_out_dense.state_dict())


def copy_bert_layer(ours, theirs):
    copy_attention(ours.attn, theirs.attention.self, theirs.attention.output.dense)
    ours.ln1.load_state_dict(theirs.attention.output.LayerNorm.state_dict())
    ours.mlp.fc1.load_state_dict(theirs.intermediate.dense.state_dict())
    ours.mlp.fc2.load_state_dict(theirs.output.dense.state_dict())
    ours.ln2.load_state_dict(theirs.output.LayerNorm.state_dict())
    if isinstance(ours, CrossAttentionBlock):
        copy_attention(ours.cross, theirs.crossattention.self, theirs.crossattention.output.dense)
        ours.ln_cross.load_state_dict(theirs.crossattention.output.LayerNorm.state_dict())


def randomise(module, seed=0):
    """Non-trivial LayerNorm and bias values, so a wrong mapping cannot pass."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return module


def test_fusion_layer_equals_transformers_bert_layer_with_cross_attention():
    from transformers.models.bert.modeling_bert import BertLayer

    theirs = randomise(BertLayer(bert_config(cross=True))).eval()
    theirs.attention.self.is_causal = False  # a decoder config only to get the cross-attention; ALBEF is bidirectional
    ours = CrossAttentionBlock(W, H, M).eval()
    copy_bert_layer(ours, theirs)
    g = torch.Generator().manual_seed(1)
    x, image = torch.randn(2, 7, W, generator=g), torch.randn(2, 11, W, generator=g)  # L = 7 text, N = 11 image
    with torch.no_grad():
        ref = theirs(x, encoder_hidden_states=image)
        ref = ref[0] if isinstance(ref, tuple) else ref
        torch.testing.assert_close(ours(x, image), ref, atol=1e-5, rtol=1e-5)
    assert n_params(ours) == n_params(theirs)


def test_text_layer_equals_transformers_bert_layer():
    from transformers.models.bert.modeling_bert import BertLayer

    theirs = randomise(BertLayer(bert_config())).eval()
    ours = Block(W, H, M, norm_first=False, eps=1e-12).eval()
    copy_bert_layer(ours, theirs)
    x = torch.randn(2, 7, W, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = theirs(x)
        torch.testing.assert_close(ours(x), ref[0] if isinstance(ref, tuple) else ref, atol=1e-5, rtol=1e-5)


def timm_block(layer_scale=None):
    from timm.models.vision_transformer import Block as TimmBlock

    return randomise(TimmBlock(W, H, mlp_ratio=M / W, qkv_bias=True, init_values=layer_scale)).eval()


def copy_timm_attention(ours_norm, ours_attn, blk):
    ours_norm.load_state_dict(blk.norm1.state_dict())
    ours_attn.qkv.load_state_dict(blk.attn.qkv.state_dict())  # timm's qkv is fused [q; k; v] as ours
    ours_attn.proj.load_state_dict(blk.attn.proj.state_dict())


def test_image_layer_equals_timm_vit_block():
    blk = timm_block()
    ours = Block(W, H, M, norm_first=True, eps=1e-6).eval()
    copy_timm_attention(ours.ln1, ours.attn, blk)
    ours.ln2.load_state_dict(blk.norm2.state_dict())
    ours.mlp.load_state_dict(blk.mlp.state_dict(), strict=False)
    x = torch.randn(2, 9, W, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), blk(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("expert", ["vision", "language", "vl"])
def test_mome_block_with_one_expert_equals_timm_block_with_layer_scale(expert):
    blk = timm_block(layer_scale=0.1)
    ours = MoMEBlock(W, H, M, vl_expert=True, layer_scale=0.1).eval()
    copy_timm_attention(ours.norm1, ours.attn, blk)
    ours.norms[expert].load_state_dict(blk.norm2.state_dict())
    ours.experts[expert].fc1.load_state_dict(blk.mlp.fc1.state_dict())
    ours.experts[expert].fc2.load_state_dict(blk.mlp.fc2.state_dict())
    with torch.no_grad():
        ours.gamma1.copy_(blk.ls1.gamma), ours.gamma2.copy_(blk.ls2.gamma)
    x = torch.randn(2, 9, W, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(ours(x, expert), blk(x), atol=1e-5, rtol=1e-5)


def test_mome_routing_is_static_by_position():
    blk = randomise(MoMEBlock(W, H, M, vl_expert=False)).eval()
    x = torch.randn(2, 10, W, generator=torch.Generator().manual_seed(5))  # 4 text positions, then 6 image
    with torch.no_grad():
        before = blk(x, split=4)
        for p in blk.experts["language"].parameters():
            p.add_(1.0)
        after = blk(x, split=4)
        both = blk(x, "vision")
    assert not torch.allclose(before[:, :4], after[:, :4])  # text positions take the language expert
    torch.testing.assert_close(before[:, 4:], after[:, 4:])  # image positions never see it
    torch.testing.assert_close(before[:, 4:], both[:, 4:])  # ... they take the vision expert


# -- parameter counts at published size -----------------------------------------------------------------------
def meta_arch(name, **overrides):
    entry = ARCH.get(name)
    with torch.device("meta"):
        return VLPModel.from_config(dataclasses.replace(entry.config, **overrides))


def test_albef_base_parameters_equal_transformers_vit_and_bert_parts():
    from transformers import BertModel, ViTConfig, ViTModel
    from transformers.models.bert.modeling_bert import BertLayer

    model = meta_arch("albef-base", visual="vit-b16-patch")  # 224: the pre-training model
    inter = model.interaction
    with torch.device("meta"):
        vit = ViTModel(
            ViTConfig(image_size=224, patch_size=16, layer_norm_eps=1e-6, qkv_bias=True), add_pooling_layer=False
        )
        bert = BertModel(bert_config(768, 12, 3072, layers=6), add_pooling_layer=False)  # embeddings + layers 0-5
        fusion = BertLayer(bert_config(768, 12, 3072, cross=True))  # one of layers 6-11
    assert n_params(model.visual) + n_params(inter.image_encoder) + n_params(inter.image_norm) == n_params(vit)
    assert n_params(model.text) + n_params(inter.text_encoder) == n_params(bert)
    assert n_params(inter.fusion) == 6 * n_params(fusion)
    itc = n_params(inter.vision_proj) + n_params(inter.text_proj) + 1  # + the temperature
    assert n_params(model) == n_params(vit) + n_params(bert) + 6 * n_params(fusion) + itc + n_params(model.head)
    # ALBEF Sec. 5: ViT-B/16 85.8M; BERT-base with cross-attention 123.7M (BERT's pooler, 0.59M, included)
    assert round(n_params(vit) / 1e6, 1) == 85.8
    assert round((n_params(bert) + 6 * n_params(fusion) + 768 * 768 + 768) / 1e6, 1) == 123.7
    assert 209e6 < n_params(model) < 210e6


def test_vlmo_base_parameters_equal_timm_vit_with_experts_and_bert_embeddings():
    import timm
    from transformers.models.bert.modeling_bert import BertEmbeddings

    model = meta_arch("vlmo-base", visual="vit-b16-patch")  # 224: the pre-training model
    inter = model.interaction
    with torch.device("meta"):
        vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, init_values=0.1)
        embed = BertEmbeddings(bert_config(768, 12, 3072, max_position_embeddings=40))
    expert = n_params(vit.blocks[0].mlp) + n_params(vit.blocks[0].norm2)
    blocks = n_params(inter.blocks) + n_params(inter.norm)
    assert blocks == n_params(vit.blocks) + n_params(vit.norm) + (12 + 2) * expert  # + L-FFN per block, VL-FFN top 2
    assert n_params(model.visual) == n_params(vit) - n_params(vit.blocks) - n_params(vit.norm)  # stem, cls, positions
    assert n_params(model.text) == n_params(embed)
    heads = n_params(inter.pooler) + n_params(inter.itc_image_proj) + n_params(inter.itc_text_proj) + 1
    encoder = n_params(model) - heads - n_params(model.head)
    assert encoder == n_params(vit) + (12 + 2) * expert + n_params(embed) + n_params(inter.modality)
    assert round(encoder / 1e6) == 175  # VLMo-Base: 175M
    assert [len(b.experts) for b in inter.blocks] == [2] * 10 + [3] * 2


# -- behaviour ------------------------------------------------------------------------------------------------
def xattn(path="itm", **kw):
    cfg = dict(width=W, heads=H, mlp_dim=M, image_layers=2, text_layers=1, fusion_layers=2, embed_dim=16, path=path)
    torch.manual_seed(0)
    return CrossAttentionInteraction(*specs(), CrossAttentionConfig(**{**cfg, **kw})).eval()


def mome(mode="fusion", **kw):
    cfg = dict(width=W, depth=3, heads=H, mlp_dim=M, vl_layers=1, mode=mode, embed_dim=W)
    torch.manual_seed(0)
    return MoMEInteraction(*specs(), MoMEConfig(**{**cfg, **kw})).eval()


def test_cross_attention_stages_and_both_paths_share_the_unimodal_encoders():
    itm, v, t = xattn(), *tokens()
    itc = xattn("itc")
    itc.load_state_dict(itm.state_dict())
    rec_itm, rec_itc = StageRecorder(), StageRecorder()
    with torch.no_grad():
        fused = itm(v, t, stage=rec_itm)
        out = itc(v, t, stage=rec_itc)
        image_cls = itm.encode_image(v)[:, 0]  # the full last layer
        text_cls = itm.encode_text(t)[0][:, 0]
    assert rec_itm.names == stage_names(itm) == ["image_encoder", "text_encoder", "fusion"]
    assert rec_itc.names == stage_names(itc) == ["image_encoder", "text_encoder", "similarity"]
    assert rec_itm.groups[:2] == ["VE", "TE"] and rec_itm.groups[2] is None  # fusion: the interaction's MI
    assert fused.last_hidden_state.shape == (2, 7, W) and fused.text_len == 7
    torch.testing.assert_close(fused.pooler_output, fused.last_hidden_state[:, 0])
    torch.testing.assert_close(
        out.image_embeds, torch.nn.functional.normalize(itc.vision_proj(image_cls), dim=-1), atol=1e-5, rtol=1e-5
    )  # the CLS-only last layer is exact
    torch.testing.assert_close(out.text_embeds, torch.nn.functional.normalize(itc.text_proj(text_cls), dim=-1))
    torch.testing.assert_close(out.logits_per_image, out.image_embeds @ out.text_embeds.t() / itc.temp)
    assert n_params(itm) == n_params(itc)  # one model, two paths


def test_cross_attention_reads_the_image_and_respects_its_padding():
    inter, (v, t) = xattn(), tokens()
    other = VisualTokens(v.features + torch.randn(v.features.shape), v.mask)
    padded = VisualTokens(
        torch.cat([v.features, torch.randn(2, 3, W)], dim=1),
        torch.cat([v.mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1),
    )
    inter.visual_spec = dataclasses.replace(inter.visual_spec, num_tokens=None)
    with torch.no_grad():
        a, b, c = inter(v, t), inter(other, t), inter(padded, t)
    assert not torch.allclose(a.pooler_output, b.pooler_output)  # the fusion attends to the image
    torch.testing.assert_close(a.pooler_output, c.pooler_output, atol=1e-5, rtol=1e-5)  # padding is ignored


def test_mome_dual_mode_encodes_each_modality_alone_and_fusion_mixes_them():
    dual, fusion, (v, t) = mome("dual"), mome("fusion"), tokens()
    fusion.load_state_dict(dual.state_dict())
    other = VisualTokens(v.features + torch.randn(v.features.shape), v.mask)
    rec = StageRecorder()
    with torch.no_grad():
        d1, d2 = dual(v, t, stage=rec), dual(other, t)
        f1, f2 = fusion(v, t), fusion(other, t)
    assert rec.names == ["image_encoder", "text_encoder", "similarity"] and rec.groups[:2] == ["VE", "TE"]
    torch.testing.assert_close(d1.text_embeds, d2.text_embeds)  # text never sees the image
    assert not torch.allclose(d1.image_embeds, d2.image_embeds)
    assert not torch.allclose(f1.pooler_output, f2.pooler_output)  # shared attention mixes them
    assert f1.last_hidden_state.shape == (2, 7 + 5, W) and f1.text_len == 7
    assert stage_names(fusion) == ["fuse", "modality_layers", "vl_layers", "pooler"]


def test_mome_fusion_bottom_blocks_route_text_and_image_to_their_experts():
    inter, (v, t) = mome(), tokens()
    with torch.no_grad():
        x = torch.cat([inter.embed_text(t), inter.embed_image(v)], dim=1)
        for blk in inter.blocks[:2]:
            x = blk(x, split=7)
        x = inter.norm(inter.blocks[2](x, "vl"))
        expected = torch.tanh(inter.pooler(x[:, 0]))
        torch.testing.assert_close(inter(v, t).pooler_output, expected)


# -- FLOPs, with cross-attention of different query and key lengths ---------------------------------------------
def linear(b, t, i, o):
    return 2 * b * t * i * o


def sdpa(b, heads, lq, lk, dim):
    return 2 * b * heads * lq * lk * (dim // heads) * 2  # QK^T and AV


def test_cross_attention_flops_match_the_analytic_count():
    b, n, length, inter = 2, 5, 7, xattn()
    v, t = tokens(b, n, length)
    r = count_flops(lambda stage: inter(v, t, stage=stage))
    vit_layer = linear(b, n, W, 3 * W) + linear(b, n, W, W) + 2 * linear(b, n, W, M) + sdpa(b, H, n, n, W)
    bert_layer = (
        linear(b, length, W, 3 * W)
        + linear(b, length, W, W)
        + 2 * linear(b, length, W, M)
        + sdpa(b, H, length, length, W)
    )
    cross = linear(b, length, W, W) + linear(b, n, W, 2 * W) + linear(b, length, W, W) + sdpa(b, H, length, n, W)
    assert r["by_stage"] == {
        "image_encoder": 2 * vit_layer,
        "text_encoder": bert_layer,
        "fusion": 2 * (bert_layer + cross),
    }
    assert r["by_op"]["aten._scaled_dot_product_flash_attention_for_cpu"] == 2 * sdpa(b, H, n, n, W) + 3 * sdpa(
        b, H, length, length, W
    ) + 2 * sdpa(b, H, length, n, W)


def test_mome_flops_match_the_analytic_count_in_both_modes():
    b, n, length = 2, 5, 7
    v, t = tokens(b, n, length)

    def block(tokens_):
        return (
            linear(b, tokens_, W, 3 * W)
            + linear(b, tokens_, W, W)
            + 2 * linear(b, tokens_, W, M)
            + sdpa(b, H, tokens_, tokens_, W)
        )

    dual, fusion = mome("dual"), mome("fusion")
    rd = count_flops(lambda stage: dual(v, t, stage=stage))
    rf = count_flops(lambda stage: fusion(v, t, stage=stage))
    assert rd["by_stage"]["image_encoder"] == 3 * block(n) + linear(b, 1, W, W)
    assert rd["by_stage"]["text_encoder"] == 3 * block(length) + linear(b, 1, W, W)
    assert rd["by_stage"]["similarity"] == linear(b, 1, W, b)
    # every position runs exactly one expert, so splitting the experts costs what one FFN over L + N does
    assert rf["by_stage"]["modality_layers"] == 2 * block(length + n)
    assert rf["by_stage"]["vl_layers"] == block(length + n)
    assert rf["by_stage"]["pooler"] == linear(b, 1, W, W)


# -- configuration and bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "build,kwargs,match",
    [
        (xattn, {"path": "fused"}, "path"),
        (xattn, {"fusion_layers": 0}, "fusion_layers"),
        (xattn, {"temp_init": 0.0}, "temp_init"),
        (mome, {"mode": "both"}, "mode"),
        (mome, {"vl_layers": 4}, "vl_layers"),
    ],
)
def test_bad_config_names_the_value(build, kwargs, match):
    with pytest.raises(VlpbenchError, match=match):
        build(**kwargs)


def test_bad_tokens_are_refused_up_front():
    inter = xattn()
    v, t = tokens(dim=W + 1)
    with pytest.raises(VlpbenchError, match="visual token width"):
        inter(v, tokens()[1])


def test_presets_are_registered_with_paper_facts_and_no_paper_class():
    for name, alias, inter, option in [
        ("albef-base", "albef", "cross-attention", {}),
        ("albef-base-itc", "albef-itc", "cross-attention", {"path": "itc"}),
        ("vlmo-base", "vlmo", "mome", {}),
        ("vlmo-base-dual", "vlmo-dual", "mome", {"mode": "dual"}),
    ]:
        entry = ARCH.get(alias)
        assert entry.name == name and entry.config.interaction == inter and inter in INTERACTION
        assert entry.config.interaction_overrides == option
        assert "post-vilt" in entry.tags and "class" not in entry.paper and entry.paper["source"]
    assert ARCH.get("albef").paper["vqa_test_dev"] == 75.84 and ARCH.get("vlmo").paper["params_M"] == 175


# the registry matrix runs the default path / mode with every embedder; these run the other one with every
# kind of token stream (region boxes, no summary token, another width, padding)
SPEC_KINDS = {
    "regions": (
        TokenSpec(dim=24, num_tokens=6, has_boxes=True, modality="vision"),
        TokenSpec(dim=W, num_tokens=7, has_cls=True, modality="text"),
    ),
    "no-cls": (TokenSpec(dim=W, num_tokens=6, modality="vision"), TokenSpec(dim=20, num_tokens=7, modality="text")),
}


@pytest.mark.parametrize("kind", SPEC_KINDS)
@pytest.mark.parametrize(
    "name,option",
    [("cross-attention", {"path": "itc"}), ("mome", {"mode": "dual"}), ("cross-attention", {}), ("mome", {})],
)
def test_every_path_with_every_kind_of_tokens(name, option, kind):
    vspec, tspec = SPEC_KINDS[kind]
    torch.manual_seed(0)
    inter = INTERACTION.build(name, tiny=True, context={"visual_spec": vspec, "text_spec": tspec}, **option).eval()
    inputs = inter.make_inputs(2, generator=torch.Generator().manual_seed(0))
    inputs["text"].mask[1, -2:] = False  # a padded text
    rec = StageRecorder()
    with torch.no_grad():
        out = inter(**inputs, stage=rec)
    assert rec.names == stage_names(inter)
    if option:
        assert out.logits_per_image.shape == (2, 2) and out.image_embeds.shape == (2, inter.output_dim)
        assert rec.groups[:2] == ["VE", "TE"]
    else:
        assert out.pooler_output.shape == (2, inter.output_dim) and torch.isfinite(out.last_hidden_state).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["albef-base", "albef-base-itc", "vlmo-base", "vlmo-base-dual"])
def test_published_size_forward(name):
    torch.manual_seed(0)
    model = ARCH.build(name).eval()
    inputs = model.make_inputs(1, generator=torch.Generator().manual_seed(0))
    rec = StageRecorder()
    with torch.inference_mode():
        out = model(**inputs, stage=rec)
    assert model.workload()["image_tokens"] == 577 and model.workload()["text_len"] == 40
    if ARCH.get(name).config.head == "itm":
        assert out.head["logits"].shape == (1, 2) and torch.isfinite(out.head["logits"]).all()
    else:
        assert out.head["logits_per_image"].shape == (1, 1)
    assert rec.names == stage_names(model)

"""Transformer family at tiny size: shapes against output_spec, recorded stage names, masks, errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from doubles import StageRecorder
from vlpbench.architectures.common import box_features
from vlpbench.architectures.compose import ArchConfig, VLPModel
from vlpbench.embedders.patch import PatchEmbedder, sincos_position_embedding, vilt_resize_shape
from vlpbench.embedders.text import BertEmbedder, ClipTextEmbedder, load_tokenizer
from vlpbench.errors import VlpbenchError
from vlpbench.layers import padding_to_attn_mask
from vlpbench.presets import load_all
from vlpbench.registry import INTERACTION, TEXT, VISUAL
from vlpbench.stages import stage_names
from vlpbench.types import TextTokens, TokenSpec, VisualTokens, check_benchmarkable

load_all()
VISUAL_PRESETS = ["vilt-b32-patch", "clip-vit-b32-patch"]
TEXT_PRESETS = ["bert-base-embed", "clip-text-b32"]
INTERACTION_PRESETS = ["single-stream", "dual-encoder"]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", VISUAL_PRESETS)
def test_visual_presets(name):
    torch.manual_seed(0)
    emb = VISUAL.build(name, tiny=True).eval()
    check_benchmarkable(emb)
    spec = emb.output_spec()
    inputs = emb.make_inputs(2, generator=gen(), device="cpu")
    h, w = emb.workload()["image_size"]
    assert inputs["pixel_values"].shape == (2, 3, h, w)
    rec = StageRecorder()
    with torch.no_grad():
        out = emb(**inputs, stage=rec)
    assert rec.names == stage_names(emb)
    assert out.features.shape == (2, spec.num_tokens, spec.dim) and spec.has_cls
    assert out.mask.dtype == torch.bool and out.mask.all()


def test_vilt_patch_full_size_grid_and_params():
    cfg = VISUAL.config("vilt-b32-patch")
    emb = VISUAL.get("vilt-b32-patch").builder(cfg)
    assert emb.grid == (12, 20) and emb.output_spec().num_tokens == 241
    n = sum(p.numel() for p in emb.parameters())
    assert abs(n / 1e6 - 2.4) < 0.1  # the ViLT paper's "2.4M" for patch projection
    assert vilt_resize_shape(500, 800) == (384, 608)  # ViLT's own MinMaxResize: the 12x19 grid
    assert vilt_resize_shape(600, 1000) == (352, 608)  # 3:5 hits the 639 cap first
    assert vilt_resize_shape(480, 640) == (384, 512)


def test_position_interpolation_matches_bilinear_corners():
    emb = PatchEmbedder((64, 96), 16, 8, pos_grid=(3, 3))
    pos = emb.position_embedding()  # [1, 1 + 4*6, 8]
    assert pos.shape == (1, 25, 8)
    grid_in = emb.pos_embed[0, 1:].reshape(3, 3, 8)
    grid_out = pos[0, 1:].reshape(4, 6, 8)
    # align_corners=True keeps the four corners of the stored grid
    for (a, b), (c, d) in [((0, 0), (0, 0)), ((0, 2), (0, 5)), ((2, 0), (3, 0)), ((2, 2), (3, 5))]:
        torch.testing.assert_close(grid_out[c, d], grid_in[a, b])
    torch.testing.assert_close(pos[0, 0], emb.pos_embed[0, 0])


def test_patch_sampling_is_seeded_and_keeps_cls():
    a = PatchEmbedder((64, 96), 16, 8, pos_grid=(3, 3), max_image_len=5, sample_seed=7)
    b = PatchEmbedder((64, 96), 16, 8, pos_grid=(3, 3), max_image_len=5, sample_seed=7)
    b.load_state_dict(a.state_dict())
    assert stage_names(a) == ["patch_embed", "pos_embed", "sample"]
    a.reset_sampler()  # the dry run drew positions; start both samplers from the seed again
    x = torch.rand(3, 3, 64, 96)
    rec = StageRecorder()
    with torch.no_grad():
        oa, ob = a(x, stage=rec), b(x)
        full = PatchEmbedder((64, 96), 16, 8, pos_grid=(3, 3))
        full.load_state_dict(a.state_dict())
        of = full(x)
    assert rec.names == ["patch_embed", "pos_embed", "sample"]
    assert oa.features.shape == (3, 6, 8) and a.output_spec().num_tokens == 6
    torch.testing.assert_close(oa.features, ob.features)
    idx = oa.extras["patch_index"]
    torch.testing.assert_close(oa.features[:, 0], of.features[:, 0])
    torch.testing.assert_close(
        oa.features[:, 1:], torch.gather(of.features[:, 1:], 1, idx[:, :, None].expand(-1, -1, 8))
    )
    assert len(set(idx[0].tolist())) == 5
    a.reset_sampler()
    torch.testing.assert_close(a(x).extras["patch_index"], idx)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(image_size=(60, 96)),
        dict(image_size=(8, 96)),
        dict(max_image_len=0),
        dict(pos_interp="nearest"),
        dict(pos_interp="none", pos_grid=(3, 3)),
        dict(pos_std=0),
        dict(pos_std="0.5"),
        dict(pos_init="learned"),
        dict(pos_init="sincos", dim=6),
        dict(freeze_proj="yes"),
    ],
)
def test_patch_bad_config(kwargs):
    base = dict(image_size=(64, 96), patch_size=16, dim=8)
    base.update(kwargs)
    with pytest.raises(VlpbenchError):
        PatchEmbedder(**base)


def test_position_embedding_init_scale_is_configurable():
    torch.manual_seed(0)
    default = PatchEmbedder((64, 64), 8, 64)
    torch.manual_seed(0)
    wide = PatchEmbedder((64, 64), 8, 64, pos_std=0.5)
    assert (
        abs(float(default.pos_embed.detach().std()) - 0.02) < 0.002
        and abs(float(wide.pos_embed.detach().std()) - 0.5) < 0.05
    )
    assert torch.equal(default.proj.weight, wide.proj.weight)  # only the position embeddings change


def test_sincos_position_embedding_reads_rows_and_columns_linearly():
    emb = PatchEmbedder((64, 64), 8, 64, pos_init="sincos")
    pos = emb.pos_embed.detach()[0]
    assert pos.shape == (65, 64) and torch.equal(pos[0], torch.zeros(64))  # the class position is zero
    table = torch.as_tensor(sincos_position_embedding((8, 8), 64))[0, 1:].view(8, 8, 64)
    torch.testing.assert_close(pos[1:].view(8, 8, 64), table)
    # each half encodes one axis: the row half is the same along a row, the column half along a column
    assert torch.equal(table[:, 0, :32], table[:, 5, :32]) and torch.equal(table[0, :, 32:], table[5, :, 32:])
    assert not torch.equal(table[0, 0, :32], table[1, 0, :32])
    # a fixed linear read-out separates the left half of the grid from the right half
    cols = table.view(64, 64)
    left = (torch.arange(64) % 8 < 4).float() * 2 - 1
    w = torch.linalg.lstsq(torch.cat([cols, torch.ones(64, 1)], 1), left[:, None]).solution
    assert torch.equal((torch.cat([cols, torch.ones(64, 1)], 1) @ w).sign().flatten(), left)


def test_frozen_patch_projection_gets_no_gradient():
    emb = PatchEmbedder((32, 32), 8, 16, freeze_proj=True)
    emb(pixel_values=torch.rand(2, 3, 32, 32)).features.sum().backward()
    assert emb.proj.weight.grad is None and emb.proj.bias.grad is None
    assert emb.pos_embed.grad is not None and emb.cls_token.grad is not None  # the rest still learns


def test_patch_bad_input():
    emb = VISUAL.build("vilt-b32-patch", tiny=True)
    with pytest.raises(VlpbenchError, match="pixel_values size.*multiples of the patch size 16"):
        emb(torch.rand(1, 3, 60, 96))
    assert emb(torch.rand(1, 3, 64, 64)).features.shape == (1, 1 + 16, 32)  # ViLT interpolates to any grid
    with pytest.raises(VlpbenchError, match="pixel_values size.*does not interpolate"):
        VISUAL.build("clip-vit-b32-patch", tiny=True)(torch.rand(1, 3, 64, 96))
    with pytest.raises(VlpbenchError, match="dtype"):
        emb(torch.zeros(1, 3, 64, 96, dtype=torch.uint8))


@pytest.mark.parametrize("name", TEXT_PRESETS)
def test_text_presets(name):
    torch.manual_seed(0)
    emb = TEXT.build(name, tiny=True).eval()
    check_benchmarkable(emb)
    spec = emb.output_spec()
    inputs = emb.make_inputs(2, generator=gen(), device="cpu")
    assert inputs["input_ids"].shape == (2, emb.workload()["text_len"])
    rec = StageRecorder()
    with torch.no_grad():
        out = emb(**inputs, stage=rec)
    assert rec.names == stage_names(emb)
    assert out.features.shape == (2, spec.num_tokens, spec.dim)
    if spec.pooled:
        assert out.pooled.shape == (2, spec.pooled_dim or spec.dim)
    with pytest.raises(VlpbenchError, match="text length"):
        emb(input_ids=torch.ones(1, emb.workload()["text_len"] + 100, dtype=torch.long))
    with pytest.raises(VlpbenchError, match="input_ids"):
        emb(input_ids=torch.ones(1, 4))
    with pytest.raises(VlpbenchError, match="token id"):
        emb(input_ids=torch.full((1, 4), emb.vocab_size))


def test_clip_text_pools_at_eot_and_ignores_padding():
    torch.manual_seed(0)
    emb = TEXT.build("clip-text-b32", tiny=True).eval()
    inputs = emb.make_inputs(2, generator=gen(), device="cpu")
    assert (inputs["input_ids"][:, -1] == emb.eot_token_id).all()
    ids = inputs["input_ids"].clone()
    ids[:, 8] = emb.eot_token_id  # EOT at position 8, tokens after it are padding
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[:, 9:] = False
    with torch.no_grad():
        out = emb(input_ids=ids, attention_mask=mask)
        torch.testing.assert_close(out.pooled, emb.text_projection(out.features[:, 8]))
        ids2 = ids.clone()
        ids2[:, 9:] = 5  # change the padding: causal attention keeps the pooled vector
        torch.testing.assert_close(emb(input_ids=ids2, attention_mask=mask).pooled, out.pooled)
        ids3 = ids.clone()
        ids3[:, 3] = 7  # change a real token before EOT: the pooled vector moves
        assert not torch.allclose(emb(input_ids=ids3, attention_mask=mask).pooled, out.pooled)


def test_bert_embed_matches_transformers_text_embeddings():
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertEmbeddings

    cfg = BertConfig(vocab_size=50, hidden_size=16, max_position_embeddings=12, type_vocab_size=2)
    torch.manual_seed(0)
    ref = BertEmbeddings(cfg).eval()
    ours = BertEmbedder(50, 16, 12, eps=cfg.layer_norm_eps)
    ours.word_embeddings.load_state_dict(ref.word_embeddings.state_dict())
    ours.position_embeddings.load_state_dict(ref.position_embeddings.state_dict())
    ours.token_type_embeddings.load_state_dict(ref.token_type_embeddings.state_dict())
    ours.norm.load_state_dict(ref.LayerNorm.state_dict())
    ids = torch.randint(0, 50, (2, 10))
    tt = torch.randint(0, 2, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).features, ref(input_ids=ids))
        torch.testing.assert_close(ours(ids, token_type_ids=tt).features, ref(input_ids=ids, token_type_ids=tt))


def _tokens(spec: TokenSpec, b: int, n: int, *, pooled_dim=None):
    boxes = None
    if spec.has_boxes:
        xy = torch.rand(b, n, 2) * 0.5
        boxes = torch.cat([xy, xy + 0.4], dim=-1)
    return VisualTokens(
        torch.randn(b, n, spec.dim),
        torch.ones(b, n, dtype=torch.bool),
        boxes=boxes,
        pooled=torch.randn(b, pooled_dim or spec.dim) if spec.pooled else None,
    )


VISUAL_SPECS = {
    "patch-cls": TokenSpec(dim=32, num_tokens=13, has_cls=True),
    "regions-boxes": TokenSpec(dim=48, num_tokens=10, has_boxes=True),
    "grid-nocls": TokenSpec(dim=20, num_tokens=12),
}


@pytest.mark.parametrize("name", INTERACTION_PRESETS)
@pytest.mark.parametrize("vkey", list(VISUAL_SPECS))
def test_interactions_any_visual_spec(name, vkey):
    torch.manual_seed(0)
    vspec = VISUAL_SPECS[vkey]
    tspec = TokenSpec(dim=24, num_tokens=7, modality="text", has_cls=True)
    inter = INTERACTION.build(name, tiny=True, context={"visual_spec": vspec, "text_spec": tspec}).eval()
    check_benchmarkable(inter)
    inputs = inter.make_inputs(2, generator=gen(), device="cpu")
    assert (inputs["visual"].boxes is not None) == vspec.has_boxes
    rec = StageRecorder()
    with torch.no_grad():
        out = inter(**inputs, stage=rec)
    assert rec.names == stage_names(inter)
    if name == "single-stream":
        assert out.last_hidden_state.shape == (2, 7 + vspec.num_tokens, inter.output_dim)
        assert out.pooler_output.shape == (2, inter.output_dim) and out.text_len == 7
        assert (inter.box_proj is not None) == vspec.has_boxes
    else:
        assert rec.groups == ["VE", "TE", None]
        assert out.image_embeds.shape == out.text_embeds.shape == (2, inter.output_dim)
        torch.testing.assert_close(out.image_embeds.norm(dim=-1), torch.ones(2))
        assert out.logits_per_image.shape == (2, 2)
        torch.testing.assert_close(
            out.logits_per_image, inter.logit_scale.exp() * out.image_embeds @ out.text_embeds.t()
        )


def test_single_stream_boxes_change_output():
    torch.manual_seed(0)
    vspec, tspec = VISUAL_SPECS["regions-boxes"], TokenSpec(dim=32, num_tokens=5, modality="text")
    inter = INTERACTION.build("single-stream", tiny=True, context={"visual_spec": vspec, "text_spec": tspec}).eval()
    inputs = inter.make_inputs(1, generator=gen(), device="cpu")
    with torch.no_grad():
        a = inter(**inputs).pooler_output
        inputs["visual"].boxes = inputs["visual"].boxes * 0.5
        b = inter(**inputs).pooler_output
    assert not torch.allclose(a, b)
    feats = box_features(torch.tensor([[[0.1, 0.2, 0.5, 0.6]]]))
    torch.testing.assert_close(feats, torch.tensor([[[0.1, 0.2, 0.5, 0.6, 0.4, 0.4, 0.16]]]))


def test_single_stream_padding_mask_respected():
    torch.manual_seed(0)
    vspec, tspec = VISUAL_SPECS["patch-cls"], TokenSpec(dim=32, num_tokens=6, modality="text")
    inter = INTERACTION.build("single-stream", tiny=True, context={"visual_spec": vspec, "text_spec": tspec}).eval()
    inputs = inter.make_inputs(2, generator=gen(), device="cpu")
    text, visual = inputs["text"], inputs["visual"]
    text.mask[:, 4:] = False
    visual.mask[:, 10:] = False
    with torch.no_grad():
        a = inter(visual, text)
        text.features[:, 4:] = torch.randn(2, 2, 32) * 10  # padded text tokens
        visual.features[:, 10:] = torch.randn(2, 3, 32) * 10  # padded visual tokens
        b = inter(visual, text)
        torch.testing.assert_close(a.pooler_output, b.pooler_output)
        torch.testing.assert_close(a.last_hidden_state[:, :4], b.last_hidden_state[:, :4])
        # a real token does change it (a non-uniform change: pre-norm layers ignore a constant shift of a token)
        text.features[:, 2] += torch.linspace(-1.0, 1.0, text.features.shape[-1])
        assert not torch.allclose(inter(visual, text).pooler_output, a.pooler_output)


def test_dual_encoder_masks_and_pooled_visual():
    torch.manual_seed(0)
    vspec = TokenSpec(dim=64, num_tokens=9, pooled=True, pooled_dim=40)  # e.g. an attention-pooled CNN
    tspec = TokenSpec(dim=24, num_tokens=6, modality="text")  # no pooled vector: masked mean
    inter = INTERACTION.build("dual-encoder", tiny=True, context={"visual_spec": vspec, "text_spec": tspec}).eval()
    assert inter.tower is None and inter.visual_projection.in_features == 40
    inputs = inter.make_inputs(3, generator=gen(), device="cpu")
    text = inputs["text"]
    text.mask[:, 3:] = False
    with torch.no_grad():
        a = inter(**inputs)
        text.features[:, 3:] += 5.0
        b = inter(**inputs)
    torch.testing.assert_close(a.text_embeds, b.text_embeds)
    torch.testing.assert_close(a.image_embeds, b.image_embeds)
    inputs["visual"].pooled = None
    with pytest.raises(VlpbenchError, match="pooled"):
        inter(**inputs)


def test_interaction_bad_tokens():
    vspec, tspec = VISUAL_SPECS["regions-boxes"], TokenSpec(dim=32, num_tokens=5, modality="text")
    for name in INTERACTION_PRESETS:
        inter = INTERACTION.build(name, tiny=True, context={"visual_spec": vspec, "text_spec": tspec})
        inputs = inter.make_inputs(2, generator=gen(), device="cpu")
        good_v = inputs["visual"]
        with pytest.raises(VlpbenchError, match="visual token width"):
            inter(VisualTokens(torch.randn(2, 10, 7), good_v.mask, boxes=good_v.boxes), inputs["text"])
        with pytest.raises(VlpbenchError, match="boxes"):
            inter(dataclasses.replace(good_v, boxes=None), inputs["text"])
        three_texts = TextTokens(torch.randn(3, 5, 32), torch.ones(3, 5, dtype=torch.bool))
        if name == "dual-encoder":  # N images x M texts, as CLIPModel
            assert inter(good_v, three_texts).logits_per_image.shape == (2, 3)
            continue
        with pytest.raises(VlpbenchError, match="batch"):
            inter(good_v, three_texts)
    with pytest.raises(VlpbenchError, match="width"):
        INTERACTION.build("single-stream", tiny=True, context={"visual_spec": vspec, "text_spec": tspec}, width=30)


@pytest.mark.parametrize(
    "visual,text,interaction",
    [
        ("vilt-b32-patch", "bert-base-embed", "single-stream"),
        ("clip-vit-b32-patch", "clip-text-b32", "dual-encoder"),
        ("vilt-b32-patch", "clip-text-b32", "single-stream"),
    ],
)
def test_composed_tiny_architectures(visual, text, interaction):
    torch.manual_seed(0)
    model = VLPModel.from_config(ArchConfig(visual, text, interaction, tiny=True)).eval()
    inputs = model.make_inputs(2, generator=gen(), device="cpu")
    rec = StageRecorder()
    with torch.no_grad():
        out = model(**inputs, stage=rec)
    assert rec.names == stage_names(model)
    if interaction == "single-stream":
        n = model.visual.output_spec().num_tokens + model.text.output_spec().num_tokens
        assert out.interaction.last_hidden_state.shape == (2, n, model.interaction.output_dim)
    else:
        assert out.interaction.logits_per_image.shape == (2, 2)


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(VlpbenchError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")
    with pytest.raises(VlpbenchError, match=str(tmp_path)):
        load_tokenizer(tmp_path)


def test_clip_text_bad_config():
    with pytest.raises(VlpbenchError, match="pool"):
        ClipTextEmbedder(100, 16, 1, 2, 32, context_len=8, eot_token_id=99, pool="mean")
    with pytest.raises(VlpbenchError, match="text_len"):
        ClipTextEmbedder(100, 16, 1, 2, 32, context_len=8, text_len=9, eot_token_id=99)
    with pytest.raises(VlpbenchError, match="eot_token_id"):
        ClipTextEmbedder(100, 16, 1, 2, 32, context_len=8, eot_token_id=100)


def test_single_stream_fast_path_equals_layer_path():
    torch.manual_seed(0)
    vspec, tspec = VISUAL_SPECS["patch-cls"], TokenSpec(dim=32, num_tokens=6, modality="text")
    inter = INTERACTION.build("single-stream", tiny=True, context={"visual_spec": vspec, "text_spec": tspec}).eval()
    inputs = inter.make_inputs(2, generator=gen(), device="cpu")
    with torch.inference_mode():
        assert inter.use_fast_path(None) and not inter.use_fast_path(torch.zeros(2, 1, 1, 19))
        fast = inter(**inputs)
        prev = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            assert not inter.use_fast_path(None)
            slow = inter(**inputs)
        finally:
            torch.backends.mha.set_fastpath_enabled(prev)
    torch.testing.assert_close(fast.last_hidden_state, slow.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast.pooler_output, slow.pooler_output, atol=1e-5, rtol=1e-5)
    assert not inter.use_fast_path(None)  # gradients on: the layer path


def test_dual_encoder_last_layer_cls_shortcut_is_exact():
    from vlpbench.architectures.dual_encoder import last_layer_first_token

    torch.manual_seed(0)
    vspec, tspec = VISUAL_SPECS["patch-cls"], TokenSpec(dim=24, num_tokens=5, modality="text")
    inter = INTERACTION.build("dual-encoder", tiny=True, context={"visual_spec": vspec, "text_spec": tspec}).eval()
    inputs = inter.make_inputs(2, generator=gen(), device="cpu")
    visual = inputs["visual"]
    with torch.no_grad():
        full = inter.tower(inter.visual_in(visual.features))[:, 0]
        want = inter.visual_projection(inter.ln_post(full))
        torch.testing.assert_close(inter.encode_image(visual), want, atol=1e-5, rtol=1e-5)
        x = torch.randn(2, 9, 32)
        mask = torch.ones(2, 9, dtype=torch.bool)
        mask[1, 6:] = False
        bias = padding_to_attn_mask(mask, x.dtype)
        blk = inter.tower.layers[0]
        torch.testing.assert_close(
            last_layer_first_token(blk, x, bias), blk(x, attn_mask=bias)[:, 0], atol=1e-5, rtol=1e-5
        )

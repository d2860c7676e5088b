"""transformers checkpoints (tiny, random, saved to tmp_path) load into our modules and give the same outputs;
full-size presets have transformers' parameter counts."""

from __future__ import annotations

import json

import pytest
import torch

from vlpbench.architectures.compose import ArchConfig, VLPModel
from vlpbench.architectures.loaders import load_clip, load_vilt
from vlpbench.errors import VlpbenchError
from vlpbench.presets import load_all

load_all()
VILT_TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    image_size=64,
    patch_size=32,
    vocab_size=120,
    max_position_embeddings=16,
)
CLIP_TEXT_TINY = dict(
    vocab_size=100,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=16,
    eos_token_id=99,
    bos_token_id=98,
    pad_token_id=1,
)
CLIP_VISION_TINY = dict(
    hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, image_size=64, patch_size=16
)


def _perturb(model: torch.nn.Module) -> None:
    """Move every parameter off its init (zero biases, unit LayerNorms, zero cls) so the mapping is tested."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.fixture(scope="module")
def vilt_dir(tmp_path_factory):
    from transformers import BertTokenizerFast, ViltConfig, ViltModel

    torch.manual_seed(0)
    model = ViltModel._from_config(ViltConfig(**VILT_TINY), attn_implementation="eager").eval()
    _perturb(model)
    d = tmp_path_factory.mktemp("vilt")
    model.save_pretrained(d)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "on", "mat"]
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(d / "vocab.txt")).save_pretrained(d)
    return d, model


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    cfg = CLIPConfig(text_config=CLIP_TEXT_TINY, vision_config=CLIP_VISION_TINY, projection_dim=24)
    model = CLIPModel(cfg).eval()
    _perturb(model)
    d = tmp_path_factory.mktemp("clip")
    model.save_pretrained(d)
    return d, model


def test_vilt_matches_transformers(vilt_dir):
    d, ref = vilt_dir
    ours = load_vilt(d, image_size=(64, 96))
    assert isinstance(ours, VLPModel) and ours.visual.grid == (2, 3) and ours.visual.pos_grid == (2, 2)
    px = torch.rand(2, 3, 64, 96)
    ids = torch.randint(0, 120, (2, 16))
    am = torch.ones(2, 16, dtype=torch.long)
    am[1, 10:] = 0  # padded text in the second sample
    with torch.no_grad():
        # transformers' ViLT shuffles the patches even with max_image_length=-1 (torch.multinomial);
        # replay its RNG to learn the order, then compare token for token
        torch.manual_seed(5)
        _, _, (patch_index, _) = ref.embeddings.visual_embed(px, torch.ones(2, 64, 96), max_image_length=-1)
        torch.manual_seed(5)
        theirs = ref(
            input_ids=ids, attention_mask=am, pixel_values=px, pixel_mask=torch.ones(2, 64, 96, dtype=torch.long)
        )
        out = ours(pixel_values=px, input_ids=ids, attention_mask=am).interaction
    assert out.last_hidden_state.shape == theirs.last_hidden_state.shape == (2, 16 + 1 + 6, 32)
    torch.testing.assert_close(out.pooler_output, theirs.pooler_output, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.last_hidden_state[:, :17], theirs.last_hidden_state[:, :17], atol=1e-5, rtol=1e-5)
    order = patch_index[..., 0] * 3 + patch_index[..., 1]  # [B, N] raster index of each of their patch slots
    mine = torch.gather(out.last_hidden_state[:, 17:], 1, order[:, :, None].expand(-1, -1, 32))
    torch.testing.assert_close(mine, theirs.last_hidden_state[:, 17:], atol=1e-5, rtol=1e-5)
    with torch.inference_mode():  # no padding: our fused fast path; the pooled [CLS] ignores their patch order
        assert ours.interaction.use_fast_path(None)
        fast = ours(pixel_values=px[:1], input_ids=ids[:1]).interaction.pooler_output
        ref_pooled = ref(input_ids=ids[:1], pixel_values=px[:1], pixel_mask=torch.ones(1, 64, 96, dtype=torch.long))
    torch.testing.assert_close(fast, ref_pooled.pooler_output, atol=1e-5, rtol=1e-5)
    assert ours.tokenizer is not None and ours.tokenizer("a cat")["input_ids"][0] == 2


def test_vilt_task_model_prefix(tmp_path):
    from transformers import ViltConfig, ViltForMaskedLM

    torch.manual_seed(0)
    task = ViltForMaskedLM(ViltConfig(**VILT_TINY)).eval()
    task.save_pretrained(tmp_path)
    ours = load_vilt(tmp_path, image_size=(64, 64))
    torch.testing.assert_close(ours.interaction.pooler.weight, task.vilt.pooler.dense.weight)
    assert ours.tokenizer is None


def test_clip_matches_transformers(clip_dir):
    d, ref = clip_dir
    ours = load_clip(d)
    px = torch.rand(3, 3, 64, 64)
    ids = torch.randint(2, 98, (3, 16))
    ids[:, 12] = 99
    ids[0, 5] = 99  # the first EOS wins (transformers' rule for eos_token_id != 2)
    am = torch.ones(3, 16, dtype=torch.long)
    am[2, 13:] = 0
    with torch.no_grad():
        theirs = ref(input_ids=ids, attention_mask=am, pixel_values=px)
        out = ours(pixel_values=px, input_ids=ids, attention_mask=am).interaction
    for key in ("image_embeds", "text_embeds", "logits_per_image"):
        torch.testing.assert_close(getattr(out, key), getattr(theirs, key), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out.text_embeds[0], out.text_embeds[1])
    torch.testing.assert_close(ours.interaction.logit_scale, ref.logit_scale)


def test_loader_errors(vilt_dir, clip_dir, tmp_path):
    with pytest.raises(VlpbenchError, match="does not exist"):
        load_vilt(tmp_path / "missing")
    with pytest.raises(VlpbenchError, match="'clip' checkpoint.*accepted: model_type 'vilt'"):
        load_vilt(clip_dir[0])
    with pytest.raises(VlpbenchError, match="accepted: model_type 'clip'"):
        load_clip(vilt_dir[0])
    (tmp_path / "empty").mkdir()
    with pytest.raises(VlpbenchError, match="no config.json"):
        load_clip(tmp_path / "empty")
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((vilt_dir[0] / "config.json").read_text())
    with pytest.raises(VlpbenchError, match="no weights in"):
        load_vilt(no_weights)
    # weights of another size than config.json says
    cfg = json.loads((vilt_dir[0] / "config.json").read_text())
    cfg["num_hidden_layers"] = 3
    (no_weights / "config.json").write_text(json.dumps(cfg))
    (no_weights / "model.safetensors").write_bytes((vilt_dir[0] / "model.safetensors").read_bytes())
    with pytest.raises(VlpbenchError, match="lacks tensor 'encoder.layer.2"):
        load_vilt(no_weights)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_full_size_param_counts_match_transformers():
    from transformers import CLIPConfig, CLIPModel, ViltConfig, ViltModel

    with torch.device("meta"):
        vilt_ref = _count(ViltModel(ViltConfig()))
        clip_ref = _count(CLIPModel(CLIPConfig()))  # CLIPConfig() defaults are ViT-B/32
        vilt = VLPModel.from_config(ArchConfig("vilt-b32-patch", "bert-base-embed", "single-stream"))
        clip = VLPModel.from_config(ArchConfig("clip-vit-b32-patch", "clip-text-b32", "dual-encoder"))
    assert _count(vilt) == vilt_ref
    assert _count(clip) == clip_ref
    # ViLT paper Table 6: ViLT-B/32 87.4M without the 23.47M word table (we count 88.15M, equal to transformers'
    # ViltModel; the paper does not say what its 0.75M smaller count leaves out); CLIP ViT-B/32 151.28M
    assert abs((_count(vilt) - _count(vilt.text.word_embeddings)) / 1e6 - 87.4) < 1.0
    assert abs(_count(clip) / 1e6 - 151.28) < 0.05


def test_compare_measures_a_local_checkpoint(vilt_dir, clip_dir, tmp_path, capsys):
    from vlpbench.cli import main

    fast = [
        "--iters",
        "2",
        "--min-time",
        "0",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--no-flops",
        "--in-process",
        "--format",
        "json",
    ]
    code = main(
        [
            "compare",
            "--arch",
            "vilt",
            "--weights",
            str(vilt_dir[0]),
            "--image-size",
            "64x64",
            "--text-len",
            "8",
            "--out",
            str(tmp_path / "a"),
            *fast,
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    (rec,) = json.loads(out.out)
    assert rec["spec"]["weights"] == str(vilt_dir[0])
    assert rec["params"]["total"] == sum(p.numel() for p in vilt_dir[1].parameters())
    assert rec["taxonomy"]["paper_class"] == "d"
    # a CLIP checkpoint given to ViLT, and weights for an architecture with no loader: one clear line each
    for arch, wdir, message in (
        ("vilt", clip_dir[0], "is a 'clip' model; 'vilt-b32' needs a 'vilt' checkpoint"),
        ("vse", vilt_dir[0], "--weights is not supported for 'vse-inf'; accepted: clip-vit-b32, vilt-b32"),
    ):
        code = main(["compare", "--arch", arch, "--weights", str(wdir), "--out", str(tmp_path / arch), *fast])
        err = capsys.readouterr().err
        assert code == 2 and message in err, err


def test_truncated_files_name_the_file(vilt_dir, tmp_path):
    """A truncated config.json or safetensors file gives one line naming it, not a parser traceback."""
    d = tmp_path / "cut"
    d.mkdir()
    config = (vilt_dir[0] / "config.json").read_text()
    weights = (vilt_dir[0] / "model.safetensors").read_bytes()
    (d / "config.json").write_text(config[: len(config) // 2])
    (d / "model.safetensors").write_bytes(weights)
    with pytest.raises(VlpbenchError, match=r"config file '.*config.json' is not valid JSON.*truncated"):
        load_vilt(d)
    (d / "config.json").write_text(config)
    (d / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(VlpbenchError, match=r"weight file '.*model.safetensors' cannot be read.*accepted: a complete"):
        load_vilt(d)


TIMM_TINY = dict(img_size=64, patch_size=32, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0)


@pytest.mark.parametrize("layout", ["state_dict_file", "folder"])
def test_timm_vit_matches_forward_features(tmp_path, layout):
    """A timm ViT (ViLT's initialisation) loads into the patch projection + single-stream layers; the image-only
    forward equals timm's forward_features at the same weights."""
    import timm
    from safetensors.torch import save_file

    from vlpbench.architectures.loaders import load_timm_vit

    torch.manual_seed(0)
    ref = timm.create_model("vit_base_patch32_384", pretrained=False, num_classes=0, **TIMM_TINY).eval()
    _perturb(ref)
    if layout == "state_dict_file":
        path = tmp_path / "vit.pth"
        torch.save(ref.state_dict(), path)
        ours = load_timm_vit(path, num_heads=4)  # a bare state dict does not say its head count
    else:
        path = tmp_path / "vit"
        path.mkdir()
        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, path / "model.safetensors")
        (path / "config.json").write_text(
            json.dumps({"architecture": "vit_base_patch32_384", "num_classes": 0, "model_args": TIMM_TINY})
        )
        ours = load_timm_vit(path)
    assert ours.interaction.encoder.layers[0].attn.num_heads == 4 and ours.interaction.norm.eps == 1e-6
    px = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        theirs = ref.forward_features(px)
        mine = ours.interaction.forward_image(ours.visual(pixel_values=px))
    assert mine.shape == theirs.shape == (2, 5, 32)
    assert (mine - theirs).abs().max() <= 1e-4
    # the ViT is also a whole ViLT-shaped model: text embeddings and modality types keep their initialisation
    out = ours(pixel_values=px, input_ids=torch.randint(0, 100, (2, 8))).interaction
    assert out.last_hidden_state.shape == (2, 8 + 5, 32)
    with pytest.raises(VlpbenchError, match="not a timm VisionTransformer state dict"):
        torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
        load_timm_vit(tmp_path / "other.pth")

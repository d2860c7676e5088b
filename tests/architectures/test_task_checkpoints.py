"""transformers ViLT task checkpoints and CLIP load into vlpbench architectures + heads and give transformers'
logits at the same weights and inputs (max abs diff <= 1e-4, fp32), padded ViltProcessor batches included."""

from __future__ import annotations

import pytest
import torch

from vlpbench.architectures.loaders import load_clip, load_vilt
from vlpbench.embedders.patch import vilt_preprocess, vilt_resize_shape
from vlpbench.errors import VlpbenchError

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
ATOL = 1e-4
TASKS = {
    "ViltForQuestionAnswering": ("vqa", dict(num_labels=7, id2label={i: f"ans{i}" for i in range(7)})),
    "ViltForImagesAndTextClassification": ("nlvr2", dict(num_images=2, modality_type_vocab_size=3)),
    "ViltForImageAndTextRetrieval": ("retrieval", {}),
    "ViltForMaskedLM": ("mlm", {}),
}


def _perturb(model: torch.nn.Module) -> None:
    """Move every parameter off its init so that a wrong mapping shows in the outputs."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def save_vilt_task(cls_name: str, path, **extra):
    """A tiny random ViLT task model, perturbed and saved with save_pretrained -> (path, model)."""
    import transformers

    cfg = transformers.ViltConfig(**VILT_TINY, **{**TASKS[cls_name][1], **extra})
    torch.manual_seed(0)
    model = getattr(transformers, cls_name)._from_config(cfg, attn_implementation="eager").eval()
    _perturb(model)
    model.save_pretrained(path)
    return path, model


def padded_batch(sizes, generator):
    """Images of the given (h, w) zero-padded into one batch -> pixel_values [B, 3, H, W], pixel_mask [B, H, W]."""
    hmax, wmax = max(h for h, _ in sizes), max(w for _, w in sizes)
    px = torch.zeros(len(sizes), 3, hmax, wmax)
    mask = torch.zeros(len(sizes), hmax, wmax, dtype=torch.long)
    for i, (h, w) in enumerate(sizes):
        px[i, :, :h, :w] = torch.rand(3, h, w, generator=generator) * 2 - 1
        mask[i, :h, :w] = 1
    return px, mask


SIZES = [(64, 96), (32, 64), (96, 64)]  # patch grids 2x3, 1x2, 3x2, padded to 3x3


@pytest.fixture(scope="module")
def vilt_tasks(tmp_path_factory):
    return {name: save_vilt_task(name, tmp_path_factory.mktemp(name)) for name in TASKS}


def _text(batch: int, length: int = 12, generator=None):
    ids = torch.randint(5, 120, (batch, length), generator=generator)
    am = torch.ones(batch, length, dtype=torch.long)
    am[-1, length - 4 :] = 0  # the last text is padded
    return ids, am


@pytest.mark.parametrize("cls_name", [n for n in TASKS if n != "ViltForImagesAndTextClassification"])
@pytest.mark.parametrize("padded", [False, True])
def test_vilt_task_logits_match_transformers(vilt_tasks, cls_name, padded):
    d, ref = vilt_tasks[cls_name]
    ours = load_vilt(d, image_size=(64, 96))
    assert ours.task == TASKS[cls_name][0] and ours.hf_class == cls_name
    g = torch.Generator().manual_seed(3)
    if padded:
        px, pm = padded_batch(SIZES, g)
    else:
        px, pm = torch.rand(3, 3, 64, 96, generator=g), torch.ones(3, 64, 96, dtype=torch.long)
    ids, am = _text(3, generator=g)
    with torch.no_grad():
        theirs = ref(input_ids=ids, attention_mask=am, pixel_values=px, pixel_mask=pm).logits
        out = ours(pixel_values=px, input_ids=ids, attention_mask=am, pixel_mask=pm).head
    mine = out["scores"][:, None] if cls_name == "ViltForImageAndTextRetrieval" else out["logits"]
    assert mine.shape == theirs.shape
    assert (mine - theirs).abs().max() <= ATOL
    if cls_name == "ViltForQuestionAnswering":
        assert ours.labels == [f"ans{i}" for i in range(7)]


@pytest.mark.parametrize("padded", [False, True])
def test_vilt_nlvr2_two_images_match_transformers(vilt_tasks, padded):
    d, ref = vilt_tasks["ViltForImagesAndTextClassification"]
    ours = load_vilt(d, image_size=(64, 96))
    assert ours.task == "nlvr2"
    g = torch.Generator().manual_seed(4)
    if padded:
        a, ma = padded_batch(SIZES, g)
        b, mb = padded_batch([SIZES[1], SIZES[2], SIZES[0]], g)
    else:
        a, b = torch.rand(3, 3, 64, 96, generator=g), torch.rand(3, 3, 64, 96, generator=g)
        ma = mb = torch.ones(3, 64, 96, dtype=torch.long)
    px, pm = torch.stack([a, b], dim=1), torch.stack([ma, mb], dim=1)  # [B, 2, 3, H, W], [B, 2, H, W]
    ids, am = _text(3, generator=g)
    with torch.no_grad():
        theirs = ref(input_ids=ids, attention_mask=am, pixel_values=px, pixel_mask=pm).logits
        mine = ours.forward_pair(px, ids, am, pixel_mask=pm).head["logits"]
    assert mine.shape == theirs.shape == (3, 2)
    assert (mine - theirs).abs().max() <= ATOL


def test_padding_changes_nothing_for_the_unpadded_image(vilt_tasks):
    """An image's logits do not depend on what it is padded next to (the mask hides the padding)."""
    d, _ = vilt_tasks["ViltForQuestionAnswering"]
    ours = load_vilt(d)
    g = torch.Generator().manual_seed(5)
    px, pm = padded_batch(SIZES, g)
    ids, am = _text(3, generator=g)
    with torch.no_grad():
        batch = ours(pixel_values=px, input_ids=ids, attention_mask=am, pixel_mask=pm).head["logits"]
        alone = ours(pixel_values=px[1:2, :, :32, :64], input_ids=ids[1:2], attention_mask=am[1:2]).head["logits"]
    assert (batch[1] - alone[0]).abs().max() <= ATOL


def test_vilt_preprocess_matches_vilt_image_processor():
    from transformers import ViltImageProcessor

    g = torch.Generator().manual_seed(6)
    images = [
        torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in ((50, 80), (70, 45), (40, 40))
    ]
    proc = ViltImageProcessor(size={"shortest_edge": 64}, size_divisor=32)
    theirs = proc(images=images, return_tensors="pt")
    px, pm = vilt_preprocess(images, shorter=64, patch_size=32)
    assert px.shape == theirs["pixel_values"].shape and torch.equal(pm, theirs["pixel_mask"])
    assert (px - theirs["pixel_values"]).abs().max() <= 1e-5
    # the paper size: shorter 384, longer at most 640 (639), multiples of 32
    assert vilt_resize_shape(480, 640) == (384, 512) and vilt_resize_shape(640, 480) == (512, 384)
    assert vilt_resize_shape(1000, 600) == (608, 352)


def test_vilt_refuses_unknown_task_class(tmp_path):
    import json

    d, _ = save_vilt_task("ViltForImageAndTextRetrieval", tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["ViltForTokenClassification"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(VlpbenchError, match="ViltForTokenClassification.*accepted architectures: ViltModel"):
        load_vilt(d)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=CLIP_TEXT_TINY, vision_config=CLIP_VISION_TINY, projection_dim=24)).eval()
    _perturb(model)
    d = tmp_path_factory.mktemp("clip")
    model.save_pretrained(d)
    return d, model


def _clip_text(m: int, generator):
    ids = torch.randint(2, 98, (m, 16), generator=generator)
    ids[:, 11] = 99
    am = torch.ones(m, 16, dtype=torch.long)
    am[:, 12:] = 0
    return ids, am


def test_clip_n_images_by_m_texts(clip_dir):
    d, ref = clip_dir
    ours = load_clip(d)
    g = torch.Generator().manual_seed(7)
    px = torch.rand(3, 3, 64, 64, generator=g)
    ids, am = _clip_text(5, g)
    with torch.no_grad():
        theirs = ref(input_ids=ids, attention_mask=am, pixel_values=px)
        out = ours(pixel_values=px, input_ids=ids, attention_mask=am).interaction
    assert out.logits_per_image.shape == theirs.logits_per_image.shape == (3, 5)
    for key in ("image_embeds", "text_embeds", "logits_per_image"):
        assert (getattr(out, key) - getattr(theirs, key)).abs().max() <= ATOL, key


def test_clip_non_square_interpolates_or_refuses(clip_dir):
    d, ref = clip_dir
    g = torch.Generator().manual_seed(8)
    px = torch.rand(2, 3, 64, 96, generator=g)
    ids, am = _clip_text(4, g)
    with pytest.raises(VlpbenchError, match=r"pixel_values size.*64x64.*does not interpolate"):
        load_clip(d)(pixel_values=px, input_ids=ids, attention_mask=am)
    ours = load_clip(d, image_size=(64, 96))
    with torch.no_grad():
        theirs = ref(input_ids=ids, attention_mask=am, pixel_values=px, interpolate_pos_encoding=True)
        out = ours(pixel_values=px, input_ids=ids, attention_mask=am).interaction
    assert out.logits_per_image.shape == (2, 4)
    assert (out.logits_per_image - theirs.logits_per_image).abs().max() <= ATOL


def test_nlvr2_checkpoint_gives_latency_inputs_of_image_pairs(vilt_tasks):
    """The harness's seeded inputs for an NLVR2 checkpoint are image pairs, and the forward runs both passes."""
    from doubles import StageRecorder

    d, _ = vilt_tasks["ViltForImagesAndTextClassification"]
    ours = load_vilt(d, image_size=(64, 96))
    inputs = ours.make_inputs(2, generator=torch.Generator().manual_seed(0))
    assert inputs["pixel_values"].shape == (2, 2, 3, 64, 96)
    rec = StageRecorder()
    with torch.no_grad():
        out = ours(**inputs, stage=rec)
    assert out.head["logits"].shape == (2, 2)
    assert rec.names.count("interaction.encoder") == 2 and rec.names.count("head.nlvr2") == 1

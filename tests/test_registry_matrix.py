"""Every registered embedder, interaction and architecture at tiny size: shapes, stage names, groups, closure."""

import pytest
import torch

from vlpbench.harness.timer import StageTimer
from vlpbench.presets import load_all
from vlpbench.registry import ARCH, INTERACTION, TEXT, VISUAL
from vlpbench.stages import scoped

load_all()

# one text embedder per interaction family, so every visual x interaction pair is built
TEXT_FOR = {"dual-encoder": "clip-text-b32", "vse-gpo": "bigru-text"}


def timed_forward(module, inputs, prefix=None, group=None):
    with torch.inference_mode():
        module(**inputs)  # first call pays one-time costs that belong to no stage
    timer = StageTimer("cpu")
    timer.begin_iteration()
    with torch.inference_mode():
        out = module(**inputs, stage=scoped(timer.stage, prefix, group) if prefix else timer.stage)
    return out, timer.end_iteration()


def check_closure(sample):
    assert sample.leaf_sum_ms <= sample.total_ms + 1e-3
    unaccounted = sample.total_ms - sample.leaf_sum_ms
    assert unaccounted < max(0.6 * sample.total_ms, 5.0), (sample.total_ms, sample.stages)


EMBEDDERS = [("visual", n) for n in VISUAL.names()] + [("text", n) for n in TEXT.names()]


@pytest.mark.parametrize("kind,name", EMBEDDERS, ids=[n for _, n in EMBEDDERS])
def test_embedder(kind, name):
    torch.manual_seed(0)
    m = (VISUAL if kind == "visual" else TEXT).build(name, tiny=True).eval()
    spec = m.output_spec()
    inputs = m.make_inputs(2, generator=torch.Generator().manual_seed(0), device="cpu")
    out, sample = timed_forward(m, inputs, kind, "VE" if kind == "visual" else "TE")
    assert out.features.shape[0] == 2 and out.features.shape[-1] == spec.dim
    assert out.mask.shape == out.features.shape[:2] and out.mask.dtype == torch.bool
    if kind == "visual":
        if spec.num_tokens is not None:
            assert out.features.shape[1] == spec.num_tokens
        assert (out.boxes is not None) == spec.has_boxes
    else:
        assert out.features.shape[1] == inputs["input_ids"].shape[1]
    assert sample.leaves == [f"{kind}.{n}" for n in m.stage_names()]
    assert set(sample.groups.values()) == {"VE" if kind == "visual" else "TE"}
    check_closure(sample)


COMBOS = [(v, TEXT_FOR.get(i, "bert-base-embed"), i) for v in VISUAL.names() for i in INTERACTION.names()]
COMBOS += [("vilt-b32-patch", t, i) for t in TEXT.names() for i in INTERACTION.names()
           if t != TEXT_FOR.get(i, "bert-base-embed")]


@pytest.mark.parametrize("visual,text,interaction", COMBOS, ids=["+".join(c) for c in COMBOS])
def test_every_embedder_with_every_interaction(visual, text, interaction):
    from vlpbench.architectures.compose import ArchConfig, VLPModel

    torch.manual_seed(0)
    model = VLPModel.from_config(ArchConfig(visual=visual, text=text, interaction=interaction, tiny=True)).eval()
    inputs = model.make_inputs(2, generator=torch.Generator().manual_seed(0), device="cpu")
    out, sample = timed_forward(model, inputs)
    io = out.interaction
    if io.logits_per_image is not None:
        assert io.logits_per_image.shape == (2, 2)
        assert io.image_embeds.shape == (2, model.interaction.output_dim)
    else:
        assert io.pooler_output.shape == (2, model.interaction.output_dim)
        assert io.last_hidden_state.shape[0] == 2
    assert sample.leaves == model.stage_names()
    groups = {n.split(".")[0]: set() for n in sample.leaves}
    for n in sample.leaves:
        groups[n.split(".")[0]].add(sample.groups[n])
    assert groups["visual"] == {"VE"} and groups["text"] == {"TE"}
    assert "MI" in groups["interaction"]
    check_closure(sample)


@pytest.mark.parametrize("name", ARCH.names())
def test_architecture_preset(name):
    torch.manual_seed(0)
    model = ARCH.build(name, tiny=True).eval()
    inputs = model.make_inputs(1, generator=torch.Generator().manual_seed(0), device="cpu")
    out, sample = timed_forward(model, inputs)
    assert sample.leaves == model.stage_names()
    assert {"VE", "TE", "MI"} <= set(sample.groups.values())
    entry = ARCH.get(name)
    if "post-vilt" in entry.tags:   # placed by no paper (ALBEF, VLMo): the class is only measured
        assert "class" not in entry.paper and entry.paper.get("source")
    else:
        assert entry.paper.get("class") in ("a", "b", "c", "d")
    check_closure(sample)

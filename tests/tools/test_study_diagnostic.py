"""tools/study_diagnostic.py: the oracle cells are the scenes' objects, and the loop runs and reports."""

import dataclasses
import importlib.util
import json
import pathlib

import pytest
import torch

from vlpbench.study.data import SyntheticData
from vlpbench.study.relational import BagOfWords
from vlpbench.study.runner import DATA_DESIGNS

TOOL = pathlib.Path(__file__).resolve().parents[2] / "tools" / "study_diagnostic.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("study_diagnostic", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_oracle_cells_hold_each_object_in_its_own_cell(tool):
    spec = dataclasses.replace(DATA_DESIGNS["default"], n_train=4, n_val=2, n_test=2)
    data = SyntheticData(spec.dataset_config())
    split = data.split("train")
    cells = tool.oracle_cells(split, spec, channels=24)
    colours, shapes = list(spec.scene_config().colours), list(spec.shapes)
    for i, scene in enumerate(split.scenes):
        assert int(cells[i].sum()) == 2 * len(scene.objects)  # one colour and one shape bit per object
        for obj in scene.objects:
            k = int(obj.cy // 16) * 4 + int(obj.cx // 16)  # 64 px canvas, 4 x 4 cells
            assert cells[i, k, colours.index(obj.colour)] == 1
            assert cells[i, k, len(colours) + shapes.index(obj.shape)] == 1
    with pytest.raises(Exception, match="cannot hold"):
        tool.oracle_cells(split, spec, channels=4)


@pytest.mark.parametrize("objects,question", [("oracle", "positional"), ("pixels", "gru")])
def test_loop_reports_json_lines(tool, capsys, objects, question):
    rc = tool.main(
        [
            "--objects",
            objects,
            "--question",
            question,
            "--n-train",
            "20",
            "--steps",
            "3",
            "--eval-every",
            "2",
            "--batch-size",
            "8",
            "--threads",
            "1",
        ]
    )
    assert rc == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["config"]["objects"] == objects
    assert [r["step"] for r in rows[1:]] == [2, 3]
    assert 0 <= rows[-1]["non_relational"] <= 1 and set(rows[-1]["by_type"]) <= set(
        DATA_DESIGNS["default"].question_types
    )


def test_bag_of_words_tells_every_generated_question_apart(tool):
    spec = dataclasses.replace(DATA_DESIGNS["default"], n_train=30, n_val=2, n_test=2)
    data = SyntheticData(spec.dataset_config())
    q = tool.question_tensors(data, "train")
    codes = BagOfWords(data.tokenizer.vocab_size)(q["input_ids"], q["attention_mask"])
    assert set(codes.unique().tolist()) == {0.0, 1.0} and codes[:, 0].sum() == 0  # padding is not a word
    texts = [qq.text for _, qq in data.qa("train").items]
    by_code: dict[tuple, set] = {}
    for code, text in zip(codes.tolist(), texts):
        by_code.setdefault(tuple(code), set()).add(text)
    assert all(len(same) == 1 for same in by_code.values())  # one code, one question
    assert len(by_code) == len(set(texts))


def test_reference_options_reach_the_model(tool, capsys):
    rc = tool.main(
        ["--objects", "oracle", "--question", "bow", "--dropout", "0", "--min-objects", "2"]
        + ["--n-train", "20", "--steps", "1", "--batch-size", "4", "--threads", "1", "--probe"]
    )
    assert rc == 0
    head = json.loads(capsys.readouterr().out.splitlines()[0])
    assert head["config"]["min_objects"] == 2 and head["config"]["dropout"] == 0.0
    assert head["probe"]["qa_logits_image_swap"] > 0  # the oracle objects reach the logits


@pytest.fixture
def built(tool, monkeypatch):
    """The reference the tool builds next, and a copy of its state at initialisation."""
    seen: dict = {}
    build = tool.build_reference

    def spy(*args):
        model = build(*args)
        seen["model"], seen["init"] = model, {k: v.clone() for k, v in model.state_dict().items()}
        return model

    monkeypatch.setattr(tool, "build_reference", spy)
    return seen


def test_freeze_cnn_keeps_the_cnn_at_init_and_trains_the_rest(tool, built):
    args = ["--question", "bow", "--freeze-cnn", "--n-train", "20", "--steps", "2", "--batch-size", "4"]
    assert tool.main(args + ["--threads", "1"]) == 0
    now, init = built["model"].state_dict(), built["init"]
    conv = [k for k in now if k.startswith("objects.") and k.endswith("weight")]
    assert conv and all(torch.equal(now[k], init[k]) for k in conv)  # conv and BatchNorm affine: untouched
    assert not torch.equal(now["f.0.weight"], init["f.0.weight"])  # f learns


def test_colour_probe_reads_the_cnn_without_changing_it(tool, capsys, built):
    args = ["--colour-probe", "--n-train", "40", "--steps", "0", "--threads", "1"]
    assert tool.main(args) == 0
    probe = json.loads(capsys.readouterr().out.splitlines()[0])["colour_probe"]
    assert 1 / 6 < probe <= 1  # six colours: a random CNN's cells already tell them apart better than chance
    now = built["model"].state_dict()
    assert all(torch.equal(now[k], v) for k, v in built["init"].items())  # BatchNorm statistics put back
    assert tool.main(args) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["colour_probe"] == probe  # deterministic
    with pytest.raises(SystemExit) as e:
        tool.main(["--colour-probe", "--objects", "oracle"])
    assert e.value.code == 2


def test_small_preset_loop_probes_the_image_influence(tool, capsys):
    rc = tool.main(
        ["--arch", "clip-small", "--n-train", "20", "--steps", "2", "--eval-every", "2"]
        + ["--batch-size", "4", "--threads", "1", "--probe", "--warmup-steps", "2"]
    )
    assert rc == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    probe = lines[0]["probe"]
    assert 0 < probe["qa_logits_image_swap"] and -1 <= probe["image_embedding_cosine"] <= 1
    assert lines[-1]["step"] == 2 and 0 <= lines[-1]["non_relational"] <= 1


def test_position_probe_sees_a_reference_move_the_object_and_skips_cached_regions(tool, capsys):
    args = ["--n-train", "20", "--steps", "0", "--threads", "1", "--probe"]
    assert tool.main(args + ["--kind", "cnn-mlp"]) == 0
    probe = json.loads(capsys.readouterr().out.splitlines()[0])["probe"]
    assert probe["qa_logits_move_left_right"] > 0 and probe["qa_logits_recolour"] > 0
    assert tool.main(args + ["--arch", "uniter-small"]) == 0  # regions come from the cache, not the pixels
    probe = json.loads(capsys.readouterr().out.splitlines()[0])["probe"]
    assert "qa_logits_move_left_right" not in probe and probe["qa_logits_image_swap"] > 0


def test_freeze_patch_keeps_a_preset_patch_projection(tool, monkeypatch, capsys, runners):
    # the study presets already freeze their patch projections (PatchEmbedConfig.freeze_proj): a clip-small
    # whose projection trains, as CLIP's does, is what the switch is for
    monkeypatch.setitem(_visual_overrides("clip-small"), "freeze_proj", False)
    args = ["--arch", "clip-small", "--freeze-patch", "--n-train", "20", "--steps", "2", "--batch-size", "4"]
    assert tool.main(args + ["--threads", "1"]) == 0
    proj = runners[0].task.model.visual.proj
    assert not any(p.requires_grad for p in proj.parameters())
    assert all(p.requires_grad for n, p in runners[0].task.named_parameters() if "visual.proj" not in n)
    assert tool.main(args + ["--threads", "1", "--pos-std", "0.5", "--steps", "0"]) == 0
    pos = runners[1].task.model.visual.pos_embed
    assert 0.4 < float(pos.detach().std()) < 0.6  # re-initialised at the asked scale (the preset's is 0.02)
    assert tool.main(["--arch", "uniter-small", "--freeze-patch", "--n-train", "20", "--threads", "1"]) == 2
    assert "has no patch projection" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        tool.main(["--kind", "rn", "--freeze-patch"])
    assert e.value.code == 2


def test_pos_sincos_sets_a_preset_position_embeddings(tool, monkeypatch, capsys, runners):
    from vlpbench.embedders.patch import sincos_position_embedding

    monkeypatch.setitem(_visual_overrides("clip-small"), "pos_init", "normal")  # as CLIP's, not the study's
    args = ["--arch", "clip-small", "--pos-sincos", "--n-train", "20", "--steps", "0", "--threads", "1"]
    assert tool.main(args) == 0
    visual = runners[0].task.model.visual
    torch.testing.assert_close(visual.pos_embed.detach(), sincos_position_embedding(visual.pos_grid, visual.dim))
    assert tool.main(["--arch", "uniter-small", "--pos-sincos", "--n-train", "20", "--threads", "1"]) == 2
    assert "has no position embeddings" in capsys.readouterr().err
    for bad in (["--kind", "rn", "--pos-sincos"], ["--arch", "clip-small", "--pos-sincos", "--pos-std", "0.5"]):
        with pytest.raises(SystemExit) as e:
            tool.main(bad)
        assert e.value.code == 2


def test_kernel_reaches_the_reference(tool, built):
    assert tool.main(["--kernel", "4", "--n-train", "20", "--steps", "0", "--threads", "1"]) == 0
    model = built["model"]
    assert model.cfg.kernel == 4 and model.objects.net[0].kernel_size == (4, 4)


def _visual_overrides(arch):
    from vlpbench.presets import load_all
    from vlpbench.registry import ARCH

    load_all()
    return ARCH.get(arch).config.visual_overrides


def _spy_init(base, seen):
    def init(self, *args, **kwargs):
        base.__init__(self, *args, **kwargs)
        seen.append(self)

    return init


@pytest.fixture
def runners(tool, monkeypatch):
    """Every Runner the tool builds during the test, in order."""
    seen = []
    monkeypatch.setattr(tool, "Runner", type("Spy", (tool.Runner,), {"__init__": _spy_init(tool.Runner, seen)}))
    return seen


def test_reference_switches_are_refused_with_a_preset(tool):
    with pytest.raises(SystemExit) as e:
        tool.main(["--arch", "vilt-small", "--objects", "oracle"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        tool.main(["--arch", "vilt-small", "--freeze-cnn"])
    assert e.value.code == 2


def test_region_preset_reads_a_trained_detector_and_probes_its_features(tool, tmp_path, capsys, runners):
    from vlpbench.presets import load_all
    from vlpbench.study.detector import DetectorConfig, train_detector

    load_all()
    spec = dataclasses.replace(DATA_DESIGNS["default"], n_train=20)
    det = train_detector(
        DetectorConfig(arch="uniter-small", steps=1, batch_size=2, labels="colour_shape"),
        SyntheticData(spec.dataset_config()),
        str(tmp_path),
        progress=False,
    )["weights"]
    args = ["--arch", "uniter-small", "--colour-probe", "--n-train", "20", "--steps", "0", "--threads", "1"]
    assert tool.main(args + ["--detector", det]) == 0
    probe = json.loads(capsys.readouterr().out.splitlines()[0])["region_probe"]
    assert set(probe) == {"region_colour", "region_shape", "region_horizontal", "region_vertical"}
    assert all(0 <= v <= 1 for v in probe.values())
    assert runners[0].task.model.visual.box_predictor.cls_score.out_features == 1 + 6 * 2  # the detector's classes
    for bad in (["--detector", str(tmp_path / "missing.pt")], ["--arch", "vilt-small", "--detector", det]):
        with pytest.raises(SystemExit) as e:
            tool.main(args + bad)
        assert e.value.code == 2


def test_grid_probe_reads_each_objects_cell_without_changing_the_trunk(tool, monkeypatch, capsys, runners):
    seen = {}
    probe_of = tool.Runner.object_probe

    def spy(self, x, prefix, steps=500):
        seen["x"] = x
        return probe_of(self, x, prefix, steps)

    monkeypatch.setattr(tool.Runner, "object_probe", spy)
    args = ["--arch", "pixelbert-small", "--colour-probe", "--n-train", "20", "--steps", "0", "--threads", "1"]
    assert tool.main(args) == 0
    probe = json.loads(capsys.readouterr().out.splitlines()[0])["grid_probe"]
    assert set(probe) == {"grid_colour", "grid_shape", "grid_horizontal", "grid_vertical"}
    assert all(0 <= v <= 1 for v in probe.values())
    runner = runners[0]
    visual, test = runner.task.model.visual, runner.data.split("test")
    assert seen["x"]["test"].shape[0] == sum(len(sc.objects) for sc in test.scenes)
    # the first test object's row is the feature of the C3 cell (8 x 8 cells of 8 px at 64 px) its centre falls in
    init = {k: v.clone() for k, v in visual.state_dict().items()}
    with torch.no_grad():
        visual.train()
        out = visual(runner.pixels(runner.images["test"]))
    visual.load_state_dict(init)
    assert out.extras["grid"] == [8, 8] and test.scenes[0].objects[0].canvas == 64
    o = test.scenes[0].objects[0]
    cell = int(o.cy // 8) * 8 + int(o.cx // 8)
    torch.testing.assert_close(seen["x"]["test"][0], out.features[0, cell])
    assert tool.main(args) == 0  # BatchNorm statistics put back: the same read-outs again
    assert json.loads(capsys.readouterr().out.splitlines()[0])["grid_probe"] == probe
    with pytest.raises(SystemExit) as e:
        tool.main(["--arch", "vilt-small", "--colour-probe"])
    assert e.value.code == 2


def test_box_code_and_visual_proj_reach_a_region_preset(tool, capsys, runners):
    base = ["--n-train", "20", "--steps", "1", "--batch-size", "4", "--threads", "1"]
    for arch, proj_name in (("uniter-small", "visual_proj"), ("vilbert-small", "v_proj")):
        for code, proj in (("linear", "trained"), ("linear+sincos", "frozen")):
            assert tool.main(["--arch", arch, "--box-code", code, "--visual-proj", proj] + base) == 0
            inter = runners[-1].task.model.interaction
            assert inter.box_code == code
            assert getattr(inter, proj_name).weight.requires_grad == (proj == "trained")
    assert tool.main(["--arch", "clip-small", "--box-code", "linear"] + base) == 2
    assert "reads no boxes" in capsys.readouterr().err
    assert tool.main(["--arch", "clip-small", "--visual-proj", "frozen"] + base) == 2
    assert "no visual-token projection" in capsys.readouterr().err
    for bad in (["--kind", "rn", "--box-code", "linear"], ["--arch", "uniter-small", "--box-code", "fourier"]):
        with pytest.raises(SystemExit) as e:
            tool.main(bad)
        assert e.value.code == 2


def test_fusion_reaches_a_co_attention_preset(tool, capsys, runners):
    base = ["--n-train", "20", "--steps", "1", "--batch-size", "4", "--threads", "1"]
    for fusion in ("sum", "mul"):
        assert tool.main(["--arch", "vilbert-small", "--fusion", fusion] + base) == 0
        assert runners[-1].task.model.interaction.fusion == fusion
    assert tool.main(["--arch", "uniter-small", "--fusion", "sum"] + base) == 2
    assert "no pooled fusion" in capsys.readouterr().err
    for bad in (["--kind", "rn", "--fusion", "sum"], ["--arch", "vilbert-small", "--fusion", "concat"]):
        with pytest.raises(SystemExit) as e:
            tool.main(bad)
        assert e.value.code == 2


def test_image_token_reaches_a_co_attention_preset(tool, capsys, runners):
    base = ["--n-train", "20", "--steps", "1", "--batch-size", "4", "--threads", "1"]
    for mode in ("learned", "none"):
        assert tool.main(["--arch", "vilbert-small", "--image-token", mode] + base) == 0
        inter = runners[-1].task.model.interaction
        assert inter.image_token == mode and (inter.image_embed is not None) == (mode == "learned")
        assert any(p is inter.image_embed for p in runners[-1].parameters()) == (mode == "learned")
    assert tool.main(["--arch", "uniter-small", "--image-token", "none"] + base) == 2
    assert "no image token" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        tool.main(["--arch", "vilbert-small", "--image-token", "first"])
    assert e.value.code == 2


def test_qa_norm_reaches_a_dual_preset(tool, capsys, runners):
    base = ["--arch", "clip-small", "--n-train", "20", "--steps", "1", "--batch-size", "4", "--threads", "1"]
    for flag, norm in (([], "batch"), (["--qa-norm", "none"], "none"), (["--qa-norm", "batch"], "batch")):
        assert tool.main(base + flag) == 0
        task = runners[-1].task
        assert task.qa_norm == norm
        assert isinstance(task.qa_image_norm, torch.nn.BatchNorm1d) == (norm == "batch")
    assert tool.main(["--arch", "vilt-small", "--qa-norm", "none"] + base[2:]) == 2
    assert "is a fusion model" in capsys.readouterr().err
    for bad in (["--kind", "rn", "--qa-norm", "none"], ["--arch", "clip-small", "--qa-norm", "layer"]):
        with pytest.raises(SystemExit) as e:
            tool.main(bad)
        assert e.value.code == 2


def test_freeze_cnn_with_a_grid_preset_keeps_its_trunk_at_init(tool, runners):
    args = ["--arch", "pixelbert-small", "--freeze-cnn", "--n-train", "20", "--steps", "1", "--batch-size", "4"]
    assert tool.main(args + ["--threads", "1"]) == 0
    model = runners[0].task.model
    assert not any(p.requires_grad for p in model.visual.trunk.parameters())
    assert any(p.requires_grad for p in model.interaction.parameters())


def test_token_sizes_separate_a_presets_visual_content_from_its_position_code(tool, capsys, runners):
    args = ["--token-sizes", "--n-train", "40", "--steps", "0", "--threads", "1"]
    assert tool.main(["--arch", "pixelbert-small"] + args) == 0
    sizes = json.loads(capsys.readouterr().out.splitlines()[0])["token_sizes"]
    assert set(sizes) == {"token_rms", "image_std", "position_rms"} and all(v > 0 for v in sizes.values())
    runner = runners[0]
    inter = runner.task.model.interaction
    assert runner.token_sizes() == pytest.approx(sizes, abs=1e-4)  # the same sizes again
    with torch.no_grad():  # twice the cell content (the projection's bias is 0 at init); the box code unchanged
        inter.visual_proj.weight.mul_(2)
    doubled = runner.token_sizes()
    assert doubled["token_rms"] == pytest.approx(2 * sizes["token_rms"], rel=1e-3)
    assert doubled["image_std"] == pytest.approx(2 * sizes["image_std"], rel=1e-3)
    assert doubled["position_rms"] == pytest.approx(sizes["position_rms"], rel=1e-4)
    assert tool.main(["--arch", "vilt-small"] + args) == 0  # a patch preset: its position embeddings
    sizes = json.loads(capsys.readouterr().out.splitlines()[0])["token_sizes"]
    pos = runners[1].task.model.visual.pos_embed
    assert sizes["position_rms"] == pytest.approx(pos.pow(2).mean().sqrt().item(), abs=1e-4)
    for bad in (["--arch", "clip-small"], ["--kind", "rn"]):
        with pytest.raises(SystemExit) as e:
            tool.main(bad + args)
        assert e.value.code == 2

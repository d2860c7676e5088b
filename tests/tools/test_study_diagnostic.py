"""tools/study_diagnostic.py: the oracle cells are the scenes' objects, and the loop runs and reports."""

import dataclasses
import importlib.util
import json
import pathlib

import pytest

from vlpbench.study.data import SyntheticData
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

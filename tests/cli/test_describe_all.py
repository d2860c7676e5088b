"""`vlpbench describe` over every registered name: builds each on the meta device (no arithmetic may run there:
batch-norm calibration of region embedders is skipped) and prints its stages and sizes."""

import pytest

from vlpbench.cli import main
from vlpbench.presets import load_all
from vlpbench.registry import REGISTRIES

load_all()
NAMES = sorted({(kind, name) for kind, reg in REGISTRIES.items() for name in reg.names()})


@pytest.mark.parametrize("kind, name", NAMES, ids=[f"{k}:{n}" for k, n in NAMES])
def test_describe_every_registered_name(capsys, kind, name):
    code = main(["describe", name])
    out = capsys.readouterr().out
    assert code == 0
    assert f"{name} [" in out and "config:" in out
    if kind in ("arch", "visual", "text"):
        assert "parameters:" in out and "stages:" in out


def test_describe_region_preset_shows_the_published_network(capsys):
    assert main(["describe", "butd-r101-c4"]) == 0
    out = capsys.readouterr().out
    assert "res5_dilation = 2" in out and "roi_pooler = 'pool'" in out and "attribute_classes = 401" in out
    assert "stages: preprocess, backbone, rpn.head" in out and "'bn_calibrated': False" in out

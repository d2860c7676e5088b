"""`make install-detectron2` (dry run): the shared wheel when there is one, else a --no-build-isolation source
build; `.ci/run` installs it before `make test` only when the wheel is beside the clone."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _dry_run(*variables):
    out = subprocess.run(
        ["make", "-n", "-W", "setup.cfg", "install-detectron2", *variables], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_uses_the_wheel_when_given():
    out = _dry_run("D2_WHEEL=/w/detectron2-0.6-cp311-cp311-linux_x86_64.whl")
    assert 'pip install -q "/w/detectron2-0.6-cp311-cp311-linux_x86_64.whl"' in out
    assert "import_detectron2" in out  # and checks that it imports


def test_builds_from_source_without_build_isolation():
    out = _dry_run("D2_WHEEL=")
    assert "--no-build-isolation" in out and "git+https://github.com/facebookresearch/detectron2.git" in out
    assert '"setuptools<81"' in out  # detectron2's model_zoo still imports pkg_resources


def test_ci_installs_detectron2_only_when_the_wheel_is_there():
    script = (ROOT / ".ci" / "run").read_text()
    guard = script.index('compgen -G "../shared/wheels/detectron2-*.whl"')
    assert guard < script.index("    make install-detectron2") < script.rindex("make test")

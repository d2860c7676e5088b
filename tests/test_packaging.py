"""The wheel carries embedders/ and architectures/ as vlpbench.embedders / vlpbench.architectures."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_subpackages_under_vlpbench(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(tmp_path.glob("vlpbench-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in (
        "vlpbench/embedders/__init__.py",
        "vlpbench/embedders/region.py",
        "vlpbench/embedders/patch.py",
        "vlpbench/architectures/__init__.py",
        "vlpbench/architectures/compose.py",
        "vlpbench/harness/timer.py",
        "vlpbench/presets/__init__.py",
        "vlpbench/cli/__init__.py",
    ):
        assert module in names, module
    assert not any(n.startswith(("embedders/", "architectures/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "vlpbench = vlpbench.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_import_names_resolve_to_repository_folders():
    import vlpbench.architectures
    import vlpbench.embedders

    assert Path(vlpbench.embedders.__file__).parent.name == "embedders"
    assert Path(vlpbench.architectures.__file__).parent.name == "architectures"


def test_importing_vlpbench_changes_no_global_state():
    code = (
        "import torch; t = torch.get_num_threads(); b = torch.backends.cudnn.benchmark; "
        "import vlpbench, vlpbench.presets, vlpbench.harness.runner, vlpbench.cli; "
        "vlpbench.presets.load_all(); "
        "assert torch.get_num_threads() == t and torch.backends.cudnn.benchmark == b; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]

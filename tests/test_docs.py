"""The documentation's code runs: every ```python block of docs/api.md, and the plugin example of docs/plugins.md."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks(path: Path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_api_page_snippets_run_and_measure(tmp_path, monkeypatch, capsys):
    blocks = _python_blocks(ROOT / "docs" / "api.md")
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    for code in blocks:  # the page's blocks build on each other, like a session
        exec(compile(code, "docs/api.md", "exec"), scope)
    out = capsys.readouterr().out
    rec = scope["record"]
    assert f"{rec['arch']}: {rec['total']['median_ms']:.2f} ms median" in out
    assert [r["arch"] for r in scope["records"]] == ["vilt-b32", "clip-vit-b32"]
    samples = scope["samples"]
    assert set(samples["stage"]) >= {"total", "unaccounted", "uninstrumented"}
    assert scope["report_md"].is_file() and scope["report_md"].with_suffix(".html").is_file()


def test_plugin_example_measures_through_the_cli(tmp_path, monkeypatch, capsys):
    from vlpbench import cli

    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    page = (ROOT / "docs" / "plugins.md").read_text()
    assert "--plugin pooled_patch --arch pooled-vilt" in page
    out = tmp_path / "run"
    code = cli.main(
        [
            "compare",
            "--plugin",
            "pooled_patch",
            "--arch",
            "pooled-vilt",
            "--tiny",
            "--in-process",
            "--iters",
            "2",
            "--min-time",
            "0",
            "--warmup",
            "1",
            "--no-flops",
            "--out",
            str(out),
            "--format",
            "json",
        ]
    )
    assert code == 0, capsys.readouterr().err
    (rec,) = json.loads(capsys.readouterr().out)
    assert rec["arch"] == "pooled-vilt" and rec["spec"]["plugins"] == ["pooled_patch"]
    names = [s["name"] for s in rec["stages"] if s["leaf"]]
    assert names[:2] == ["visual.pool", "visual.patch_embed"] and "interaction.encoder" in names
    assert rec["workload"]["measured.tokens"] == 1 + (64 // 2 // 16) * (96 // 2 // 16)
    assert "pooled_patch" in sys.modules

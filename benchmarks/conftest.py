"""pytest-benchmark glue for ``make bench``: options, one run directory per session, the final table."""

from __future__ import annotations

from pathlib import Path

import pytest

OUT = Path("reports") / "bench"


def pytest_addoption(parser):
    g = parser.getgroup("vlpbench")
    g.addoption("--vlpbench-threads", type=int, default=None, help="torch intra-op threads (default: harness default)")
    g.addoption(
        "--vlpbench-profile",
        default="default",
        help="default (CPU, ~8 min on 1 thread: 7.6 min measured), full (GPU) or smoke (tiny)",
    )
    g.addoption("--vlpbench-device", default="cpu", help="cpu or cuda")
    g.addoption("--vlpbench-out", default=str(OUT), help="where the tables and figure go")
    g.addoption(
        "--vlpbench-backend",
        default="torchvision",
        help="backend of the region-feature embedders: torchvision or detectron2",
    )


@pytest.fixture(scope="session")
def bench_options(request):
    from vlpbench.harness.env import DEFAULT_THREADS

    return {
        "threads": request.config.getoption("--vlpbench-threads") or DEFAULT_THREADS,
        "profile": request.config.getoption("--vlpbench-profile"),
        "device": request.config.getoption("--vlpbench-device"),
        "out": Path(request.config.getoption("--vlpbench-out")),
        "backend": request.config.getoption("--vlpbench-backend"),
    }


@pytest.fixture(scope="session")
def bench_run(request, bench_options):
    from vlpbench.store import RunDir

    run = RunDir.create(
        f"bench-{bench_options['profile']}", root=Path("reports") / "runs", meta={"profile": bench_options["profile"]}
    )
    request.config._vlpbench_run = run
    request.config._vlpbench_out = bench_options["out"]
    return run


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    run = getattr(config, "_vlpbench_run", None)
    if run is None or not run.record_files():
        return
    from vlpbench.report.benchtable import csv_text, markdown, stage_csv_text
    from vlpbench.store import atomic_write_text

    out = config._vlpbench_out
    records = run.records()
    order = {name: i for i, name in enumerate(getattr(config, "_vlpbench_order", []))}
    records.sort(key=lambda r: order.get(r["arch"], len(order)))
    md = markdown(records)
    atomic_write_text(out / "embedders.md", md)
    atomic_write_text(out / "embedders.csv", csv_text(records))
    atomic_write_text(out / "embedders-stages.csv", stage_csv_text(records))
    written = [out / "embedders.md", out / "embedders.csv", out / "embedders-stages.csv"]
    try:
        from vlpbench.report.figures import figure1
    except ImportError:
        figure1 = None
    if figure1 is not None:
        written.append(figure1(records, out / "embedders.png"))
    terminalreporter.write_sep("=", "vlpbench embedder latency")
    terminalreporter.write(md)
    terminalreporter.write_line(f"records: {run.path}")
    for p in written:
        terminalreporter.write_line(f"wrote {p}")


def pytest_configure(config):
    # pytest-benchmark writes --benchmark-json at the end; make sure its folder exists
    target = getattr(config.option, "benchmark_json", None)
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)

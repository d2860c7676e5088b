"""This machine's fp32 GEMM peak, and each stage's achieved GFLOP/s as a share of it.

``vlpbench peak`` times two kernels at the thread count in use, each a few times, and keeps the
faster median: ``torch.mm`` on square fp32 matrices (MKL / the BLAS torch was built with) and a 1x1
``conv2d`` (oneDNN on CPU, cuDNN on CUDA), which is the same GEMM laid out for the convolution
library.  Which one reaches more depends on the chip (on some AMD CPUs the oneDNN kernel beats MKL's
matmul), so both are recorded and the peak names its source.  FLOPs are 2 per multiply-add.

A record's stages then carry ``gflop_per_s`` (the stage's counted FLOPs over its median time) and
``peak_share`` (that over the peak): a compute-bound stage (a transformer encoder) sits near the peak,
an overhead-bound one (RoIAlign, NMS, indexing) far below it.  Counted FLOPs leave element-wise ops
out (see :mod:`vlpbench.harness.flops`), so shares are lower bounds of the arithmetic done.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlpbench.errors import VlpbenchError

DEFAULT_PEAK_FILE = Path("reports") / "peak.json"
MATMUL_SIZES = (512, 1024, 2048)  # square n x n @ n x n
CONV_SHAPES = ((256, 512, 32), (512, 1024, 16), (1024, 1024, 16))  # (C_in, C_out, H=W) of a 1x1 conv, batch 1


def _time_median_s(fn: Callable[[], Any], sync: Callable[[], None], reps: int, min_s: float) -> float:
    fn()
    sync()
    times: list[float] = []
    t_end = time.perf_counter() + min_s
    while len(times) < reps or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
        if len(times) >= 50 * reps:
            break
    times.sort()
    return times[len(times) // 2]


def _gemm_kernels(device: str):
    import torch
    import torch.nn.functional as F

    dev = torch.device(device)
    for n in MATMUL_SIZES:
        a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
        yield "matmul", f"mm {n}x{n}x{n}", 2 * n**3, (lambda a=a, b=b: torch.mm(a, b))
    for c, k, hw in CONV_SHAPES:
        x, w = torch.randn(1, c, hw, hw, device=dev), torch.randn(k, c, 1, 1, device=dev)
        yield "conv1x1", f"conv1x1 {c}->{k} at {hw}x{hw}", 2 * c * k * hw * hw, (lambda x=x, w=w: F.conv2d(x, w))


def measure_peak(threads: int, device: str = "cpu", reps: int = 5, min_s: float = 0.5) -> dict[str, Any]:
    """GFLOP/s of fp32 matmul and 1x1 conv at ``threads`` intra-op threads; the peak is the larger."""
    import torch

    from . import env as envmod

    envmod.set_threads(threads)
    cuda = str(device).startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    kernels: list[dict[str, Any]] = []
    with torch.inference_mode():
        for kind, shape, flop, fn in _gemm_kernels(device):
            sec = _time_median_s(fn, sync, reps, min_s)
            kernels.append(
                {"kind": kind, "shape": shape, "flop": flop, "median_s": sec, "gflop_per_s": flop / sec / 1e9}
            )
    best = {
        k: max((r for r in kernels if r["kind"] == k), key=lambda r: r["gflop_per_s"]) for k in ("matmul", "conv1x1")
    }
    lib = {
        "matmul": "cuBLAS matmul" if cuda else "MKL/BLAS matmul",
        "conv1x1": "cuDNN 1x1 conv" if cuda else "oneDNN 1x1 conv",
    }
    source = max(best, key=lambda k: best[k]["gflop_per_s"])
    state = envmod.machine_state()
    return {
        "kind": "peak",
        "device": str(device),
        "cpu": envmod.cpu_model(),
        "threads": torch.get_num_threads(),
        "dtype": "float32",
        "convention": "FLOPs (2 per multiply-add)",
        "matmul_gflop_per_s": best["matmul"]["gflop_per_s"],
        "conv1x1_gflop_per_s": best["conv1x1"]["gflop_per_s"],
        "peak_gflop_per_s": best[source]["gflop_per_s"],
        "peak_source": f"{lib[source]} ({best[source]['shape']})",
        "kernels": kernels,
        "load_avg": state["load_avg"],
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def load_peak(path: str | None, device: str, threads: int) -> dict[str, Any] | None:
    """The peak measured for this CPU / device and thread count in ``path`` (a ``vlpbench peak`` file,
    which keeps one entry per device and thread count), or None when there is none."""
    from . import env as envmod

    p = Path(path) if path else DEFAULT_PEAK_FILE
    if not p.is_file():
        if path:
            raise VlpbenchError(f"peak file {path!r} does not exist; accepted: a file written by `vlpbench peak`")
        return None
    try:
        entries = json.loads(p.read_text()).get("entries", [])
    except (ValueError, AttributeError) as exc:
        raise VlpbenchError(f"peak file {str(p)!r} is not a `vlpbench peak` file ({exc})") from exc
    cpu = envmod.cpu_model()
    for e in entries:
        if (
            e.get("device") == str(device)
            and e.get("threads") == threads
            and (str(device) != "cpu" or e.get("cpu") == cpu)
        ):
            return {**e, "file": str(p)}
    return None


def save_peak(result: dict[str, Any], path: str | None = None) -> Path:
    """Add ``result`` to the peak file, replacing the entry of the same CPU, device and thread count."""
    from vlpbench.store import atomic_write_json

    p = Path(path) if path else DEFAULT_PEAK_FILE
    entries = []
    if p.is_file():
        try:
            entries = json.loads(p.read_text()).get("entries", [])
        except ValueError:
            entries = []
    same = lambda e: all(e.get(k) == result[k] for k in ("cpu", "device", "threads"))  # noqa: E731
    entries = [e for e in entries if not same(e)] + [result]
    return atomic_write_json(p, {"kind": "peak", "entries": entries})


def attach_efficiency(record: dict[str, Any], peak: dict[str, Any] | None) -> None:
    """Add ``gflop_per_s`` / ``peak_share`` to every stage with counted FLOPs, and a record-level
    ``efficiency`` block (the total's achieved rate and the peak it is compared with)."""
    flops = record.get("flops") or {}
    by_stage = flops.get("by_stage") or {}
    peak_rate = peak["peak_gflop_per_s"] if peak else None

    def rate(flop: int | None, median_ms: float) -> dict[str, float | None]:
        if not flop or not median_ms or median_ms <= 0:
            return {"gflop_per_s": None, "peak_share": None}
        g = flop / 1e9 / (median_ms / 1e3)
        return {"gflop_per_s": g, "peak_share": g / peak_rate if peak_rate else None}

    for st in record.get("stages", []):
        st.update(rate(by_stage.get(st["name"]), st["median_ms"]))
    total = rate(flops.get("total"), record["total"]["median_ms"])
    record["efficiency"] = {
        "total_gflop_per_s": total["gflop_per_s"],
        "total_peak_share": total["peak_share"],
        "peak_gflop_per_s": peak_rate,
        "peak_source": peak.get("peak_source") if peak else None,
        "peak_file": peak.get("file") if peak else None,
        "peak_threads": peak.get("threads") if peak else None,
        "peak_date": peak.get("date") if peak else None,
        "convention": "FLOPs (2 per multiply-add) counted / median s",
    }

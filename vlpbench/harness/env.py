"""The environment a number was measured in, captured into every result."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import vlpbench
from vlpbench.errors import VlpbenchError

# Default intra-op threads for measurements: 1.  On the shared 2-core machine, 1 versus 2 threads was
# measured in alternating isolated runs (ViLT-B/32, Pixel-BERT-R50): 1 thread gave CVs of 2-7%, 2 threads
# 13-93% with medians moving 5x between rounds, because the second core is not reliably free (README "Protocol").
DEFAULT_THREADS = 1
ALLOCATOR_ENV = ("GLIBC_TUNABLES", "MALLOC_ARENA_MAX", "LD_PRELOAD")


def _git(*args: str) -> str | None:
    root = Path(vlpbench.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict[str, Any]:
    commit = _git("rev-parse", "HEAD")
    dirty = None
    if commit is not None:
        status = _git("status", "--porcelain", "--untracked-files=no")
        dirty = bool(status) if status is not None else None
    return {"commit": commit, "dirty": dirty}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _meminfo() -> dict[str, float | None]:
    """RAM total and available in GiB from /proc/meminfo (None where it cannot be read)."""
    vals: dict[str, float | None] = {"total_gib": None, "available_gib": None}
    text = _read("/proc/meminfo") or ""
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable"):
            kib = float(rest.split()[0])
            vals["total_gib" if key == "MemTotal" else "available_gib"] = round(kib / 2**20, 3)
    return vals


def _cpu_frequency() -> dict[str, Any]:
    """Current / max CPU frequency (MHz) and the cpufreq governor where the kernel exposes them."""
    base = "/sys/devices/system/cpu/cpu0/cpufreq/"
    cur, top = _read(base + "scaling_cur_freq"), _read(base + "cpuinfo_max_freq")
    mhz = [
        float(line.split(":", 1)[1])
        for line in (_read("/proc/cpuinfo") or "").splitlines()
        if line.startswith("cpu MHz")
    ]
    return {
        "cur_mhz": float(cur) / 1e3 if cur else (round(sum(mhz) / len(mhz), 1) if mhz else None),
        "max_mhz": float(top) / 1e3 if top else None,
        "governor": _read(base + "scaling_governor"),
    }


def machine_state() -> dict[str, Any]:
    """Load average (1, 5, 15 min) and RAM at one instant; taken before and after each measurement."""
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {"load_avg": load, "ram": _meminfo()}


def busy_flag(before: dict[str, Any], after: dict[str, Any], threads: int) -> bool | None:
    """``busy``: the 1-minute load average, before or after, exceeded the intra-op thread count.

    The machine then ran more runnable threads than this measurement asked cores for, so other work
    competed for them.  The "after" value includes the measurement's own threads.  None if unreadable.
    """
    loads = [s["load_avg"][0] for s in (before, after) if s.get("load_avg")]
    return (max(loads) > threads) if loads else None


def set_threads(threads: int, interop: int | None = None) -> dict[str, int]:
    """Set torch's intra-op (and, if not yet fixed, inter-op) thread counts; return what is in force."""
    import torch

    if not isinstance(threads, int) or threads < 1:
        raise VlpbenchError(
            f"invalid thread count {threads!r}; accepted: an integer >= 1 (this machine has {os.cpu_count()} CPUs)"
        )
    torch.set_num_threads(threads)
    if interop is not None and interop != torch.get_num_interop_threads():
        try:
            torch.set_num_interop_threads(interop)
        except RuntimeError as exc:  # torch allows this once, before any parallel work
            raise VlpbenchError(f"cannot set inter-op threads to {interop} in this process: {exc}") from exc
    return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()}


def _version(mod: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(mod)
    except PackageNotFoundError:
        return None


def capture(device: str = "cpu", dtype: str = "float32", amp: bool = False) -> dict[str, Any]:
    import torch

    cuda = str(device).startswith("cuda")
    env: dict[str, Any] = {
        "vlpbench": vlpbench.__version__,
        "git": git_state(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "transformers": _version("transformers"),
        "timm": _version("timm"),
        "device": str(device),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()},
        "dtype": dtype,
        "autocast": bool(amp),
        "allocator": {k: os.environ.get(k) for k in ALLOCATOR_ENV},
        "host": socket.gethostname(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "os": platform.platform(),
        "numpy": _version("numpy"),
        "cpu_freq": _cpu_frequency(),
    }
    if cuda:
        idx = torch.device(device).index or 0
        env.update(
            {
                "gpu": torch.cuda.get_device_name(idx),
                "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version(),
                "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
                "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
                "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            }
        )
    else:
        env.update(
            {
                "gpu": None,
                "cuda": torch.version.cuda,
                "cudnn": None,
                "tf32_matmul": None,
                "tf32_cudnn": None,
                "cudnn_benchmark": None,
            }
        )
    return env

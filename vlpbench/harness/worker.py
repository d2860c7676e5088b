"""Subprocess entry point: ``python -m vlpbench.harness.worker OUT.json`` with a RunSpec as JSON on stdin.

The record is checked against the schema and written atomically to ``OUT.json``; a user mistake (or an
allocation the machine cannot satisfy, which :func:`run_spec` reports as one) goes, as
``{"error": message}``, to :func:`error_path` beside it, never to ``OUT.json`` itself, so a run directory
never holds a non-record under a record's name.

The worker follows its parent (``VLPBENCH_PARENT_PID``): on Linux the kernel kills it when the parent
dies (``PR_SET_PDEATHSIG``); elsewhere a watchdog thread checks once a second.  A parent killed alone
therefore never leaves a measurement running.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import time

from vlpbench.errors import VlpbenchError
from vlpbench.store import atomic_write_json, validate_record

PR_SET_PDEATHSIG = 1


def error_path(out: str) -> str:
    """Where the worker writing ``out`` puts its error: a hidden file beside it (never read as a record)."""
    head, tail = os.path.split(out)
    return os.path.join(head, f".{tail}.error")


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def follow_parent() -> None:
    """Die with the parent named by ``VLPBENCH_PARENT_PID`` (no-op when it is not set)."""
    parent = int(os.environ.get("VLPBENCH_PARENT_PID", "0") or 0)
    if not parent:
        return
    armed = False
    if sys.platform.startswith("linux"):
        try:
            armed = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:  # the parent died before the death signal was armed
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def main(argv: list[str]) -> int:
    from .runner import RunSpec, run_spec

    follow_parent()
    out = argv[1]
    spec = RunSpec.from_dict(json.loads(sys.stdin.read()))
    try:
        record = validate_record(run_spec(spec, isolated=True))
    except VlpbenchError as exc:  # a user mistake, or an allocation the machine cannot satisfy (run_spec)
        atomic_write_json(error_path(out), {"error": str(exc)})
        return 2
    atomic_write_json(out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

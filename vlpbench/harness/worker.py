"""Subprocess entry point: ``python -m vlpbench.harness.worker OUT.json`` with a RunSpec as JSON on stdin."""

from __future__ import annotations

import json
import sys

from vlpbench.errors import VlpbenchError
from vlpbench.store import atomic_write_json


def main(argv: list[str]) -> int:
    from .runner import RunSpec, run_spec

    out = argv[1]
    try:
        spec = RunSpec.from_dict(json.loads(sys.stdin.read()))
        record = run_spec(spec, isolated=True)
    except VlpbenchError as exc:
        atomic_write_json(out, {"error": str(exc)})
        return 2
    atomic_write_json(out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

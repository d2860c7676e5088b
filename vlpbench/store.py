"""The results store: one JSON record per measured configuration, in a run directory.

Layout::

    reports/runs/<UTC timestamp>-<label>/
        run.json            what the run is (schema, label, created, the command line)
        <key>.json          one record per configuration; <key> is a hash of the configuration
        .<key>.json.tmp-*   transient: a record being written (never read; removed on failure)

Records are written atomically (temporary file in the same directory, fsync, ``os.replace``), so a
killed run never leaves a half-written record, and a run started again with the same directory
skips every configuration whose record is already complete.  See README "Result schema".
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from .errors import VlpbenchError

SCHEMA = "vlpbench.result/1"
SCHEMA_NAME, SCHEMA_VERSION = SCHEMA.split("/")
RUN_FILE = "run.json"
KINDS = ("latency", "accuracy")
REQUIRED = ("schema", "kind", "key", "arch", "config", "workload", "env")
DEFAULT_ROOT = Path("reports") / "runs"

PathLike = Union[str, Path]


def config_key(config: Dict[str, Any]) -> str:
    """A stable 16-hex-digit key for a configuration (sorted-key JSON, sha256)."""
    blob = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    The bytes go to a temporary file in the same directory, are fsynced, and replace ``path`` with
    ``os.replace``; on any failure the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_json(path: PathLike, obj: Any) -> Path:
    """:func:`atomic_write_text` of ``obj`` as JSON (serialised first, so a bad object writes nothing)."""
    return atomic_write_text(path, json.dumps(obj, indent=1, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def validate_record(rec: Any, source: str = "record") -> Dict[str, Any]:
    if not isinstance(rec, dict):
        raise VlpbenchError(f"{source}: not a result record (expected a JSON object)")
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        raise VlpbenchError(f"{source}: result record lacks {', '.join(missing)}")
    name, _, version = str(rec["schema"]).partition("/")
    if name != SCHEMA_NAME:
        raise VlpbenchError(f"{source}: schema {rec['schema']!r} is not a vlpbench result; accepted: {SCHEMA}")
    if version != SCHEMA_VERSION:
        raise VlpbenchError(f"{source}: schema version {rec['schema']!r} is not supported by this vlpbench; accepted: {SCHEMA}")
    if rec["kind"] not in KINDS:
        raise VlpbenchError(f"{source}: kind {rec['kind']!r} unknown; accepted: {', '.join(KINDS)}")
    if rec["kind"] == "latency":
        for k in ("stages", "total"):
            if k not in rec:
                raise VlpbenchError(f"{source}: latency record lacks {k}")
    return rec


class RunDir:
    """A run directory holding result records."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, label: str = "run", root: PathLike = DEFAULT_ROOT, meta: Optional[Dict[str, Any]] = None) -> "RunDir":
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", label):
            raise VlpbenchError(f"invalid run label {label!r}; accepted: letters, digits, '.', '_', '-' (at most 64)")
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = Path(root) / f"{stamp}-{label}"
        n = 1
        while path.exists():
            n += 1
            path = Path(root) / f"{stamp}-{label}-{n}"
        run = cls(path)
        run.init(label, meta)
        return run

    @classmethod
    def open(cls, path: PathLike, create: bool = False, label: Optional[str] = None,
             meta: Optional[Dict[str, Any]] = None) -> "RunDir":
        """Open an existing run directory, or (``create=True``) make it if it does not exist."""
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise VlpbenchError(f"run directory {str(p)!r} is a file; accepted: a directory")
        run = cls(p)
        if not (p / RUN_FILE).exists():
            if not create:
                raise VlpbenchError(f"{str(p)!r} is not a vlpbench run directory (no {RUN_FILE})")
            if p.exists() and any(p.iterdir()):
                raise VlpbenchError(f"{str(p)!r} exists and is not a vlpbench run directory; give an empty or new directory")
            run.init(label or p.name, meta)
        return run

    def init(self, label: str, meta: Optional[Dict[str, Any]] = None) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        info = {"schema": SCHEMA, "label": label,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **(meta or {})}
        atomic_write_json(self.path / RUN_FILE, info)

    @property
    def info(self) -> Dict[str, Any]:
        return json.loads((self.path / RUN_FILE).read_text())

    def record_path(self, key: str) -> Path:
        return self.path / f"{key}.json"

    def has(self, key: str) -> bool:
        """True if a complete, valid record for ``key`` exists (a corrupt one counts as absent)."""
        p = self.record_path(key)
        if not p.exists():
            return False
        try:
            validate_record(json.loads(p.read_text()), str(p))
        except (json.JSONDecodeError, VlpbenchError, UnicodeDecodeError):
            return False
        return True

    def write(self, record: Dict[str, Any]) -> Path:
        validate_record(record)
        return atomic_write_json(self.record_path(record["key"]), record)

    def record_files(self) -> List[Path]:
        return sorted(p for p in self.path.glob("*.json") if p.name != RUN_FILE and not p.name.startswith("."))

    def records(self, strict: bool = True) -> List[Dict[str, Any]]:
        """All records.  ``strict``: a corrupt file raises an error naming it; else it is skipped."""
        out = []
        for p in self.record_files():
            try:
                rec = json.loads(p.read_text())
                out.append(validate_record(rec, str(p)))
            except json.JSONDecodeError as exc:
                if strict:
                    raise VlpbenchError(f"{p}: corrupt result file ({exc.msg} at line {exc.lineno}); delete it to re-measure") from exc
            except VlpbenchError:
                if strict:
                    raise
        return out


def load_records(run_dirs: Union[PathLike, Sequence[PathLike]], kind: Optional[str] = None) -> List[Dict[str, Any]]:
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    records: List[Dict[str, Any]] = []
    for d in run_dirs:
        run = RunDir.open(d)
        recs = run.records()
        for r in recs:
            r.setdefault("_run", str(run.path))
        records.extend(recs)
    if not records:
        raise VlpbenchError(f"no results in {', '.join(str(d) for d in run_dirs)}")
    if kind is not None:
        records = [r for r in records if r["kind"] == kind]
    return records


def _flat_workload(w: Dict[str, Any]) -> Dict[str, Any]:
    out = {}
    for k, v in w.items():
        out[f"workload.{k}"] = "x".join(map(str, v)) if isinstance(v, (list, tuple)) else v
    return out


def to_frame(records: Iterable[Dict[str, Any]], level: str = "stage"):
    """A tidy DataFrame: one row per (record, stage) for ``level="stage"``, one per record for ``"record"``.

    Stage rows carry median/iqr/p90 and the raw samples; a ``total`` row and an ``unaccounted`` row are
    included for each latency record so the per-stage rows plus ``unaccounted`` add up to ``total``.
    """
    import pandas as pd

    if level not in ("stage", "record"):
        raise VlpbenchError(f"invalid frame level {level!r}; accepted: stage, record")
    rows = []
    for r in records:
        base = {
            "run": r.get("_run"), "key": r["key"], "kind": r["kind"], "arch": r["arch"],
            "component": r.get("component"), "device": r["env"].get("device"),
            "threads": (r["env"].get("threads") or {}).get("intra_op"),
            "params": (r.get("params") or {}).get("total"), "flops": (r.get("flops") or {}).get("total"),
            "taxonomy_class": (r.get("taxonomy") or {}).get("class"),
            **_flat_workload(r.get("workload", {})),
        }
        if r["kind"] != "latency" or level == "record":
            row = dict(base)
            if r["kind"] == "latency":
                row.update({"total_median_ms": r["total"]["median_ms"], "total_iqr_ms": r["total"]["iqr_ms"],
                            "unaccounted_ms": r.get("unaccounted_ms"), "noisy": r["total"].get("noisy")})
                for g, st in (r.get("groups") or {}).items():
                    row[f"{g}_median_ms"] = st["median_ms"]
            else:
                row.update({f"metric.{k}": v for k, v in (r.get("metrics") or {}).items() if not isinstance(v, (dict, list))})
            rows.append(row)
            continue
        for st in r["stages"]:
            rows.append({**base, "stage": st["name"], "group": st["group"], "leaf": st["leaf"],
                         "median_ms": st["median_ms"], "iqr_ms": st["iqr_ms"], "p90_ms": st["p90_ms"],
                         "n": st["n"], "samples_ms": st.get("samples_ms")})
        rows.append({**base, "stage": "unaccounted", "group": "other", "leaf": True,
                     "median_ms": r.get("unaccounted_ms"), "iqr_ms": (r.get("unaccounted") or {}).get("iqr_ms"),
                     "p90_ms": (r.get("unaccounted") or {}).get("p90_ms"), "n": (r.get("unaccounted") or {}).get("n"),
                     "samples_ms": (r.get("unaccounted") or {}).get("samples_ms")})
        rows.append({**base, "stage": "total", "group": "total", "leaf": False,
                     "median_ms": r["total"]["median_ms"], "iqr_ms": r["total"]["iqr_ms"],
                     "p90_ms": r["total"]["p90_ms"], "n": r["total"]["n"], "samples_ms": r["total"].get("samples_ms")})
    return pd.DataFrame(rows)


def load_frame(run_dirs: Union[PathLike, Sequence[PathLike]], level: str = "stage", kind: Optional[str] = None):
    return to_frame(load_records(run_dirs, kind=kind), level=level)

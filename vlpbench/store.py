"""The results store: one JSON record per measured configuration, in a run directory.

Layout::

    reports/runs/<UTC timestamp>-<label>/
        run.json            what the run is (schema, label, created, the command line)
        <key>.json          one record per configuration; <key> is a hash of the configuration
        .<key>.json.tmp-*   transient: a record being written (never read; removed on failure)
        .<key>.lock         transient: the configuration is being measured by a live process (flock)

Records are written atomically (temporary file in the same directory, fsync, ``os.replace``), so a
killed run never leaves a half-written record, and a run started again with the same directory
skips every configuration whose record is already complete.  A configuration being measured is
*claimed* (:meth:`RunDir.claim`, an ``flock`` on its lock file, released by the kernel when the
process dies), so two processes measuring into one directory never measure the same configuration
twice.  Records are checked against :mod:`vlpbench.schema` when written and when read.  See README
"Result schema" and "Guarantees".
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from . import schema
from .errors import VlpbenchError
from .schema import KINDS, SCHEMA, SCHEMA_NAME, SCHEMA_VERSION, ResultRecord  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    import pandas as pd

RUN_FILE = "run.json"
DEFAULT_ROOT = Path("reports") / "runs"

PathLike = Union[str, Path]


def config_key(config: dict[str, Any]) -> str:
    """A stable 16-hex-digit key for a configuration (sorted-key JSON, sha256)."""
    blob = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _file_mode() -> int:
    """0666 less the process umask: the mode ``open()`` would give a new file (mkstemp gives 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_text(path: PathLike, text: str, exclusive: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically: see :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"), exclusive=exclusive)


def atomic_write_bytes(path: PathLike, data: bytes, exclusive: bool = False) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    The bytes go to a temporary file in the same directory, are fsynced, and replace ``path`` with
    ``os.replace``; on any failure the temporary file is removed and ``path`` is untouched.  The file
    gets the usual mode (0666 less the umask).  ``exclusive``: never replace an existing ``path``
    (the new file is linked in only where none exists; :class:`FileExistsError` otherwise).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)
            os.unlink(tmp)
        else:
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


def validate_record(rec: Any, source: str = "record") -> ResultRecord:
    """``rec`` checked against the record schema (:func:`vlpbench.schema.check`); errors name ``source``."""
    return schema.check(rec, source)


def read_record(path: PathLike) -> ResultRecord:
    """The record in ``path``, checked: its text, its JSON, its schema and that it is stored under its key."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise VlpbenchError(
            f"{p}: not a result record (not UTF-8 text: byte {exc.start}); delete it to re-measure"
        ) from exc
    except OSError as exc:
        raise VlpbenchError(f"{p}: cannot read ({exc.strerror})") from exc
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise VlpbenchError(
            f"{p}: corrupt result file ({exc.msg} at line {exc.lineno}); delete it to re-measure"
        ) from exc
    checked = validate_record(rec, str(p))
    schema.check_key(checked, p.stem, str(p))
    return checked


def check_output_dir(path: PathLike, what: str) -> Path:
    """``path`` if a directory can be created (or written) there, else one error naming it and why.

    Checked before any work starts: a path that is a regular file, lies under one, or whose nearest
    existing directory is not writable is refused.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise VlpbenchError(f"{what} {str(p)!r} is a regular file; accepted: a directory (new or existing)")
    probe = p
    while not probe.exists():
        if probe.is_symlink():
            raise VlpbenchError(
                f"{what} {str(p)!r} goes through a dangling link {str(probe)!r}; accepted: a "
                "directory path that can be created"
            )
        probe = probe.parent
    if not probe.is_dir():
        raise VlpbenchError(
            f"{what} {str(p)!r} lies under the regular file {str(probe)!r}; accepted: a directory "
            "path that can be created"
        )
    try:  # os.access is no answer for root or a read-only mount: try it
        fd, tmp = tempfile.mkstemp(prefix=".vlpbench-probe-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        where = "is" if probe == p else f"would be created in {str(probe)!r}, which is"
        raise VlpbenchError(
            f"{what} {str(p)!r} {where} not writable ({exc.strerror}); accepted: a directory you can write to"
        ) from exc
    return p


class RunDir:
    """A run directory holding result records."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, label: str = "run", root: PathLike = DEFAULT_ROOT, meta: dict[str, Any] | None = None) -> RunDir:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", label):
            raise VlpbenchError(f"invalid run label {label!r}; accepted: letters, digits, '.', '_', '-' (at most 64)")
        check_output_dir(root, "runs folder")
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        Path(root).mkdir(parents=True, exist_ok=True)
        n = 1
        while True:  # mkdir, not exists(): two runs started in the same second get two directories
            path = Path(root) / (f"{stamp}-{label}" if n == 1 else f"{stamp}-{label}-{n}")
            try:
                path.mkdir()
                break
            except FileExistsError:
                n += 1
        run = cls(path)
        run.init(label, meta)
        return run

    @classmethod
    def open(
        cls, path: PathLike, create: bool = False, label: str | None = None, meta: dict[str, Any] | None = None
    ) -> RunDir:
        """Open an existing run directory, or (``create=True``) make it if it does not exist.

        Several processes may create the same new directory at once: hidden entries (another
        process's temporary files and locks) do not make a directory "not empty", and the first
        ``run.json`` linked in stands (see :meth:`init`).
        """
        p = Path(path)
        if create:
            check_output_dir(p, "run directory")
        elif p.exists() and not p.is_dir():
            raise VlpbenchError(f"run directory {str(p)!r} is a file; accepted: a directory")
        run = cls(p)
        if not (p / RUN_FILE).exists():
            if not create:
                raise VlpbenchError(f"{str(p)!r} is not a vlpbench run directory (no {RUN_FILE})")
            if p.exists() and any(not c.name.startswith(".") for c in p.iterdir()) and not (p / RUN_FILE).exists():
                raise VlpbenchError(
                    f"{str(p)!r} exists and is not a vlpbench run directory; accepted: an empty or new directory"
                )
            run.init(label or p.name, meta)
        run.info  # noqa: B018  (a garbage run.json is refused here, naming the file)
        return run

    def init(self, label: str, meta: dict[str, Any] | None = None) -> None:
        """Write ``run.json`` unless one exists (a concurrent creator's stands; this is not an error)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VlpbenchError(f"cannot create run directory {str(self.path)!r}: {exc.strerror}") from exc
        info = {
            "schema": SCHEMA,
            "label": label,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **(meta or {}),
        }
        try:
            atomic_write_text(
                self.path / RUN_FILE, json.dumps(info, indent=1, default=_jsonable) + "\n", exclusive=True
            )
        except FileExistsError:
            pass

    @property
    def info(self) -> dict[str, Any]:
        p = self.path / RUN_FILE
        try:
            info = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise VlpbenchError(
                f"{p}: corrupt run description ({type(exc).__name__}); accepted: the run.json "
                "vlpbench writes (a JSON object with schema, label, created)"
            ) from exc
        if not isinstance(info, dict) or str(info.get("schema", "")).partition("/")[0] != SCHEMA_NAME:
            raise VlpbenchError(f"{p}: not a vlpbench run description; accepted: a JSON object with schema {SCHEMA!r}")
        return info

    def record_path(self, key: str) -> Path:
        return self.path / f"{key}.json"

    def has(self, key: str) -> bool:
        """True if a complete, valid record for ``key`` exists (a corrupt one counts as absent)."""
        if not self.record_path(key).exists():
            return False
        try:
            read_record(self.record_path(key))
        except VlpbenchError:
            return False
        return True

    def read(self, key: str) -> ResultRecord:
        """The record of ``key``; a lock file a killed measurer of it left behind is removed on the way."""
        rec = read_record(self.record_path(key))
        if (self.path / f".{key}.lock").exists():
            with self.claim(key):  # taken only if nobody holds it; leaving the claim removes the file
                pass
        return rec

    def write(self, record: dict[str, Any]) -> Path:
        validate_record(record)
        return atomic_write_json(self.record_path(record["key"]), record)

    def record_files(self) -> list[Path]:
        return sorted(p for p in self.path.glob("*.json") if p.name != RUN_FILE and not p.name.startswith("."))

    def records(self, strict: bool = True) -> list[ResultRecord]:
        """All records.  ``strict``: a corrupt file raises an error naming it; else it is skipped."""
        out = []
        for p in self.record_files():
            try:
                out.append(read_record(p))
            except VlpbenchError:
                if strict:
                    raise
        return out

    @contextlib.contextmanager
    def claim(self, key: str, wait: bool = False) -> Iterator[bool]:
        """Hold the claim on ``key`` while measuring it: yields True if this process holds it, else False.

        The claim is an exclusive ``flock`` on ``.<key>.lock``; the kernel releases it when the holder
        dies, so a killed run never leaves a stale claim.  ``wait``: block until the holder is done.
        Holding the claim, leftovers of a killed writer of this key (its temporary files) are removed.
        """
        lock = self.path / f".{key}.lock"
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, _file_mode())
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    raise
                yield False
                return
            try:
                same = os.stat(lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous holder removed the file between our open and lock: take a fresh one
        try:
            for pattern in (f".{key}.json.tmp-*", f".{key}.json.error*"):
                for stale in self.path.glob(pattern):
                    stale.unlink(missing_ok=True)
            yield True
        finally:
            lock.unlink(missing_ok=True)
            os.close(fd)


def load_records(run_dirs: Union[PathLike, Sequence[PathLike]], kind: str | None = None) -> list[ResultRecord]:
    """Every record of ``run_dirs`` (each checked against the schema), each tagged with its ``_run``."""
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    records: list[ResultRecord] = []
    for d in run_dirs:
        run = RunDir.open(d)
        recs = run.records()
        for r in recs:
            r.setdefault("_run", str(run.path))  # type: ignore[typeddict-item]
        records.extend(recs)
    if not records:
        raise VlpbenchError(f"no results in {', '.join(str(d) for d in run_dirs)}")
    if kind is not None:
        records = [r for r in records if r["kind"] == kind]
    return records


def _flat_workload(w: dict[str, Any]) -> dict[str, Any]:
    """``workload.*`` columns; an image size also gives numeric ``workload.image_height`` / ``image_width``."""
    out: dict[str, Any] = {}
    for k, v in w.items():
        out[f"workload.{k}"] = "x".join(map(str, v)) if isinstance(v, (list, tuple)) else v
    size = w.get("image_size")
    if isinstance(size, (list, tuple)) and len(size) == 2:
        out["workload.image_height"], out["workload.image_width"] = int(size[0]), int(size[1])
    return out


def _stats_cols(st: dict[str, Any], median: float | None = None) -> dict[str, Any]:
    ci = st.get("ci95_ms") or [None, None]
    return {
        "median_ms": st.get("median_ms") if median is None else median,
        "iqr_ms": st.get("iqr_ms"),
        "p90_ms": st.get("p90_ms"),
        "p95_ms": st.get("p95_ms"),
        "ci95_low_ms": ci[0],
        "ci95_high_ms": ci[1],
        "cv": st.get("cv"),
        "noisy": st.get("noisy"),
        "n": st.get("n"),
    }


def _base_cols(r: dict[str, Any]) -> dict[str, Any]:
    env = r.get("env") or {}
    return {
        "run": r.get("_run"),
        "key": r["key"],
        "kind": r["kind"],
        "arch": r["arch"],
        "component": r.get("component"),
        "device": env.get("device"),
        "threads": (env.get("threads") or {}).get("intra_op"),
        "busy": env.get("busy"),
        "params": (r.get("params") or {}).get("total"),
        "flops": (r.get("flops") or {}).get("total"),
        "taxonomy_class": (r.get("taxonomy") or {}).get("class"),
        **_flat_workload(r.get("workload", {})),
    }


def _stage_entries(r: dict[str, Any]) -> list[tuple[Any, ...]]:
    """(name, group, leaf, stats, median override) for every stage, then ``unaccounted`` and ``total``."""
    un = r.get("unaccounted") or {}
    return [(s["name"], s["group"], s["leaf"], s, None) for s in r["stages"]] + [
        ("unaccounted", "other", True, un, r.get("unaccounted_ms")),
        ("total", "total", False, r["total"], None),
    ]


def to_frame(records: Iterable[dict[str, Any]], level: str = "stage") -> pd.DataFrame:
    """A tidy DataFrame: one row per (record, stage) for ``level="stage"``, one per record for ``"record"``.

    Stage rows carry n, median, IQR, p90, p95, the 95% CI of the median, CV and ``noisy``; every latency
    record also gets an ``unaccounted`` row (end-to-end minus the leaf stages, per iteration) and a
    ``total`` row.  Medians do not add: the leaf rows' medians plus ``unaccounted`` come near ``total``
    but not exactly.  What adds up exactly is each iteration: in :func:`to_samples` the leaf samples
    plus ``unaccounted`` of one iteration equal that iteration's ``total``.  Raw samples are not a column
    here; :func:`load_samples` gives them as a long frame.
    """
    import pandas as pd

    if level not in ("stage", "record"):
        raise VlpbenchError(f"invalid frame level {level!r}; accepted: stage, record")
    rows = []
    for r in records:
        base = _base_cols(r)
        if r["kind"] != "latency" or level == "record":
            row = dict(base)
            if r["kind"] == "latency":
                row.update(
                    {
                        "total_median_ms": r["total"]["median_ms"],
                        "total_iqr_ms": r["total"]["iqr_ms"],
                        "total_p95_ms": r["total"].get("p95_ms"),
                        "unaccounted_ms": r.get("unaccounted_ms"),
                        "noisy": r["total"].get("noisy"),
                        "uninstrumented_median_ms": (r.get("uninstrumented") or {}).get("median_ms"),
                    }
                )
                for g, st in (r.get("groups") or {}).items():
                    row[f"{g}_median_ms"] = st["median_ms"]
            else:
                row.update(
                    {f"metric.{k}": v for k, v in (r.get("metrics") or {}).items() if not isinstance(v, (dict, list))}
                )
            rows.append(row)
            continue
        for name, group, leaf, st, med in _stage_entries(r):
            rows.append({**base, "stage": name, "group": group, "leaf": leaf, **_stats_cols(st, med)})
    return pd.DataFrame(rows)


def to_samples(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The raw samples as a long DataFrame: one row per (record, stage, iteration) with ``ms``.

    Stages as in :func:`to_frame` (every stage, ``unaccounted``, ``total``) plus ``uninstrumented``,
    the end-to-end time of the iterations without stage markers (its own iteration numbers: they
    alternate with the instrumented ones).  Within one instrumented iteration the leaf stages plus
    ``unaccounted`` sum to ``total``.
    """
    import pandas as pd

    rows = []
    for r in records:
        if r["kind"] != "latency":
            continue
        ident = {"run": r.get("_run"), "key": r["key"], "arch": r["arch"], "component": r.get("component")}
        entries = _stage_entries(r)
        if r.get("uninstrumented"):
            entries.append(("uninstrumented", "total", False, r["uninstrumented"], None))
        for name, group, leaf, st, _ in entries:
            for i, v in enumerate(st.get("samples_ms") or []):
                rows.append({**ident, "stage": name, "group": group, "leaf": leaf, "iteration": i, "ms": v})
    return pd.DataFrame(rows, columns=["run", "key", "arch", "component", "stage", "group", "leaf", "iteration", "ms"])


def load_frame(
    run_dirs: Union[PathLike, Sequence[PathLike]], level: str = "stage", kind: str | None = None
) -> pd.DataFrame:
    """:func:`to_frame` of the records in ``run_dirs`` (see it for the columns and what adds up)."""
    return to_frame([dict(r) for r in load_records(run_dirs, kind=kind)], level=level)


def load_samples(run_dirs: Union[PathLike, Sequence[PathLike]]) -> pd.DataFrame:
    """:func:`to_samples` of the latency records in ``run_dirs``: every raw sample, one row each."""
    return to_samples([dict(r) for r in load_records(run_dirs, kind="latency")])

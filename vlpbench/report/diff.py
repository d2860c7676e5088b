"""Compare two runs configuration by configuration: medians, ratio B/A, Mann-Whitney U on raw samples.

Configurations are matched by record key (same spec); a record left over is matched by
(arch, component, workload) when exactly one record on each side has it, so a change in a
config option (the thing being tested) still pairs up.  A difference is *significant* when the
two-sided Mann-Whitney U p-value on the raw per-iteration totals is below ``alpha``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlpbench.errors import VlpbenchError
from vlpbench.store import PathLike, load_records

from .tables import Record, env_of, fmt, label, latency

# Environment facts whose difference makes two runs' numbers come from different machines / setups.
ENV_FACTS = ("host", "device", "gpu", "cpu", "threads", "torch", "dtype", "allocator")


@dataclass
class Row:
    config: str
    stage: str  # "total" or a leaf stage name
    a_ms: float
    b_ms: float
    ratio: float  # median B / median A
    p: float | None  # Mann-Whitney U two-sided p-value (None: too few samples)
    significant: bool
    matched_by: str


@dataclass
class Diff:
    rows: list[Row]
    only_a: list[str]
    only_b: list[str]
    warnings: list[str] = field(default_factory=list)
    alpha: float = 0.05

    def slowdowns(self, pct: float) -> list[Row]:
        """Significant totals slower in B than A by more than ``pct`` percent."""
        return [r for r in self.rows if r.stage == "total" and r.significant and r.ratio > 1 + pct / 100.0]


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided Mann-Whitney U p-value (scipy); None if either side has fewer than 2 samples."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(np.asarray(a, float), np.asarray(b, float), alternative="two-sided").pvalue)


def _loose_key(r: Record) -> str:
    w = {k: v for k, v in (r.get("workload") or {}).items() if not k.startswith("measured.")}
    return json.dumps([r["arch"], r.get("component"), w], sort_keys=True, default=str)


def match(
    a: Sequence[Record], b: Sequence[Record]
) -> tuple[list[tuple[Record, Record, str]], list[Record], list[Record]]:
    """Pairs (A, B, how), then records only in A and only in B."""
    bk = {r["key"]: r for r in b}
    pairs, rest_a = [], []
    for r in a:
        if r["key"] in bk:
            pairs.append((r, bk.pop(r["key"]), "key"))
        else:
            rest_a.append(r)
    rest_b = list(bk.values())
    by_a: dict[str, list[Record]] = {}
    by_b: dict[str, list[Record]] = {}
    for r in rest_a:
        by_a.setdefault(_loose_key(r), []).append(r)
    for r in rest_b:
        by_b.setdefault(_loose_key(r), []).append(r)
    only_a, only_b = [], []
    for k, ra in by_a.items():
        rb = by_b.pop(k, [])
        if len(ra) == 1 and len(rb) == 1:
            pairs.append((ra[0], rb[0], "arch+workload"))
        else:
            only_a.extend(ra)
            only_b.extend(rb)
    for rb in by_b.values():
        only_b.extend(rb)
    return pairs, only_a, only_b


def env_warnings(a: Sequence[Record], b: Sequence[Record]) -> list[str]:
    """One line per environment fact that differs between the runs, naming both values."""
    out = []
    for fact in ENV_FACTS:
        va = sorted({str(env_of(r)[fact]) for r in a})
        vb = sorted({str(env_of(r)[fact]) for r in b})
        if va != vb:
            out.append(
                f"runs differ in {fact}: A {', '.join(va)} vs B {', '.join(vb)}; differences may be the machine, "
                "not the change"
            )
    return out


def _row(config: str, stage: str, sa: dict[str, Any], sb: dict[str, Any], how: str, alpha: float) -> Row:
    a_ms, b_ms = float(sa["median_ms"]), float(sb["median_ms"])
    ratio = b_ms / a_ms if a_ms > 0 else (1.0 if b_ms == 0 else float("inf"))
    p = mann_whitney(sa.get("samples_ms") or [], sb.get("samples_ms") or [])
    return Row(config, stage, a_ms, b_ms, ratio, p, p is not None and p < alpha, how)


def diff_records(a: Sequence[Record], b: Sequence[Record], alpha: float = 0.05, stages: bool = False) -> Diff:
    if not 0 < alpha < 1:
        raise VlpbenchError(f"invalid alpha {alpha!r}; accepted: a number between 0 and 1")
    la, lb = latency(a), latency(b)
    for name, recs, src in (("A", la, a), ("B", lb, b)):
        if not recs:
            runs = sorted({str(r.get("_run")) for r in src})
            raise VlpbenchError(f"run {name} ({', '.join(runs)}) holds no latency records to compare")
    pairs, only_a, only_b = match(la, lb)
    rows = []
    for ra, rb, how in pairs:
        cfg = label(ra) if how == "key" or label(ra) == label(rb) else f"{label(ra)} vs {label(rb)}"
        rows.append(_row(cfg, "total", ra["total"], rb["total"], how, alpha))
        if stages:
            sb = {s["name"]: s for s in rb["stages"] if s["leaf"]}
            for s in ra["stages"]:
                if s["leaf"] and s["name"] in sb:
                    rows.append(_row(cfg, s["name"], s, sb[s["name"]], how, alpha))
    warnings = env_warnings(la, lb)
    weak = sorted(
        {
            (len(ra["total"].get("samples_ms") or []), len(rb["total"].get("samples_ms") or []))
            for ra, rb, _ in pairs
            if min_p(len(ra["total"].get("samples_ms") or []), len(rb["total"].get("samples_ms") or [])) >= alpha
        }
    )
    for na, nb in weak:
        warnings.append(
            f"{na} vs {nb} samples cannot reach p < {alpha} (smallest possible two-sided p is "
            f"{min_p(na, nb):.3g}); measure more iterations to test significance"
        )
    return Diff(rows, [label(r) for r in only_a], [label(r) for r in only_b], warnings, alpha)


def min_p(na: int, nb: int) -> float:
    """Smallest two-sided Mann-Whitney U p-value possible with na and nb samples (exact, no ties)."""
    from math import comb

    return 1.0 if na < 1 or nb < 1 else min(1.0, 2.0 / comb(na + nb, na))


def diff_runs(run_a: PathLike, run_b: PathLike, alpha: float = 0.05, stages: bool = False) -> Diff:
    return diff_records(load_records(run_a), load_records(run_b), alpha=alpha, stages=stages)


COLUMNS = ["configuration", "stage", "A median ms", "B median ms", "B/A", "Mann-Whitney p", "significant", "matched by"]


def table_rows(d: Diff) -> list[list[str]]:
    return [
        [
            r.config,
            r.stage,
            fmt(r.a_ms),
            fmt(r.b_ms),
            f"{r.ratio:.3f}",
            "-" if r.p is None else f"{r.p:.3g}",
            "yes" if r.significant else "no",
            r.matched_by,
        ]
        for r in d.rows
    ]


def format_text(d: Diff) -> str:
    """An aligned plain-text table, then the configurations present in only one run."""
    rows = [COLUMNS] + table_rows(d)
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"significant: two-sided Mann-Whitney U on raw per-iteration samples, p < {d.alpha}")
    for name, only in (("A", d.only_a), ("B", d.only_b)):
        if only:
            lines.append(f"only in run {name} ({len(only)}):")
            lines.extend(f"  {c}" for c in only)
    return "\n".join(lines)

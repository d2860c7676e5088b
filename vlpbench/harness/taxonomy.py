"""Assign the ViLT taxonomy class from measured VE / TE / MI medians.

The rule (checked in this order):
  (d) MI is the largest of the three;
  (c) VE is the largest and MI exceeds TE;
  (b) VE and TE are within ``factor`` of each other and both exceed MI;
  (a) VE is the largest, TE exceeds MI, and VE exceeds TE by more than ``factor``.
Anything else (e.g. TE the largest by more than ``factor``) is ``unclassified``.
"""

from __future__ import annotations

from typing import Any

DEFAULT_FACTOR = 3.0
RULE = (
    "(d) MI largest; (c) VE largest and MI > TE; (b) VE and TE within factor of each other, "
    "both > MI; (a) VE largest, TE > MI, VE > factor x TE"
)


def classify(
    ve_ms: float, te_ms: float, mi_ms: float, factor: float = DEFAULT_FACTOR, paper_class: str | None = None
) -> dict[str, Any]:
    if factor < 1:
        raise ValueError(f"invalid taxonomy factor {factor!r}; accepted: a number >= 1")
    ve, te, mi = float(ve_ms), float(te_ms), float(mi_ms)
    total = ve + te + mi
    if mi > ve and mi > te:
        cls = "d"
    elif ve >= te and mi > te and ve > mi:
        cls = "c"
    elif ve > mi and te > mi and max(ve, te) <= factor * max(min(ve, te), 1e-12):
        cls = "b"
    elif ve > te > mi and ve > factor * te:
        cls = "a"
    else:
        cls = "unclassified"
    share = (lambda v: v / total) if total > 0 else (lambda v: 0.0)
    return {
        "class": cls,
        "VE_ms": ve,
        "TE_ms": te,
        "MI_ms": mi,
        "VE_share": share(ve),
        "TE_share": share(te),
        "MI_share": share(mi),
        "factor": factor,
        "rule": RULE,
        "paper_class": paper_class,
        "matches_paper": (cls == paper_class) if paper_class else None,
    }

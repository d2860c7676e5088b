"""The contract between models and the harness: a *stage function*.

Every model's ``forward`` takes a keyword argument ``stage`` and wraps each timed piece
of work in ``with stage("rpn.nms"):``.  A model never imports the harness: it only calls
the function it is given.  The default, :func:`null_stage`, costs almost nothing, so the
same forward runs uninstrumented.

Names are dotted and hierarchical (``visual.rpn.nms``).  Each stage belongs to a *group*:

* ``VE`` visual embedder, ``TE`` text embedder, ``MI`` modality interaction,
* ``head`` task heads, ``other`` anything else.

A composite model hands each part a *scoped* stage function, so the part writes
``stage("backbone")`` and the harness records ``visual.backbone`` in group ``VE``.
A part may override the group of one stage (CLIP's dual-encoder interaction runs its
image tower under ``VE`` and only the dot product under ``MI``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any, Optional, Protocol

GROUPS = ("VE", "TE", "MI", "head", "other")

_NULL = nullcontext()


class StageFn(Protocol):
    def __call__(self, name: str, group: Optional[str] = None) -> AbstractContextManager[Any]: ...


def null_stage(name: str, group: Optional[str] = None) -> AbstractContextManager[Any]:
    """A stage function that records nothing."""
    return _NULL


def scoped(stage: StageFn, prefix: str, group: Optional[str] = None) -> StageFn:
    """Return a stage function that prefixes names with ``prefix.`` and defaults the group.

    ``scoped(timer.stage, "visual", "VE")("backbone")`` is ``timer.stage("visual.backbone", "VE")``.
    """
    if stage is null_stage:
        return null_stage
    if group is not None and group not in GROUPS:
        raise ValueError(f"invalid stage group {group!r}; accepted: {', '.join(GROUPS)}")
    default = group

    def inner(name: str, group: Optional[str] = None) -> AbstractContextManager[Any]:  # the StageFn signature
        return stage(f"{prefix}.{name}" if prefix else name, group or default)

    return inner


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

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Protocol

GROUPS = ("VE", "TE", "MI", "head", "other")

_NULL = nullcontext()


class StageFn(Protocol):
    def __call__(self, name: str, group: str | None = None) -> AbstractContextManager[Any]: ...


def null_stage(name: str, group: str | None = None) -> AbstractContextManager[Any]:
    """A stage function that records nothing."""
    return _NULL


def scoped(stage: StageFn, prefix: str, group: str | None = None) -> StageFn:
    """Return a stage function that prefixes names with ``prefix.`` and defaults the group.

    ``scoped(timer.stage, "visual", "VE")("backbone")`` is ``timer.stage("visual.backbone", "VE")``.
    """
    if stage is null_stage:
        return null_stage
    if group is not None and group not in GROUPS:
        raise ValueError(f"invalid stage group {group!r}; accepted: {', '.join(GROUPS)}")
    default = group

    def inner(name: str, group: str | None = None) -> AbstractContextManager[Any]:  # the StageFn signature
        return stage(f"{prefix}.{name}" if prefix else name, group or default)

    return inner


class RecordingStage:
    """A stage function that records what a forward enters, without timing it (a *dry run*).

    ``calls`` lists (name, group) in entry order; ``leaves`` the names that never enclosed another
    stage, first-entry order, each once (a repeated name is one stage, as the timer sums it).
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self._parents: set[str] = set()
        self._stack: list[str] = []

    def __call__(self, name: str, group: str | None = None) -> AbstractContextManager[None]:
        return self._enter(name, group)

    @contextmanager
    def _enter(self, name: str, group: str | None) -> Iterator[None]:
        self.calls.append((name, group or "other"))
        if self._stack:
            self._parents.add(self._stack[-1])
        self._stack.append(name)
        try:
            yield
        finally:
            self._stack.pop()

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(n for n, _ in self.calls))

    @property
    def leaves(self) -> list[str]:
        return [n for n in self.names if n not in self._parents]

    @property
    def groups(self) -> dict[str, str]:
        return dict((n, g) for n, g in reversed(self.calls))


def record_stages(fn: Callable[[StageFn], object]) -> RecordingStage:
    """Run ``fn(stage)`` once with a :class:`RecordingStage` (under ``torch.no_grad``) and return the recorder."""
    import torch

    rec = RecordingStage()
    with torch.no_grad():
        fn(rec)
    return rec


def stage_names(module: Any, batch_size: int = 1, device: str = "cpu") -> list[str]:
    """The leaf stage names ``module`` emits, in order, from one recorded dry run on its own inputs.

    The single source of a model's stage list: it is read off the forward, never kept by hand.
    ``module`` is a benchmarkable (it has ``make_inputs``); for a part without inputs of its own
    (an interaction, a head), call :func:`record_stages` with a closure instead.
    """
    import torch

    inputs = module.make_inputs(batch_size, generator=torch.Generator(device=device).manual_seed(0), device=device)
    return record_stages(lambda stage: module(**inputs, stage=stage)).leaves

"""Name -> typed config -> built module.

Modelled on torchvision's ``models/_api.py``: registration is explicit, a duplicate name
raises, and an unknown name gets an error listing what exists.  Presets (the paper
configurations) are registered in :mod:`vlpbench.presets`, one module per family.

There are five registries: ``VISUAL`` and ``TEXT`` embedders, ``INTERACTION`` schemes,
``HEAD`` task heads and ``ARCH`` whole architectures.

A builder is usually the module's own ``Class.from_config``.  It takes the config first and declares
any *build context* it needs as keyword parameters (an interaction: ``visual_spec``, ``text_spec``; a
head: ``in_dim``); :meth:`Registry.build` refuses context a builder does not declare, and missing
context, with one message for every builder (:func:`check_context`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import VlpbenchError


@dataclass(frozen=True)
class Entry:
    """One registered preset.

    builder: ``builder(config, **context) -> nn.Module``, usually ``Class.from_config`` (see :meth:`Registry.build`).
    config: the published-size config (a dataclass instance).
    tiny: overrides that make a seconds-fast version of the same structure for tests.
    paper: reference facts for report "paper" columns (sources in docs/reference.md), never measured values.
    """

    name: str
    builder: Callable[..., Any]
    config: Any
    description: str = ""
    tiny: dict[str, Any] = field(default_factory=dict)
    paper: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    def make_config(self, tiny: bool = False, **overrides: Any) -> Any:
        cfg = self.config
        if tiny and self.tiny:
            cfg = dataclasses.replace(cfg, **self.tiny)
        if overrides:
            names = {f.name for f in dataclasses.fields(cfg)}
            unknown = sorted(set(overrides) - names)
            if unknown:
                raise VlpbenchError(
                    f"invalid option(s) {', '.join(unknown)} for {self.name!r}; accepted: {', '.join(sorted(names))}"
                )
            cfg = dataclasses.replace(cfg, **overrides)
        return cfg


def context_params(builder: Callable[..., Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(accepted, required) build-context names of ``builder``: its keyword parameters after the config."""
    params = list(inspect.signature(builder).parameters.values())
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        raise TypeError(f"builder {builder!r} must take the config as its first positional parameter")
    if any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params):
        raise TypeError(f"builder {builder!r} takes *args or **kwargs; declare its build context as keyword parameters")
    rest = params[1:]
    return tuple(p.name for p in rest), tuple(p.name for p in rest if p.default is p.empty)


def check_context(builder: Callable[..., Any], context: Mapping[str, Any], what: str) -> None:
    """Raise :class:`VlpbenchError` for context that ``builder`` does not declare, or declared context left out."""
    accepted, required = context_params(builder)
    unknown = sorted(set(context) - set(accepted))
    if unknown:
        raise VlpbenchError(
            f"invalid build context {', '.join(unknown)} for {what}; accepted: {', '.join(accepted) or '(none)'}"
        )
    missing = [n for n in required if n not in context]
    if missing:
        raise VlpbenchError(f"missing build context {', '.join(missing)} for {what}; accepted: {', '.join(accepted)}")


class Registry:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}

    def register(
        self,
        name: str,
        builder: Callable[..., Any],
        config: Any,
        *,
        description: str = "",
        tiny: dict[str, Any] | None = None,
        paper: dict[str, Any] | None = None,
        aliases: tuple[str, ...] = (),
        tags: tuple[str, ...] = (),
    ) -> Entry:
        for key in (name, *aliases):
            if key in self._entries or key in self._aliases:
                raise ValueError(f"{self.kind} {key!r} is already registered")
        if not dataclasses.is_dataclass(config):
            raise TypeError(f"config for {self.kind} {name!r} must be a dataclass instance, got {type(config)}")
        if not getattr(getattr(type(config), "__dataclass_params__", None), "frozen", False):  # configs are values
            raise TypeError(f"config for {self.kind} {name!r} must be a frozen dataclass, got {type(config).__name__}")
        context_params(builder)  # refuses a builder that would swallow unknown context (**kwargs)
        if paper:
            from .schema import check_paper

            check_paper(paper, f"{self.kind} {name!r}")
        entry = Entry(
            name, builder, config, description, dict(tiny or {}), dict(paper or {}), tuple(aliases), tuple(tags)
        )
        self._entries[name] = entry
        for alias in aliases:
            self._aliases[alias] = name
        return entry

    def resolve(self, name: str) -> str:
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        accepted = ", ".join(self.names(include_aliases=True)) or "(none registered)"
        raise VlpbenchError(f"unknown {self.kind} {name!r}; accepted: {accepted}")

    def get(self, name: str) -> Entry:
        return self._entries[self.resolve(name)]

    def config(self, name: str, tiny: bool = False, **overrides: Any) -> Any:
        return self.get(name).make_config(tiny=tiny, **overrides)

    def build(self, name: str, tiny: bool = False, context: dict[str, Any] | None = None, **overrides: Any) -> Any:
        """Build ``name``: ``builder(config, **context)``.

        ``context`` carries what the builder needs beyond its config, e.g. the ``visual_spec`` and
        ``text_spec`` an interaction is built against, or the ``in_dim`` of a head; names the builder
        does not declare, and declared names left out, raise :class:`VlpbenchError`.
        """
        entry = self.get(name)
        context = dict(context or {})
        check_context(entry.builder, context, f"{self.kind} {entry.name!r}")
        return entry.builder(entry.make_config(tiny=tiny, **overrides), **context)

    def names(self, pattern: str = "*", include_aliases: bool = False) -> list[str]:
        keys = list(self._entries)
        if include_aliases:
            keys += list(self._aliases)
        return sorted(k for k in keys if fnmatch.fnmatch(k, pattern))

    def entries(self, pattern: str = "*") -> list[Entry]:
        return [self._entries[n] for n in self.names(pattern)]

    def __contains__(self, name: str) -> bool:
        return name in self._entries or name in self._aliases

    def __len__(self) -> int:
        return len(self._entries)


VISUAL = Registry("visual embedder")
TEXT = Registry("text embedder")
INTERACTION = Registry("interaction")
HEAD = Registry("head")
ARCH = Registry("architecture")

REGISTRIES = {"visual": VISUAL, "text": TEXT, "interaction": INTERACTION, "head": HEAD, "arch": ARCH}

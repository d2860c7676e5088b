"""Name -> typed config -> built module.

Modelled on torchvision's ``models/_api.py``: registration is explicit, a duplicate name
raises, and an unknown name gets an error listing what exists.  Presets (the paper
configurations) are registered in :mod:`vlpbench.presets`, one module per family.

There are five registries: ``VISUAL`` and ``TEXT`` embedders, ``INTERACTION`` schemes,
``HEAD`` task heads and ``ARCH`` whole architectures.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from .errors import VlpbenchError


@dataclass(frozen=True)
class Entry:
    """One registered preset.

    builder: ``builder(config, **context) -> nn.Module`` (see :meth:`Registry.build`).
    config: the published-size config (a dataclass instance).
    tiny: overrides that make a seconds-fast version of the same structure for tests.
    paper: reference facts for report "paper" columns (sources in docs/reference.md), never measured values.
    """

    name: str
    builder: Callable[[Any], Any]
    config: Any
    description: str = ""
    tiny: Dict[str, Any] = field(default_factory=dict)
    paper: Dict[str, Any] = field(default_factory=dict)
    aliases: Tuple[str, ...] = ()
    tags: Tuple[str, ...] = ()

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


class Registry:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: Dict[str, Entry] = {}
        self._aliases: Dict[str, str] = {}

    def register(
        self,
        name: str,
        builder: Callable[[Any], Any],
        config: Any,
        *,
        description: str = "",
        tiny: Optional[Dict[str, Any]] = None,
        paper: Optional[Dict[str, Any]] = None,
        aliases: Tuple[str, ...] = (),
        tags: Tuple[str, ...] = (),
    ) -> Entry:
        for key in (name, *aliases):
            if key in self._entries or key in self._aliases:
                raise ValueError(f"{self.kind} {key!r} is already registered")
        if not dataclasses.is_dataclass(config):
            raise TypeError(f"config for {self.kind} {name!r} must be a dataclass instance, got {type(config)}")
        entry = Entry(name, builder, config, description, dict(tiny or {}), dict(paper or {}), tuple(aliases), tuple(tags))
        self._entries[name] = entry
        for alias in aliases:
            self._aliases[alias] = name
        return entry

    def resolve(self, name: str) -> str:
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        raise VlpbenchError(
            f"unknown {self.kind} {name!r}; accepted: {', '.join(self.names(include_aliases=True)) or '(none registered)'}"
        )

    def get(self, name: str) -> Entry:
        return self._entries[self.resolve(name)]

    def config(self, name: str, tiny: bool = False, **overrides: Any) -> Any:
        return self.get(name).make_config(tiny=tiny, **overrides)

    def build(self, name: str, tiny: bool = False, context: Optional[Dict[str, Any]] = None, **overrides: Any) -> Any:
        """Build ``name``: ``builder(config, **context)``.

        ``context`` carries what the builder needs beyond its config, e.g. the ``visual_spec`` and
        ``text_spec`` an interaction is built against, or the ``in_dim`` of a head.
        """
        entry = self.get(name)
        return entry.builder(entry.make_config(tiny=tiny, **overrides), **(context or {}))

    def names(self, pattern: str = "*", include_aliases: bool = False) -> List[str]:
        keys = list(self._entries)
        if include_aliases:
            keys += list(self._aliases)
        return sorted(k for k in keys if fnmatch.fnmatch(k, pattern))

    def entries(self, pattern: str = "*") -> List[Entry]:
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

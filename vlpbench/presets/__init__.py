"""Paper presets, registered explicitly.

Each family keeps its presets (published sizes, cited in docs/reference.md, plus a ``tiny`` variant for
tests) in its own module here, apart from the modules they configure.  :func:`load_all`
imports them in a fixed order; it is idempotent.
"""

from __future__ import annotations

import importlib

# Modules registering presets, in dependency order (embedders before the architectures
# that name them).  Add a family by appending its module name.
PRESET_MODULES = (
    "transformer",
    "region",
    "cnn",
    "heads",
    "architectures",
    "small",
    "post_vilt",
)

_loaded = False


def load_all() -> None:
    global _loaded
    if _loaded:
        return
    for mod in PRESET_MODULES:
        importlib.import_module(f"{__name__}.{mod}")
    _loaded = True

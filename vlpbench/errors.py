"""User-facing errors.

A :class:`VlpbenchError` is raised for a user mistake (an unknown name, an impossible
option value, a file that is not what it should be). Its message names the bad value
and what is accepted; the CLI prints it without a traceback and exits non-zero.
"""

from __future__ import annotations

from collections.abc import Iterable


class VlpbenchError(ValueError):
    """A mistake in user input, reported as one clear message."""


def bad_value(what: str, value: object, accepted: str | Iterable[object]) -> VlpbenchError:
    """Build the standard message ``bad <what> 'value'; accepted: ...``."""
    if not isinstance(accepted, str):
        accepted = ", ".join(str(a) for a in accepted) or "(none)"
    return VlpbenchError(f"invalid {what} {value!r}; accepted: {accepted}")

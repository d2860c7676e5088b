"""Test doubles shared across the suite (importable because ``tests`` is on pytest's ``pythonpath``)."""

import contextlib


class StageRecorder:
    """A stage function that records every stage entered: ``names``, ``groups`` and ``calls`` [(name, group)]."""

    def __init__(self):
        self.calls = []

    def __call__(self, name, group=None):
        self.calls.append((name, group))
        return contextlib.nullcontext()

    @property
    def names(self):
        return [n for n, _ in self.calls]

    @property
    def groups(self):
        return [g for _, g in self.calls]

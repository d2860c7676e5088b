"""Fixtures shared by the whole test suite."""

import pytest

from doubles import StageRecorder


@pytest.fixture
def recorder():
    """A fresh :class:`doubles.StageRecorder`."""
    return StageRecorder()


@pytest.fixture
def toys():
    """Register the toy embedder and architecture (idempotent) and return the toy module."""
    import toy

    toy.register_toys()
    return toy

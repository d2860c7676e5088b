"""TokenSpec: a frozen declaration whose schema is one of the known ones and agrees with its modality."""

import dataclasses

import pytest

from vlpbench.errors import VlpbenchError
from vlpbench.types import TokenSpec


def test_token_spec_refuses_unknown_or_inconsistent_schema():
    assert TokenSpec(dim=8, schema="grid").schema == "grid"
    assert TokenSpec(dim=8).schema is None  # undeclared: left out of the report's per-schema views
    with pytest.raises(VlpbenchError, match="invalid token schema 'pixels'; accepted: region, grid, patch, text"):
        TokenSpec(dim=8, schema="pixels")
    with pytest.raises(VlpbenchError, match="for modality 'text' 'patch'; accepted: text"):
        TokenSpec(dim=8, modality="text", schema="patch")
    with pytest.raises(VlpbenchError, match="for modality 'vision' 'text'"):
        TokenSpec(dim=8, schema="text")


def test_token_spec_is_frozen():
    spec = TokenSpec(dim=8, schema="patch")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.dim = 9  # type: ignore[misc]

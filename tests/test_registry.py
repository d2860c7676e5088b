"""The registry's contract: builders declare their build context, configs are frozen, and every registered
component declares the facts (schema, family) the harness, report and study decide from."""

import dataclasses
import re

import pytest

from vlpbench.errors import VlpbenchError
from vlpbench.presets import load_all
from vlpbench.registry import HEAD, INTERACTION, TEXT, VISUAL, Registry
from vlpbench.types import FAMILIES, SCHEMAS, TokenSpec

load_all()

VSPEC, TSPEC = TokenSpec(dim=32, num_tokens=4, schema="patch"), TokenSpec(dim=32, num_tokens=5, modality="text")
CONTEXT = {"visual": {}, "text": {}, "interaction": {"visual_spec": VSPEC, "text_spec": TSPEC}, "head": {"in_dim": 32}}
REGISTRIES = {"visual": VISUAL, "text": TEXT, "interaction": INTERACTION, "head": HEAD}
ENTRIES = [(kind, name) for kind, reg in REGISTRIES.items() for name in reg.names()]


@dataclasses.dataclass(frozen=True)
class _Cfg:
    width: int = 4


def _build(cfg, *, in_dim):
    return (cfg, in_dim)


@pytest.mark.parametrize("kind,name", ENTRIES, ids=[f"{k}:{n}" for k, n in ENTRIES])
def test_every_builder_refuses_unknown_context_the_same_way(kind, name):
    reg = REGISTRIES[kind]
    accepted = re.escape(", ".join(CONTEXT[kind]) or "(none)")
    with pytest.raises(
        VlpbenchError, match=rf"invalid build context bogus for {reg.kind} '{name}'; accepted: {accepted}$"
    ):
        reg.build(name, tiny=True, context={**CONTEXT[kind], "bogus": 1})


@pytest.mark.parametrize("kind", ["interaction", "head"])
def test_builders_refuse_missing_context(kind):
    reg = REGISTRIES[kind]
    for name in reg.names():
        with pytest.raises(VlpbenchError, match=rf"missing build context {', '.join(CONTEXT[kind])} for"):
            reg.build(name, tiny=True)


def test_register_refuses_builders_that_swallow_context_and_mutable_configs():
    reg = Registry("thing")
    reg.register("ok", _build, _Cfg())
    assert reg.build("ok", context={"in_dim": 3}) == (_Cfg(), 3)
    with pytest.raises(TypeError, match="declare its build context as keyword parameters"):
        reg.register("swallow", lambda cfg, **_: cfg, _Cfg())

    @dataclasses.dataclass
    class Mutable:
        width: int = 4

    with pytest.raises(TypeError, match="must be a frozen dataclass"):
        reg.register("mutable", _build, Mutable())
    assert reg.names() == ["ok"]


EMBEDDERS = [("visual", n) for n in VISUAL.names()] + [("text", n) for n in TEXT.names()]


@pytest.mark.parametrize("kind,name", EMBEDDERS, ids=[n for _, n in EMBEDDERS])
def test_every_embedder_declares_its_schema_in_spec_and_tags(kind, name):
    reg = REGISTRIES[kind]
    spec = reg.build(name, tiny=True).output_spec()
    assert spec.schema in SCHEMAS and spec.schema in reg.get(name).tags
    assert (spec.schema == "text") == (kind == "text")
    assert spec.has_boxes == (spec.schema == "region")


@pytest.mark.parametrize("name", INTERACTION.names())
def test_every_interaction_declares_its_family_in_class_and_tags(name):
    module = INTERACTION.build(name, tiny=True, context=CONTEXT["interaction"])
    assert module.family in FAMILIES and module.family in INTERACTION.get(name).tags
    assert [f for f in FAMILIES if f in INTERACTION.get(name).tags] == [module.family]

"""The result record's schema (``vlpbench.result/1``), typed once and checked at the store's door.

The TypedDicts below are the shape every reader can rely on (README "Result schema"); :func:`check`
walks a decoded JSON object against the same shape at run time, so the store's writer refuses a
malformed record and its readers refuse a malformed file, naming the file and the field
(``r.json: stages[2].median_ms is 'x' (str); accepted: a number``) instead of failing later deep in a
report.  Keys not listed are allowed (records carry extra facts); listed keys must have their type.

The presets' ``paper`` facts get a typed shape too (:class:`PaperFacts`): reference values quoted from
the papers, checked when a preset is registered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Union, get_type_hints

from typing_extensions import NotRequired, TypedDict

from .errors import VlpbenchError

SCHEMA = "vlpbench.result/1"
SCHEMA_NAME, SCHEMA_VERSION = SCHEMA.split("/")
KINDS = ("latency", "accuracy")
GROUPS = ("VE", "TE", "MI", "head", "other")


# ---- the typed shape ----------------------------------------------------------------------------------
class Stats(TypedDict):
    """Statistics of one series of per-iteration milliseconds (``harness.stats.summarize``)."""

    n: int
    median_ms: float
    iqr_ms: float
    p90_ms: float
    mean_ms: NotRequired[float]
    p95_ms: NotRequired[float]
    p99_ms: NotRequired[float]
    std_ms: NotRequired[float]
    min_ms: NotRequired[float]
    max_ms: NotRequired[float]
    cv: NotRequired[float]
    ci95_ms: NotRequired[list[float | None]]
    noisy: NotRequired[bool]
    samples_ms: NotRequired[list[float]]


class StageStats(Stats):
    name: str
    group: str  # one of GROUPS
    leaf: bool


class Taxonomy(TypedDict):
    VE_ms: float
    TE_ms: float
    MI_ms: float
    factor: float
    rule: str
    paper_class: str | None
    matches_paper: bool | None


class Flops(TypedDict):
    total: int
    unit: str
    convention: str
    by_stage: dict[str, int]
    by_group: dict[str, int]
    by_op: dict[str, int]
    formulas_added: dict[str, str]
    not_counted: dict[str, int]


class ResultRecord(TypedDict):
    """One JSON file per configuration in a run directory (both kinds share the first block)."""

    schema: str
    kind: str  # "latency" or "accuracy"
    key: str
    arch: str
    config: dict[str, Any]
    workload: dict[str, Any]
    env: dict[str, Any]
    component: NotRequired[str]
    status: NotRequired[str]
    paper: NotRequired[dict[str, Any]]
    # latency
    spec: NotRequired[dict[str, Any]]
    stages: NotRequired[list[StageStats]]
    groups: NotRequired[dict[str, Stats]]
    total: NotRequired[Stats]
    uninstrumented: NotRequired[Stats]
    unaccounted: NotRequired[Stats]
    unaccounted_ms: NotRequired[float]
    overhead: NotRequired[dict[str, Any]]
    params: NotRequired[dict[str, int]]
    flops: NotRequired[Flops | None]
    memory: NotRequired[dict[str, Any]]
    taxonomy: NotRequired[Taxonomy]
    # accuracy
    metrics: NotRequired[dict[str, dict[str, Any]]]
    seeds: NotRequired[list[int]]


class PaperFacts(TypedDict, total=False):
    """Reference facts quoted from the papers (never measured here); every key optional."""

    # class and headline numbers (ViLT paper, Tables 1 and 6; Figure 1)
    classes: str
    time_ms: float
    visual_time_ms: float
    total_time_ms: float
    params_M: float
    image_params_M: float
    text_params_M: float
    backbone_params_M: float
    word_table_params_M: float
    gpo_params_M_approx: float
    flops_G: float
    gflops: float
    tokens: str
    model: str
    source: str
    full_size: str
    note: str
    input: str
    config: str
    loss: str
    embed_dim: int
    patch_size: int
    vocab: int
    answers: int
    negatives: int
    context: int
    max_text_len: int
    max_image_len_pretraining: int
    sample_tokens_pretraining: int
    mask_prob: float
    image_size: Union[int, list[int]]
    test_size: list[int]
    vilt_timed_size: list[int]


# Paper facts whose keys are not identifiers of this table (dataset scores, timings of other systems)
# are checked only for being JSON-like scalars, lists or mappings; "class" is a keyword in Python.
PAPER_CLASS = ("a", "b", "c", "d")


# ---- run-time check of the same shape ------------------------------------------------------------------
NUMBER = "a number"
Spec = Any  # a type-check spec: a str naming a kind, a dict of field specs, or a one-element list


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not (isinstance(v, float) and math.isnan(v))


_KINDS: dict[str, tuple[Any, str]] = {
    "number": (_is_number, "a number"),
    "number?": (lambda v: v is None or _is_number(v), "a number or null"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "str?": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "bool?": (lambda v: v is None or isinstance(v, bool), "true, false or null"),
    "object": (lambda v: isinstance(v, dict), "a JSON object"),
    # an accuracy metric: one measured value (`vlpbench eval`), null when undefined, or the study's seed block
    "metric": (lambda v: v is None or _is_number(v) or isinstance(v, dict), "a number, null or a JSON object"),
    "list": (lambda v: isinstance(v, list), "a JSON list"),
    "any": (lambda v: True, "anything"),
}

STATS: dict[str, Spec] = {
    "n": "int",
    "median_ms": "number",
    "iqr_ms": "number",
    "p90_ms": "number",
    "?mean_ms": "number",
    "?p95_ms": "number",
    "?p99_ms": "number",
    "?std_ms": "number",
    "?min_ms": "number",
    "?max_ms": "number",
    "?cv": "number",
    "?ci95_ms": ["number?"],
    "?noisy": "bool",
    "?samples_ms": ["number"],
}
STAGE: dict[str, Spec] = {"name": "str", "group": "str", "leaf": "bool", **STATS}
FLOPS: dict[str, Spec] = {
    "total": "int",
    "?unit": "str",
    "?convention": "str",
    "?by_stage": {"*": "int"},
    "?by_group": {"*": "int"},
    "?by_op": {"*": "int"},
    "?formulas_added": {"*": "str"},
    "?not_counted": {"*": "int"},
}
TAXONOMY: dict[str, Spec] = {
    "class": "str",
    "VE_ms": "number",
    "TE_ms": "number",
    "MI_ms": "number",
    "?factor": "number",
    "?rule": "str",
    "?paper_class": "str?",
    "?matches_paper": "bool?",
}
COMMON: dict[str, Spec] = {
    "schema": "str",
    "kind": "str",
    "key": "str",
    "arch": "str",
    "config": "object",
    "workload": "object",
    "env": "object",
    "?component": "str",
    "?status": "str",
    "?paper": "object",
}
LATENCY: dict[str, Spec] = {
    **COMMON,
    "?spec": "object",
    "stages": [STAGE],
    "total": STATS,
    "?groups": {"*": STATS},
    "?uninstrumented": STATS,
    "?unaccounted": STATS,
    "?unaccounted_ms": "number",
    "?overhead": "object",
    "?params": {"total": "int", "*": "int"},
    "?flops": ("nullable", FLOPS),
    "?memory": "object",
    "?taxonomy": TAXONOMY,
}
ACCURACY: dict[str, Spec] = {**COMMON, "?metrics": {"*": "metric"}, "?seeds": ["int"]}


def _type_name(v: Any) -> str:
    names = {dict: "object", list: "list", str: "str", bool: "bool"}
    return "null" if v is None else names.get(type(v), type(v).__name__)


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _problem(where: str, value: Any, accepted: str) -> str:
    return f"{where or 'the record'} is {_show(value)} ({_type_name(value)}); accepted: {accepted}"


def _check(value: Any, spec: Spec, where: str) -> str | None:
    """The first problem of ``value`` against ``spec`` as one phrase, or None."""
    if isinstance(spec, tuple):  # ("nullable", inner)
        return None if value is None else _check(value, spec[1], where)
    if isinstance(spec, str):
        ok, accepted = _KINDS[spec]
        return None if ok(value) else _problem(where, value, accepted)
    if isinstance(spec, list):
        if not isinstance(value, list):
            return _problem(where, value, "a JSON list")
        for i, item in enumerate(value):
            bad = _check(item, spec[0], f"{where}[{i}]")
            if bad:
                return bad
        return None
    if not isinstance(value, dict):
        return _problem(where, value, "a JSON object")
    for name, sub in spec.items():
        if name == "*":
            continue
        optional, key = name.startswith("?"), name.lstrip("?")
        if key not in value:
            if not optional:
                return f"{where + '.' if where else ''}{key} is missing"
            continue
        bad = _check(value[key], sub, f"{where}.{key}" if where else key)
        if bad:
            return bad
    if "*" in spec:
        named = {n.lstrip("?") for n in spec}
        for key, item in value.items():
            if key not in named:
                bad = _check(item, spec["*"], f"{where}.{key}" if where else key)
                if bad:
                    return bad
    return None


def check(rec: Any, source: str = "record") -> ResultRecord:
    """``rec`` if it is a valid result record, else a :class:`VlpbenchError` naming ``source`` and the field."""
    if not isinstance(rec, dict):
        raise VlpbenchError(f"{source}: not a result record (expected a JSON object, found {_type_name(rec)})")
    missing = [k for k in COMMON if not k.startswith("?") and k not in rec]
    if missing:
        raise VlpbenchError(f"{source}: result record lacks {', '.join(missing)}")
    name, _, version = str(rec["schema"]).partition("/")
    if name != SCHEMA_NAME:
        raise VlpbenchError(f"{source}: schema {rec['schema']!r} is not a vlpbench result; accepted: {SCHEMA}")
    if version != SCHEMA_VERSION:
        raise VlpbenchError(
            f"{source}: schema version {rec['schema']!r} is not supported by this vlpbench; accepted: {SCHEMA}"
        )
    if rec["kind"] not in KINDS:
        raise VlpbenchError(f"{source}: kind {rec['kind']!r} unknown; accepted: {', '.join(KINDS)}")
    if rec["kind"] == "latency":
        for k in ("stages", "total"):
            if k not in rec:
                raise VlpbenchError(f"{source}: latency record lacks {k}")
    bad = _check(rec, LATENCY if rec["kind"] == "latency" else ACCURACY, "")
    if bad:
        raise VlpbenchError(f"{source}: {bad}")
    return rec  # type: ignore[return-value]


def check_key(rec: Mapping[str, Any], file_key: str, source: str) -> None:
    """A record stored as ``<file_key>.json`` must carry that key (a copied or renamed file is refused)."""
    if rec.get("key") != file_key:
        raise VlpbenchError(
            f"{source}: holds the record of key {rec.get('key')!r}, not {file_key!r}; accepted: a "
            f"record under its own key's file name (rename or delete the file)"
        )


PAPER: dict[str, Spec] = {
    **{
        f"?{k}": {float: "number", int: "int", str: "str"}[t]
        for k, t in get_type_hints(PaperFacts).items()
        if t in (float, int, str)
    },
    "?test_size": ["int"],
    "?vilt_timed_size": ["int"],
    "?class": "str",
}


def check_paper(paper: Mapping[str, Any], source: str) -> PaperFacts:
    """``paper`` facts of a preset, checked against :class:`PaperFacts` (types of the known keys, the class)."""
    bad = _check(dict(paper), PAPER, "paper")
    if bad:
        raise VlpbenchError(f"{source}: {bad}")
    if "class" in paper and paper["class"] not in PAPER_CLASS:
        raise VlpbenchError(f"{source}: paper class {paper['class']!r}; accepted: {', '.join(PAPER_CLASS)}")
    size = paper.get("image_size")
    if size is not None and not (
        _KINDS["int"][0](size) or (isinstance(size, list) and all(_KINDS["int"][0](s) for s in size))
    ):
        raise VlpbenchError(f"{source}: {_problem('paper.image_size', size, 'an integer or a list of integers')}")
    return paper  # type: ignore[return-value]

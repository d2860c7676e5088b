"""Text from scene graphs: captions, questions, true/false statements and hard negatives.

Everything here is computed from a :class:`~vlpbench.study.data.scenes.Scene`; nothing looks at pixels.
Spatial words need a clear margin: "left of" is only said when the centres differ by at least
``margin`` pixels along x, "closest" only when the nearest object beats the runner-up by ``margin``,
so every generated question has exactly one right answer and every negative is verifiably false.

Design ideas from Sort-of-CLEVR (questions), ShapeWorld (statements) and ARO (order swaps), cited in
docs/reference.md section 9; the code is ours.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vlpbench.study.data.scenes import Scene, SceneConfig, SceneObject

NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight")
NON_RELATIONAL_TYPES: tuple[str, ...] = (
    "shape",
    "colour",
    "size",
    "horizontal",
    "vertical",
    "count_shape",
    "count_objects",
)
RELATIONAL_TYPES: tuple[str, ...] = (
    "closest_shape",
    "furthest_shape",
    "closest_colour",
    "left_of",
    "above",
    "same_shape_count",
)
QUESTION_TYPES: tuple[str, ...] = NON_RELATIONAL_TYPES + RELATIONAL_TYPES
NEGATIVE_KINDS: tuple[str, ...] = ("none", "random", "binding", "relation")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
OPPOSITE: dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
CAPTION_TEMPLATES: tuple[str, ...] = ("listing", "pair", "relation", "attribute", "count")
MARGIN_FRACTION = 0.05  # spatial margin as a fraction of the canvas side
_PUNCTUATION = (",", ":", "?")
_TEMPLATE_WORDS = (
    "a",
    "and",
    "the",
    "is",
    "of",
    "there",
    "are",
    "objects",
    "object",
    "what",
    "shape",
    "colour",
    "size",
    "on",
    "or",
    "at",
    "how",
    "many",
    "closest",
    "to",
    "furthest",
    "from",
    "other",
    "have",
    "same",
    "as",
    "left",
    "right",
    "above",
    "below",
    "top",
    "bottom",
    "no",
)


def margin_px(scene: Scene) -> float:
    """Least difference in pixels for a spatial word to be said about ``scene``."""
    return MARGIN_FRACTION * scene.canvas


def plural(shape: str) -> str:
    """``circle`` -> ``circles``."""
    return shape + "s"


def vocabulary(config: SceneConfig) -> list[str]:
    """Every word the generator can emit for ``config``, sorted: the tokenizer's vocabulary."""
    words = set(_TEMPLATE_WORDS) | set(_PUNCTUATION) | set(config.sizes) | set(config.colours)
    words |= set(config.shapes) | {plural(s) for s in config.shapes}
    words |= set(NUMBER_WORDS[: config.max_objects + 1]) | set(answer_vocabulary(config))
    return sorted(words)


def answer_vocabulary(config: SceneConfig) -> list[str]:
    """The closed set of single-word answers, in a fixed order (the QA head's classes)."""
    return (
        ["yes", "no", "left", "right", "top", "bottom"]
        + list(config.sizes)
        + list(config.shapes)
        + list(config.colours)
        + list(NUMBER_WORDS[: config.max_objects + 1])
    )


# ---------------------------------------------------------------- spatial relations on the scene graph


def relation_holds(a: SceneObject, relation: str, b: SceneObject, margin: float) -> bool | None:
    """True/False when "a <relation> b" is clearly so/not so; None inside the margin (unsaid)."""
    d = {"left of": b.cx - a.cx, "right of": a.cx - b.cx, "above": b.cy - a.cy, "below": a.cy - b.cy}[relation]
    if abs(d) < margin:
        return None
    return d > 0


def distance(a: SceneObject, b: SceneObject) -> float:
    """Euclidean distance of the centres in pixels."""
    return math.hypot(a.cx - b.cx, a.cy - b.cy)


def extreme_neighbour(scene: Scene, anchor: SceneObject, nearest: bool) -> SceneObject | None:
    """The object closest to (``nearest``) or furthest from ``anchor``; None if not clear by the margin."""
    others = sorted(
        (o for o in scene.objects if o is not anchor), key=lambda o: distance(anchor, o), reverse=not nearest
    )
    if len(others) >= 2 and abs(distance(anchor, others[0]) - distance(anchor, others[1])) < margin_px(scene):
        return None
    return others[0]


# ---------------------------------------------------------------- statements (true/false)


@dataclass(frozen=True)
class Statement:
    """A claim about a scene. ``a``/``b`` are (colour, shape); ``relation`` is one of RELATIONS."""

    form: str  # "pair" ("a A and a B") or "relation" ("the A is R the B")
    a: tuple[str, str]
    b: tuple[str, str]
    relation: str | None = None

    @property
    def text(self) -> str:
        if self.form == "pair":
            return f"a {self.a[0]} {self.a[1]} and a {self.b[0]} {self.b[1]}"
        return f"the {self.a[0]} {self.a[1]} is {self.relation} the {self.b[0]} {self.b[1]}"


def _find(scene: Scene, colour_shape: tuple[str, str]) -> SceneObject | None:
    for obj in scene.objects:
        if (obj.colour, obj.shape) == colour_shape:
            return obj
    return None


def evaluate(statement: Statement, scene: Scene) -> bool | None:
    """Truth of ``statement`` for ``scene``; None when a relation falls inside the margin."""
    a, b = _find(scene, statement.a), _find(scene, statement.b)
    if a is None or b is None or a is b:
        return False
    if statement.form == "pair":
        return True
    return relation_holds(a, statement.relation, b, margin_px(scene))


def true_pair(scene: Scene, rng: np.random.Generator, distinct_shapes: bool = False) -> Statement | None:
    """A true "a A and a B" statement; with ``distinct_shapes`` only over objects whose shapes differ."""
    pairs = [
        (a, b)
        for a in scene.objects
        for b in scene.objects
        if a is not b and (not distinct_shapes or a.shape != b.shape)
    ]
    if not pairs:
        return None
    a, b = pairs[int(rng.integers(len(pairs)))]
    return Statement("pair", (a.colour, a.shape), (b.colour, b.shape))


def true_relation(scene: Scene, rng: np.random.Generator) -> Statement | None:
    """A true "the A is R the B" statement over a pair whose relation is clear by the margin."""
    m = margin_px(scene)
    options = [
        (a, r, b)
        for a in scene.objects
        for b in scene.objects
        if a is not b
        for r in RELATIONS
        if relation_holds(a, r, b, m)
    ]
    if not options:
        return None
    a, r, b = options[int(rng.integers(len(options)))]
    return Statement("relation", (a.colour, a.shape), (b.colour, b.shape), r)


def binding_negative(positive: Statement) -> Statement:
    """Swap the colours between the two objects.

    "a red square and a blue circle" -> "a blue square and a red circle".
    """
    return Statement(positive.form, (positive.b[0], positive.a[1]), (positive.a[0], positive.b[1]), positive.relation)


def relation_negative(positive: Statement) -> Statement:
    """Replace the relation by its opposite: "left of" -> "right of", "above" -> "below"."""
    return Statement(positive.form, positive.a, positive.b, OPPOSITE[positive.relation])


def random_negative(
    scene: Scene, other: Scene, form: str, rng: np.random.Generator, tries: int = 20
) -> Statement | None:
    """A statement true of ``other`` (another scene) and false of ``scene``; None if none found in ``tries``."""
    make = true_pair if form == "pair" else true_relation
    for _ in range(tries):
        candidate = make(other, rng)
        if candidate is not None and evaluate(candidate, scene) is False:
            return candidate
    return None


# ---------------------------------------------------------------- captions


def _phrase(obj: SceneObject, with_size: bool = True) -> str:
    return f"a {obj.size} {obj.colour} {obj.shape}" if with_size else f"a {obj.colour} {obj.shape}"


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else " , ".join(parts[:-1]) + " and " + parts[-1]


def caption(scene: Scene, template: str, rng: np.random.Generator) -> str:
    """One true caption of ``scene`` in ``template`` (one of CAPTION_TEMPLATES)."""
    if template == "listing":  # every object, left to right
        ordered = sorted(scene.objects, key=lambda o: o.cx)
        return f"{NUMBER_WORDS[len(ordered)]} objects : " + _join([_phrase(o) for o in ordered])
    if template == "pair":
        return true_pair(scene, rng).text
    if template == "relation":
        statement = true_relation(scene, rng)
        return statement.text if statement is not None else caption(scene, "pair", rng)
    if template == "attribute":
        return "there is " + _phrase(scene.objects[int(rng.integers(len(scene.objects)))])
    if template == "count":
        shapes = sorted({o.shape for o in scene.objects})
        counts = [sum(o.shape == s for o in scene.objects) for s in shapes]
        return _join([f"{NUMBER_WORDS[c]} {s if c == 1 else plural(s)}" for s, c in zip(shapes, counts)])
    raise KeyError(template)


def captions(scene: Scene, count: int, rng: np.random.Generator) -> list[str]:
    """``count`` captions cycling through CAPTION_TEMPLATES (listing first, which names the whole scene)."""
    return [caption(scene, CAPTION_TEMPLATES[i % len(CAPTION_TEMPLATES)], rng) for i in range(count)]


# ---------------------------------------------------------------- questions


@dataclass(frozen=True)
class Question:
    """A question with its single-word answer and its type (one of QUESTION_TYPES)."""

    text: str
    answer: str
    qtype: str

    @property
    def relational(self) -> bool:
        return self.qtype in RELATIONAL_TYPES


def _pick(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(len(items)))] if items else None


def _target_first(rng: np.random.Generator, options: dict[str, list]):
    """Pick an answer uniformly among those with candidates, then a candidate: balances yes/no, left/right."""
    answers = [k for k in options if options[k]]
    if not answers:
        return None, None
    answer = _pick(rng, answers)
    return answer, _pick(rng, options[answer])


def _ask(scene: Scene, qtype: str, rng: np.random.Generator, config: SceneConfig) -> Question | None:
    objs, m, half = scene.objects, margin_px(scene), scene.canvas / 2
    if qtype == "shape":
        o = _pick(rng, objs)
        return Question(f"what shape is the {o.colour} object ?", o.shape, qtype)
    if qtype == "colour":
        unique = [o for o in objs if sum(p.shape == o.shape for p in objs) == 1]
        o = _pick(rng, unique)
        return None if o is None else Question(f"what colour is the {o.shape} ?", o.colour, qtype)
    if qtype == "size":
        o = _pick(rng, objs)
        return Question(f"what size is the {o.colour} object ?", o.size, qtype)
    if qtype in ("horizontal", "vertical"):
        coord = (lambda o: o.cx) if qtype == "horizontal" else (lambda o: o.cy)
        low, high = ("left", "right") if qtype == "horizontal" else ("top", "bottom")
        answer, o = _target_first(
            rng, {low: [o for o in objs if coord(o) <= half - m], high: [o for o in objs if coord(o) >= half + m]}
        )
        where = "on the left or right" if qtype == "horizontal" else "at the top or bottom"
        return None if o is None else Question(f"is the {o.colour} object {where} ?", answer, qtype)
    if qtype == "count_shape":
        s = _pick(rng, config.shapes)
        return Question(f"how many {plural(s)} are there ?", NUMBER_WORDS[sum(o.shape == s for o in objs)], qtype)
    if qtype == "count_objects":
        return Question("how many objects are there ?", NUMBER_WORDS[len(objs)], qtype)
    if qtype in ("closest_shape", "furthest_shape", "closest_colour"):
        nearest = qtype != "furthest_shape"
        anchors = [(o, extreme_neighbour(scene, o, nearest)) for o in objs]
        pair = _pick(rng, [(o, t) for o, t in anchors if t is not None])
        if pair is None:
            return None
        o, t = pair
        what = "colour" if qtype == "closest_colour" else "shape"
        where = "closest to" if nearest else "furthest from"
        return Question(
            f"what {what} is the object {where} the {o.colour} object ?",
            t.colour if what == "colour" else t.shape,
            qtype,
        )
    if qtype in ("left_of", "above"):
        relation = "left of" if qtype == "left_of" else "above"
        pairs = [(a, b) for a in objs for b in objs if a is not b]
        answer, pair = _target_first(
            rng,
            {
                "yes": [p for p in pairs if relation_holds(p[0], relation, p[1], m) is True],
                "no": [p for p in pairs if relation_holds(p[0], relation, p[1], m) is False],
            },
        )
        return (
            None
            if pair is None
            else Question(f"is the {pair[0].colour} object {relation} the {pair[1].colour} object ?", answer, qtype)
        )
    if qtype == "same_shape_count":
        o = _pick(rng, objs)
        n = sum(p.shape == o.shape for p in objs if p is not o)
        return Question(
            f"how many other objects have the same shape as the {o.colour} object ?", NUMBER_WORDS[n], qtype
        )
    raise KeyError(qtype)


def questions(
    scene: Scene,
    config: SceneConfig,
    rng: np.random.Generator,
    types: Sequence[str] = QUESTION_TYPES,
    per_type: int = 1,
) -> list[Question]:
    """Up to ``per_type`` questions of each type in ``types``; a type the scene cannot answer is skipped."""
    out: list[Question] = []
    for qtype in types:
        for _ in range(per_type):
            q = _ask(scene, qtype, rng, config)
            if q is not None and q not in out:
                out.append(q)
    return out

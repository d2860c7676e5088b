"""Every answer, caption and statement is checked against the scene graph by code written here,
independently of vlpbench.study.data.language (regexes over the text, plain geometry on the objects)."""

import math
import re
from collections import Counter

import pytest

from vlpbench.study.data import DatasetConfig, SceneConfig, SyntheticData
from vlpbench.study.data.language import NUMBER_WORDS, RELATIONAL_TYPES

MARGIN = 0.05 * 64  # the generator promises spatial words only beyond this many pixels


@pytest.fixture(scope="module")
def data():
    return SyntheticData(DatasetConfig(scene=SceneConfig(canvas=64), n_train=300, n_val=60, n_test=60, seed=3))


def obj(scene, colour):
    found = [o for o in scene.objects if o.colour == colour]
    assert len(found) == 1, f"colour {colour} names {len(found)} objects"
    return found[0]


def dist(a, b):
    return math.hypot(a.cx - b.cx, a.cy - b.cy)


def expected_answer(scene, text):
    """(answer, question type) recomputed from the scene graph."""
    objs, w = scene.objects, scene.canvas
    if m := re.fullmatch(r"what shape is the (\w+) object \?", text):
        return obj(scene, m[1]).shape, "shape"
    if m := re.fullmatch(r"what colour is the (\w+) \?", text):
        same = [o for o in objs if o.shape == m[1]]
        assert len(same) == 1
        return same[0].colour, "colour"
    if m := re.fullmatch(r"what size is the (\w+) object \?", text):
        return obj(scene, m[1]).size, "size"
    if m := re.fullmatch(r"is the (\w+) object on the left or right \?", text):
        o = obj(scene, m[1])
        assert abs(o.cx - w / 2) >= MARGIN
        return ("left" if o.cx < w / 2 else "right"), "horizontal"
    if m := re.fullmatch(r"is the (\w+) object at the top or bottom \?", text):
        o = obj(scene, m[1])
        assert abs(o.cy - w / 2) >= MARGIN
        return ("top" if o.cy < w / 2 else "bottom"), "vertical"
    if text == "how many objects are there ?":
        return NUMBER_WORDS[len(objs)], "count_objects"
    if m := re.fullmatch(r"how many (\w+)s are there \?", text):
        return NUMBER_WORDS[sum(o.shape == m[1] for o in objs)], "count_shape"
    if m := re.fullmatch(r"what (shape|colour) is the object (closest to|furthest from) the (\w+) object \?", text):
        anchor = obj(scene, m[3])
        ranked = sorted((dist(anchor, o), o.colour) for o in objs if o is not anchor)
        if m[2] == "furthest from":
            ranked = ranked[::-1]
        if len(ranked) > 1:
            assert abs(ranked[0][0] - ranked[1][0]) >= MARGIN  # a clear winner
        target = obj(scene, ranked[0][1])
        qtype = "furthest_shape" if m[2] == "furthest from" else f"closest_{m[1]}"
        return (target.shape if m[1] == "shape" else target.colour), qtype
    if m := re.fullmatch(r"is the (\w+) object (left of|above) the (\w+) object \?", text):
        a, b = obj(scene, m[1]), obj(scene, m[3])
        d = (b.cx - a.cx) if m[2] == "left of" else (b.cy - a.cy)
        assert abs(d) >= MARGIN
        return ("yes" if d > 0 else "no"), ("left_of" if m[2] == "left of" else "above")
    if m := re.fullmatch(r"how many other objects have the same shape as the (\w+) object \?", text):
        a = obj(scene, m[1])
        return NUMBER_WORDS[sum(o.shape == a.shape for o in objs if o is not a)], "same_shape_count"
    raise AssertionError(f"unrecognised question {text!r}")


def statement_truth(scene, text, strict=True):
    """Truth of a pair or relation statement, from the scene graph."""

    def find(colour, shape):
        return next((o for o in scene.objects if o.colour == colour and o.shape == shape), None)

    if m := re.fullmatch(r"a (\w+) (\w+) and a (\w+) (\w+)", text):
        return find(m[1], m[2]) is not None and find(m[3], m[4]) is not None
    m = re.fullmatch(r"the (\w+) (\w+) is (left of|right of|above|below) the (\w+) (\w+)", text)
    assert m, text
    a, b = find(m[1], m[2]), find(m[4], m[5])
    if a is None or b is None:
        return False
    d = {"left of": b.cx - a.cx, "right of": a.cx - b.cx, "above": b.cy - a.cy, "below": a.cy - b.cy}[m[3]]
    assert abs(d) >= MARGIN or not strict, f"{text!r} is inside the margin"
    return d > 0


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_answer_is_correct_for_its_scene_graph(data, split):
    s = data.split(split)
    seen_types = Counter()
    for scene, qs in zip(s.scenes, s.questions):
        for q in qs:
            answer, qtype = expected_answer(scene, q.text)
            assert q.answer == answer, q.text
            assert q.qtype == qtype and q.relational == (qtype in RELATIONAL_TYPES)
            assert q.answer in data.answers
            seen_types[qtype] += 1
    assert len(seen_types) == 13


def test_captions_are_true(data):
    s = data.split("train")
    for scene, caps in zip(s.scenes, s.captions):
        listing = " , ".join(f"a {o.size} {o.colour} {o.shape}" for o in sorted(scene.objects, key=lambda o: o.cx))
        listing = " and ".join(listing.rsplit(" , ", 1))
        assert caps[0] == f"{NUMBER_WORDS[len(scene.objects)]} objects : {listing}"
        assert statement_truth(scene, caps[1]) and statement_truth(scene, caps[2])
        m = re.fullmatch(r"there is a (\w+) (\w+) (\w+)", caps[3])
        assert any((o.size, o.colour, o.shape) == (m[1], m[2], m[3]) for o in scene.objects)
        counted = Counter(o.shape for o in scene.objects)
        numbers = "|".join(NUMBER_WORDS)
        said = {shape.rstrip("s"): NUMBER_WORDS.index(n) for n, shape in re.findall(rf"({numbers}) (\w+)", caps[4])}
        assert said == counted


def test_hard_negatives_differ_only_as_intended_and_are_false(data):
    s = data.split("train")
    kinds = Counter()
    matches = s.matches
    assert len(matches) % 2 == 0
    for pos, neg in zip(matches[::2], matches[1::2]):  # stored as (true, its negative)
        scene = s.scenes[pos.scene_index]
        assert pos.label and pos.kind == "none" and not neg.label and neg.scene_index == pos.scene_index
        assert statement_truth(scene, pos.text) is True
        assert statement_truth(scene, neg.text) is False
        kinds[neg.kind] += 1
        if neg.kind == "binding":
            p = re.fullmatch(r"a (\w+) (\w+) and a (\w+) (\w+)", pos.text)
            n = re.fullmatch(r"a (\w+) (\w+) and a (\w+) (\w+)", neg.text)
            assert sorted([p[1], p[3]]) == sorted([n[1], n[3]])  # same colours
            assert sorted([p[2], p[4]]) == sorted([n[2], n[4]])  # same shapes
            assert (n[1], n[2], n[3], n[4]) == (p[3], p[2], p[1], p[4])  # colours swapped between shapes
            assert p[2] != p[4]
        elif neg.kind == "relation":
            pw, nw = pos.text.split(), neg.text.split()
            diff = [(a, b) for a, b in zip(pw, nw) if a != b]
            assert len(pw) == len(nw) and len(diff) == 1
            assert set(diff[0]) in ({"left", "right"}, {"above", "below"})
        else:
            assert neg.kind == "random"
            others = [t for t in s.scenes if t is not scene]
            assert any(statement_truth(t, neg.text, strict=False) for t in others)  # it describes some other scene
    assert min(kinds.values()) > 0.8 * len(s.scenes) and set(kinds) == {"binding", "relation", "random"}


def test_generated_text_uses_only_the_vocabulary(data):
    tok = data.tokenizer
    s = data.split("val")
    texts = [c for caps in s.captions for c in caps] + [q.text for qs in s.questions for q in qs]
    texts += [m.text for m in s.matches]
    assert all(tok.count_unknown(t) == 0 for t in texts)
    assert max(len(tok.tokenize(t)) for t in texts) + 2 <= data.config.max_length

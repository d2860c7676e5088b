"""Splits of generated scenes and the torch Datasets of the accuracy tasks.

``SyntheticData(DatasetConfig(...))`` draws the train/val/test scenes, renders them once into a uint8
cache, writes their captions, questions and true/false statements, and hands out Datasets:

- :meth:`SyntheticData.retrieval` (image, caption) pairs and :meth:`SyntheticData.gallery` for R@K;
- :meth:`SyntheticData.qa` (image, question, answer index, question type);
- :meth:`SyntheticData.matching` (image, statement, label, negative kind);
- :meth:`SyntheticData.detection` (image, boxes in pixels, labels) for training a detector.

Items are dicts of tensors (``pixel_values`` float [3, H, W] in [0, 1], ``input_ids`` /
``attention_mask`` int64 [L]); :func:`collate` stacks them into a batch. Scene ``i`` of split ``s`` is
drawn from the seed tuple ``(seed, s, j)``, so splits are disjoint by seed; a scene whose rendering
equals one of an earlier split is skipped, so no image appears in two splits either.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from vlpbench.errors import bad_value
from vlpbench.study.data import language as lang
from vlpbench.study.data.language import NEGATIVE_KINDS, QUESTION_TYPES, Question, Statement
from vlpbench.study.data.scenes import Scene, SceneConfig, generate_scene
from vlpbench.study.data.tokenizer import WordTokenizer

SPLITS: tuple[str, ...] = ("train", "val", "test")
DETECTION_LABELS: tuple[str, ...] = ("object", "shape", "colour_shape")
_CAPTION_STREAM, _QUESTION_STREAM, _MATCH_STREAM = 1, 2, 3  # independent random streams per scene


@dataclass(frozen=True)
class DatasetConfig:
    """What to generate. The defaults are a few seconds of generation on one CPU core."""

    scene: SceneConfig = field(default_factory=SceneConfig)  # how each scene is drawn
    seed: int = 0  # master seed; every scene seed derives from it
    n_train: int = 2000  # scenes in the train split
    n_val: int = 250  # scenes in the val split
    n_test: int = 250  # scenes in the test split
    captions_per_image: int = 5  # retrieval captions per scene (templates cycle)
    questions_per_type: int = 1  # questions of each type per scene, when answerable
    question_types: tuple[str, ...] = QUESTION_TYPES  # which question types to ask
    max_length: int = 40  # token length of every text (ViLT's 40)

    def validate(self) -> DatasetConfig:
        self.scene.validate()
        for name in ("n_train", "n_val", "n_test"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 2:
                raise bad_value(name, value, "an integer >= 2 (random negatives need another scene)")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise bad_value("seed", self.seed, "an integer >= 0")
        if not isinstance(self.captions_per_image, int) or self.captions_per_image < 1:
            raise bad_value("captions_per_image", self.captions_per_image, "an integer >= 1")
        if not isinstance(self.questions_per_type, int) or self.questions_per_type < 1:
            raise bad_value("questions_per_type", self.questions_per_type, "an integer >= 1")
        unknown = [t for t in self.question_types if t not in QUESTION_TYPES]
        if unknown or not self.question_types:
            raise bad_value("question_types", self.question_types, QUESTION_TYPES)
        if not isinstance(self.max_length, int) or self.max_length < self.longest_text():
            raise bad_value(
                "max_length",
                self.max_length,
                f"an integer >= {self.longest_text()} (the longest caption with [CLS] and [SEP])",
            )
        return self

    def longest_text(self) -> int:
        """Tokens of the longest text: the listing caption of a full scene, 5 words per object + 2, + 2 specials."""
        return 5 * self.scene.max_objects + 4

    def split_size(self, split: str) -> int:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[split]


@dataclass(frozen=True)
class MatchItem:
    """One image-text matching example: ``label`` True for a true statement, ``kind`` from NEGATIVE_KINDS."""

    scene_index: int
    text: str
    label: bool
    kind: str


@dataclass
class SceneSplit:
    """One split: scenes, their cached renderings and all their text."""

    name: str
    scenes: list[Scene]
    images: torch.Tensor  # uint8 [N, 3, H, W], rendered once
    captions: list[list[str]]  # per scene, captions_per_image strings
    questions: list[list[Question]]  # per scene
    matches: list[MatchItem]  # flat, (true, its negative) pairs, about three pairs per scene
    skipped_duplicates: int = 0  # scenes dropped because an earlier split rendered the same image

    def __len__(self) -> int:
        return len(self.scenes)

    def pixel_values(self, index: int) -> torch.Tensor:
        """float [3, H, W] in [0, 1]."""
        return self.images[index].float().div_(255.0)


def image_digest(array: np.ndarray) -> str:
    """Hash of a rendered image, used to keep identical images out of two splits."""
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


def _matches(scenes: Sequence[Scene], index: int, rng: np.random.Generator) -> list[MatchItem]:
    """True statements and their hard negatives for scene ``index``; a negative is kept only if verified false."""
    scene, items = scenes[index], []

    def add(positive: Statement | None, negative: Statement | None, kind: str) -> None:
        if positive is None or negative is None:
            return
        if lang.evaluate(positive, scene) is True and lang.evaluate(negative, scene) is False:
            items.append(MatchItem(index, positive.text, True, "none"))
            items.append(MatchItem(index, negative.text, False, kind))

    pair = lang.true_pair(scene, rng, distinct_shapes=True)
    add(pair, pair and lang.binding_negative(pair), "binding")
    relation = lang.true_relation(scene, rng)
    add(relation, relation and lang.relation_negative(relation), "relation")
    form = ("pair", "relation")[int(rng.integers(2))]
    other = scenes[(index + 1 + int(rng.integers(len(scenes) - 1))) % len(scenes)]
    positive = lang.true_pair(scene, rng) if form == "pair" else lang.true_relation(scene, rng)
    add(positive, lang.random_negative(scene, other, form, rng), "random")
    return items


def _build_split(config: DatasetConfig, split: str, seen: set) -> SceneSplit:
    split_id, count = SPLITS.index(split), config.split_size(split)
    scenes, arrays, skipped, j = [], [], 0, 0
    while len(scenes) < count:
        scene = generate_scene(config.scene, (config.seed, split_id, j))
        j += 1
        array = scene.render_array()
        if image_digest(array) in seen:
            skipped += 1
            continue
        scenes.append(scene)
        arrays.append(array)
    seen.update(image_digest(a) for a in arrays)
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # [N, H, W, 3] -> [N, 3, H, W]

    def stream(scene: Scene, k: int) -> np.random.Generator:
        return np.random.default_rng(list(scene.seed) + [k])

    captions = [lang.captions(s, config.captions_per_image, stream(s, _CAPTION_STREAM)) for s in scenes]
    questions = [
        lang.questions(s, config.scene, stream(s, _QUESTION_STREAM), config.question_types, config.questions_per_type)
        for s in scenes
    ]
    matches = [m for i, s in enumerate(scenes) for m in _matches(scenes, i, stream(s, _MATCH_STREAM))]
    return SceneSplit(split, scenes, images, captions, questions, matches, skipped)


class SyntheticData:
    """All three splits of one :class:`DatasetConfig`, with the tokenizer and answer vocabulary."""

    def __init__(self, config: DatasetConfig = DatasetConfig()):
        self.config = config.validate()
        self.answers: list[str] = lang.answer_vocabulary(config.scene)  # QA classes, index = label
        self.answer_to_index = {a: i for i, a in enumerate(self.answers)}
        self.tokenizer = WordTokenizer.from_vocabulary(lang.vocabulary(config.scene), config.max_length)
        seen: set = set()
        self.splits: dict[str, SceneSplit] = {s: _build_split(config, s, seen) for s in SPLITS}

    def split(self, name: str) -> SceneSplit:
        if name not in self.splits:
            raise bad_value("split", name, SPLITS)
        return self.splits[name]

    def retrieval(self, split: str) -> RetrievalDataset:
        return RetrievalDataset(self.split(split), self.tokenizer)

    def gallery(self, split: str) -> RetrievalGallery:
        return RetrievalGallery.build(self.split(split), self.tokenizer)

    def qa(self, split: str) -> QADataset:
        return QADataset(self.split(split), self.tokenizer, self.answer_to_index)

    def matching(self, split: str) -> MatchingDataset:
        return MatchingDataset(self.split(split), self.tokenizer)

    def detection(self, split: str, label_by: str = "shape") -> DetectionDataset:
        return DetectionDataset(self.split(split), self.config.scene, label_by)

    def describe(self) -> str:
        """Printable statistics of every split (answer balance, question types, true/false balance)."""
        return "\n".join(format_statistics(split_statistics(self.splits[s])) for s in SPLITS)


def _text(tokenizer: WordTokenizer, text: str) -> dict[str, torch.Tensor]:
    encoded = tokenizer.encode(text)
    return {k: torch.tensor(v, dtype=torch.long) for k, v in encoded.items()}


class RetrievalDataset(Dataset):
    """Every (image, caption) pair; ``image_index`` lets a contrastive loss mask same-image captions."""

    def __init__(self, split: SceneSplit, tokenizer: WordTokenizer):
        self.split, self.tokenizer = split, tokenizer
        self.pairs = [(i, c) for i, caps in enumerate(split.captions) for c in caps]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        i, text = self.pairs[k]
        return {
            "pixel_values": self.split.pixel_values(i),
            **_text(self.tokenizer, text),
            "image_index": torch.tensor(i, dtype=torch.long),
        }


@dataclass
class RetrievalGallery:
    """A whole split for R@K: every image once, every caption once, and which image each caption belongs to."""

    pixel_values: torch.Tensor  # float [N, 3, H, W]
    input_ids: torch.Tensor  # int64 [T, L]
    attention_mask: torch.Tensor  # int64 [T, L]
    text_to_image: torch.Tensor  # int64 [T], index into pixel_values
    texts: list[str]

    @classmethod
    def build(cls, split: SceneSplit, tokenizer: WordTokenizer) -> RetrievalGallery:
        texts = [c for caps in split.captions for c in caps]
        owners = [i for i, caps in enumerate(split.captions) for _ in caps]
        encoded = tokenizer(texts)
        return cls(
            split.images.float() / 255.0,
            encoded["input_ids"],
            encoded["attention_mask"],
            torch.tensor(owners, dtype=torch.long),
            texts,
        )


class QADataset(Dataset):
    """(image, question) -> answer index; ``question_type`` indexes QUESTION_TYPES."""

    def __init__(self, split: SceneSplit, tokenizer: WordTokenizer, answer_to_index: dict[str, int]):
        self.split, self.tokenizer, self.answer_to_index = split, tokenizer, answer_to_index
        self.items = [(i, q) for i, qs in enumerate(split.questions) for q in qs]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        i, q = self.items[k]
        return {
            "pixel_values": self.split.pixel_values(i),
            **_text(self.tokenizer, q.text),
            "answer": torch.tensor(self.answer_to_index[q.answer], dtype=torch.long),
            "question_type": torch.tensor(QUESTION_TYPES.index(q.qtype), dtype=torch.long),
            "relational": torch.tensor(q.relational, dtype=torch.bool),
        }


class MatchingDataset(Dataset):
    """(image, statement) -> ``label`` 1 true / 0 false; ``negative_kind`` indexes NEGATIVE_KINDS (0 = none)."""

    def __init__(self, split: SceneSplit, tokenizer: WordTokenizer):
        self.split, self.tokenizer = split, tokenizer

    def __len__(self) -> int:
        return len(self.split.matches)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        m = self.split.matches[k]
        return {
            "pixel_values": self.split.pixel_values(m.scene_index),
            **_text(self.tokenizer, m.text),
            "label": torch.tensor(int(m.label), dtype=torch.long),
            "negative_kind": torch.tensor(NEGATIVE_KINDS.index(m.kind), dtype=torch.long),
        }


class DetectionDataset(Dataset):
    """Images with ``boxes`` float [K, 4] (x1, y1, x2, y2 pixels) and ``labels`` int64 [K], 0 kept for background.

    ``label_by``: "object" (one class), "shape" (1 + shape index) or "colour_shape" (1 + colour * shapes + shape).
    """

    def __init__(self, split: SceneSplit, scene_config: SceneConfig, label_by: str = "shape"):
        if label_by not in DETECTION_LABELS:
            raise bad_value("label_by", label_by, DETECTION_LABELS)
        self.split, self.label_by = split, label_by
        self.shapes, self.colours = list(scene_config.shapes), list(scene_config.colours)
        names = {
            "object": ["object"],
            "shape": self.shapes,
            "colour_shape": [f"{c} {s}" for c in self.colours for s in self.shapes],
        }[label_by]
        self.class_names: list[str] = ["background"] + names  # index = label
        self.num_classes = len(self.class_names)  # background included, as torchvision counts

    def label(self, colour: str, shape: str) -> int:
        if self.label_by == "object":
            return 1
        if self.label_by == "shape":
            return 1 + self.shapes.index(shape)
        return 1 + self.colours.index(colour) * len(self.shapes) + self.shapes.index(shape)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        objects = self.split.scenes[k].objects
        return {
            "pixel_values": self.split.pixel_values(k),
            "boxes": torch.tensor([o.box for o in objects], dtype=torch.float32),
            "labels": torch.tensor([self.label(o.colour, o.shape) for o in objects], dtype=torch.long),
        }


def collate(batch: Sequence[dict[str, torch.Tensor]]) -> dict[str, object]:
    """Stack a list of items into a dict of batched tensors; per-item tensors whose shapes differ
    (detection ``boxes`` / ``labels``) stay a list of tensors, the form torchvision detectors take."""
    out: dict[str, object] = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        same = all(v.shape == values[0].shape for v in values)
        out[key] = torch.stack(values) if same and key not in ("boxes", "labels") else values
    return out


# ---------------------------------------------------------------- statistics


def split_statistics(split: SceneSplit) -> dict[str, object]:
    """Counts that reveal a degenerate split: answer balance per question type, true/false balance, ..."""
    questions = [q for qs in split.questions for q in qs]
    by_type: dict[str, Counter] = {t: Counter() for t in QUESTION_TYPES}
    for q in questions:
        by_type[q.qtype][q.answer] += 1
    by_type = {t: c for t, c in by_type.items() if c}
    answers = Counter(q.answer for q in questions)
    majority = {t: max(c.values()) / sum(c.values()) for t, c in by_type.items()}
    n_q = max(len(questions), 1)
    return {
        "split": split.name,
        "scenes": len(split),
        "skipped_duplicates": split.skipped_duplicates,
        "objects_per_scene": dict(sorted(Counter(len(s.objects) for s in split.scenes).items())),
        "colours": dict(Counter(o.colour for s in split.scenes for o in s.objects)),
        "shapes": dict(Counter(o.shape for s in split.scenes for o in s.objects)),
        "captions": sum(len(c) for c in split.captions),
        "questions": len(questions),
        "question_types": {t: sum(c.values()) for t, c in by_type.items()},
        "relational_share": sum(q.relational for q in questions) / n_q,
        "answers": dict(answers.most_common()),
        "answers_by_type": {t: dict(c.most_common()) for t, c in by_type.items()},
        "majority_share_by_type": majority,  # accuracy of always answering the commonest answer
        "majority_share": max(answers.values()) / n_q if answers else 0.0,
        "statements": len(split.matches),
        "true_share": sum(m.label for m in split.matches) / max(len(split.matches), 1),
        "negative_kinds": dict(Counter(m.kind for m in split.matches)),
    }


def degenerate_warnings(stats: dict[str, object], threshold: float = 0.6) -> list[str]:
    """Lines naming what a model could exploit without looking: one answer above ``threshold`` of a
    question type, true/false far from even, or a question type missing."""
    warnings = [
        f"question type {t!r}: answer {max(stats['answers_by_type'][t], key=stats['answers_by_type'][t].get)!r}"
        f" is {share:.0%} of its questions"
        for t, share in stats["majority_share_by_type"].items()
        if share > threshold
    ]
    if abs(stats["true_share"] - 0.5) > 0.1:
        warnings.append(f"true statements are {stats['true_share']:.0%} of matching examples")
    missing = [t for t in QUESTION_TYPES if t not in stats["question_types"]]
    if missing:
        warnings.append(f"no questions of type {', '.join(missing)}")
    return warnings


def format_statistics(stats: dict[str, object]) -> str:
    """A printable block of :func:`split_statistics`, warnings last."""
    lines = [
        f"split {stats['split']}: {stats['scenes']} scenes ({stats['skipped_duplicates']} duplicates skipped), "
        f"{stats['captions']} captions, {stats['questions']} questions, {stats['statements']} statements",
        f"  objects per scene: {stats['objects_per_scene']}",
        f"  relational questions: {stats['relational_share']:.1%}; most common answer overall "
        f"{stats['majority_share']:.1%}",
        f"  statements true: {stats['true_share']:.1%}; kinds: {stats['negative_kinds']}",
    ]
    for t, count in stats["question_types"].items():
        answers = ", ".join(f"{a} {n}" for a, n in stats["answers_by_type"][t].items())
        lines.append(f"  {t:<17} {count:>6}  majority {stats['majority_share_by_type'][t]:.0%}  [{answers}]")
    lines += [f"  WARNING {w}" for w in degenerate_warnings(stats)]
    return "\n".join(lines)

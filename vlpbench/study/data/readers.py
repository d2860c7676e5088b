"""Readers for the real datasets of the ViLT paper, for users who have them on disk.

Each reader returns plain records (frozen dataclasses) and checks every field it uses: a missing or
malformed file raises VlpbenchError naming the file and the field. Formats:

- COCO / Flickr30k captions, Karpathy split JSON (``dataset_coco.json``, ``dataset_flickr30k.json``):
  ``{"images": [{"filepath"?, "filename", "split", "sentences": [{"raw", "tokens"}]}]}``;
- VQAv2: questions ``{"questions": [{"image_id", "question", "question_id"}]}`` and annotations
  ``{"annotations": [{"question_id", "image_id", "answers": [{"answer"}], "multiple_choice_answer",
  "answer_type"}]}`` (absent for the test split);
- NLVR2: JSON lines with ``identifier``, ``sentence``, ``label`` ("True"/"False"); the image pair is
  ``<identifier without its last part>-img0.png`` / ``-img1.png`` unless ``left_image`` / ``right_image`` are given.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlpbench.errors import VlpbenchError, bad_value

KARPATHY_SPLITS = ("train", "restval", "val", "test")
# Files each dataset needs under a user's root directory (what ``load_dataset`` looks for).
DATASET_FILES: dict[str, tuple[str, ...]] = {
    "coco": ("dataset_coco.json",),
    "flickr30k": ("dataset_flickr30k.json",),
    "vqav2": ("v2_OpenEnded_mscoco_val2014_questions.json", "v2_mscoco_val2014_annotations.json"),
    "nlvr2": ("dev.json",),
}


@dataclass(frozen=True)
class CaptionRecord:
    """One image with its captions (COCO or Flickr30k, Karpathy split)."""

    image: str  # path relative to the image root: filepath/filename
    split: str  # train, restval, val or test
    captions: tuple[str, ...]  # raw sentences
    tokens: tuple[tuple[str, ...], ...]  # Karpathy's tokenisation of each sentence
    image_id: int | None = None  # cocoid / imgid when present


@dataclass(frozen=True)
class VQARecord:
    """One VQAv2 question; answer fields are empty when the split has no annotations."""

    question_id: int
    image_id: int
    question: str
    answers: tuple[str, ...] = ()  # the ten annotator answers
    multiple_choice_answer: str | None = None
    answer_type: str | None = None  # yes/no, number, other


@dataclass(frozen=True)
class NLVR2Record:
    """One NLVR2 statement about a pair of images."""

    identifier: str
    sentence: str
    label: bool
    left_image: str
    right_image: str
    directory: str = ""  # the train split's numbered image folder ("" for dev / test1)


def _load_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise VlpbenchError(f"dataset file {str(path)!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VlpbenchError(f"dataset file {str(path)!r} is not valid JSON: {e}") from None


def _field(record: Any, name: str, kind: type, path, where: str) -> Any:
    """``record[name]`` checked to be of ``kind``; else an error naming file, place and field."""
    if not isinstance(record, dict):
        raise VlpbenchError(f"{str(path)!r}: {where} is {type(record).__name__}, expected an object")
    if name not in record:
        raise VlpbenchError(f"{str(path)!r}: {where} has no field {name!r}")
    value = record[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):  # JSON true is not an id
        raise VlpbenchError(
            f"{str(path)!r}: {where} field {name!r} is {type(value).__name__}, expected {kind.__name__}"
        )
    return value


def read_karpathy(path: str | os.PathLike, split: str | None = None) -> list[CaptionRecord]:
    """Images and captions of a Karpathy split file; ``split`` keeps only one split."""
    if split is not None and split not in KARPATHY_SPLITS:
        raise bad_value("split", split, KARPATHY_SPLITS)
    data = _load_json(path)
    images = _field(data, "images", list, path, "top level")
    records = []
    for i, image in enumerate(images):
        where = f"images[{i}]"
        name = _field(image, "filename", str, path, where)
        image_split = _field(image, "split", str, path, where)
        if image_split not in KARPATHY_SPLITS:
            raise VlpbenchError(
                f"{str(path)!r}: {where} field 'split' is {image_split!r}; accepted: {', '.join(KARPATHY_SPLITS)}"
            )
        folder = _field(image, "filepath", str, path, where) if "filepath" in image else ""
        sentences = _field(image, "sentences", list, path, where)
        raws, tokens = [], []
        for j, sentence in enumerate(sentences):
            raws.append(_field(sentence, "raw", str, path, f"{where}.sentences[{j}]"))
            toks = _field(sentence, "tokens", list, path, f"{where}.sentences[{j}]")
            tokens.append(tuple(str(t) for t in toks))
        if split is None or image_split == split:
            image_id = image.get("cocoid", image.get("imgid"))
            records.append(
                CaptionRecord(
                    f"{folder}/{name}" if folder else name,
                    image_split,
                    tuple(raws),
                    tuple(tokens),
                    int(image_id) if isinstance(image_id, int) else None,
                )
            )
    return records


def read_coco_karpathy(path: str | os.PathLike, split: str | None = None) -> list[CaptionRecord]:
    """COCO captions from ``dataset_coco.json`` (images under ``filepath``, e.g. val2014/)."""
    return read_karpathy(path, split)


def read_flickr30k_karpathy(path: str | os.PathLike, split: str | None = None) -> list[CaptionRecord]:
    """Flickr30k captions from ``dataset_flickr30k.json`` (no ``filepath``; images in one folder)."""
    return read_karpathy(path, split)


def read_vqav2(questions_path: str | os.PathLike, annotations_path: str | os.PathLike | None = None) -> list[VQARecord]:
    """VQAv2 questions, joined by ``question_id`` with their annotations when a file is given."""
    data = _load_json(questions_path)
    questions = _field(data, "questions", list, questions_path, "top level")
    annotations: dict[int, dict] = {}
    if annotations_path is not None:
        ann_data = _load_json(annotations_path)
        for i, ann in enumerate(_field(ann_data, "annotations", list, annotations_path, "top level")):
            where = f"annotations[{i}]"
            qid = _field(ann, "question_id", int, annotations_path, where)
            _field(ann, "image_id", int, annotations_path, where)
            answers = _field(ann, "answers", list, annotations_path, where)
            for j, a in enumerate(answers):
                _field(a, "answer", str, annotations_path, f"{where}.answers[{j}]")
            _field(ann, "multiple_choice_answer", str, annotations_path, where)
            _field(ann, "answer_type", str, annotations_path, where)
            annotations[qid] = ann
    records = []
    for i, q in enumerate(questions):
        where = f"questions[{i}]"
        qid = _field(q, "question_id", int, questions_path, where)
        image_id = _field(q, "image_id", int, questions_path, where)
        text = _field(q, "question", str, questions_path, where)
        ann = annotations.get(qid)
        if annotations_path is not None and ann is None:
            raise VlpbenchError(
                f"{str(annotations_path)!r}: no annotation with field 'question_id' {qid} "
                f"(asked in {str(questions_path)!r} {where})"
            )
        if ann is not None and ann["image_id"] != image_id:
            raise VlpbenchError(
                f"{str(annotations_path)!r}: question {qid} field 'image_id' is {ann['image_id']}, "
                f"but {str(questions_path)!r} says {image_id}"
            )
        records.append(
            VQARecord(
                qid,
                image_id,
                text,
                tuple(a["answer"] for a in ann["answers"]) if ann else (),
                ann["multiple_choice_answer"] if ann else None,
                ann["answer_type"] if ann else None,
            )
        )
    return records


def read_nlvr2(path: str | os.PathLike) -> list[NLVR2Record]:
    """NLVR2 statements from a JSON-lines file (``train.json``, ``dev.json``, ``test1.json``)."""
    path = Path(path)
    if not path.is_file():
        raise VlpbenchError(f"dataset file {str(path)!r} does not exist")
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"line {number}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise VlpbenchError(f"{str(path)!r}: {where} is not valid JSON: {e}") from None
            identifier = _field(item, "identifier", str, path, where)
            sentence = _field(item, "sentence", str, path, where)
            label = _field(item, "label", str, path, where)
            if label not in ("True", "False"):
                raise VlpbenchError(f"{str(path)!r}: {where} field 'label' is {label!r}; accepted: True, False")
            stem = "-".join(identifier.split("-")[:-1])
            if not stem:
                raise VlpbenchError(
                    f"{str(path)!r}: {where} field 'identifier' {identifier!r} is not "
                    "of the form split-set-pair-sentence"
                )
            if ("left_image" in item) != ("right_image" in item):
                side = "left_image" if "left_image" in item else "right_image"
                raise VlpbenchError(
                    f"{str(path)!r}: {where} names one image ({side} "
                    "only); accepted: an image pair, both left_image and right_image, or neither "
                    "(then <identifier stem>-img0.png / -img1.png)"
                )
            left = _field(item, "left_image", str, path, where) if "left_image" in item else f"{stem}-img0.png"
            right = _field(item, "right_image", str, path, where) if "right_image" in item else f"{stem}-img1.png"
            folder = str(item["directory"]) if "directory" in item else ""  # train images sit in numbered folders
            records.append(NLVR2Record(identifier, sentence, label == "True", left, right, folder))
    return records


# Split names each real-data task accepts (the official file names carry them), and the default.
SPLITS: dict[str, tuple[str, ...]] = {
    "vqav2": ("val2014", "train2014"),
    "nlvr2": ("dev", "test1", "train"),  # test1 is NLVR2's test-P
    "coco": KARPATHY_SPLITS,
    "flickr30k": KARPATHY_SPLITS,
}
DEFAULT_SPLIT = {"vqav2": "val2014", "nlvr2": "dev", "coco": "test", "flickr30k": "test", "imagefolder": "val"}
SPLIT_LABELS = {"test1": "test-P"}  # how papers name a split


def dataset_files(name: str, split: str) -> tuple[str, ...]:
    """The official file names of ``name``'s ``split`` (VQAv2 and NLVR2 name the split in the file)."""
    if name in SPLITS and split not in SPLITS[name]:
        raise bad_value(f"split for {name}", split, SPLITS[name])
    if name == "vqav2":
        return (f"v2_OpenEnded_mscoco_{split}_questions.json", f"v2_mscoco_{split}_annotations.json")
    if name == "nlvr2":
        return (f"{split}.json",)
    return DATASET_FILES[name]


def find_image(root: str | os.PathLike, candidates: Sequence[str], source: str) -> str:
    """The first existing ``root/candidate``; else an error naming the image, the file naming it and where we looked."""
    for rel in candidates:
        path = os.path.join(root, rel)
        if os.path.isfile(path):
            return path
    raise VlpbenchError(
        f"image {os.path.basename(candidates[0])!r} named in {source} is missing under {str(root)!r} "
        f"(looked for {', '.join(repr(c) for c in candidates)})"
    )


def vqa_image_candidates(split: str, image_id: int) -> tuple[str, ...]:
    """Where a VQAv2 (COCO) image lives: ``<split>/COCO_<split>_<id:012d>.jpg`` (or under images/)."""
    name = f"COCO_{split}_{image_id:012d}.jpg"
    return (os.path.join(split, name), os.path.join("images", split, name), name)


def nlvr2_image_candidates(split: str, record: NLVR2Record, image: str) -> tuple[str, ...]:
    """Where an NLVR2 image lives: ``<split>/[<directory>/]<name>`` (or under images/, or at the root)."""
    sub = os.path.join(split, record.directory) if record.directory else split
    return (os.path.join(sub, image), os.path.join("images", sub, image), image)


def load_dataset(name: str, root: str | os.PathLike, files: tuple[str, ...] | None = None) -> list:
    """Read dataset ``name`` from the expected ``files`` (default DATASET_FILES[name]) under ``root``."""
    if name not in DATASET_FILES:
        raise bad_value("dataset", name, DATASET_FILES)
    root = Path(root)
    if not root.is_dir():
        raise VlpbenchError(f"dataset root {str(root)!r} is not a directory")
    files = DATASET_FILES[name] if files is None else files
    missing = [f for f in files if not (root / f).is_file()]
    if missing:
        raise VlpbenchError(f"dataset root {str(root)!r} lacks {', '.join(missing)} (needed for {name!r})")
    paths = [root / f for f in files]
    if name == "vqav2":
        return read_vqav2(*paths[:2])
    if name == "nlvr2":
        return read_nlvr2(paths[0])
    return read_karpathy(paths[0])

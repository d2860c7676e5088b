"""Accuracy of a local checkpoint on real data: ``vlpbench eval --task {vqa,nlvr2,retrieval,zero-shot}``.

``weights`` is a transformers ``save_pretrained`` folder (ViLT task models and CLIP, loaded by
:mod:`architectures.loaders`) or, for retrieval, a ``vlpbench train`` run directory.  Which checkpoint fits
which task:

=========== ====================================================== =======================================
task        checkpoint                                             metric
=========== ====================================================== =======================================
vqa         ViltForQuestionAnswering                               VQA accuracy, overall and per answer type
nlvr2       ViltForImagesAndTextClassification (two images)        accuracy over statement / pair examples
retrieval   CLIP (cosine over the whole gallery), ViltForImage-    R@1/5/10 both ways
            AndTextRetrieval (ITM score; all pairs or a shortlist
            re-ranked), or a `vlpbench train` run directory
zero-shot   CLIP on an image-folder dataset (root/<split>/<class>) top-1 / top-5 accuracy
=========== ====================================================== =======================================

Images go through each family's processor as transformers does: ViLT's resize (shorter side 384, longer at
most 640, multiples of 32), padded per batch with a ``pixel_mask``; CLIP's resize of the shorter side and
centre crop.  The result is a ``kind: "accuracy"`` record in a run directory, keyed by what was evaluated;
its ``arch`` and ``workload`` (image size, text length) are those of the latency record that
``vlpbench compare --arch ... --weights DIR`` writes for the same checkpoint, so the report joins them.
Work done so far is appended to a hidden ``.<key>.partial.jsonl`` after every batch: an interrupted
evaluation started again with the same ``--out`` resumes, and a finished one is skipped.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from vlpbench.errors import VlpbenchError, bad_value
from vlpbench.study.data.metrics import retrieval_recall
from vlpbench.study.data.readers import (
    DATASET_FILES,
    DEFAULT_SPLIT,
    SPLIT_LABELS,
    dataset_files,
    find_image,
    load_dataset,
    nlvr2_image_candidates,
    vqa_image_candidates,
)
from vlpbench.study.vqa_metric import normalize_answer, vqa_summary

TASKS: dict[str, tuple[str, ...]] = {
    "vqa": ("vqav2",),
    "nlvr2": ("nlvr2",),
    "retrieval": ("coco", "flickr30k"),
    "zero-shot": ("imagefolder",),
}
# the transformers class (or family) each task needs, by checkpoint family
TASK_CHECKPOINTS = {
    "vqa": {"vilt": "vqa"},
    "nlvr2": {"vilt": "nlvr2"},
    "retrieval": {"vilt": "retrieval", "clip": "itc"},
    "zero-shot": {"clip": "itc"},
}
HEAD_CLASSES = {
    "vqa": "ViltForQuestionAnswering",
    "nlvr2": "ViltForImagesAndTextClassification",
    "retrieval": "ViltForImageAndTextRetrieval",
    "itc": "CLIPModel",
}
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
ZERO_SHOT_PROMPT = "a photo of a {}."  # CLIP's default ImageNet prompt


@dataclass(frozen=True)
class EvalSpec:
    task: str  # vqa, nlvr2, retrieval, zero-shot
    dataset: str  # vqav2, nlvr2, coco, flickr30k, imagefolder
    root: str  # the dataset's folder (annotation files and images)
    weights: str  # checkpoint folder
    split: str | None = None  # the split as its files name it (default per dataset)
    limit: int | None = None  # the first N examples (images for retrieval / zero-shot)
    batch_size: int = 32  # examples (pairs for ITM) per forward
    shortlist: int | None = None  # ViLT retrieval: re-rank the top K of a dual encoder per query
    shortlist_weights: str | None = None  # the CLIP folder whose cosine makes the shortlist

    def validate(self) -> EvalSpec:
        if self.task not in TASKS:
            raise bad_value("--task", self.task, tuple(TASKS))
        if self.dataset not in TASKS[self.task]:
            raise bad_value(f"--dataset for --task {self.task}", self.dataset, TASKS[self.task])
        if self.limit is not None and self.limit < 1:
            raise bad_value("--limit", self.limit, "a positive integer")
        if self.batch_size < 1:
            raise bad_value("--batch-size", self.batch_size, "a positive integer")
        if (self.shortlist is None) != (self.shortlist_weights is None):
            raise bad_value(
                "--shortlist / --shortlist-weights",
                (self.shortlist, self.shortlist_weights),
                "both (K and a CLIP folder) or neither",
            )
        if self.shortlist is not None and (self.task != "retrieval" or self.shortlist < 1):
            raise bad_value("--shortlist", self.shortlist, "a positive K, with --task retrieval only")
        return self

    @property
    def split_name(self) -> str:
        return self.split or DEFAULT_SPLIT[self.dataset]


@dataclass
class Loaded:
    """A checkpoint ready for one task."""

    model: Any  # VLPModel (transformers folders) or TaskModel (`vlpbench train` runs)
    family: str  # vilt, clip or own
    arch: str  # registry name the latency records use
    image_size: tuple[int, int]
    text_len: int
    tokenizer: Any
    labels: list[str] | None = None
    hf_class: str | None = None


# ---- loading ---------------------------------------------------------------------------------------------------
def _registry_arch(family: str) -> str:
    from vlpbench.presets import load_all
    from vlpbench.registry import ARCH

    load_all()
    return next(e.name for e in ARCH.entries() if f"hf:{family}" in e.tags)


def load_for_task(weights: str, task: str) -> Loaded:
    """Load ``weights`` and check that it can do ``task``; else one error naming the folder and what fits."""
    if not os.path.isdir(weights):
        raise bad_value("--weights directory", weights, "an existing checkpoint directory")
    if not os.path.isfile(os.path.join(weights, "config.json")):
        if task != "retrieval":
            raise VlpbenchError(
                f"--weights {weights!r} has no config.json; accepted for --task {task}: a transformers "
                f"{' or '.join(HEAD_CLASSES[h] for h in TASK_CHECKPOINTS[task].values())} folder"
            )
        task_model, tokenizer = load_own(weights)
        return Loaded(task_model, "own", task_model.arch, tuple(task_model.image_size), tokenizer.max_length, tokenizer)
    from vlpbench.architectures.loaders import checkpoint_type, load_hf_checkpoint

    family = checkpoint_type(weights)
    fits = TASK_CHECKPOINTS[task]
    accepted = ", ".join(HEAD_CLASSES[h] for h in fits.values())
    if family not in fits:
        raise VlpbenchError(f"--weights {weights!r} is a {family!r} checkpoint; accepted for --task {task}: {accepted}")
    model = load_hf_checkpoint(weights)
    if model.task != fits[family]:
        raise VlpbenchError(
            f"--weights {weights!r} is a {model.hf_class} (config.json 'architectures'); accepted for "
            f"--task {task}: {accepted}"
        )
    if model.tokenizer is None:
        raise VlpbenchError(
            f"--weights {weights!r} has no tokenizer files; accepted: a folder where the processor's "
            "tokenizer was saved too (tokenizer.json / vocab.txt / vocab.json + merges.txt)"
        )
    return Loaded(
        model,
        family,
        _registry_arch(family),
        tuple(model.visual.image_size),
        model.text.text_len,
        model.tokenizer,
        model.labels,
        model.hf_class,
    )


class _Vocab:
    def __init__(self, tokenizer, num_answers: int):
        self.tokenizer, self.answers = tokenizer, [None] * num_answers


def load_own(run_dir: str):
    """A `vlpbench train` run directory -> (TaskModel, WordTokenizer)."""
    from vlpbench.study.data import WordTokenizer
    from vlpbench.study.training import CHECKPOINT, TrainConfig, build_task_model, load_checkpoint

    path = os.path.join(run_dir, CHECKPOINT)
    tok_path = os.path.join(run_dir, "tokenizer.json")
    for p in (path, tok_path):
        if not os.path.isfile(p):
            raise VlpbenchError(
                f"weights directory {run_dir!r} lacks {os.path.basename(p)} (expected a "
                f"`vlpbench train` run directory or a transformers checkpoint folder)"
            )
    ckpt = load_checkpoint(path)
    if "arch" not in ckpt or "model" not in ckpt:
        raise VlpbenchError(f"invalid checkpoint {path!r}: no 'arch' / 'model' entries")
    cfg = TrainConfig.from_dict(ckpt["config"])
    tokenizer = WordTokenizer.load(tok_path)
    num_answers = ckpt["model"]["qa.classifier.3.weight"].shape[0]
    task = build_task_model(cfg, _Vocab(tokenizer, num_answers))
    try:
        task.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise VlpbenchError(f"checkpoint {path!r} does not fit architecture {cfg.arch!r}: {str(e)[:300]}") from e
    task.arch = cfg.arch
    return task.eval(), tokenizer


# ---- images ----------------------------------------------------------------------------------------------------
def read_image(path: str) -> torch.Tensor:
    """An image file -> uint8 RGB [3, h, w]; an error naming the file if it cannot be decoded."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB")).copy()
    except Exception as e:  # PIL raises many types for a bad file; the file is at fault
        raise VlpbenchError(
            f"image {path!r} cannot be read ({type(e).__name__}: {e}); accepted: a JPEG / PNG image"
        ) from None
    return torch.from_numpy(arr).permute(2, 0, 1)


def clip_preprocess(images: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """CLIPImageProcessor's steps: bicubic resize so the image covers ``size``, centre crop, CLIP mean / std."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    from vlpbench.embedders.patch import processor_normalise

    out = []
    for img in images:
        h, w = img.shape[1:]
        scale = max(size[0] / h, size[1] / w)
        img = TF.resize(
            img,
            [max(size[0], round(h * scale)), max(size[1], round(w * scale))],
            interpolation=InterpolationMode.BICUBIC,
            antialias=True,
        )
        out.append(TF.center_crop(img, list(size)).float() / 255.0)
    return processor_normalise(torch.stack(out), "clip")


def _tokens(m: Loaded, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    enc = m.tokenizer(list(texts), padding="max_length", truncation=True, max_length=m.text_len, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


# ---- resumable progress --------------------------------------------------------------------------------------
class Partial:
    """Results per example id, appended as JSON lines (flushed and fsynced per batch); a torn last line is ignored."""

    def __init__(self, path: str):
        self.path, self.done = path, {}
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        break
                    self.done.update(zip(row["ids"], row["values"]))

    def add(self, ids: Sequence[Any], values: Sequence[Any]) -> None:
        ids = [str(i) for i in ids]
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"ids": ids, "values": list(values)}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done.update(zip(ids, values))

    def todo(self, items: Sequence[Any], key: Callable[[Any], Any]) -> list[Any]:
        return [x for x in items if str(key(x)) not in self.done]


def _batches(items: Sequence[Any], size: int, bar) -> Any:
    for i in range(0, len(items), size):
        chunk = items[i : i + size]
        yield chunk
        bar.update(len(chunk))


# ---- tasks -----------------------------------------------------------------------------------------------------
def _check_labels(m: Loaded, records, afile: str) -> float:
    """Share of questions whose majority answer is in the checkpoint's label set; none at all is an error."""
    labels = {normalize_answer(a) for a in m.labels}
    inside = [normalize_answer(r.multiple_choice_answer) in labels for r in records]
    if not any(inside):
        raise VlpbenchError(
            f"no answer in {afile!r} is in the label set of {m.hf_class} (config.json id2label, e.g. "
            f"{', '.join(repr(x) for x in m.labels[:3])}); accepted: a VQA checkpoint whose id2label "
            "holds answer strings"
        )
    return float(np.mean(inside))


@torch.no_grad()
def run_vqa(m: Loaded, spec: EvalSpec, records, partial: Partial, bar) -> dict[str, Any]:
    from vlpbench.embedders.patch import vilt_preprocess

    split = spec.split_name
    qfile, afile = (os.path.join(spec.root, f) for f in dataset_files("vqav2", split))
    coverage = _check_labels(m, records, afile)
    bar.update(len(records) - len(partial.todo(records, lambda r: r.question_id)))
    for batch in _batches(partial.todo(records, lambda r: r.question_id), spec.batch_size, bar):
        imgs = [read_image(find_image(spec.root, vqa_image_candidates(split, r.image_id), repr(qfile))) for r in batch]
        px, pm = vilt_preprocess(imgs)
        logits = m.model(pixel_values=px, pixel_mask=pm, **_tokens(m, [r.question for r in batch])).head["logits"]
        partial.add([r.question_id for r in batch], [m.labels[int(i)] for i in logits.argmax(-1)])
    preds = [partial.done[str(r.question_id)] for r in records]
    summary = vqa_summary(preds, [r.answers for r in records], [r.answer_type for r in records])
    metrics = {k: v for k, v in summary.items() if isinstance(v, float)}
    counts = {k: v for k, v in summary.items() if isinstance(v, int)}
    return {
        "metrics": metrics,
        "counts": counts,
        "protocol": {
            "metric": "VQA accuracy: min(#annotators agreeing / 3, 1) over the 10 leave-one-out subsets, "
            "answers normalised as the VQA API does",
            "answer_from": "argmax over id2label",
            "majority_answer_in_label_set": coverage,
        },
    }


def _nlvr2_true_index(m: Loaded) -> tuple[int, str]:
    labels = [str(x) for x in (m.labels or [])]
    if "True" in labels:
        return labels.index("True"), "class named 'True' in id2label"
    return 1, "class 1 = True (ViLT's NLVR2 convention; id2label does not name the classes)"


@torch.no_grad()
def run_nlvr2(m: Loaded, spec: EvalSpec, records, partial: Partial, bar) -> dict[str, Any]:
    from vlpbench.embedders.patch import vilt_preprocess

    split = spec.split_name
    source = repr(os.path.join(spec.root, dataset_files("nlvr2", split)[0]))
    true_index, rule = _nlvr2_true_index(m)
    bar.update(len(records) - len(partial.todo(records, lambda r: r.identifier)))
    for batch in _batches(partial.todo(records, lambda r: r.identifier), spec.batch_size, bar):
        imgs = [
            read_image(find_image(spec.root, nlvr2_image_candidates(split, r, name), source))
            for r in batch
            for name in (r.left_image, r.right_image)
        ]
        px, pm = vilt_preprocess(imgs)  # [2B, 3, H, W] (left, right, left, right, ...)
        px = px.view(len(batch), 2, *px.shape[1:])  # -> [B, 2, 3, H, W]
        pm = pm.view(len(batch), 2, *pm.shape[1:])  # -> [B, 2, H, W]
        tok = _tokens(m, [r.sentence for r in batch])
        logits = m.model.forward_pair(px, tok["input_ids"], tok["attention_mask"], pixel_mask=pm).head["logits"]
        partial.add([r.identifier for r in batch], [bool(i == true_index) for i in logits.argmax(-1).tolist()])
    correct = [partial.done[r.identifier] == r.label for r in records]
    return {
        "metrics": {"nlvr2_acc": float(np.mean(correct))},
        "counts": {"examples": len(records)},
        "protocol": {"metric": "accuracy over (statement, image pair) examples", "label_rule": rule},
    }


@torch.no_grad()
def _dual_embeddings(
    m: Loaded, images: Sequence[str], texts: Sequence[str], spec: EvalSpec, partial: Partial, bar, prefix: str = ""
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm CLIP embeddings of every image file and text: [N, E], [M, E] (resumable per batch)."""
    inter = m.model.interaction
    img_ids = [f"{prefix}img:{i}" for i in range(len(images))]
    todo = [i for i, k in enumerate(img_ids) if k not in partial.done]
    bar.update(len(images) - len(todo))
    for batch in _batches(todo, spec.batch_size, bar):
        px = clip_preprocess([read_image(images[i]) for i in batch], m.image_size)
        emb = torch.nn.functional.normalize(inter.encode_image(m.model.visual(pixel_values=px)), dim=-1)
        partial.add([img_ids[i] for i in batch], emb.tolist())
    txt_ids = [f"{prefix}txt:{j}" for j in range(len(texts))]
    todo = [j for j, k in enumerate(txt_ids) if k not in partial.done]
    for start in range(0, len(todo), spec.batch_size):
        batch = todo[start : start + spec.batch_size]
        emb = inter.encode_text(m.model.text(**_tokens(m, [texts[j] for j in batch])))
        partial.add([txt_ids[j] for j in batch], torch.nn.functional.normalize(emb, dim=-1).tolist())
    stack = lambda ids: torch.tensor([partial.done[k] for k in ids])  # noqa: E731
    return stack(img_ids), stack(txt_ids)


@torch.no_grad()
def _itm_scores(
    m: Loaded,
    images: Sequence[str],
    texts: Sequence[str],
    pairs: list[tuple[int, int]],
    spec: EvalSpec,
    partial: Partial,
    bar,
) -> dict[tuple[int, int], float]:
    """ViLT ITM scores (rank_output) of (image, text) pairs, batched image-major (resumable per batch)."""
    from functools import lru_cache

    from vlpbench.embedders.patch import vilt_preprocess

    @lru_cache(maxsize=64)
    def image(i: int) -> torch.Tensor:
        return read_image(images[i])

    key = lambda p: f"{p[0]},{p[1]}"  # noqa: E731
    todo = partial.todo(sorted(pairs), key)
    bar.update(len(pairs) - len(todo))
    for batch in _batches(todo, spec.batch_size, bar):
        px, pm = vilt_preprocess([image(i) for i, _ in batch])
        scores = m.model(pixel_values=px, pixel_mask=pm, **_tokens(m, [texts[j] for _, j in batch])).head["scores"]
        partial.add([key(p) for p in batch], scores.tolist())
    return {p: partial.done[key(p)] for p in pairs}


def _shortlist(spec: EvalSpec, images, texts, partial: Partial, bar) -> tuple[list[tuple[int, int]], torch.Tensor]:
    """Top-K texts per image and top-K images per text by the shortlist CLIP's cosine -> pairs, and that matrix."""
    first = load_for_task(spec.shortlist_weights, "retrieval")
    if first.family != "clip":
        raise VlpbenchError(
            f"--shortlist-weights {spec.shortlist_weights!r} is a {first.family!r} checkpoint; "
            "accepted: a transformers CLIP folder"
        )
    img, txt = _dual_embeddings(first, images, texts, spec, partial, bar, prefix="shortlist:")
    sim = img @ txt.t()
    k_t, k_i = min(spec.shortlist, len(texts)), min(spec.shortlist, len(images))
    pairs = {(i, int(j)) for i in range(len(images)) for j in sim[i].topk(k_t).indices}
    pairs |= {(int(i), j) for j in range(len(texts)) for i in sim[:, j].topk(k_i).indices}
    return sorted(pairs), sim


def run_retrieval(m: Loaded, spec: EvalSpec, records, partial: Partial, bar) -> dict[str, Any]:
    source = repr(os.path.join(spec.root, DATASET_FILES[spec.dataset][0]))
    images = [
        find_image(
            spec.root, (r.image, os.path.join("images", r.image), os.path.join("flickr30k-images", r.image)), source
        )
        for r in records
    ]
    texts = [c for r in records for c in r.captions]
    owners = torch.tensor([i for i, r in enumerate(records) for _ in r.captions])
    counts = {"images": len(images), "texts": len(texts)}
    if m.family == "own":
        return _retrieval_own(m, images, texts, owners, counts)
    if m.family == "clip":
        img, txt = _dual_embeddings(m, images, texts, spec, partial, bar)
        sim = img @ txt.t()
        protocol = {"scoring": "cosine of the projections over the whole gallery"}
        counts["pairs_scored"] = len(images) * len(texts)
        return {"metrics": retrieval_recall(sim, owners), "counts": counts, "protocol": protocol}
    if spec.shortlist is None:
        pairs = [(i, j) for i in range(len(images)) for j in range(len(texts))]
        protocol = {"scoring": "ITM score (rank_output) of every image-text pair"}
    else:
        pairs, _ = _shortlist(spec, images, texts, partial, bar)
        protocol = {
            "scoring": f"shortlist: the top {spec.shortlist} texts per image and images per text by the "
            f"cosine of {spec.shortlist_weights}, re-ranked by ITM score (rank_output); "
            "pairs outside the shortlist rank last"
        }
    bar.reset(total=len(pairs))
    scores = _itm_scores(m, images, texts, pairs, spec, partial, bar)
    sim = torch.full((len(images), len(texts)), float("-inf"))
    for (i, j), s in scores.items():
        sim[i, j] = s
    counts["pairs_scored"] = len(pairs)
    return {"metrics": retrieval_recall(sim, owners), "counts": counts, "protocol": protocol}


@torch.no_grad()
def _retrieval_own(m: Loaded, images, texts, owners, counts) -> dict[str, Any]:
    from vlpbench.study.evaluate import similarity_matrix

    size = m.image_size
    pixels = torch.stack(
        [
            torch.nn.functional.interpolate(
                read_image(p)[None].float() / 255.0, size=size, mode="bilinear", align_corners=False
            )[0]
            for p in images
        ]
    )
    enc = m.tokenizer(texts)
    sim = similarity_matrix(m.model, pixels, enc["input_ids"], enc["attention_mask"], split="eval")
    scoring = "cosine" if m.model.family == "dual" else "ITM over every pair"
    counts["pairs_scored"] = len(images) * len(texts)
    return {"metrics": retrieval_recall(sim, owners), "counts": counts, "protocol": {"scoring": scoring}}


def image_folder(root: str, split: str, limit: int | None) -> tuple[list[str], list[str], list[int]]:
    """An image-folder split ``root/<split>/<class>/<image>`` -> (class names, image paths, class index)."""
    base = os.path.join(root, split)
    if not os.path.isdir(base):
        raise VlpbenchError(
            f"dataset root {root!r} lacks the folder {split!r}; accepted: {root}/<split>/<class name>/"
            "<image> (class folders of JPEG / PNG images)"
        )
    classes = sorted(d for d in os.listdir(base) if os.path.isdir(os.path.join(base, d)))
    files = [
        (os.path.join(base, c, f), k)
        for k, c in enumerate(classes)
        for f in sorted(os.listdir(os.path.join(base, c)))
        if f.lower().endswith(IMAGE_EXTS)
    ]
    if len(classes) < 2 or not files:
        raise VlpbenchError(
            f"{base!r} holds {len(classes)} class folders and {len(files)} images; accepted: at least "
            "2 class folders with JPEG / PNG images"
        )
    files = files[:limit] if limit else files
    return classes, [f for f, _ in files], [k for _, k in files]


def run_zero_shot(m: Loaded, spec: EvalSpec, data, partial: Partial, bar) -> dict[str, Any]:
    classes, images, truth = data
    prompts = [ZERO_SHOT_PROMPT.format(c.replace("_", " ")) for c in classes]
    img, txt = _dual_embeddings(m, images, prompts, spec, partial, bar)
    ranks = (img @ txt.t()).argsort(dim=1, descending=True)  # [N, classes]
    truth_t = torch.tensor(truth)[:, None]
    metrics = {"top1": float((ranks[:, :1] == truth_t).any(1).float().mean())}
    if len(classes) >= 5:
        metrics["top5"] = float((ranks[:, :5] == truth_t).any(1).float().mean())
    return {
        "metrics": metrics,
        "counts": {"images": len(images), "classes": len(classes)},
        "protocol": {"scoring": f"cosine against the prompt {ZERO_SHOT_PROMPT!r} per class folder name"},
    }


# ---- driver ----------------------------------------------------------------------------------------------------
def _read_records(spec: EvalSpec):
    """The split's examples (the first ``limit``)."""
    if spec.task == "zero-shot":
        return image_folder(spec.root, spec.split_name, spec.limit)
    split = spec.split_name
    if spec.dataset in ("vqav2", "nlvr2"):
        records = load_dataset(spec.dataset, spec.root, dataset_files(spec.dataset, split))
    else:
        dataset_files(spec.dataset, split)  # validates the split name
        records = [r for r in load_dataset(spec.dataset, spec.root) if r.split == split]
    if not records:
        raise VlpbenchError(f"the {spec.dataset} files under {spec.root!r} have no examples in split {split!r}")
    if spec.dataset == "vqav2" and not records[0].answers:
        raise VlpbenchError(
            f"split {split!r} of {spec.root!r} has no annotations; accepted: a split with "
            f"{dataset_files('vqav2', split)[1]}"
        )
    return records[: spec.limit] if spec.limit else records


RUNNERS = {"vqa": run_vqa, "nlvr2": run_nlvr2, "retrieval": run_retrieval, "zero-shot": run_zero_shot}


def record_config(spec: EvalSpec) -> dict[str, Any]:
    """What identifies an evaluation (its record key): the spec with absolute paths, batch size left out."""
    cfg = {k: v for k, v in asdict(spec).items() if k != "batch_size"}
    for k in ("root", "weights", "shortlist_weights"):
        cfg[k] = os.path.abspath(cfg[k]) if cfg[k] else cfg[k]
    cfg["split"] = spec.split_name
    return cfg


def evaluate(spec: EvalSpec, out: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Run one evaluation and write its accuracy record into run directory ``out`` (skipped if already there)."""
    from tqdm import tqdm

    from vlpbench.harness import env as envmod
    from vlpbench.store import SCHEMA, RunDir, config_key

    spec = spec.validate()
    run = RunDir.open(out, create=True, label="eval") if out else RunDir.create("eval")
    config = record_config(spec)
    key = "accuracy-" + config_key(config)
    if run.has(key):
        rec = json.loads(run.record_path(key).read_text())
        return {**rec, "record": str(run.record_path(key)), "resumed": "complete"}
    model = load_for_task(spec.weights, spec.task)
    data = _read_records(spec)
    partial = Partial(str(run.path / f".{key}.partial.jsonl"))
    total = len(data[1]) if spec.task == "zero-shot" else len(data)
    with tqdm(
        total=total,
        file=sys.stderr,
        unit="ex",
        disable=not progress,
        dynamic_ncols=True,
        desc=f"eval {spec.task} {spec.dataset}",
    ) as bar:
        result = RUNNERS[spec.task](model, spec, data, partial, bar)
    rec = {
        "schema": SCHEMA,
        "kind": "accuracy",
        "key": key,
        "arch": model.arch,
        "component": "arch",
        "config": config,
        "task": spec.task,
        "dataset": spec.dataset,
        "split": SPLIT_LABELS.get(spec.split_name, spec.split_name),
        "weights": config["weights"],
        "checkpoint_class": model.hf_class,
        "family": model.family,
        "source": "measured",
        "workload": {
            "image_size": list(model.image_size),
            "text_len": model.text_len,
            "batch_size": spec.batch_size,
            "preprocess": {
                "vilt": "ViltProcessor resize (shorter 384, longer <= 640, multiple of 32), padded "
                "per batch with pixel_mask; image_size is the latency input it joins",
                "clip": "CLIPImageProcessor-style bicubic resize and centre crop",
            }.get(model.family, "bilinear resize to the model's input"),
        },
        "metrics": result["metrics"],
        "metric_scale": "fraction (0-1)",
        "counts": result["counts"],
        "protocol": result["protocol"],
        "env": envmod.capture("cpu", "float32", False),
        "status": "ok",
    }
    path = run.write(rec)
    if os.path.isfile(partial.path):  # the record holds everything now
        os.remove(partial.path)
    return {**rec, "record": str(path)}


def summary(rec: dict[str, Any]) -> dict[str, Any]:
    """The printed result: what was evaluated, the counts and the metrics, flat."""
    keys = ("task", "dataset", "split", "arch", "weights", "checkpoint_class", "record")
    return {
        **{k: rec.get(k) for k in keys},
        **rec["counts"],
        **rec["metrics"],
        "protocol": rec["protocol"],
        **({"resumed": rec["resumed"]} if "resumed" in rec else {}),
    }

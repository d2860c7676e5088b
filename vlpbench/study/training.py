"""Train one small architecture on the generated data under the study's common budget.

``train(cfg, run_dir)`` builds the architecture from the registry, wraps it in a
:class:`~vlpbench.study.objectives.TaskModel`, and runs ``cfg.steps`` AdamW steps (linear warm-up, cosine
decay) in two phases, the same for every family:

1. alignment (the first ``align_frac`` of the steps): only the family's image-text alignment objective
   on ``batch_size`` retrieval pairs -- InfoNCE / hinge for dual encoders, ITM for fusion models, as VLP
   pretraining aligns before it fine-tunes.  Measured without it (vilt-small, 64x64 scenes): ITM alone
   leaves 0.693 after ~250 steps, but summed with MLM, or with QA and matching, it stayed at 0.693 for
   the 400-800 steps tried -- the text-only objectives' larger gradients set Adam's step sizes;
2. joint: every objective of the family (+ MLM for fusion models) and the task heads (QA, matching),
   each on its own ``batch_size`` pairs.

The default, as in the study's profiles, is ``align_frac=0`` (every objective from step 0): with 40%
alignment-only steps QA saw under one epoch of the questions.  The calibration references (``rn-small``,
``cnn-mlp-small``, :mod:`vlpbench.study.relational`) train QA only, on the same QA batches.  Every architecture sees the
same number of image-text pairs (``pairs_seen``) and QA questions (``qa_seen``); ``objectives``
(:class:`~vlpbench.study.objectives.ObjectiveConfig`) sets each objective's weight and the seed papers'
options, ``augment`` the truth-preserving RandAugment, ``regions`` the ground-truth-box oracle, ``device``
CPU or CUDA.

Batches are drawn by :class:`~torch.utils.data.DistributedSampler` (one per task, seeded, epoch =
pass number) and indexed directly, so the data position is part of the checkpoint: a run stopped after
N steps and resumed continues with the same batches, MLM masks and optimiser state as an uninterrupted
run.  ``torchrun --nproc_per_node=N -m vlpbench train ...`` trains data-parallel (DDP, gloo on CPU,
nccl on CUDA); rank 0 writes the checkpoint and the log.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from vlpbench.embedders.patch import PROCESSOR_NORMALISATION
from vlpbench.errors import VlpbenchError, bad_value
from vlpbench.presets.small import REFERENCE_ARCHS, REFERENCE_TINY, study_lr
from vlpbench.registry import ARCH, INTERACTION, VISUAL
from vlpbench.store import atomic_write_bytes, atomic_write_json, atomic_write_text
from vlpbench.study.augment import AUGMENTS, augment_batch
from vlpbench.study.data import DatasetConfig, SceneConfig, SyntheticData, collate
from vlpbench.study.data.language import QUESTION_TYPES
from vlpbench.study.data.scenes import SHAPE_NAMES, SIZE_NAMES
from vlpbench.study.objectives import QA_NORMS, DualTaskModel, FusionTaskModel, ObjectiveConfig, TaskModel
from vlpbench.study.relational import RelationalQA, RelationalTaskModel
from vlpbench.study.schedule import lr_lambda
from vlpbench.types import VisualTokens

CHECKPOINT = "checkpoint.pt"
TASKS = ("retrieval", "qa", "matching")
# fields that may change between an interrupted run and its resumption (they do not change the result)
RESUMABLE_FIELDS = ("checkpoint_every", "progress", "device")


@dataclass
class DataSpec:
    """The generated data every architecture trains on (see vlpbench.study.data.DatasetConfig)."""

    canvas: int = 64
    seed: int = 0
    n_train: int = 2000
    n_val: int = 250
    n_test: int = 250
    max_length: int = 34
    min_objects: int = 2
    max_objects: int = 6
    shapes: tuple[str, ...] = SHAPE_NAMES
    sizes: tuple[str, ...] = SIZE_NAMES
    layout: str = "free"  # "free" or "cells" (objects centred in grid x grid cells)
    grid: int = 4
    radius: float | None = None  # one radius for every object (fraction of the canvas); None: sizes'
    question_types: tuple[str, ...] = QUESTION_TYPES
    questions_per_type: int = 1

    def __post_init__(self) -> None:  # JSON round trips give lists
        for name in ("shapes", "sizes", "question_types"):
            setattr(self, name, tuple(getattr(self, name)))

    def scene_config(self) -> SceneConfig:
        radii = {} if self.radius is None else {"small_radius": self.radius, "large_radius": self.radius}
        return SceneConfig(
            canvas=self.canvas,
            min_objects=self.min_objects,
            max_objects=self.max_objects,
            shapes=self.shapes,
            sizes=self.sizes,
            layout=self.layout,
            grid=self.grid,
            **radii,
        )

    def dataset_config(self) -> DatasetConfig:
        return DatasetConfig(
            scene=self.scene_config(),
            seed=self.seed,
            n_train=self.n_train,
            n_val=self.n_val,
            n_test=self.n_test,
            max_length=self.max_length,
            question_types=self.question_types,
            questions_per_type=self.questions_per_type,
        )


@dataclass
class TrainConfig:
    arch: str  # ARCH registry name (a small preset)
    seed: int = 0  # model init, batch order and masks
    steps: int = 300  # optimiser steps
    batch_size: int = 32  # pairs per task per step per process
    lr: float | None = None  # AdamW peak learning rate; None: the architecture's (presets.small.study_lr)
    weight_decay: float = 0.01
    warmup_frac: float = 0.1  # share of steps in linear warm-up, then cosine decay to 0
    align_frac: float = 0.0  # share of steps (the first) training only the alignment objective
    grad_clip: float = 1.0
    loss: str = "auto"  # dual encoders: "infonce" or "hinge"; "auto" = hinge for vse-gpo
    qa_norm: str = "batch"  # dual encoders' QA head: "batch" (standardise each pooled embedding) or "none"
    objectives: ObjectiveConfig = field(default_factory=ObjectiveConfig)  # weights and options per objective
    augment: str = "none"  # "none" or "randaugment" (truth-preserving ops, vlpbench.study.augment)
    tiny: bool = False  # build the preset's tiny variant (smoke tests)
    detector: str | None = None  # trained region-embedder weights (region architectures)
    data: DataSpec = field(default_factory=DataSpec)
    checkpoint_every: int = 100  # steps between checkpoints
    progress: bool = True  # tqdm bar
    device: str = "auto"  # "cpu", "cuda" or "auto" (CUDA for torchrun DDP runs when present)
    regions: str = "detected"  # region architectures: "detected" or "oracle" (ground-truth boxes)

    def __post_init__(self) -> None:
        if self.lr is None:
            self.lr = study_lr(self.arch)

    def validate(self) -> TrainConfig:
        if self.arch not in REFERENCE_ARCHS:
            ARCH.resolve(self.arch)
        for name in ("steps", "batch_size", "checkpoint_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise bad_value(name, v, "an integer >= 1")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise bad_value("lr", self.lr, "a positive number")
        if not 0 <= self.warmup_frac < 1:
            raise bad_value("warmup_frac", self.warmup_frac, "a fraction in [0, 1)")
        if not 0 <= self.align_frac < 1:
            raise bad_value("align_frac", self.align_frac, "a fraction in [0, 1)")
        if self.loss not in ("auto", "infonce", "hinge"):
            raise bad_value("loss", self.loss, ("auto", "infonce", "hinge"))
        if self.qa_norm not in QA_NORMS:
            raise bad_value("qa_norm", self.qa_norm, QA_NORMS)
        if (
            self.qa_norm == "batch"
            and self.batch_size < 2
            and self.arch not in REFERENCE_ARCHS
            and family_of(ARCH.config(self.arch).interaction) == "dual"
        ):
            raise bad_value(
                "batch_size", self.batch_size, "at least 2 with qa_norm='batch' (it standardises over the batch)"
            )
        if self.device not in DEVICES:
            raise bad_value("device", self.device, DEVICES)
        if self.regions not in REGION_SOURCES:
            raise bad_value("regions", self.regions, REGION_SOURCES)
        if self.augment not in AUGMENTS:
            raise bad_value("augment", self.augment, AUGMENTS)
        if not self.weight_decay >= 0:
            raise bad_value("weight_decay", self.weight_decay, "a number >= 0")
        self.objectives.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d.setdefault("qa_norm", "none")  # written before the option existed: those runs trained without it
        d["data"] = DataSpec(**d.get("data", {}))
        d["objectives"] = ObjectiveConfig(**d.get("objectives", {}))
        return cls(**d)


# ---- distributed ----------------------------------------------------------------------------------------
def dist_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) when not launched by it."""
    try:
        return (
            int(os.environ.get("RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)),
        )
    except ValueError as e:
        raise VlpbenchError(
            f"invalid RANK / WORLD_SIZE / LOCAL_RANK in the environment ({e}); accepted: integers"
        ) from e


DEVICES = ("auto", "cpu", "cuda")
REGION_SOURCES = ("detected", "oracle")


def init_distributed(want: str = "auto") -> tuple[int, int, torch.device]:
    """(rank, world, device): ``want`` "cuda" needs a GPU; "auto" takes one for DDP runs only (as before)."""
    rank, world, local = dist_env()
    if want == "cuda" and not torch.cuda.is_available():
        raise bad_value("device", want, "cpu or auto on this machine (no CUDA device is available)")
    use_cuda = want == "cuda" or (want == "auto" and torch.cuda.is_available() and world > 1)
    device = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


# ---- model ---------------------------------------------------------------------------------------------
def family_of(interaction: str) -> str:
    """ "dual" (classes a/b: pooled embeddings + similarity) or "fusion" (c/d), from the interaction's registry tags."""
    tags = INTERACTION.get(interaction).tags
    found = [t for t in ("dual", "fusion") if t in tags]
    if len(found) != 1:
        raise VlpbenchError(
            f"interaction {interaction!r} declares no family among its tags {tags}; "
            f"accepted: exactly one of dual, fusion"
        )
    return found[0]


def build_task_model(
    cfg: TrainConfig,
    data: SyntheticData | None = None,
    *,
    vocab_size: int | None = None,
    num_answers: int | None = None,
) -> TaskModel:
    """Registry architecture (vocabulary from the tokenizer, detector weights frozen) + family heads.

    The vocabulary and answer count come from ``data`` or, without it, ``vocab_size`` / ``num_answers``.
    """
    if data is not None:
        vocab_size, num_answers = data.tokenizer.vocab_size, len(data.answers)
    if vocab_size is None or num_answers is None:
        raise VlpbenchError("build_task_model needs the data, or vocab_size and num_answers")
    if cfg.arch in REFERENCE_ARCHS:
        return build_reference(cfg, vocab_size, num_answers)
    entry = ARCH.get(cfg.arch)
    arch_cfg = entry.make_config(tiny=cfg.tiny)
    text_over = dict(arch_cfg.text_overrides, vocab_size=vocab_size)
    visual_over = dict(arch_cfg.visual_overrides)
    if cfg.detector is not None:
        if not os.path.isfile(cfg.detector):
            raise bad_value("detector weights", cfg.detector, "an existing detector.pt from `vlpbench train-detector`")
        visual_over["weights"] = cfg.detector
    if is_region(arch_cfg.visual):  # background + the classes the detector was trained on
        visual_over["num_classes"] = (
            detector_classes(cfg.detector) if cfg.detector is not None else 1 + len(cfg.data.shapes)
        )
    arch_cfg = dataclasses.replace(arch_cfg, text_overrides=text_over, visual_overrides=visual_over)
    torch.manual_seed(cfg.seed)
    model = entry.builder(arch_cfg)
    processor = pixel_processor(arch_cfg.visual)
    if family_of(arch_cfg.interaction) == "dual":
        loss = cfg.loss if cfg.loss != "auto" else ("hinge" if arch_cfg.interaction == "vse-gpo" else "infonce")
        task: TaskModel = DualTaskModel(
            model,
            num_answers=num_answers,
            objectives=cfg.objectives,
            loss=loss,
            pixel_processor=processor,
            qa_norm=cfg.qa_norm,
        )
    else:
        task = FusionTaskModel(
            model, num_answers=num_answers, vocab_size=vocab_size, objectives=cfg.objectives, pixel_processor=processor
        )
    task.region = is_region(arch_cfg.visual)
    if task.region:
        for p in model.visual.parameters():  # the detector is frozen: regions are extracted, not learned
            p.requires_grad_(False)
    return task


def build_reference(cfg: TrainConfig, vocab_size: int, num_answers: int) -> RelationalTaskModel:
    """A calibration reference (Santoro et al.'s RN or CNN+MLP) for the data's canvas and vocabulary."""
    ref = dataclasses.replace(REFERENCE_ARCHS[cfg.arch], **(REFERENCE_TINY if cfg.tiny else {}))
    ref = dataclasses.replace(
        ref, image_size=(cfg.data.canvas, cfg.data.canvas), vocab_size=vocab_size, num_answers=num_answers
    )
    torch.manual_seed(cfg.seed)
    return RelationalTaskModel(RelationalQA(ref))


def detector_classes(path: str) -> int:
    """Box classes (background included) of a detector.pt, read from its classifier's weight's shape (the file
    is memory-mapped, so the weights the embedder loads next are not read twice)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(state["box_predictor.cls_score.weight"].shape[0])
    except Exception as e:
        raise bad_value("detector weights", path, f"a detector.pt from `vlpbench train-detector` ({e})") from e


def is_region(visual: str) -> bool:
    """Region embedders (a detector, frozen in the study) declare the ``region`` registry tag."""
    return "region" in VISUAL.get(visual).tags


def pixel_processor(visual: str) -> str | None:
    """The image processor whose normalisation a visual embedder expects from its caller: the family tag
    of a patch embedder ("vilt", "clip"); None for embedders that normalise inside (grid, regions)."""
    entry = VISUAL.get(visual)
    if "patch" not in entry.tags:
        return None
    family = [t for t in entry.tags if t in PROCESSOR_NORMALISATION]
    if len(family) != 1:
        raise VlpbenchError(
            f"patch embedder {visual!r} names no image processor among its tags {entry.tags}; "
            f"accepted: exactly one of {', '.join(PROCESSOR_NORMALISATION)}"
        )
    return family[0]


_REGION_CACHE: dict[tuple[str, int], dict[str, dict[str, torch.Tensor]]] = {}


@torch.no_grad()
def oracle_regions(embedder, pixel_values: torch.Tensor, boxes: list[torch.Tensor]) -> VisualTokens:
    """The region embedder's features of given boxes (the ground-truth-box oracle): the same backbone, RoI
    Align and box head as its detector path, the scene's object boxes in place of its detections.

    pixel_values [B, 3, H, W] in [0, 1] at the embedder's image size; boxes B x [n_i, 4] pixels ->
    VisualTokens(features [B, K, D], mask [B, K] True for the n_i objects, boxes [B, K, 4] in [0, 1]).
    """
    k, (h, w) = embedder.num_regions, embedder.image_size
    if max(len(b) for b in boxes) > k:
        raise bad_value("objects per scene", max(len(b) for b in boxes), f"at most the {k} regions of the embedder")
    maps = embedder.backbone(embedder.transform(pixel_values))
    rows = embedder.box_head(embedder.roi_pooler(maps, boxes, [embedder.image_size] * len(boxes)))  # [N, D]
    if embedder.proj is not None:
        rows = embedder.proj(rows)
    features = rows.new_zeros(len(boxes), k, rows.shape[-1])
    mask = torch.zeros(len(boxes), k, dtype=torch.bool)
    norm_boxes = rows.new_zeros(len(boxes), k, 4)
    start = 0
    for i, b in enumerate(boxes):
        features[i, : len(b)], mask[i, : len(b)] = rows[start : start + len(b)], True
        norm_boxes[i, : len(b)] = b / b.new_tensor([w, h, w, h])
        start += len(b)
    return VisualTokens(features=features, mask=mask, boxes=norm_boxes)


def _region_batch(task: TaskModel, split, lo: int, hi: int, oracle: bool) -> VisualTokens:
    pixels = split.images[lo:hi].float() / 255.0
    if not oracle:
        return task.model.visual(pixel_values=pixels)
    boxes = [torch.tensor([o.box for o in scene.objects], dtype=torch.float32) for scene in split.scenes[lo:hi]]
    return oracle_regions(task.model.visual, pixels, boxes)


@torch.no_grad()
def cache_regions(
    task: TaskModel, data: SyntheticData, detector: str | None, batch_size: int = 64, oracle: bool = False
) -> None:
    """Run the frozen region embedder once over every split; the model then reads regions by image index.

    ``oracle``: regions of the ground-truth object boxes instead of the detections (a labelled variant).
    The regions of one detector file and data set are computed once per process and shared by every run.
    """
    if not task.region:
        return
    task.model.visual.eval()
    key = (os.path.abspath(detector) if detector else "untrained", id(data), oracle)
    if key in _REGION_CACHE:
        task.visual_cache = _REGION_CACHE[key]
        return
    cache = {}
    for split in ("train", "val", "test"):
        sp = data.split(split)
        outs = [_region_batch(task, sp, s, min(len(sp), s + batch_size), oracle) for s in range(0, len(sp), batch_size)]
        cache[split] = {
            "features": torch.cat([o.features for o in outs]),
            "mask": torch.cat([o.mask for o in outs]),
            "boxes": torch.cat([o.boxes for o in outs]),
        }
    if detector:
        _REGION_CACHE[key] = cache
    task.visual_cache = cache


# ---- data streams ---------------------------------------------------------------------------------------
class IndexedTask:
    """A task dataset whose items also carry ``image_index`` (the region cache is keyed by it)."""

    def __init__(self, data: SyntheticData, task: str, split: str):
        self.ds = {"retrieval": data.retrieval, "qa": data.qa, "matching": data.matching}[task](split)
        if task == "retrieval":
            self.owner = [i for i, _ in self.ds.pairs]
        elif task == "qa":
            self.owner = [i for i, _ in self.ds.items]
        else:
            self.owner = [m.scene_index for m in self.ds.split.matches]

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        return {**self.ds[k], "image_index": torch.tensor(self.owner[k], dtype=torch.long)}


class Stream:
    """Endless batches from a DistributedSampler; ``state()`` / ``load()`` make the position resumable."""

    def __init__(self, dataset, batch_size: int, seed: int, rank: int, world: int):
        if len(dataset) < batch_size * world:
            raise bad_value(
                "batch_size", batch_size, f"at most {len(dataset) // world} for a task with {len(dataset)} items"
            )
        self.dataset, self.batch_size = dataset, batch_size
        self.sampler = DistributedSampler(
            dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.epoch, self.pos, self._order = 0, 0, None

    def _indices(self):
        if self._order is None:
            self.sampler.set_epoch(self.epoch)
            self._order = list(iter(self.sampler))
        return self._order

    def next(self) -> dict[str, Any]:
        order = self._indices()
        if self.pos + self.batch_size > len(order):
            self.epoch, self.pos, self._order = self.epoch + 1, 0, None
            order = self._indices()
        idx = order[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return collate([self.dataset[i] for i in idx])

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, state: dict[str, int]) -> None:
        self.epoch, self.pos, self._order = state["epoch"], state["pos"], None


# ---- checkpoints ----------------------------------------------------------------------------------------
def check_resume(ckpt: dict[str, Any], cfg: TrainConfig, path: str) -> None:
    if ckpt.get("arch") != cfg.arch:
        raise VlpbenchError(
            f"checkpoint {path!r} is for architecture {ckpt.get('arch')!r}, not {cfg.arch!r}; "
            f"accepted: a run directory of {cfg.arch!r} or a new one"
        )
    old, new = dict(ckpt.get("config", {})), cfg.to_dict()
    for k in RESUMABLE_FIELDS:
        old.pop(k, None), new.pop(k, None)
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        detail = "; ".join(f"{k}: checkpoint {old.get(k)!r} vs now {new.get(k)!r}" for k in diff)
        raise VlpbenchError(
            f"cannot resume {path!r}: configuration differs ({detail}); accepted: the same "
            f"configuration, or a new run directory"
        )


def save_checkpoint(
    path: str, task: TaskModel, opt, sched, streams, step: int, cfg: TrainConfig, extra: dict[str, Any]
) -> None:
    state = {
        "arch": cfg.arch,
        "config": cfg.to_dict(),
        "step": step,
        "model": task.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "streams": {k: s.state() for k, s in streams.items()},
        **extra,
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise VlpbenchError(f"invalid checkpoint {path!r}: cannot be read ({e})") from e


def param_groups(task: TaskModel, weight_decay: float):
    """AdamW groups: weight decay on matrices, none on biases, norms, embeddings' scalars (BERT / ViLT)."""
    decay, no_decay = [], []
    for _name, p in task.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def objective_names(task: TaskModel) -> str:
    """The summary's loss label, e.g. "itc+match+qa" or "mlm+itm+wpa(0.1)+match+qa"."""
    if task.family == "reference":
        return "qa"
    o = task.objectives
    if task.family == "dual":
        return task.loss_kind  # + match + qa, as every family
    else:
        names = [
            n if getattr(o, n) == 1 else f"{n}({getattr(o, n):g})"
            for n in ("itc", "mlm", "itm", "wpa")
            if getattr(o, n) > 0
        ]
        names += ["bert-masking"] if o.masking == "bert" else []
        names += ["hard-negatives"] if o.hard_negatives else []
    return "+".join(names + [n for n in ("match", "qa") if getattr(o, n) > 0])


def truncate_log(log_path: str, step: int) -> None:
    """Cut the JSON-lines training log back to ``step`` (the checkpoint resumed from; 0 for a fresh start),
    so that a resumed run's log keeps one line per step (an interrupted run logged steps past its last
    checkpoint, and a torn last line)."""
    if not os.path.exists(log_path):
        return
    kept = []
    with open(log_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                break
            if not isinstance(entry, dict) or not isinstance(entry.get("step"), int) or entry["step"] > step:
                break
            kept.append(line)
    atomic_write_text(log_path, "".join(kept))


# ---- the loop -------------------------------------------------------------------------------------------
def train(
    cfg: TrainConfig, run_dir: str, data: SyntheticData | None = None, stop_after: int | None = None
) -> tuple[TaskModel, dict[str, Any]]:
    """Train (resuming from ``run_dir/checkpoint.pt`` when present) -> (model, summary).

    ``stop_after``: stop after this many steps of this call (checkpointing first), as an interruption would.
    """
    cfg.validate()
    rank, world, device = init_distributed(cfg.device)
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, CHECKPOINT)
    ckpt = None
    if os.path.exists(path):
        ckpt = load_checkpoint(path)
        check_resume(ckpt, cfg, path)
    data = data or SyntheticData(cfg.data.dataset_config())
    task = build_task_model(cfg, data)
    cache_regions(task, data, cfg.detector, oracle=cfg.regions == "oracle")
    task.to(device)
    if task.visual_cache is not None:
        task.visual_cache = {s: {k: v.to(device) for k, v in c.items()} for s, c in task.visual_cache.items()}
    params = [p for p in task.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(param_groups(task, cfg.weight_decay), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(max(1, int(cfg.warmup_frac * cfg.steps)), cfg.steps))
    streams = {t: Stream(IndexedTask(data, t, "train"), cfg.batch_size, cfg.seed, rank, world) for t in TASKS}
    step, wall_before = 0, 0.0
    if ckpt is not None:
        task.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        for k, s in streams.items():
            s.load(ckpt["streams"][k])
        step, wall_before = ckpt["step"], ckpt.get("wall_s", 0.0)
    net = task
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(task, find_unused_parameters=True)
    task.train()
    if task.visual_cache is not None:
        task.model.visual.eval()
    log_path = os.path.join(run_dir, "train_log.jsonl")
    if rank == 0:
        truncate_log(log_path, step)
    start = time.perf_counter()
    end = cfg.steps if stop_after is None else min(cfg.steps, step + stop_after)
    bar = tqdm(
        total=cfg.steps,
        initial=step,
        desc=cfg.arch,
        unit="step",
        disable=not cfg.progress or rank != 0,
        dynamic_ncols=True,
    )
    # a reference trains QA at every step: it has no alignment phase, and QA is the only batch it reads
    reference = task.family == "reference"
    pairs_per_step = (1 if reference else len(TASKS)) * cfg.batch_size * world
    align_steps = 0 if reference else int(cfg.align_frac * cfg.steps)

    def checkpoint() -> None:
        if rank == 0:
            save_checkpoint(
                path,
                task,
                opt,
                sched,
                streams,
                step,
                cfg,
                {"wall_s": wall_before + time.perf_counter() - start, "world_size": world},
            )
        if world > 1:
            dist.barrier()

    with open(log_path, "a") if rank == 0 else open(os.devnull, "w") as log:
        while step < end:
            batches = {
                t: {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in s.next().items()}
                for t, s in streams.items()
            }
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 101 + rank)
            if cfg.augment != "none" and task.visual_cache is None:
                for b in batches.values():
                    b["pixel_values"] = augment_batch(b["pixel_values"], gen)
            loss, parts = net(
                batches["retrieval"], batches["qa"], batches["matching"], gen, align_only=step < align_steps
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            step += 1
            loss_value = float(loss.detach())
            log.write(json.dumps({"step": step, "loss": loss_value, **parts, "lr": sched.get_last_lr()[0]}) + "\n")
            rate = bar.format_dict.get("rate") or 0.0
            bar.set_postfix(
                loss=f"{loss_value:.3f}",
                pairs_s=f"{(pairs_per_step if step > align_steps else pairs_per_step // len(TASKS)) * rate:.0f}",
            )
            bar.update()
            if step % cfg.checkpoint_every == 0 or step == end:
                checkpoint()
    bar.close()
    wall = wall_before + time.perf_counter() - start
    qa_seen = world * cfg.batch_size * max(0, step - align_steps)
    pairs_seen = world * cfg.batch_size * (min(step, align_steps) + len(TASKS) * max(0, step - align_steps))
    if reference:
        pairs_seen = qa_seen
    summary = {
        "steps": step,
        "pairs_seen": pairs_seen,
        "qa_seen": qa_seen,
        "wall_s": round(wall, 2),
        "world_size": world,
        "finished": step >= cfg.steps,
        "batch_size_per_task": cfg.batch_size,
        "tasks": list(TASKS),
        "optimizer": "AdamW",
        "lr": cfg.lr,
        "schedule": f"linear warm-up {cfg.warmup_frac:.0%} + cosine",
        "align_steps": align_steps,
        "loss": objective_names(task),
        "family": task.family,
        "augment": cfg.augment,
    }
    if rank == 0:
        atomic_write_json(os.path.join(run_dir, "train_summary.json"), summary)
        data.tokenizer.save(os.path.join(run_dir, "tokenizer.json"))
    task.to("cpu")  # evaluation reads the CPU data set
    if task.visual_cache is not None:
        task.visual_cache = {s: {k: v.cpu() for k, v in c.items()} for s, c in task.visual_cache.items()}
    task.eval()
    return task, summary

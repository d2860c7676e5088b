"""Where the study's learning stalls: a QA-only loop around a calibration reference or a small VLP preset.

This is the instrument behind the README's "Accuracy study: measured here" section, not the study itself
(the study trains through ``vlpbench train`` / ``vlpbench study``).  It trains on the QA split of a data design
(``vlpbench.study.runner.DATA_DESIGNS``) with plain Adam (optionally after a linear warm-up), batches drawn
with replacement, and prints the test accuracy per question type every ``--eval-every`` steps as JSON lines.

The model is either Santoro et al.'s RN / CNN+MLP (``--kind``, ``vlpbench.study.relational``) or, with
``--arch``, a small preset of the study (``vilt-small``, ``clip-small``, ...) with its QA head, built exactly
as the trainer builds it.  Switches that each take one difficulty away (references only):

* ``--objects oracle`` replaces the CNN by the ground truth: each cell of the grid holds the one-hot
  colour and shape of its object (zeros when empty), so only the question-object binding is left to learn;
* ``--question positional`` replaces the GRU by word embeddings concatenated position by position and one
  linear layer; ``--question bow`` by the multi-hot bag of the question's words, which for the generator's
  templates is the whole question, the closest thing to Sort-of-CLEVR's fixed binary question code;
* ``--dropout`` sets the dropout before the answer layer of ``f`` (the paper's 0.5) and ``--min-objects``
  the fewest objects per scene (the design's six by default);
* ``--freeze-cnn`` keeps the CNN at its random initialisation (``RelationalConfig.freeze_cnn``): trained
  jointly with the QA loss, the CNN's cells lose the colour the questions name (README "Measured here"),
  which ``--colour-probe`` measures: a linear read-out of each cell's colour from the CNN as it is.

``--probe`` prints, before training, how much the model's answer depends on the image at initialisation:
the relative change of the QA logits when the images of a batch are rolled by one (questions kept), and for
dual encoders the mean cosine between the pooled image embeddings of different images; and, for models that
read pixels, how much the logits of "is the <colour> object on the left or right ?" change when a lone
object moves from the far left to the far right, against when it is recoloured.  ``--freeze-patch`` keeps a
patch preset's patch projection at its initialisation (as ``--freeze-cnn`` does the references' CNN),
``--pos-std`` re-initialises its position embeddings at another scale, and ``--pos-sincos`` sets them to
2-D sine-cosine values (``PatchEmbedConfig.pos_init="sincos"``).  ``--kernel 4`` gives the references'
convolutions kernel 4 (padding 1), which centres each feature cell on a 16-pixel scene cell instead of on its
corner.  Region presets read the features of the ground-truth boxes from an untrained detector, or from
``--detector`` (a ``vlpbench train-detector`` file); with them ``--colour-probe`` prints linear read-outs of
each object's colour, shape and image half from those features, and with a grid preset from the grid cell
each object's centre falls in.  ``--box-code`` sets how a region preset's
interaction adds the box (``linear`` as the papers, ``linear+sincos`` with a sine-cosine code of its centre),
and ``--visual-proj frozen`` / ``trained`` keeps its visual-token projection at its initialisation or trains it.

Example (about 2 minutes on 2 idle cores)::

    .venv/bin/python tools/study_diagnostic.py --kind rn --objects oracle --question bow --dropout 0 \\
        --min-objects 2 --steps 2000
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from vlpbench.architectures.co_attention import FUSIONS, IMAGE_TOKENS
from vlpbench.architectures.common import BOX_CODES, box_features, box_sincos
from vlpbench.embedders.grid import GridEmbedder
from vlpbench.embedders.patch import sincos_position_embedding
from vlpbench.errors import VlpbenchError
from vlpbench.presets.small import GRID_ARCHS, REGION_ARCHS
from vlpbench.study.data import SyntheticData, qa_accuracy
from vlpbench.study.data.language import QUESTION_TYPES
from vlpbench.study.data.scenes import Scene, SceneObject
from vlpbench.study.relational import KINDS, RelationalConfig, RelationalQA
from vlpbench.study.runner import DATA_DESIGNS

SINGLE_STREAM_ARCHS = ("uniter-small", "pixelbert-small", "vilt-small")  # --token-sizes reads their fuse input

QUESTIONS = ("gru", "positional", "bow")


@contextlib.contextmanager
def batch_statistics(module: nn.Module) -> Iterator[None]:
    """Run ``module`` in training mode, so BatchNorm normalises by the statistics of each batch it sees, and put
    its state (BatchNorm's running averages) back afterwards, so a probe does not change the model."""
    saved = {k: v.clone() for k, v in module.state_dict().items()}
    module.train()
    try:
        yield
    finally:
        module.load_state_dict(saved)


class PositionalQuestion(nn.Module):
    """Word ids [B, L] -> [B, D]: embeddings concatenated position by position, one linear layer, ReLU."""

    def __init__(self, vocab_size: int, length: int, dim: int, embed_dim: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.proj = nn.Sequential(nn.Linear(length * embed_dim, dim), nn.ReLU())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.proj(self.embed(input_ids).flatten(1))


class GivenObjects(nn.Module):
    """Stands in for the CNN when the batch already holds object features [B, cells, C]."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def oracle_cells(split, spec, channels: int) -> torch.Tensor:
    """[N, grid * grid, channels]: one-hot colour, then one-hot shape, of the object centred in each cell."""
    scene_cfg = spec.scene_config()
    colours, shapes, grid = list(scene_cfg.colours), list(scene_cfg.shapes), scene_cfg.grid
    if len(colours) + len(shapes) > channels:
        raise VlpbenchError(f"--channels {channels} cannot hold {len(colours)} colours + {len(shapes)} shapes")
    cell = scene_cfg.canvas / grid
    out = torch.zeros(len(split.scenes), grid * grid, channels)
    for i, scene in enumerate(split.scenes):
        for obj in scene.objects:
            k = int(obj.cy // cell) * grid + int(obj.cx // cell)
            out[i, k, colours.index(obj.colour)] = 1.0
            out[i, k, len(colours) + shapes.index(obj.shape)] = 1.0
    return out


def question_tensors(data: SyntheticData, split: str) -> dict[str, torch.Tensor]:
    """Every QA item of ``split`` without its image: ids, mask, answer, type, relational, image_index."""
    ds = data.qa(split)
    encoded = data.tokenizer([q.text for _, q in ds.items])
    return {
        "input_ids": encoded["input_ids"],
        "attention_mask": encoded["attention_mask"],
        "answer": torch.tensor([data.answer_to_index[q.answer] for _, q in ds.items]),
        "question_type": torch.tensor([QUESTION_TYPES.index(q.qtype) for _, q in ds.items]),
        "relational": torch.tensor([q.relational for _, q in ds.items]),
        "image_index": torch.tensor([i for i, _ in ds.items]),
    }


def build_spec(a: argparse.Namespace):
    overrides = {"n_train": a.n_train, "questions_per_type": a.questions_per_type}
    if a.types:
        overrides["question_types"] = tuple(a.types.split(","))
    if a.min_objects is not None:
        overrides["min_objects"] = a.min_objects
    return dataclasses.replace(DATA_DESIGNS[a.data], **overrides)


def build_reference(a: argparse.Namespace, data: SyntheticData, spec) -> nn.Module:
    cfg = RelationalConfig(
        kind=a.kind,
        image_size=(spec.canvas, spec.canvas),
        channels=a.channels,
        kernel=a.kernel,
        vocab_size=data.tokenizer.vocab_size,
        num_answers=len(data.answers),
        g_dim=a.g_dim,
        question="bow" if a.question == "bow" else "gru",
        dropout=RelationalConfig.dropout if a.dropout is None else a.dropout,
        freeze_cnn=a.freeze_cnn,
    )
    model = RelationalQA(cfg)
    if a.objects == "oracle":
        model.objects = GivenObjects()
    if a.question == "positional":
        model.question = PositionalQuestion(cfg.vocab_size, spec.max_length, cfg.question_dim)
    return model


class Runner:
    """The model and the way a batch of question indices becomes answer logits."""

    def __init__(self, a: argparse.Namespace, data: SyntheticData, spec):
        self.a, self.data, self.spec = a, data, spec
        self._colour_labels: dict[str, torch.Tensor] = {}
        self.images = {s: data.split(s).images for s in ("train", "test")}  # uint8 [N, 3, H, W]
        if a.arch:
            from vlpbench.presets import load_all
            from vlpbench.study.training import TrainConfig, build_task_model, cache_regions

            load_all()
            qa_norm = {} if a.qa_norm is None else {"qa_norm": a.qa_norm}
            cfg = TrainConfig(arch=a.arch, data=spec, seed=a.seed, regions="oracle", detector=a.detector, **qa_norm)
            self.task = build_task_model(cfg, data)
            if a.qa_norm is not None and self.task.family != "dual":
                raise VlpbenchError(f"--qa-norm: {a.arch} is a fusion model (the dual presets' QA head has it)")
            cache_regions(self.task, data, a.detector, oracle=True)  # region presets read ground-truth boxes
            self.model: nn.Module = self.task
            if a.pos_std is not None or a.pos_sincos:  # at most one of them (checked in main)
                visual = self.task.model.visual
                pos = getattr(visual, "pos_embed", None)
                if not isinstance(pos, nn.Parameter):
                    flag = "--pos-sincos" if a.pos_sincos else "--pos-std"
                    raise VlpbenchError(f"{flag}: {a.arch} has no position embeddings (patch presets have them)")
                with torch.no_grad():  # as the embedder builds them (PatchEmbedConfig.pos_init / pos_std)
                    if a.pos_sincos:
                        pos.copy_(sincos_position_embedding(visual.pos_grid, pos.shape[-1]))
                    else:
                        nn.init.trunc_normal_(pos, std=a.pos_std)
            inter = self.task.model.interaction
            if a.box_code is not None:
                if getattr(inter, "box_proj", None) is None and getattr(inter, "v_loc", None) is None:
                    raise VlpbenchError(f"--box-code: {a.arch} reads no boxes (fusion region presets do)")
                inter.box_code = a.box_code
            if a.fusion is not None:
                if not hasattr(inter, "fusion"):
                    raise VlpbenchError(f"--fusion: {a.arch} has no pooled fusion (co-attention presets do)")
                inter.fusion = a.fusion
            if a.image_token is not None:
                if not hasattr(inter, "use_image_token"):
                    raise VlpbenchError(f"--image-token: {a.arch} has no image token (co-attention presets do)")
                inter.use_image_token(a.image_token)
            if a.visual_proj is not None:
                proj = getattr(inter, "visual_proj", getattr(inter, "v_proj", None))
                if not isinstance(proj, nn.Linear):
                    raise VlpbenchError(f"--visual-proj: {a.arch} has no visual-token projection (fusion presets do)")
                proj.requires_grad_(a.visual_proj == "trained")
            if a.freeze_patch:
                proj = getattr(self.task.model.visual, "proj", None)
                if not isinstance(proj, nn.Conv2d):
                    raise VlpbenchError(f"--freeze-patch: {a.arch} has no patch projection (patch presets have one)")
                proj.requires_grad_(False)
            if a.freeze_cnn:  # a grid preset's ResNet trunk, as GridConfig(freeze_trunk=True) keeps it
                visual = self.task.model.visual
                if not isinstance(visual, GridEmbedder):
                    raise VlpbenchError(f"--freeze-cnn: {a.arch} has no grid trunk (references and grid presets do)")
                visual.freeze()
        else:
            self.task = None
            self.model = build_reference(a, data, spec)
            if a.objects == "oracle":
                self.images = {s: oracle_cells(data.split(s), spec, a.channels) for s in self.images}

    def parameters(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)
        if self.task is not None and self.task.visual_cache is not None:
            self.task.model.visual.eval()  # the frozen detector

    def batch(self, q: dict[str, torch.Tensor], split: str, idx: torch.Tensor, roll_images: bool = False):
        """The questions ``idx`` of ``q`` with their images (rolled by one with ``roll_images``), as the
        task models take them: pixels in [0, 1] for a preset, centred (or oracle cells) for a reference."""
        image_index = q["image_index"][idx]
        if roll_images:
            image_index = image_index.roll(1)
        return {
            "pixel_values": self.pixels(self.images[split][image_index]),
            "input_ids": q["input_ids"][idx],
            "attention_mask": q["attention_mask"][idx],
            "image_index": image_index,
        }

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> what the model reads: [0, 1] for a preset, centred to [-1, 1] for a reference (as
        RelationalTaskModel centres them); oracle cells are used as they are."""
        if self.task is not None:
            return images.float() / 255.0
        return images if self.a.objects == "oracle" else images.float() / 255.0 * 2 - 1

    def logits(self, q: dict[str, torch.Tensor], split: str, idx: torch.Tensor, roll_images: bool = False):
        return self.logits_of(self.batch(q, split, idx, roll_images), split)

    def logits_of(self, b: dict[str, torch.Tensor], split: str) -> torch.Tensor:
        if self.task is not None:
            return self.task.qa_logits_of(b, split)
        return self.model(b["pixel_values"], b["input_ids"], b["attention_mask"])

    @torch.no_grad()
    def position_probe(self) -> dict[str, float]:
        """Can the answer see where an object is, compared with what colour it is?  One square of the first
        colour in a middle-row cell at the far left, the same at the far right, and a second colour at the far
        left, each asked "is the <first colour> object on the left or right ?": the relative change of the QA
        logits when the object moves (left -> right) and when it is recoloured, averaged over the rows."""
        cfg = self.spec.scene_config()
        cell, (first, second) = cfg.canvas / cfg.grid, cfg.colours[:2]
        r = cfg.radius_px(cfg.sizes[0])

        def image(colour: str, col: int, row: int) -> torch.Tensor:
            obj = SceneObject(
                colour, cfg.shapes[-1], cfg.sizes[0], (col + 0.5) * cell, (row + 0.5) * cell, r, cfg.canvas
            )
            return torch.from_numpy(Scene((0,), cfg.canvas, [obj]).render_array()).permute(2, 0, 1)

        rows = range(1, cfg.grid - 1)
        images = torch.stack(
            [image(c, col, row) for row in rows for c, col in ((first, 0), (first, cfg.grid - 1), (second, 0))]
        )
        enc = self.data.tokenizer([f"is the {first} object on the left or right ?"] * len(images))
        self.train(False)
        batch = {"pixel_values": self.pixels(images), **enc, "image_index": torch.zeros(len(images), dtype=torch.long)}
        logits = self.logits_of(batch, "test").view(len(rows), 3, -1)
        self.train(True)
        base = logits[:, 0].norm(dim=-1)
        return {
            "qa_logits_move_left_right": float(((logits[:, 1] - logits[:, 0]).norm(dim=-1) / base).mean()),
            "qa_logits_recolour": float(((logits[:, 2] - logits[:, 0]).norm(dim=-1) / base).mean()),
        }

    def colour_labels(self, split: str) -> torch.Tensor:
        """[N, cells]: the colour index of the object in each cell of ``split``'s scenes, or the number of
        colours where the cell is empty (computed once per split)."""
        if split not in self._colour_labels:
            colours = len(self.spec.scene_config().colours)
            onehot = oracle_cells(self.data.split(split), self.spec, self.a.channels)[..., :colours]
            empty = torch.full(onehot.shape[:-1], colours)
            self._colour_labels[split] = torch.where(onehot.sum(-1) > 0, onehot.argmax(-1), empty)
        return self._colour_labels[split]

    def colour_probe(self, steps: int = 300) -> float:
        """How much colour the reference CNN's cells hold now: a linear read-out of each cell's object colour
        (one of the design's colours or "empty"), fitted on the train split's cells for ``steps`` Adam steps
        with the CNN fixed, scored on the test split's occupied cells (chance: one over the colours).

        BatchNorm normalises by the statistics of each chunk of 256 images, as in training, and its running
        averages are put back afterwards, so probing does not change the model."""
        cnn = self.model.objects
        features, labels = {}, {}
        with torch.no_grad(), batch_statistics(cnn):
            for split in ("train", "test"):
                pixels = self.pixels(self.images[split])
                features[split] = torch.cat([cnn(chunk) for chunk in pixels.split(256)])  # [N, cells, C]
                labels[split] = self.colour_labels(split)
        classes = int(labels["train"].max()) + 1
        head = nn.Linear(features["train"].shape[-1], classes)
        opt = torch.optim.Adam(head.parameters(), lr=1e-2)
        gen = torch.Generator().manual_seed(0)
        for _ in range(steps):
            idx = torch.randint(len(features["train"]), (256,), generator=gen)
            loss = F.cross_entropy(head(features["train"][idx]).flatten(0, 1), labels["train"][idx].flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            pred, truth = head(features["test"]).argmax(-1), labels["test"]
            occupied = truth < classes - 1
            return float((pred[occupied] == truth[occupied]).float().mean())

    def object_probe(self, x: dict[str, torch.Tensor], prefix: str, steps: int = 500) -> dict[str, float]:
        """Linear read-outs of each object's colour, shape, and half of the image (left / right, top / bottom:
        the answers of the position questions) from ``x[split]`` [objects, D], one row per object in scene
        order; features standardised on the train split, ``steps`` full-batch Adam steps, scored on the test
        split's objects."""
        cfg = self.spec.scene_config()
        labels = {
            "colour": lambda o: cfg.colours.index(o.colour),
            "shape": lambda o: cfg.shapes.index(o.shape),
            "horizontal": lambda o: int(o.cx >= o.canvas / 2),
            "vertical": lambda o: int(o.cy >= o.canvas / 2),
        }
        mean, std = x["train"].mean(0), x["train"].std(0) + 1e-6
        z = {s: (v - mean) / std for s, v in x.items()}  # standardised on the train split
        out = {}
        for attr, label in labels.items():
            y = {
                s: torch.tensor([label(o) for scene in self.data.split(s).scenes for o in scene.objects])
                for s in ("train", "test")
            }
            gen = torch.Generator().manual_seed(0)
            head = nn.Linear(z["train"].shape[1], int(y["train"].max()) + 1)
            nn.init.normal_(head.weight, std=0.01, generator=gen)
            opt = torch.optim.Adam(head.parameters(), lr=1e-2)
            for _ in range(steps):
                loss = F.cross_entropy(head(z["train"]), y["train"])
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                out[f"{prefix}_{attr}"] = float((head(z["test"]).argmax(-1) == y["test"]).float().mean())
        return out

    def region_probe(self, steps: int = 500) -> dict[str, float]:
        """What a region preset's cached ground-truth-box features hold (:meth:`object_probe`, one row per
        object's box; the position read-outs are what a model that reads no box, as VSE, must find there).
        The detector is frozen, so this holds for the whole run."""
        cache = self.task.visual_cache
        x = {s: cache[s]["features"][cache[s]["mask"].bool()] for s in ("train", "test")}  # objects in scene order
        return self.object_probe(x, "region", steps)

    def grid_probe(self, steps: int = 500) -> dict[str, float]:
        """What a grid preset's cells hold now (:meth:`object_probe`, one row per object: the feature of the
        grid cell its centre falls in; on a C5 map of 2 x 2 cells up to four objects share one, so colour and
        shape cannot all be read there).  BatchNorm normalises by the statistics of each chunk of 256 images,
        as in training, and its running averages are put back afterwards, so probing does not change the
        model."""
        visual = self.task.model.visual
        if visual.sample_tokens is not None:
            raise VlpbenchError(f"--colour-probe: {self.a.arch} samples its cells, so they do not map to objects")
        x = {}
        with torch.no_grad(), batch_statistics(visual):
            for split in ("train", "test"):
                outs = [visual(self.pixels(c)) for c in self.images[split].split(256)]
                cells, (h, w) = torch.cat([o.features for o in outs]), outs[0].extras["grid"]  # [N, h*w, D]
                rows = []
                for i, scene in enumerate(self.data.split(split).scenes):
                    for o in scene.objects:
                        r, c = min(int(o.cy / o.canvas * h), h - 1), min(int(o.cx / o.canvas * w), w - 1)
                        rows.append(cells[i, r * w + c])
                x[split] = torch.stack(rows)  # [objects, D]
        return self.object_probe(x, "grid", steps)

    @torch.no_grad()
    def token_sizes(self, n_images: int = 32) -> dict[str, float]:
        """How large a single-stream preset's visual tokens are where they enter its transformer, on the first
        ``n_images`` training images: ``token_rms`` (the projected visual token; a patch preset's includes its
        position embedding), ``image_std`` (the part of it that changes from image to image: the standard
        deviation over the images, RMS over token and channel) and ``position_rms`` (its position code: box
        Linear and sine-cosine code of a cell or region box, or a patch preset's position embeddings).
        BatchNorm normalises by the statistics of these images, as in training, and is put back afterwards."""
        visual, inter = self.task.model.visual, self.task.model.interaction
        images = self.images["train"][:n_images]
        with batch_statistics(visual):
            batch = {"pixel_values": self.pixels(images), "image_index": torch.arange(len(images))}
            tokens = self.task.visual(batch)
        v = inter.visual_proj(tokens.features)  # [B, N, W]
        pos = getattr(visual, "pos_embed", None)
        if tokens.boxes is not None and inter.box_proj is not None:
            boxes = tokens.boxes.to(v.dtype)
            code = inter.box_proj(box_features(boxes))
            if inter.box_code == "linear+sincos":
                code = code + box_sincos(boxes, v.shape[-1], inter.box_grid)
        elif isinstance(pos, nn.Parameter):
            code = pos
        else:
            raise VlpbenchError(f"--token-sizes: {self.a.arch}'s visual tokens carry no position code")

        def rms(t: torch.Tensor) -> float:
            return t.float().pow(2).mean().sqrt().item()

        return {"token_rms": rms(v), "image_std": rms(v.std(0)), "position_rms": rms(code)}

    @torch.no_grad()
    def probe(self, q: dict[str, torch.Tensor]) -> dict[str, float]:
        """How much the answer depends on the image at this point: logits change when images are rolled."""
        self.train(False)
        idx = torch.arange(min(64, len(q["answer"])))
        base = self.logits(q, "train", idx)
        rolled = self.logits(q, "train", idx, roll_images=True)
        out = {"qa_logits_image_swap": float((base - rolled).norm() / base.norm())}
        if self.a.objects == "pixels" and (self.task is None or self.task.visual_cache is None):
            out.update(self.position_probe())  # region presets read cached regions instead
        if self.task is not None and self.task.family == "dual":
            emb = F.normalize(self.task.run(self.batch(q, "train", idx)).image_embeds, dim=-1)
            off = ~torch.eye(len(emb), dtype=torch.bool)
            out["image_embedding_cosine"] = float((emb @ emb.t())[off].mean())
        self.train(True)
        return {k: round(v, 4) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=KINDS, default="rn")
    p.add_argument("--arch", default="", help="a small preset of the study (vilt-small, ...) instead of --kind")
    p.add_argument("--data", choices=sorted(DATA_DESIGNS), default="default")
    p.add_argument("--objects", choices=("pixels", "oracle"), default="pixels")
    p.add_argument("--question", choices=QUESTIONS, default="gru")
    p.add_argument("--dropout", type=float, default=None, help="references: dropout before f's answer layer")
    p.add_argument(
        "--freeze-cnn",
        action="store_true",
        help="references: keep the CNN at its random initialisation; grid presets (pixelbert-small): the ResNet trunk",
    )
    p.add_argument(
        "--freeze-patch", action="store_true", help="patch presets: keep the patch projection at its initialisation"
    )
    p.add_argument(
        "--pos-std",
        type=float,
        default=None,
        help="patch presets: re-initialise the position embeddings at this std (the presets' is 0.02)",
    )
    p.add_argument(
        "--pos-sincos",
        action="store_true",
        help="patch presets: position embeddings start from 2-D sine-cosine values (PatchEmbedConfig.pos_init)",
    )
    p.add_argument(
        "--box-code",
        choices=BOX_CODES,
        default=None,
        help="region presets with a box: how the box is added (default: the preset's; architectures.common)",
    )
    p.add_argument(
        "--visual-proj",
        choices=("frozen", "trained"),
        default=None,
        help="fusion presets: keep the visual-token projection at its initialisation or train it "
        "(default: the preset's freeze_visual_proj)",
    )
    p.add_argument(
        "--fusion",
        choices=FUSIONS,
        default=None,
        help="co-attention presets: join the pooled text and image by product (ViLBERT's default) or sum",
    )
    p.add_argument(
        "--image-token",
        choices=IMAGE_TOKENS,
        default=None,
        help="co-attention presets: the visual stream's first token, the mean region feature (ViLBERT's), "
        "a learned one, or none (the visual pooler then reads the mean of the visual stream)",
    )
    p.add_argument(
        "--qa-norm",
        choices=("batch", "none"),
        default=None,
        help="dual presets: standardise each pooled embedding over the batch before the QA head, or not "
        "(default: the trainer's, batch)",
    )
    p.add_argument("--types", default="", help="comma-separated question types (default: the design's)")
    p.add_argument("--min-objects", type=int, default=None, help="fewest objects per scene (default: the design's)")
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--questions-per-type", type=int, default=2)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up of the learning rate")
    p.add_argument("--channels", type=int, default=24)
    p.add_argument("--kernel", type=int, default=3, help="references: conv kernel side (4 centres cells on objects)")
    p.add_argument("--g-dim", type=int, default=64)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--probe", action="store_true", help="print the image's influence at initialisation first")
    p.add_argument(
        "--colour-probe",
        action="store_true",
        help="references on pixels: at every evaluation (and at step 0), the linear colour read-out of the CNN's "
        "cells; region presets: the colour and shape read-outs of their (fixed) region features, once",
    )
    p.add_argument(
        "--token-sizes",
        action="store_true",
        help="single-stream presets: print how large the visual tokens' content and position code are at init",
    )
    p.add_argument("--detector", default=None, help="region presets: detector.pt from `vlpbench train-detector`")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    if a.arch and (a.objects != "pixels" or a.question != "gru" or a.dropout is not None):
        p.error("--objects, --question and --dropout change the references only; drop them with --arch")
    if a.arch and a.freeze_cnn and a.arch not in GRID_ARCHS:
        p.error(f"--freeze-cnn with --arch freezes a grid preset's trunk ({', '.join(GRID_ARCHS)}), not {a.arch}'s")
    if a.pos_std is not None and not (a.arch and a.pos_std > 0):
        p.error("--pos-std re-initialises a preset's position embeddings: it needs --arch and a std > 0")
    if a.pos_sincos and (not a.arch or a.pos_std is not None):
        p.error("--pos-sincos sets a preset's position embeddings: it needs --arch, and not --pos-std")
    if a.qa_norm is not None and not a.arch:
        p.error("--qa-norm changes a dual preset's QA head: it needs --arch")
    if (a.box_code or a.visual_proj or a.fusion) and not a.arch:
        p.error("--box-code, --visual-proj and --fusion change a preset's interaction: they need --arch")
    if a.freeze_patch and not a.arch:
        p.error("--freeze-patch freezes a preset's patch projection: it needs --arch (references: --freeze-cnn)")
    if a.colour_probe and (a.objects != "pixels" or (a.arch and a.arch not in REGION_ARCHS + GRID_ARCHS)):
        p.error(
            "--colour-probe reads the reference CNN (--kind, --objects pixels), a region preset's features or a "
            "grid preset's cells"
        )
    if a.token_sizes and a.arch not in SINGLE_STREAM_ARCHS:
        p.error(f"--token-sizes reads a single-stream preset's visual tokens: one of {', '.join(SINGLE_STREAM_ARCHS)}")
    if a.detector is not None and not (a.arch in REGION_ARCHS and os.path.isfile(a.detector)):
        p.error(f"--detector {a.detector!r}: needs a region preset ({', '.join(REGION_ARCHS)}) and an existing file")
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    try:
        spec = build_spec(a)
        data = SyntheticData(spec.dataset_config())
        runner = Runner(a, data, spec)
    except VlpbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    train, test = question_tensors(data, "train"), question_tensors(data, "test")
    params = runner.parameters()
    opt = torch.optim.Adam(params, lr=a.lr)
    warmup = max(1, a.warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    n, start = len(train["answer"]), time.perf_counter()
    head = {"config": vars(a), "train_questions": n, "test_questions": len(test["answer"])}
    if a.probe:
        head["probe"] = runner.probe(train)
    if a.colour_probe:
        if a.arch in GRID_ARCHS:  # its cells as they are before training (for the whole run with --freeze-cnn)
            head["grid_probe"] = {k: round(v, 4) for k, v in runner.grid_probe().items()}
        elif runner.task is not None:  # a region preset (checked above): its features are fixed
            head["region_probe"] = {k: round(v, 4) for k, v in runner.region_probe().items()}
        else:
            head["colour_probe"] = round(runner.colour_probe(), 4)
    if a.token_sizes:
        head["token_sizes"] = {k: round(v, 4) for k, v in runner.token_sizes().items()}
    print(json.dumps(head), flush=True)
    runner.train(True)
    for step in range(1, a.steps + 1):
        idx = torch.randint(n, (a.batch_size,))
        loss = F.cross_entropy(runner.logits(train, "train", idx), train["answer"][idx])
        opt.zero_grad()
        loss.backward()
        if a.arch:
            nn.utils.clip_grad_norm_(params, 1.0)  # as the trainer; the references' rows were measured unclipped
        opt.step()
        sched.step()
        if step % a.eval_every == 0 or step == a.steps:
            runner.train(False)
            with torch.no_grad():
                chunks = torch.arange(len(test["answer"])).split(256)
                test_logits = torch.cat([runner.logits(test, "test", c) for c in chunks])
            runner.train(True)
            acc = qa_accuracy(test_logits, test["answer"], test["relational"], test["question_type"])
            per_type = {t: round(acc[f"type_{t}"], 3) for t in QUESTION_TYPES if f"type_{t}" in acc}
            row = {
                "step": step,
                "wall_s": round(time.perf_counter() - start, 1),
                "train_loss": round(float(loss.detach()), 4),
                "non_relational": round(acc["non_relational"], 4),
                "relational": round(acc["relational"], 4),
                "by_type": per_type,
            }
            if a.colour_probe and runner.task is None:
                row["colour_probe"] = round(runner.colour_probe(), 4)
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

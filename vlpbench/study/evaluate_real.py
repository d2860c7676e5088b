"""Retrieval R@K of a local checkpoint on a real Karpathy split (COCO / Flickr30k), read from disk.

``weights`` is either a ``vlpbench train`` run directory (``checkpoint.pt`` + ``tokenizer.json``; any
small architecture: dual encoders score by cosine, fusion models by ITM over every pair) or a
transformers ``save_pretrained`` CLIP folder (loaded by ``architectures.loaders.load_clip``, cosine of
the projections).  Images are read with PIL from ``root`` and resized to the model's input size.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

import numpy as np
import torch

from vlpbench.study.data import load_dataset, retrieval_recall
from vlpbench.errors import VlpbenchError, bad_value

RETRIEVAL_DATASETS = ("coco", "flickr30k")
IMAGE_DIRS = {"coco": ("", "images"), "flickr30k": ("", "images", "flickr30k-images")}


def _image(root: str, dataset: str, filename: str, size) -> torch.Tensor:
    from PIL import Image

    for sub in IMAGE_DIRS[dataset]:
        path = os.path.join(root, sub, filename)
        if os.path.isfile(path):
            try:
                img = Image.open(path).convert("RGB").resize((size[1], size[0]), Image.BILINEAR)
            except Exception as e:
                raise VlpbenchError(f"image {path!r} cannot be read ({e})") from e
            return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255.0
    raise VlpbenchError(f"image {filename!r} named in the {dataset} split file is missing under {root!r} "
                        f"(looked in {', '.join(repr(os.path.join(root, s)) for s in IMAGE_DIRS[dataset])})")


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
            raise VlpbenchError(f"weights directory {run_dir!r} lacks {os.path.basename(p)} (expected a "
                                f"`vlpbench train` run directory or a transformers CLIP folder)")
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


@torch.no_grad()
def evaluate_checkpoint(weights: str, *, dataset: str, root: str, split: str = "test",
                        limit: Optional[int] = None) -> Dict[str, Any]:
    from vlpbench.study.evaluate import similarity_matrix

    if dataset not in RETRIEVAL_DATASETS:
        raise bad_value("dataset for retrieval evaluation", dataset, RETRIEVAL_DATASETS)
    if not os.path.isdir(weights):
        raise bad_value("weights directory", weights, "an existing directory")
    records = [r for r in load_dataset(dataset, root) if r.split == split]
    if not records:
        raise VlpbenchError(f"the {dataset} split file under {root!r} has no images in split {split!r}")
    records = records[:limit] if limit else records
    texts = [c for r in records for c in r.captions]
    owners = torch.tensor([i for i, r in enumerate(records) for _ in r.captions])
    if os.path.isfile(os.path.join(weights, "config.json")):
        from vlpbench.architectures.loaders import load_clip

        model_type = json.load(open(os.path.join(weights, "config.json"))).get("model_type")
        if model_type != "clip":
            raise VlpbenchError(f"transformers checkpoint {weights!r} has model_type {model_type!r}; accepted for "
                                f"retrieval: clip (ViLT retrieval needs an ITM head, which load_vilt does not load)")
        model = load_clip(weights)
        if model.tokenizer is None:
            raise VlpbenchError(f"CLIP folder {weights!r} has no tokenizer files")
        size = model.visual.image_size
        pixels = torch.stack([_image(root, dataset, r.image, size) for r in records])
        enc = model.tokenizer(texts, padding="max_length", truncation=True, max_length=model.text.text_len,
                              return_tensors="pt")
        from vlpbench.embedders.patch import processor_normalise

        # CLIPImageProcessor's mean / std: the checkpoint was trained on normalised pixels
        img = model.interaction.encode_image(model.visual(pixel_values=processor_normalise(pixels, "clip")))
        txt = model.interaction.encode_text(model.text(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]))
        sim = torch.nn.functional.normalize(img, dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).t()
        arch = f"transformers clip ({weights})"
    else:
        task, tokenizer = load_own(weights)
        size = task.image_size
        pixels = torch.stack([_image(root, dataset, r.image, size) for r in records])
        enc = tokenizer(texts)
        sim = similarity_matrix(task, pixels, enc["input_ids"], enc["attention_mask"], split="eval")
        arch = task.arch  # regions (if any) come from the frozen detector on the fly
    return {"dataset": dataset, "split": split, "images": len(records), "texts": len(texts), "weights": weights,
            "model": arch, **retrieval_recall(sim, owners)}


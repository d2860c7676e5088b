"""Where the calibration references' learning stalls: a QA-only loop around Santoro et al.'s RN / CNN+MLP.

This is the instrument behind the README's "Accuracy study: measured here" paragraph, not the study itself
(the study trains through ``vlpbench train`` / ``vlpbench study``).  It trains ``RelationalQA`` of
``vlpbench.study.relational`` on the generated data of a design (``vlpbench.study.runner.DATA_DESIGNS``)
with plain Adam at a constant learning rate, batches drawn with replacement, and prints the test accuracy
per question type every ``--eval-every`` steps as JSON lines.  Two switches take one difficulty away each:

* ``--objects oracle`` replaces the CNN by the ground truth: each cell of the grid holds the one-hot
  colour and shape of its object (zeros when empty), so only the question-object binding is left to learn;
* ``--question positional`` replaces the GRU by word embeddings concatenated position by position and one
  linear layer, the closest thing to Sort-of-CLEVR's fixed binary question code our word questions allow.

Example (about 3 minutes on 2 idle cores)::

    .venv/bin/python tools/study_diagnostic.py --kind rn --objects oracle --question positional \\
        --n-train 10000 --batch-size 128 --steps 3000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import torch
from torch import nn

from vlpbench.errors import VlpbenchError
from vlpbench.study.data import SyntheticData, collate, qa_accuracy
from vlpbench.study.data.language import QUESTION_TYPES
from vlpbench.study.relational import KINDS, RelationalConfig, RelationalQA
from vlpbench.study.runner import DATA_DESIGNS


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=KINDS, default="rn")
    p.add_argument("--data", choices=sorted(DATA_DESIGNS), default="default")
    p.add_argument("--objects", choices=("pixels", "oracle"), default="pixels")
    p.add_argument("--question", choices=("gru", "positional"), default="gru")
    p.add_argument("--types", default="", help="comma-separated question types (default: the design's)")
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--questions-per-type", type=int, default=2)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--channels", type=int, default=24)
    p.add_argument("--g-dim", type=int, default=64)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    types = {} if not a.types else {"question_types": tuple(a.types.split(","))}
    spec = dataclasses.replace(
        DATA_DESIGNS[a.data], n_train=a.n_train, questions_per_type=a.questions_per_type, **types
    )
    try:
        data = SyntheticData(spec.dataset_config())
    except VlpbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sets = {}
    for split in ("train", "test"):
        ds = data.qa(split)
        batch = collate([ds[k] for k in range(len(ds))])
        if a.objects == "oracle":
            cells = oracle_cells(data.split(split), spec, a.channels)
            batch["pixel_values"] = cells[torch.tensor([i for i, _ in ds.items])]
        else:
            batch["pixel_values"] = batch["pixel_values"] * 2 - 1  # as RelationalTaskModel centres them
        sets[split] = batch
    cfg = RelationalConfig(
        kind=a.kind,
        image_size=(spec.canvas, spec.canvas),
        channels=a.channels,
        vocab_size=data.tokenizer.vocab_size,
        num_answers=len(data.answers),
        g_dim=a.g_dim,
    )
    model = RelationalQA(cfg)
    if a.objects == "oracle":
        model.objects = GivenObjects()
    if a.question == "positional":
        model.question = PositionalQuestion(cfg.vocab_size, spec.max_length, cfg.question_dim)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    train, test = sets["train"], sets["test"]
    n, start = len(train["answer"]), time.perf_counter()
    print(json.dumps({"config": vars(a), "train_questions": n, "test_questions": len(test["answer"])}), flush=True)
    for step in range(1, a.steps + 1):
        idx = torch.randint(n, (a.batch_size,))
        logits = model(train["pixel_values"][idx], train["input_ids"][idx], train["attention_mask"][idx])
        loss = nn.functional.cross_entropy(logits, train["answer"][idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % a.eval_every == 0 or step == a.steps:
            model.eval()
            with torch.no_grad():
                test_logits = model(test["pixel_values"], test["input_ids"], test["attention_mask"])
            model.train()
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
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A toy embedder and architecture for harness tests that must not depend on real presets.

Registered under test-only names by :func:`register_toys` (idempotent).  ``work`` scales the
amount of computation, so tests can inject a known slowdown through the configuration.
"""

from dataclasses import dataclass

import torch
from torch import nn

from vlpbench.registry import ARCH, VISUAL
from vlpbench.stages import null_stage, scoped
from vlpbench.types import TokenSpec, VisualTokens


@dataclass(frozen=True)
class ToyConfig:
    image_size: tuple = (32, 32)  # input H, W
    dim: int = 64  # token width
    work: int = 1  # repeats of the interaction (a slowdown knob)
    text_len: int = 8  # tokens
    attention: bool = False  # add token-token products to each repeat, so MI grows as L^2


class ToyVisual(nn.Module):
    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.cfg = cfg
        self.proj = nn.Conv2d(3, cfg.dim, 8, 8)

    def make_inputs(self, batch_size, *, generator, device="cpu"):
        h, w = self.cfg.image_size
        return {"pixel_values": torch.rand(batch_size, 3, h, w, generator=generator, device=device)}

    def forward(self, pixel_values, stage=null_stage):
        with stage("patch"):
            x = self.proj(pixel_values).flatten(2).transpose(1, 2)
        return VisualTokens(x, torch.ones(x.shape[:2], dtype=torch.bool), extras={"tokens": x.shape[1]})

    def workload(self):
        return {"image_size": list(self.cfg.image_size)}

    def output_spec(self):
        h, w = self.cfg.image_size
        return TokenSpec(dim=self.cfg.dim, num_tokens=(h // 8) * (w // 8), schema="patch")


class ToyArch(nn.Module):
    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.cfg = cfg
        self.visual = ToyVisual(cfg)
        self.text = nn.Embedding(100, cfg.dim)
        self.interaction = nn.Linear(cfg.dim, cfg.dim)

    def make_inputs(self, batch_size, *, generator, device="cpu"):
        ids = torch.randint(0, 100, (batch_size, self.cfg.text_len), generator=generator, device=device)
        return {**self.visual.make_inputs(batch_size, generator=generator, device=device), "input_ids": ids}

    def forward(self, pixel_values, input_ids, stage=null_stage):
        v = self.visual(pixel_values, stage=scoped(stage, "visual", "VE")).features
        with stage("text.embed", "TE"):
            t = self.text(input_ids)
        with stage("interaction.mix", "MI"):
            x = torch.cat([t, v], 1)
            for _ in range(self.cfg.work):
                x = self.interaction(x)
                if self.cfg.attention:
                    x = torch.softmax(x @ x.transpose(1, 2) / self.cfg.dim**0.5, -1) @ x
        return x

    def workload(self):
        return {"image_size": list(self.cfg.image_size), "text_len": self.cfg.text_len}


def register_toys():
    if "test-toy-visual" not in VISUAL:
        VISUAL.register("test-toy-visual", ToyVisual, ToyConfig(), description="test toy", tags=("patch",))
    if "test-toy-arch" not in ARCH:
        ARCH.register("test-toy-arch", ToyArch, ToyConfig(), description="test toy", paper={"class": "d"})


register_toys()

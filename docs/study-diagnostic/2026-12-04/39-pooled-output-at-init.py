"""Pooled output at initialisation of three small presets, on each one's make_inputs (16 random examples)."""

import json

import torch

from vlpbench.presets import load_all
from vlpbench.registry import ARCH

load_all()
torch.set_num_threads(1)
for name in ["vilbert-small", "uniter-small", "vilt-small"]:
    torch.manual_seed(0)
    m = ARCH.build(name).eval()
    inp = m.make_inputs(16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        p = m(**inp).interaction.pooler_output
    print(
        json.dumps(
            {
                "arch": name,
                "seed": 0,
                "batch": 16,
                "pooled_dim": p.shape[-1],
                "mean_abs": round(p.abs().mean().item(), 4),
                "frac_exact_zero": round((p == 0).float().mean().item(), 3),
                "std_across_batch": round(p.std(0).mean().item(), 4),
            }
        )
    )
